"""Closed-form checks of the estimator on single layers, and of the roofline bounds against the hand-computed
anchors (notes/anchors.md section 7). Expected values are worked out by hand in the comments from the
formulas in fpgaformer.compiler.estimate's docstring; none comes from the code's own earlier output."""

import math

import numpy as np
import pytest

from fpgaformer.compiler import roofline, synthetic
from fpgaformer.compiler.boards import load_board
from fpgaformer.compiler.estimate import estimate_graph, valid_reuse_factors
from fpgaformer.host.graph import Graph, Layer, Tensor

KV260, PYNQ = load_board("kv260"), load_board("pynq-z2")


def one_layer(op, in_shapes, out_shape, params=None, attrs=None, hw=None, kind="encoder") -> Graph:
    names = [f"x{i}" for i in range(len(in_shapes))]
    tensors = {n: Tensor(n, s) for n, s in zip(names, in_shapes)}
    tensors["y"] = Tensor("y", out_shape)
    layer = Layer("layer", op, names, ["y"], attrs or {}, params or {}, hw or {}, 0, None)
    g = Graph(names, ["y"], tensors, [layer], {"kind": kind, "seq_len": in_shapes[0][-2]})
    g.validate()
    return g


def linear_stage(rf, board=KV260, precision="w8a8", weights="on_chip", chunk=0, S=8, K=64, N=32):
    w = np.broadcast_to(np.float32(0), (K, N))
    g = one_layer("Linear", [(1, S, K)], (1, S, N), {"weight": w},
                  hw={"reuse_factor": rf, "strategy": "Resource", "weights": weights, "row_chunk": chunk})
    d = estimate_graph(g, board, precision)
    return d, d.stages[0]


# ------------------------------------------------------------------------------------------------- Linear
# K=64, N=32, S=8 rows at w8a16 (8 x 16 products: one DSP each, no packing); acc = 16 + 8 + log2(64) = 30 bits.
# Latency (hls4ml Dense, calibrated): Resource depth RF + RESOURCE_TAIL (2); at RF 1 the weights are constants:
# depth 1 + ceil(log2(64) / CONST_ADDS_PER_CYCLE (2)) = 4.
@pytest.mark.parametrize("rf, dsp, interval, latency", [
    (1, 2048, 8, 11),          # n_mult 2048; latency (8-1)*1 + 1 + 3
    (4, 512, 32, 34),          # n_mult 512;  7*4 + 4 + 2
    (64, 32, 512, 514),        # n_mult 32;   7*64 + 64 + 2
    (2048, 1, 16384, 16386),   # n_mult 1;    7*2048 + 2048 + 2
])
def test_linear_dsp_and_cycles_at_several_reuse_factors(rf, dsp, interval, latency):
    d, e = linear_stage(rf, precision="w8a16")
    assert e.dsp == dsp
    assert e.cost.ii == rf
    assert e.cost.interval == interval
    assert e.cost.latency == latency
    assert d.items_per_s == pytest.approx(250e6 / interval)  # one stage, weights on chip: f / interval


def test_linear_weight_memory_follows_the_reuse_factor():
    # w8a8; acc = 8 + 8 + log2(64) = 22 bits.
    # RF 1: weights 2048 x 8 bit wide, depth 1 -> registers, i.e. constants: 8 x 8 constant products
    # (a + w <= FABRIC_MULT_BITS) are shift-adds in LUTs (0 DSP, no LUTs beyond the adders);
    # FF = 2048*(22+8) + 600 + 2*64*8 + 16384.
    _, e = linear_stage(1)
    assert (e.bram36, e.uram, e.dsp) == (0, 0, 0)
    assert e.ff == 2048 * 30 + 600 + 1024 + 16384
    assert e.lut == 2048 * 22 + 400
    # RF 64: a weight ROM of width 256 (> 36), depth 64 -> BRAM even though shallow: ceil(256/36) = 8 BRAM18 = 4
    # BRAM36; LUT = 32 * 22 + 400.
    _, e = linear_stage(64)
    assert e.bram36 == 4 and e.lut == 32 * 22 + 400
    # RF 2048: width 8, depth 2048 -> one BRAM18 in its 2048 x 9 shape = 0.5 BRAM36.
    _, e = linear_stage(2048)
    assert e.bram36 == 0.5
    # RF 32 on a 64 x 1 layer at w16a16: 2 multipliers, ROM width 2 x 16 = 32 (<= 36), depth 32 -> a LUT ROM of
    # 32 LUTs; acc = 16 + 16 + 6.
    w = np.broadcast_to(np.float32(0), (64, 1))
    g = one_layer("Linear", [(1, 1, 64)], (1, 1, 1), {"weight": w}, hw={"reuse_factor": 32, "strategy": "Resource"})
    e = estimate_graph(g, KV260, "w16a16").stages[0]
    assert e.bram36 == 0 and e.lut == 2 * (16 + 16 + 6) + 400 + 32


def test_linear_packing_depends_on_widths_and_dsp_type():
    assert linear_stage(4, precision="w8a16")[1].dsp == 512    # 8 x 16 does not pack
    assert linear_stage(4, precision="w16a16")[1].dsp == 512   # 16 x 16 fits one 27 x 18 multiplier
    assert linear_stage(4, board=PYNQ)[1].dsp == 512           # DSP48E1 never packs
    assert linear_stage(4)[1].dsp == 256                       # int8 x int8 on DSP48E2: 2 per DSP


def test_streamed_linear_reads_its_weights_once_per_row_chunk():
    # 64*32 int8 weights = 2,048 bytes, read ceil(8/4) = 2 times per sequence.
    d, e = linear_stage(64, weights="streamed", chunk=4)
    assert d.offchip_bytes == 4096
    assert d.streamed_bytes == 2048
    # time: max(compute 512 cycles / 250 MHz, 4096 B / (0.85 * min(19.2, 4*16*250e6/1e9=16) GB/s))
    assert d.memory_s == pytest.approx(4096 / (0.85 * 16e9))
    assert d.items_per_s == pytest.approx(250e6 / 512)
    # the tile registers (2 * 32 multipliers * 8 bit) come on top of the on-chip version's registers
    _, on_chip = linear_stage(64)
    assert e.ff - on_chip.ff == 2 * 32 * 8 + 2600 - 2 * 64 * 8  # + tiles + AXI master - input row registers


def test_hls4ml_valid_reuse_factors_match_hls4ml():
    """Our closed form against hls4ml's own rule (an independent implementation)."""
    backend = pytest.importorskip("hls4ml.backends.fpga.fpga_backend")
    check = backend.FPGABackend._validate_reuse_factor
    for n_in, n_out in [(64, 32), (384, 1536), (12, 10), (7, 9)]:
        expected = [rf for rf in range(1, n_in * n_out + 1) if check(None, n_in, n_out, rf)]
        assert list(valid_reuse_factors(n_in, n_out)) == expected
    assert valid_reuse_factors(64, 32) == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


# ---------------------------------------------------------------------------------------- row-wise layers
def test_softmax_closed_form():
    # scores (1, 4 heads, 16, 16): 64 lines of 16; 4 lanes -> II 4 cycles per line.
    g = one_layer("Softmax", [(1, 4, 16, 16)], (1, 4, 16, 16), attrs={"axis": -1}, hw={"lanes": 4})
    e = estimate_graph(g, KV260, "w8a16").stages[0]
    assert e.cost.interval == 64 * 4
    assert e.cost.latency == 63 * 4 + 3 * 4 + 20     # 3 passes + 20 cycles of exp/reciprocal pipeline
    assert e.dsp == 4                                 # one reciprocal multiply per lane
    # exp tables for 2 lanes each + 1 reciprocal table: 3 x (1024 x 18 bit) = 3 BRAM18 = 1.5 BRAM36
    assert e.bram36 == 1.5
    # LUT: 4 lanes * (4*16 + 60) + 400 + line buffer (2 lines of 4 words x 64 bit: LUTRAM, 64 LUTs)
    assert e.lut == 4 * 124 + 400 + 64


def test_layernorm_closed_form():
    D = 256
    g = one_layer("LayerNorm", [(1, 32, D)], (1, 32, D), attrs={"eps": 1e-5},
                  params={"gamma": np.ones(D, np.float32), "beta": np.zeros(D, np.float32)}, hw={"lanes": 8})
    e = estimate_graph(g, KV260, "w8a16").stages[0]
    assert e.cost.interval == 32 * 32                # 32 rows x ceil(256 / 8)
    assert e.cost.latency == 31 * 32 + 2 * 32 + 30   # mean/variance pass, normalise pass, 1/sqrt lookup
    assert e.dsp == 3 * 8
    assert e.bram36 == 0.5                           # the 1/sqrt table: one BRAM18
    # LUT: 8 lanes * (5*16 + 40) + 400 + line buffer (128 bit x 64: 128 LUTs) + gamma/beta (64 bit x 64: 64)
    assert e.lut == 8 * 120 + 400 + 128 + 64


def test_attention_matmul_closed_form():
    # QK^T: (1, 2, 8, 16) x (1, 2, 16, 8): 2 heads * 16 * 8 = 256 MACs per query row; RF 16 -> 16 multipliers
    g = one_layer("MatMul", [(1, 2, 8, 16), (1, 2, 16, 8)], (1, 2, 8, 8), hw={"reuse_factor": 16})
    g.layers[0].role = "attn_scores"
    e = estimate_graph(g, KV260, "w8a8").stages[0]
    assert e.dsp == 8                        # 16 int8 x int8 products, 2 per DSP
    assert e.cost.interval == 8 * 16
    assert e.cost.latency == 7 * 16 + 16 + 4 + 6


# ------------------------------------------------------------------------------------------------ bounds
MINILM = synthetic.minilm_l6(seq_len=128)


def test_minilm_macs_and_bytes_match_the_model_card_shapes():
    b = roofline.bounds(MINILM, KV260, "w8a8", clock_mhz=300)
    # 6 blocks x 128 rows x (4*384^2 + 2*384*1536) + 6 x 2 x 128^2 x 384 attention MACs
    assert b.macs_per_item == 6 * 128 * (4 * 384 ** 2 + 2 * 384 * 1536) + 6 * 2 * 128 ** 2 * 384
    assert b.macs_per_item == pytest.approx(1.434e9, rel=1e-3)
    assert b.bytes_per_item == 10_616_832  # 10.62 M int8 linear weights


@pytest.mark.parametrize("board, clock, compute, memory", [
    ("kv260", 300, 522, 1808),      # anchors 7: 748.8 GMAC/s / 1.434 GMAC; 19.2 GB/s / 10.6 MB
    ("u280", 300, 3775, 43327),     # 5,414 GMAC/s / 1.434 GMAC; 460 GB/s / 10.6 MB
    ("pynq-z2", 100, 15.34, 197.8), # 22 GMAC/s (1 MAC/DSP) / 1.434 GMAC = 65.2 ms; 2.1 GB/s / 10.6 MB
])
def test_minilm_bounds_match_anchors(board, clock, compute, memory):
    b = roofline.bounds(MINILM, load_board(board), "w8a8", clock_mhz=clock)
    assert b.compute == pytest.approx(compute, rel=2e-3)
    assert b.memory == pytest.approx(memory, rel=2e-3)
    assert b.limit == "compute"


GPT2_128 = synthetic.gpt2_small(seq_len=8, context=128)
GPT2_1024 = synthetic.gpt2_small(seq_len=8, context=1024)


def test_gpt2_decode_macs_and_bytes():
    b = roofline.bounds(GPT2_128, KV260, "w8a8", clock_mhz=300)
    linear = 12 * (4 * 768 ** 2 + 2 * 768 * 3072) + 768 * 50257   # 84.93 M + tied LM head 38.60 M
    assert b.macs_per_item == linear + 2 * 12 * 128 * 768          # + attention over 128 cached positions
    assert b.bytes_per_item == linear + 2 * 12 * 128 * 768          # int8 weights + int8 K and V caches


@pytest.mark.parametrize("graph, board, compute, memory", [
    (GPT2_128, "kv260", 5948, 152.5),   # anchors 7: KV=128
    (GPT2_1024, "kv260", None, 134.8),  # KV=1024
    (GPT2_128, "u280", 43009, 3654),
    (GPT2_1024, "u280", None, 3230),
])
def test_gpt2_bounds_match_anchors(graph, board, compute, memory):
    b = roofline.bounds(graph, load_board(board), "w8a8", clock_mhz=300)
    if compute is not None:
        assert b.compute == pytest.approx(compute, rel=2e-3)
    assert b.memory == pytest.approx(memory, rel=2e-3)
    assert b.limit == "memory"


def test_bandwidth_is_capped_by_the_axi_ports_at_the_clock():
    # KV260 at 250 MHz: 4 HP ports x 16 B x 250 MHz = 16 GB/s < 19.2 GB/s DDR4
    b = roofline.bounds(GPT2_128, KV260, "w8a8")
    assert b.bandwidth_gbs == pytest.approx(16.0)
    assert b.memory == pytest.approx(16e9 / 125_891_328)
    assert math.isinf(roofline.bounds(GPT2_128, KV260, "w8a8", offchip_bytes=0).memory)
