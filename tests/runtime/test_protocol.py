"""The overlay contract: packing against an independent bit-level reference, the register layout, the
weight image round trip."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaformer.host import protocol as P
from fpgaformer.host.fixed import FixedType


def _reference_bytes(codes, lane):
    """Independent reference: Python ints, two's complement, little-endian, lane 0 first."""
    out = b""
    for c in codes:
        out += (int(c) & ((1 << lane) - 1)).to_bytes(lane // 8, "little")
    return out


@pytest.mark.parametrize("width,signed", [(1, True), (5, False), (8, True), (12, True), (16, False), (18, True),
                                          (31, True), (32, False), (40, True), (63, False)])
def test_pack_unpack_round_trip_and_layout(width, signed):
    rng = np.random.default_rng(width)
    t = FixedType(width, width // 2, signed)
    codes = rng.integers(t.min_code, t.max_code, size=37, endpoint=True)
    lane = P.lane_bits(width)
    assert lane in (8, 16, 32, 64) and lane >= width and (lane == 8 or lane // 2 < width)
    data = P.pack(codes, lane)
    assert data.tobytes() == _reference_bytes(codes, lane)
    np.testing.assert_array_equal(P.unpack(data, lane, codes.size, width, signed), codes)


def test_unpack_ignores_bits_above_the_width():
    # a 12-bit code -5 zero-extended in its 16-bit lane (hardware that does not sign-extend) still reads -5
    data = np.frombuffer(((-5) & 0xFFF).to_bytes(2, "little"), np.uint8)
    assert P.unpack(data, 16, 1, 12, True)[0] == -5


def test_record_pads_to_whole_beats():
    rec = P.Record((P.Field("a", (3,), 32), P.Field("b", (5,), 16, FixedType(16, 4))), beat=8)
    assert rec.nbytes == 24  # 12 + 10 bytes -> 3 beats of 8
    data = rec.pack({"a": np.array([1, -2, 3]), "b": np.arange(-2, 3)})
    assert data[22:].tolist() == [0, 0]
    back = rec.unpack(data)
    assert back["a"].tolist() == [1, -2, 3] and back["b"].tolist() == [-2, -1, 0, 1, 2]


def test_kernel_registers_follow_the_vitis_hls_layout():
    regs = P.kernel_registers()
    assert [regs[n]["offset"] for n in ("CTRL", "GIER", "IP_IER", "IP_ISR")] == [0, 4, 8, 12]
    # 32-bit scalars take 8 bytes, 64-bit pointers 12 (low, high, reserved), outputs data + ap_vld
    assert [regs[n]["offset"] for n in ("mode", "n_items", "position", "flags")] == [0x10, 0x18, 0x20, 0x28]
    assert (regs["weights_1"]["offset"], regs["weights_2"]["offset"]) == (0x30, 0x34)
    assert (regs["kv_cache_1"]["offset"], regs["kv_cache_2"]["offset"]) == (0x3C, 0x40)
    assert (regs["design_id"]["offset"], regs["design_id_ctrl"]["offset"]) == (0x48, 0x4C)
    offsets = [r["offset"] for r in regs.values()]
    assert len(offsets) == len(set(offsets))


def test_weight_image_round_trip_gives_the_same_emulator(char_build):
    from fpgaformer.host.artifact import load_artifact
    from fpgaformer.host.emulator import Emulator

    build = char_build("w16a16")
    graph, manifest = load_artifact(build)
    contract = P.Contract.load(build)
    image = P.weight_image(graph, contract)
    assert image.size == contract.weights_bytes
    decoded = P.decode_weight_image(image, contract)
    for key, codes, t in P.quantized_params(graph):
        np.testing.assert_array_equal(decoded[key][0], codes)
    again = P.graph_with_weights(graph, decoded)
    feeds = {"input_ids": np.arange(64)[None] % 20, "attention_mask": np.ones((1, 64), np.int64)}
    np.testing.assert_array_equal(Emulator(again).run(feeds)[graph.outputs[0]],
                                  Emulator(graph).run(feeds)[graph.outputs[0]])


def test_contract_refuses_a_float_graph(char_model, tmp_path):
    from fpgaformer.compiler.cli import compile_model
    from fpgaformer.host.artifact import load_artifact

    compile_model(char_model[2], tmp_path / "f", seq_len=64, precision=None, log=lambda *a: None)
    graph, manifest = load_artifact(tmp_path / "f")
    with pytest.raises(P.ContractError, match="float graph"):
        P.make_contract(graph, manifest)
