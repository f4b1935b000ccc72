"""Resource and latency estimator: per layer from shapes, bit widths, reuse factor and strategy; per design
sequences/s (encoders) or tokens/s (decoders, batch-1 decode). Every figure is an ESTIMATE of the hardware
model below, not a synthesis result; ``reports`` reads real synthesis reports to compare.

Hardware model (assumptions)
----------------------------
A *stage* is the hardware of one layer. Stages are grouped as the design's kernel structure says:
``kernel="block"``: every block has its own instance of each stage (``instances = n_blocks``, ``uses = 1``);
``kernel="shared"``: one block kernel reused for every block (``instances = 1``, ``uses = n_blocks``; its
on-chip weights then hold ``weight_sets = n_blocks`` copies). Stages outside blocks run once per item.
An *item* is one sequence of S rows (encoder) or one decoded token (decoder: one row; attention over the
KV cache of length L = ``meta["context"]``). Embedding lookups run on the host (DESIGN.md) and cost nothing.

MAC stages (Linear x·W, MatMul a·b) with reuse factor RF, row = one query position:
  n_mult = ceil(row_macs / RF)                       row_macs = K·N (Linear), H·k·n (MatMul over heads)
  DSP    = n_mult · dsps_per_multiply / packing      (``boards.Board``: int8xint8 packs 2 per DSP48E2)
  II_row = RF cycles;  interval = rows · RF;  latency = (rows-1)·RF + depth
  depth  = RF + 2 (on-chip Linear, Resource: the adder tree is folded into the II-1 reuse loop);
           RF + ceil(log2 K / 2) (constant weights, below);  RF + ceil(log2 K) + 6 (streamed Linear, MatMul)
  Constant weights: an on-chip Linear with strategy Latency, or Resource at RF 1 (depth-1 weight array ->
  registers), has constant weights: products by zero weights vanish (n_mult = ceil((K·N - zeros)/RF)), and
  constant products with a_bits + w_bits <= 16 are shift-adds in LUTs (0 DSP).
  (Calibrated on published csynth reports of single hls4ml Dense layers: tests/data/hls4ml_synthesis_points.json,
  benchmarks/bench_estimator_vs_synthesis.py; the constants and their evidence are at the top of the code.)
  LUT    = n_mult · acc_bits + 400,  FF = n_mult · (acc_bits + a_bits) + 600,  acc_bits = a + w + ceil(log2 K)
  Weights on chip, strategy Resource (hls4ml): one array of width n_mult·w_bits and depth RF·weight_sets
  (BRAM18 in its best aspect ratio, or URAM 4096x72; a weight array stays in LUTs only when <= 36 bits wide and
  <= 64 deep, so wide shallow ones go to BRAM too); strategy Latency: LUT ROM, n_mult·w_bits·ceil(depth/64)
  LUTs; the input row is a partitioned register array (hls4ml io_parallel: FF += 2·K·a_bits). hls4ml's rule
  on valid reuse factors applies to on-chip Linear stages (``valid_reuse_factors``).
  Weights streamed (fpgaformer's own kernel): tiles of n_mult weights in ping-pong registers
  (FF += 2·n_mult·w_bits), one tile applied to a chunk of C rows before the next arrives, so the layer's
  weights are read ceil(rows/C) times per item: bytes = K·N·w_bits/8 · ceil(rows/C); one AXI read master
  (1,800 LUT, 2,600 FF, 2 BRAM18). The C-row input chunk is buffered on chip (2·C·K·a_bits, shared by the
  stages that read the same tensor). Any RF is accepted (padding lanes are in the ceil).
  MatMul (activation x activation, hls4ml Einsum: Latency only): encoders buffer the whole second operand
  (K or V: every query row needs all of it) and the query operand of QK^T, ping-pong (2 copies, so the next
  item can fill while this one is read); the array is n_mult·a_bits wide. Decoders read the KV cache: on
  chip (weight_sets copies) or streamed from DDR/HBM (bytes = kv_elements · a_bits/8 per token).
Row stages (norms, softmax, activations, elementwise) with P lanes over lines of length L:
  II_line = ceil(L/P);  interval = lines·II_line;  latency = (lines-1)·II_line + passes·II_line + depth_op
  DSP = dsp_per_lane·P (LayerNorm/RMSNorm 3, Softmax 1, Mul 1, RoPE 2, others 0; LUT per lane in ROW_OPS,
  FF per lane 2·a_bits + 16, + 400 LUT / 600 FF per stage); lookup tables of
  1,024 x 18 bit (1/sqrt for norms; exp per 2 lanes + 1 reciprocal for softmax; one per 2 lanes for GELU/SiLU)
  in BRAM18; multi-pass ops keep a ping-pong line buffer. A residual Add whose other input crosses an
  attention barrier buffers its skip input whole (ping-pong); otherwise a FIFO of min(rows, 2·C + 8) rows.
Other arrays of <= 4 kbit or depth <= 64 go to LUTRAM (width·ceil(depth/64) LUTs), depth <= 2 to registers, the
rest to BRAM18 in the best aspect ratio (512x36 ... 16Kx1) or URAM (4096x72), packing p words per physical
word (width p·w, depth d/p) when that takes fewer blocks. URAM is used when BRAM would exceed the budget:
arrays with the most BRAM saved per URAM move first, whole or as a share of their columns.
Decoders: a decode step runs the layers one after another, so every MAC stage (Linear and the KV-cache
MatMuls) time-shares one matrix-vector engine ("gemv"): its multipliers, adder trees, tile registers and AXI
read master are counted once, at the size of its largest user (booked to that stage in per-layer tables).
Design overhead (DMA, control, interconnect): 6,000 LUT, 9,000 FF, 8 BRAM18.

Design time per item (f = clock, BW = bandwidth_efficiency · min(BW_peak, AXI port cap at f)):
  encoder: stages form a dataflow pipeline over rows and items (the next sequence enters while this one is
           in later stages):  T_item = max( max_stage uses·interval / f ,  bytes_per_item / BW )
  decoder: tokens are sequential; each execution overlaps its weight/KV fetch with its compute:
           T_token = sum over executions of max(latency/f, bytes/BW)
  latency (one item, empty pipeline): encoder sum over block executions of (2·max interval + sum depths) —
  two row-streamed phases per block split by the K/V barrier — plus the other stages; decoder T_token.
Not modelled: host time (tokenizer, embedding, per-token launch: tens of µs on PYNQ), routing/timing
closure (the clock is taken as given), the platform shell on Alveo (the 80 % budget leaves room for it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from ..host.graph import Graph, Layer
from .boards import Board
from .errors import UserError
from .precision import DEFAULT_PRESET, preset_bits

MAC_DEPTH = 6                       # streamed-weight Linear and MatMul stages: depth = RF + log2 K + MAC_DEPTH
# Calibrated against published csynth reports of single hls4ml Dense layers (tests/data/hls4ml_synthesis_points.json,
# benchmarks/bench_estimator_vs_synthesis.py); evidence in the comments.
RESOURCE_TAIL = 2                   # on-chip Resource Dense: latency = RF + 2 (uw-acme Vivado HLS 2019.x, RF 10..3200,
                                    # K 3..3200: worst-case latency RF+1..RF+3; the adder tree is folded into the
                                    # II-1 reuse loop, so it adds no log2 K stages)
CONST_ADDS_PER_CYCLE = 2            # constant-weight Dense (Latency, or Resource at RF 1): depth = RF + ceil(log2 K / 2)
                                    # (ArgyKokk Vitis 2021.1 at 300 MHz: K 3..274 -> 1..8 cycles; uw-acme 200 MHz: 1)
FABRIC_MULT_BITS = 16               # a product by a CONSTANT weight with a_bits + w_bits <= 16 is built in LUTs (shift-
                                    # add), not a DSP (ArgyKokk 8x8-bit constant weights: 0 DSP with the default
                                    # binding; hls4ml CI baselines and uw-acme RF-1 layers, 16x16 / 18x18 constants:
                                    # about one DSP per nonzero product). Non-constant 8x8 products (Resource, MatMul)
                                    # keep the DSP model (packing, boards.py) that the roofline also assumes, although
                                    # uw-acme's Resource 8x8 layers synthesised with 0 DSP (see the benchmark).
ROM_LUT_MAX_WIDTH, ROM_LUT_MAX_DEPTH = 36, 64   # Resource weight ROMs stay in LUTs only when at most one BRAM18
                                    # port wide and LUTRAM-deep; wider ones go to BRAM even when shallow (uw-acme:
                                    # 24,576 x 32 -> 683 BRAM18 = width/36; 40 x 10 -> 2; 32 x 32 and 16 x 30 -> 0)
STAGE_LUT, STAGE_FF = 400, 600
AXI_LUT, AXI_FF, AXI_BRAM18 = 1800, 2600, 2
SHELL = {"lut": 6000, "ff": 9000, "bram18": 8}
LATENCY_MAX_WEIGHTS = 4096          # on-chip Linear with at most this many weights uses the Latency strategy
TABLE_DEPTH, TABLE_BITS = 1024, 18
FREE_OPS = {"Reshape", "Transpose", "Expand", "Slice", "Concat", "Constant", "PaddingMask"}
# op -> (dsp per lane, passes over a line, extra pipeline depth, LUT per lane as f(a_bits))
ROW_OPS = {
    "LayerNorm": (3, 2, 30, lambda a: 5 * a + 40), "RMSNorm": (3, 2, 30, lambda a: 5 * a + 40),
    "Softmax": (1, 3, 20, lambda a: 4 * a + 60), "GELU": (0, 1, 4, lambda a: a + 8),
    "SiLU": (0, 1, 4, lambda a: a + 8), "Add": (0, 1, 2, lambda a: a + 2), "Mul": (1, 1, 4, lambda a: a + 4),
    "RoPE": (2, 1, 6, lambda a: 2 * a + 10),
}
RESOURCES = ("dsp", "bram36", "uram", "lut", "ff")


# ------------------------------------------------------------------------------------------------ precision
@dataclass(frozen=True)
class Precision:
    """Bit widths the estimator uses: weights, activations (and KV cache)."""

    name: str
    w_bits: int
    a_bits: int
    acc_bits: int | None = None     # accumulator width; None: full precision a + w + ceil(log2 K)

    @classmethod
    def of(cls, name: str | None) -> "Precision":
        name = name or DEFAULT_PRESET
        w, a = preset_bits(name)
        return cls(name, w, a)


# ----------------------------------------------------------------------------------------------------- work
@dataclass
class Work:
    """What one layer computes per execution, independent of hardware choices.

    kind: "mac" (Linear/MatMul), "row" (row-wise ops), "free" (layout: wiring only), "host" (embedding).
    """

    layer: str
    op: str
    role: str | None
    block: int | None
    kind: str
    rows: int = 1                # MAC: rows per execution (S, or 1 in decode)
    row_macs: int = 0            # MAC: multiply-accumulates per row
    k: int = 1                   # MAC: contraction length
    weights: int = 0             # Linear: weight count (K·N); row ops: constant params (gamma, tables)
    bias: int = 0
    operand_b: int = 0           # MatMul: elements of the second operand (K or V; decode: one block's cache)
    operand_a: int = 0           # MatMul: elements of the query operand when it must be buffered (encoder QK^T)
    lines: int = 0               # row ops: lines per execution
    line_len: int = 0            # row ops: elements per line
    skip: int = 0                # residual Add: elements of the skip input to buffer
    skip_whole: bool = False     # residual Add: skip crosses an attention barrier -> whole ping-pong buffer
    line_width: int = 0          # residual Add: elements per row (FIFO width)
    input: str = ""              # first input tensor (Linear input buffers are shared per tensor)
    decode: bool = False         # per decoded token (rows 1, attention over the KV cache)
    zeros: int = 0               # Linear: weights known to be zero (hls4ml ``n_zeros``; 0 when unknown)

    @property
    def macs(self) -> int:
        return self.rows * self.row_macs


def _prod(shape) -> int:
    return int(math.prod(int(s) for s in shape))


def key_length(graph: Graph) -> int | None:
    """Key length of the graph's attention (last dim of the first QK^T output), or None without attention."""
    for layer in graph.layers:
        if layer.op == "MatMul" and layer.role == "attn_scores":
            return int(graph.tensors[layer.output].shape[-1])
    for layer in graph.layers:
        if layer.op == "Softmax" and len(graph.tensors[layer.output].shape) >= 3:
            return int(graph.tensors[layer.output].shape[-1])
    return None


def decode_context(graph: Graph) -> int:
    """KV length a decode step attends to: meta["context"], else the graph's key length, else seq_len."""
    meta = graph.meta
    return int(meta.get("context") or key_length(graph) or meta.get("seq_len") or 1)


def is_decoder(graph: Graph) -> bool:
    return graph.meta.get("kind") == "decoder"


def graph_works(graph: Graph) -> list[Work]:
    """`Work` of every layer: per sequence for encoders, per decoded token for decoders."""
    decode = is_decoder(graph)
    ctx = decode_context(graph) if decode else None
    klen = key_length(graph)
    producer = {out: (i, layer) for i, layer in enumerate(graph.layers) for out in layer.outputs}
    return [layer_work(graph, i, layer, producer, decode, ctx, klen) for i, layer in enumerate(graph.layers)]


def layer_work(graph: Graph, index: int, layer: Layer, producer, decode: bool, ctx: int | None,
               klen: int | None) -> Work:
    t = graph.tensors
    out = t[layer.output].shape
    w = Work(layer.name, layer.op, layer.role, layer.block, "free", input=layer.inputs[0] if layer.inputs else "",
             decode=decode)
    if layer.op == "Embedding" or layer.role == "embed":
        w.kind = "host"
        return w
    if layer.op in FREE_OPS:
        return w
    if layer.op == "Linear":
        k_in, n_out = (int(s) for s in layer.params["weight"].shape)
        w.kind, w.k, w.row_macs, w.weights = "mac", k_in, k_in * n_out, k_in * n_out
        w.bias = int(layer.params["bias"].size) if "bias" in layer.params else 0
        w.rows = 1 if decode else _prod(out[:-1])
        return w
    if layer.op == "MatMul":
        return _matmul_work(graph, layer, w, producer, decode, ctx, klen)
    if layer.op in ROW_OPS:
        w.kind = "row"
        w.line_len = int(out[-1]) if out else 1
        w.lines = _prod(out[:-2]) if decode and len(out) >= 2 else _prod(out[:-1])
        if decode and len(out) >= 4 and layer.op in ("Softmax", "Add", "Mul") and klen and out[-1] == klen:
            w.line_len = ctx  # scores-shaped rows span the KV cache
        w.weights = sum(int(p.size) for p in layer.params.values())  # gamma/beta/const, RoPE cos/sin
        if layer.op in ("Add", "Mul") and "const" not in layer.params and len(layer.inputs) == 2 and not decode:
            _residual_skip(graph, index, layer, w, producer)
        return w
    raise UserError(f"the estimator has no cost model for op {layer.op!r} (layer {layer.name!r}). Supported "
                    f"ops: {', '.join(sorted(set(ROW_OPS) | FREE_OPS | {'Linear', 'MatMul', 'Embedding'}))}.")


def _matmul_work(graph, layer, w, producer, decode, ctx, klen) -> Work:
    t = graph.tensors
    a, b, out = (t[n].shape for n in (layer.inputs[0], layer.inputs[1], layer.output))
    k = int(a[-1])
    heads = _prod(out[:-2])
    w.kind, w.k = "mac", k
    w.rows, w.row_macs = int(out[-2]), heads * k * int(out[-1])
    w.operand_b = _prod(b)
    meta = graph.meta
    gqa = 1.0
    if meta.get("n_kv_heads") and meta.get("n_heads") and len(b) >= 3 and int(b[-3]) == int(meta["n_heads"]):
        gqa = int(meta["n_kv_heads"]) / int(meta["n_heads"])  # expanded heads share one cache entry
    w.operand_b = int(w.operand_b * gqa)
    scores = layer.role == "attn_scores" or (layer.role != "attn_context" and klen is not None
                                              and int(out[-1]) == klen)
    from_softmax = producer.get(layer.inputs[0], (0, None))[1]
    from_softmax = from_softmax is not None and from_softmax.op == "Softmax"
    if decode:
        length = int(out[-1]) if scores else k
        scale = ctx / max(length, 1)
        w.rows = 1
        w.row_macs = int(round(w.row_macs * scale))
        w.operand_b = int(round(w.operand_b * scale))
        if not scores:
            w.k = ctx
    elif scores or not from_softmax:
        w.operand_a = _prod(a)
    return w


def _residual_skip(graph: Graph, index: int, layer: Layer, w: Work, producer) -> None:
    """The earlier-produced input is the skip; it waits whole for the other input when the path between
    them contains a MatMul (an attention barrier)."""
    t = graph.tensors
    if t[layer.inputs[0]].shape != t[layer.inputs[1]].shape:
        return
    order = [producer.get(n, (-1, None))[0] for n in layer.inputs]
    skip, other = (0, 1) if order[0] <= order[1] else (1, 0)
    start = order[skip]
    stack, seen, barrier = [layer.inputs[other]], set(), False
    while stack:
        name = stack.pop()
        if name in seen or name not in producer:
            continue
        seen.add(name)
        i, p = producer[name]
        if i <= start:
            continue
        if p.op == "MatMul":
            barrier = True
            break
        stack.extend(p.inputs)
    shape = t[layer.inputs[skip]].shape
    w.skip, w.skip_whole, w.line_width = _prod(shape), barrier, int(shape[-1])


# ------------------------------------------------------------------------------------------------- settings
@dataclass
class Settings:
    """Hardware choices of one stage (written to ``layer.hw`` by the fit)."""

    reuse_factor: int = 1
    strategy: str = "Resource"          # "Latency" | "Resource" (MAC stages)
    weights: str = "on_chip"            # "on_chip" | "streamed" (Linear weights; MatMul: the KV cache)
    lanes: int = 1                      # row stages
    row_chunk: int = 0                  # rows per streamed weight tile pass (0: all rows)
    engine: str = ""                    # MAC stages with the same engine name time-share one MAC array

    def to_hw(self, work: Work, kernel: str) -> dict:
        if work.kind == "host":
            return {"device": "host"}
        if work.kind == "free":
            return {}
        if work.kind == "row":
            return {"lanes": self.lanes, "kernel": kernel, "row_chunk": self.row_chunk}
        hw = {"reuse_factor": self.reuse_factor, "strategy": self.strategy, "weights": self.weights,
              "row_chunk": self.row_chunk, "kernel": kernel}
        if self.engine:
            hw["engine"] = self.engine
        return hw

    @classmethod
    def from_hw(cls, hw: dict) -> "Settings":
        return cls(int(hw.get("reuse_factor", 1)), hw.get("strategy", "Resource"), hw.get("weights", "on_chip"),
                   int(hw.get("lanes", 1)), int(hw.get("row_chunk", 0)), str(hw.get("engine", "")))


@lru_cache(maxsize=4096)
def valid_reuse_factors(n_in: int, n_out: int) -> tuple[int, ...]:
    """Reuse factors hls4ml accepts for a Dense layer (its ``_validate_reuse_factor``), in closed form:
    RF divides n_in (RF < n_in), or RF = n_in·d with d dividing n_out."""
    def divisors(n):
        small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
        return small + [n // d for d in reversed(small) if d * d != n]
    return tuple(sorted(set(d for d in divisors(n_in) if d < n_in) | {n_in * d for d in divisors(n_out)}))


@dataclass
class Stage:
    """Hardware shared by ``members`` (the same layer of every block, or one layer)."""

    work: Work
    members: list[str]
    instances: int = 1
    uses: int = 1
    settings: Settings = field(default_factory=Settings)

    @property
    def weight_sets(self) -> int:
        return self.uses if self.settings.weights == "on_chip" else 1

    @property
    def executions(self) -> int:
        return self.instances * self.uses


def dense_stage(n_in: int, n_out: int, reuse_factor: int = 1, strategy: str = "Resource", rows: int = 1,
                n_zeros: int = 0, bias: bool = True, name: str = "dense") -> Stage:
    """A one-layer Linear `Stage` (x[rows, n_in] · W[n_in, n_out], weights on chip) for costing a single
    hls4ml Dense layer with `stage_cost` (see ``estimate_layer``)."""
    work = Work(name, "Linear", None, None, "mac", rows=rows, row_macs=n_in * n_out, k=n_in,
                weights=n_in * n_out, bias=n_out if bias else 0, zeros=n_zeros)
    return Stage(work, [name], settings=Settings(reuse_factor=int(reuse_factor), strategy=strategy))


# ---------------------------------------------------------------------------------------------- stage cost
@dataclass
class MemArray:
    """An on-chip array of one stage instance; placed in registers, LUTRAM, BRAM or URAM by `allocate`."""

    what: str            # "weights" | "kv" | "buffer" | "table" | "params"
    width: int           # bits read per cycle
    depth: int
    share: str = ""      # arrays with the same non-empty key are one array (max of the sizes)

    @property
    def bits(self) -> int:
        return self.width * self.depth


@dataclass
class StageCost:
    """Per-instance cost of a stage and its timing per execution (cycles)."""

    dsp: float = 0.0
    lut: float = 0.0
    ff: float = 0.0
    bram18: float = 0.0
    arrays: list[MemArray] = field(default_factory=list)
    ii: int = 0                # cycles between rows (MAC) or lines (row ops)
    interval: int = 0          # cycles per execution
    latency: int = 0           # cycles from first input to last output of one execution
    depth: int = 0             # pipeline depth of one row
    parallel: int = 0          # multipliers (MAC) or lanes (row)
    offchip_bytes: float = 0.0  # bytes read from DDR/HBM per execution
    weight_bytes: float = 0.0   # distinct weight/KV bytes this stage streams per execution (once each)
    engine: dict = field(default_factory=dict)  # the part of the cost a shared MAC engine provides


def acc_bits(a: int, b: int, k: int) -> int:
    return a + b + math.ceil(math.log2(max(k, 2)))


def stage_cost(stage: Stage, board: Board, prec: Precision) -> StageCost:
    """Cost of one instance of ``stage`` (formulas in the module docstring)."""
    w, s = stage.work, stage.settings
    if w.kind in ("free", "host"):
        return StageCost()
    if w.kind == "mac":
        return _mac_cost(stage, board, prec)
    return _row_cost(stage, board, prec)


def _mac_cost(stage: Stage, board: Board, prec: Precision) -> StageCost:
    w, s = stage.work, stage.settings
    a = prec.a_bits
    b = prec.w_bits if w.op == "Linear" else prec.a_bits
    rf = max(1, min(int(s.reuse_factor), w.row_macs))
    dense = w.op == "Linear" and s.weights != "streamed"     # an hls4ml Dense layer (calibrated)
    # hls4ml Latency strategy, and Resource at RF 1 (a depth-1 weight array is partitioned into registers),
    # make the weights constants: HLS drops the products by zero weights and keeps the others in the datapath.
    const = dense and (s.strategy == "Latency" or rf == 1)
    macs = max(1, w.row_macs - w.zeros) if const else w.row_macs
    n_mult = math.ceil(macs / rf)
    acc = prec.acc_bits or acc_bits(a, b, w.k)
    c = StageCost(parallel=n_mult, ii=rf, interval=w.rows * rf)
    log2k = math.ceil(math.log2(max(w.k, 2)))
    if const:
        c.depth = rf + math.ceil(log2k / CONST_ADDS_PER_CYCLE)
    elif dense:
        c.depth = rf + RESOURCE_TAIL
    else:
        c.depth = rf + log2k + MAC_DEPTH
    c.latency = (w.rows - 1) * rf + c.depth
    fabric = const and a + b <= FABRIC_MULT_BITS   # shift-add in LUTs: no LUTs beyond the adder tree's
    c.dsp = 0 if fabric else math.ceil(n_mult / board.packing(a, b)) * board.dsps_per_multiply(a, b)
    c.lut = n_mult * acc + STAGE_LUT
    c.ff = n_mult * (acc + a) + STAGE_FF
    chunk = s.row_chunk if 0 < s.row_chunk < w.rows else w.rows
    passes = math.ceil(w.rows / chunk)
    if w.op == "Linear":
        if s.weights == "streamed":
            c.ff += 2 * n_mult * b
            c.weight_bytes = w.weights * b / 8
            c.offchip_bytes = c.weight_bytes * passes
            c.lut, c.ff, c.bram18 = c.lut + AXI_LUT, c.ff + AXI_FF, c.bram18 + AXI_BRAM18
            _engine_part(c, s, n_mult, acc, a, b)
            if w.rows > 1:
                lanes = min(w.k, max(1, math.isqrt(n_mult)))
                c.arrays.append(MemArray("buffer", lanes * a, math.ceil(2 * chunk * w.k / lanes),
                                         share=f"chunk:{w.input}"))
        elif s.strategy == "Latency":
            c.lut += n_mult * b * math.ceil(rf * stage.weight_sets / 64)
        else:
            c.arrays.append(MemArray("weights", n_mult * b, rf * stage.weight_sets))
        if s.weights != "streamed":
            c.ff += 2 * w.k * a  # hls4ml io_parallel: the input row is a partitioned (register) array
            _engine_part(c, s, n_mult, acc, a, b, axi=False)
        c.lut += math.ceil(w.bias * b * stage.weight_sets / 64)
        return c
    # MatMul: activation x activation
    width = min(n_mult, max(w.operand_b, 1))
    if w.decode and s.weights == "streamed":
        c.ff += 2 * n_mult * a
        c.weight_bytes = c.offchip_bytes = w.operand_b * a / 8
        c.lut, c.ff, c.bram18 = c.lut + AXI_LUT, c.ff + AXI_FF, c.bram18 + AXI_BRAM18
        _engine_part(c, s, n_mult, acc, a, b)
    elif w.decode:
        _engine_part(c, s, n_mult, acc, a, b, axi=False)
        c.arrays.append(MemArray("kv", width * a, math.ceil(w.operand_b * stage.weight_sets / width)))
    else:
        c.arrays.append(MemArray("buffer", width * a, math.ceil(2 * w.operand_b / width)))
    if w.operand_a:
        lanes = min(w.k, n_mult)
        c.arrays.append(MemArray("buffer", lanes * a, math.ceil(2 * w.operand_a / lanes)))
    return c


def _engine_part(c: StageCost, s: Settings, n_mult: int, acc: int, a: int, b: int, axi: bool = True) -> None:
    """Record what a shared matrix-vector engine provides: multipliers, adder trees, tile registers and the
    AXI read master (streamed stages)."""
    if s.engine:
        c.engine = {"dsp": c.dsp, "lut": n_mult * acc + AXI_LUT * axi,
                    "ff": n_mult * (acc + a) + (2 * n_mult * b + AXI_FF) * axi, "bram18": AXI_BRAM18 * axi}


def _row_cost(stage: Stage, board: Board, prec: Precision) -> StageCost:
    w, s = stage.work, stage.settings
    a = prec.a_bits
    dsp_lane, passes, depth_op, lut_lane = ROW_OPS[w.op]
    lanes = max(1, min(int(s.lanes), w.line_len))
    ii = math.ceil(w.line_len / lanes)
    c = StageCost(parallel=lanes, ii=ii, interval=w.lines * ii)
    c.depth = passes * ii + depth_op
    c.latency = (w.lines - 1) * ii + c.depth
    c.dsp = dsp_lane * lanes
    c.lut = lanes * lut_lane(a) + STAGE_LUT
    c.ff = lanes * (2 * a + 16) + STAGE_FF
    tables = {"LayerNorm": 1, "RMSNorm": 1, "Softmax": math.ceil(lanes / 2) + 1,
              "GELU": math.ceil(lanes / 2), "SiLU": math.ceil(lanes / 2)}.get(w.op, 0)
    if tables:
        c.arrays.append(MemArray("table", tables * TABLE_BITS, TABLE_DEPTH))
    if passes > 1:
        c.arrays.append(MemArray("buffer", lanes * a, 2 * ii))
    if w.weights:
        c.arrays.append(MemArray("params", lanes * prec.w_bits,
                                 math.ceil(w.weights * stage.weight_sets / lanes)))
    if w.skip:
        if w.skip_whole:
            c.arrays.append(MemArray("buffer", lanes * a, math.ceil(2 * w.skip / lanes)))
        else:
            chunk = s.row_chunk if s.row_chunk > 0 else 1
            rows = min(w.skip // max(w.line_width, 1), 2 * chunk + 8)
            c.arrays.append(MemArray("buffer", lanes * a, math.ceil(rows * w.line_width / lanes)))
    return c


# ------------------------------------------------------------------------------------------ memory mapping
BRAM18_MODES = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))
WORD_PACKING = (1, 2, 4, 8, 16, 32, 64)


def bram18_blocks(width: int, depth: int) -> int:
    """BRAM18s for a width x depth array: best aspect ratio (512x36 ... 16Kx1), with p logical words packed
    in one physical word (width p·w, depth ceil(d/p)) when that needs fewer blocks (sequential access)."""
    return min(math.ceil(p * width / wd) * math.ceil(math.ceil(depth / p) / dp)
               for p in WORD_PACKING if p <= depth for dp, wd in BRAM18_MODES)


def uram_blocks(width: int, depth: int) -> int:
    """URAMs (4096 x 72) for a width x depth array, with the same word packing."""
    return min(math.ceil(p * width / 72) * math.ceil(math.ceil(depth / p) / 4096)
               for p in WORD_PACKING if p <= depth)


@dataclass
class Placement:
    """Where an array went and what it costs per instance: registers, LUTRAM, or BRAM36 and/or URAM (an
    array may be split by columns between the two)."""

    ff: float = 0.0
    lut: float = 0.0
    bram36: float = 0.0
    uram: float = 0.0


def allocate(arrays: list[tuple[MemArray, int]], board: Board, budget: float,
             fixed_bram36: float = 0.0) -> list[Placement]:
    """Place (array, instances) pairs: registers for depth <= 2; LUTRAM for <= 4 kbit or depth <= 64;
    otherwise BRAM. While BRAM (with ``fixed_bram36`` used elsewhere) is over ``budget``, arrays move to URAM,
    best BRAM-saved-per-URAM first, whole or as a fraction of their columns, as far as URAM's budget allows."""
    places: list[Placement] = []
    movable = []
    for i, (arr, n) in enumerate(arrays):
        if arr.depth <= 2:
            places.append(Placement(ff=arr.bits))
        elif (arr.width <= ROM_LUT_MAX_WIDTH and arr.depth <= ROM_LUT_MAX_DEPTH if arr.what == "weights"
              else arr.bits <= 4096 or arr.depth <= 64):
            places.append(Placement(lut=arr.width * math.ceil(arr.depth / 64)))
        else:
            places.append(Placement(bram36=bram18_blocks(arr.width, arr.depth) / 2))
            movable.append(i)
    target = budget * board.bram36
    bram = fixed_bram36 + sum(p.bram36 * arrays[i][1] for i, p in enumerate(places))
    if not board.uram or bram <= target:
        return places
    uram_left = budget * board.uram
    full = {i: uram_blocks(arrays[i][0].width, arrays[i][0].depth) for i in movable}
    for i in sorted(movable, key=lambda i: -places[i].bram36 / full[i]):
        if bram <= target or uram_left < 1:
            break
        n, b, u = arrays[i][1], places[i].bram36, full[i]
        share = min(1.0, (bram - target) / (b * n), uram_left / (u * n))
        if share <= 0:
            continue
        uram = math.ceil(share * u)
        if uram * n > uram_left:
            continue
        moved = min(1.0, uram / u)
        places[i] = Placement(bram36=b * (1 - moved), uram=uram)
        bram -= b * moved * n
        uram_left -= uram * n
    return places


# ------------------------------------------------------------------------------------------------- design
@dataclass
class StageEstimate:
    stage: Stage
    cost: StageCost
    dsp: float = 0.0
    bram36: float = 0.0
    uram: float = 0.0
    lut: float = 0.0
    ff: float = 0.0

    def row(self) -> dict:
        """JSON-able summary of the stage (all figures are estimates)."""
        w, s, c = self.stage.work, self.stage.settings, self.cost
        d = {"layer": w.layer, "op": w.op, "role": w.role, "members": len(self.stage.members),
             "instances": self.stage.instances, "uses": self.stage.uses, "kind": w.kind,
             "dsp": self.dsp, "bram36": self.bram36, "uram": self.uram, "lut": self.lut, "ff": self.ff,
             "ii": c.ii, "interval": c.interval, "latency": c.latency, "macs": w.macs,
             "offchip_bytes": c.offchip_bytes * self.stage.executions}
        if w.kind == "mac":
            d.update(reuse_factor=s.reuse_factor, strategy=s.strategy, weights=s.weights,
                     multipliers=c.parallel, row_chunk=s.row_chunk)
        elif w.kind == "row":
            d.update(lanes=c.parallel)
        return d


@dataclass
class DesignEstimate:
    """A design's estimated resources and speed on a board (all estimates; see the module docstring)."""

    kind: str                         # "encoder" | "decoder"
    mode: str                         # "on_chip" | "streamed" | "mixed"
    kernel: str                       # "block" | "shared"
    board: Board
    precision: Precision
    clock_mhz: float
    budget: float
    stages: list[StageEstimate]
    totals: dict[str, float]
    items_per_s: float                # sequences/s (encoder) or tokens/s (decoder)
    latency_s: float
    compute_s: float                  # compute-limited time per item
    memory_s: float                   # bandwidth-limited time per item
    offchip_bytes: float              # bytes read from DDR/HBM per item, as designed (chunk re-reads included)
    streamed_bytes: float             # distinct weight/KV bytes kept off chip, read once per item
    offchip_storage: float            # bytes the design keeps in DDR/HBM
    bandwidth_gbs: float              # effective bandwidth used for memory_s
    row_chunk: int = 0

    @property
    def unit(self) -> str:
        return "tokens/s" if self.kind == "decoder" else "sequences/s"

    def utilisation(self) -> dict[str, float]:
        avail = self.board.resources()
        return {r: (self.totals[r] / avail[r] if avail[r] else (0.0 if self.totals[r] == 0 else math.inf))
                for r in RESOURCES}

    def over_budget(self) -> dict[str, float]:
        """Resources above the budget -> utilisation fraction; plus ``memory`` if DDR/HBM is too small."""
        over = {r: u for r, u in self.utilisation().items() if u > self.budget + 1e-12}
        if self.offchip_storage > self.budget * self.board.memory_gb * 1e9:
            over["memory"] = self.offchip_storage / (self.board.memory_gb * 1e9)
        return over

    @property
    def fits(self) -> bool:
        return not self.over_budget()

    def breakdown(self) -> dict[str, float]:
        """On-chip memory (BRAM36-equivalents, URAM counted as 8) by what it holds."""
        return dict(self._breakdown)

    _breakdown: dict = field(default_factory=dict)


def resolve_clock(board: Board, clock_mhz: float | None) -> float:
    return float(clock_mhz) if clock_mhz else board.clock_mhz


def effective_bandwidth(board: Board, clock_mhz: float) -> float:
    """Bytes/s the estimate assumes: bandwidth_efficiency · min(BW_peak, AXI port cap at f)."""
    return board.bandwidth_efficiency * board.bandwidth_gbs(clock_mhz) * 1e9


def estimate_stages(stages: list[Stage], kind: str, kernel: str, board: Board, prec: Precision,
                    clock_mhz: float, budget: float = 0.8) -> DesignEstimate:
    """Assemble per-stage costs into a design estimate (time model in the module docstring)."""
    f = clock_mhz * 1e6
    bw = effective_bandwidth(board, clock_mhz)
    costs = [stage_cost(st, board, prec) for st in stages]
    # one entry per distinct array; shared arrays (same key) are merged to their maximum
    arrays: list[tuple[MemArray, int]] = []
    owners: list[int] = []
    shared: dict[str, int] = {}
    for i, (st, c) in enumerate(zip(stages, costs)):
        for arr in c.arrays:
            if arr.share and arr.share in shared:
                j = shared[arr.share]
                old = arrays[j][0]
                arrays[j] = (MemArray(old.what, max(old.width, arr.width), max(old.depth, arr.depth), old.share),
                             arrays[j][1])
                continue
            if arr.share:
                shared[arr.share] = len(arrays)
            arrays.append((arr, st.instances))
            owners.append(i)
    fixed = SHELL["bram18"] / 2 + sum(c.bram18 / 2 * st.instances for st, c in zip(stages, costs))
    places = allocate(arrays, board, budget, fixed)
    ests = []
    for st, c in zip(stages, costs):
        ests.append(StageEstimate(st, c, dsp=c.dsp * st.instances, bram36=c.bram18 / 2 * st.instances,
                                  lut=c.lut * st.instances, ff=c.ff * st.instances))
    _share_engines(ests)
    breakdown: dict[str, float] = {}
    for (arr, n), owner, p in zip(arrays, owners, places):
        e = ests[owner]
        e.ff, e.lut = e.ff + p.ff * n, e.lut + p.lut * n
        e.bram36, e.uram = e.bram36 + p.bram36 * n, e.uram + p.uram * n
        breakdown[arr.what] = breakdown.get(arr.what, 0.0) + (p.bram36 + 8 * p.uram) * n
    totals = {r: sum(getattr(e, r) for e in ests) for r in RESOURCES}
    totals["lut"] += SHELL["lut"]
    totals["ff"] += SHELL["ff"]
    totals["bram36"] += SHELL["bram18"] / 2
    totals = {r: (math.ceil(v - 1e-9) if r != "bram36" else math.ceil(v * 2 - 1e-9) / 2) for r, v in totals.items()}

    offchip = sum(c.offchip_bytes * st.executions for st, c in zip(stages, costs))
    streamed = sum(c.weight_bytes * st.executions for st, c in zip(stages, costs))
    storage = streamed  # each execution streams a distinct block's weights / KV cache
    if kind == "decoder":
        per_exec = [max(c.latency / f, c.offchip_bytes / bw) for c in costs]
        t_item = sum(t * st.executions for t, st in zip(per_exec, stages))
        compute_s = sum(c.latency / f * st.executions for st, c in zip(stages, costs))
        memory_s = offchip / bw
        latency = t_item
    else:
        compute_s = max((c.interval * st.uses / f for st, c in zip(stages, costs)), default=0.0)
        memory_s = offchip / bw
        t_item = max(compute_s, memory_s)
        latency = _encoder_latency(stages, costs, f)
    modes = {st.settings.weights for st in stages if st.work.kind == "mac" and (st.work.op == "Linear" or kind == "decoder")}
    mode = modes.pop() if len(modes) == 1 else ("mixed" if modes else "on_chip")
    chunks = {st.settings.row_chunk for st in stages if st.settings.row_chunk}
    return DesignEstimate(kind, mode, kernel, board, prec, clock_mhz, budget, ests, totals,
                          1.0 / t_item if t_item > 0 else math.inf, latency, compute_s, memory_s, offchip,
                          streamed, storage, bw / 1e9, max(chunks) if chunks else 0, _breakdown=breakdown)


def _share_engines(ests: list[StageEstimate]) -> None:
    """Stages on one engine run one after another (decode): the engine is counted once, at the size of its
    largest user, and booked to that stage."""
    groups: dict[str, list[StageEstimate]] = {}
    for e in ests:
        if e.cost.engine:
            groups.setdefault(e.stage.settings.engine, []).append(e)
    for members in groups.values():
        for e in members:
            n = e.stage.instances
            e.dsp -= e.cost.engine["dsp"] * n
            e.lut -= e.cost.engine["lut"] * n
            e.ff -= e.cost.engine["ff"] * n
            e.bram36 -= e.cost.engine["bram18"] / 2 * n
        owner = max(members, key=lambda e: e.cost.engine["dsp"])
        for r in ("dsp", "lut", "ff"):
            setattr(owner, r, getattr(owner, r) + max(e.cost.engine[r] for e in members))
        owner.bram36 += max(e.cost.engine["bram18"] for e in members) / 2


def _encoder_latency(stages: list[Stage], costs: list[StageCost], f: float) -> float:
    block_stages = [(st, c) for st, c in zip(stages, costs) if st.work.block is not None and st.work.kind != "free"]
    other = [(st, c) for st, c in zip(stages, costs) if st.work.block is None and st.work.kind in ("mac", "row")]
    cycles = sum(c.latency for _, c in other)
    if block_stages:
        n_exec = max(st.executions for st, _ in block_stages)
        per_block = 2 * max(c.interval for _, c in block_stages) + sum(c.depth for _, c in block_stages)
        cycles += n_exec * per_block
    return cycles / f


# ------------------------------------------------------------------------------------------------ stages
def block_signature(graph: Graph, layers: list[Layer]) -> list[tuple]:
    t = graph.tensors
    return [(l.op, l.role, tuple(t[l.output].shape), tuple(sorted((k, tuple(v.shape)) for k, v in l.params.items())))
            for l in layers]


def identical_blocks(graph: Graph) -> bool:
    blocks = graph.blocks()
    if len(blocks) < 2:
        return bool(blocks)
    sigs = [block_signature(graph, layers) for layers in blocks.values()]
    return all(s == sigs[0] for s in sigs[1:])


def build_stages(graph: Graph, works: list[Work], kernel: str) -> list[Stage]:
    """Group layers into stages: the same position in every block shares a stage (block kernel: one instance
    per block; shared kernel: one instance used by every block); other layers are single stages."""
    by_name = {w.layer: w for w in works}
    blocks = graph.blocks()
    stages: list[Stage] = []
    grouped: set[str] = set()
    if blocks and identical_blocks(graph):
        n = len(blocks)
        columns = list(zip(*blocks.values()))
        first_block_start = graph.layers.index(next(iter(blocks.values()))[0])
        for l in graph.layers[:first_block_start]:
            if l.block is None:
                stages.append(Stage(by_name[l.name], [l.name]))
                grouped.add(l.name)
        for col in columns:
            members = [l.name for l in col]
            grouped.update(members)
            inst, uses = (1, n) if kernel == "shared" else (n, 1)
            stages.append(Stage(by_name[col[0].name], members, inst, uses))
    for l in graph.layers:
        if l.name not in grouped:
            stages.append(Stage(by_name[l.name], [l.name]))
    return stages


# ------------------------------------------------------------------------------------------ from layer.hw
def estimate_graph(graph: Graph, board: Board, precision: str | None = None, clock_mhz: float | None = None,
                   budget: float = 0.8) -> DesignEstimate:
    """Estimate the design described by the ``layer.hw`` settings already in ``graph`` (written by
    ``fit.choose_hardware`` or by hand). Compute layers without settings get RF 1 / 1 lane, on chip."""
    works = graph_works(graph)
    kernels = {l.hw.get("kernel") for l in graph.layers if l.block is not None and l.hw.get("kernel")}
    kernel = "shared" if kernels == {"shared"} and identical_blocks(graph) else "block"
    stages = build_stages(graph, works, kernel)
    for st in stages:
        st.settings = Settings.from_hw(graph.layer(st.members[0]).hw)
    return estimate_stages(stages, "decoder" if is_decoder(graph) else "encoder", kernel, board,
                           Precision.of(precision), resolve_clock(board, clock_mhz), budget)


def has_settings(graph: Graph) -> bool:
    """True when every compute layer carries fit settings (a compiled BUILD)."""
    compute = [l for l in graph.layers if l.op == "Linear" or l.op == "MatMul"]
    return bool(compute) and all("reuse_factor" in l.hw for l in compute)

