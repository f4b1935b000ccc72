"""A QDQ model made by onnxruntime.quantization: imported, emulated, equal to onnxruntime within one LSB."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fpgaformer.compiler.compare import OrtProbe
from fpgaformer.compiler.frontend import import_static
from fpgaformer.compiler.quantize import quantize
from fpgaformer.host.emulator import Emulator

SEQ, D, F = 8, 16, 32


def float_block(path):
    """x -> Linear -> LayerNorm -> Linear -> + x (a residual feed-forward piece of a transformer block)."""
    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("W1", rng.standard_normal((D, F)) * 0.3), ("b1", rng.standard_normal(F) * 0.1),
        ("g", 1 + rng.standard_normal(F) * 0.1), ("be", rng.standard_normal(F) * 0.1),
        ("W2", rng.standard_normal((F, D)) * 0.2), ("b2", rng.standard_normal(D) * 0.1)]]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"], name="fc1"),
             helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
             helper.make_node("LayerNormalization", ["h1", "g", "be"], ["h2"], name="ln", axis=-1, epsilon=1e-5),
             helper.make_node("MatMul", ["h2", "W2"], ["h3"], name="fc2"),
             helper.make_node("Add", ["h3", "b2"], ["h4"], name="fc2_bias"),
             helper.make_node("Add", ["h4", "x"], ["y"], name="residual")]
    graph = helper.make_graph(nodes, "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, D])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_qdq_model_emulates_within_one_lsb(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(1)
    calib = rng.standard_normal((32, 1, SEQ, D)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": c} for c in calib])

        def get_next(self):
            return next(self.items, None)

    src, dst = float_block(tmp_path / "f.onnx"), tmp_path / "qdq.onnx"
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": True})
    ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops

    graph, model = import_static(dst, seq_len=SEQ)
    fq = [l for l in graph.layers if l.op == "FakeQuant"]
    assert fq, "activation QDQ pairs must be recognised"
    q = quantize(graph, "w16a16", {"x": calib}, model)
    assert any("not a fixed-point grid" in n for n in q.meta.get("notes", []))  # ORT scales are max/127

    out = graph.outputs[0]
    out_scale = float(next(l for l in graph.layers if l.output == out).params["scale"]) \
        if any(l.output == out and l.op == "FakeQuant" for l in graph.layers) else None
    probe = OrtProbe(onnx.load(str(dst)), [out])
    emu = Emulator(q)
    tests = rng.standard_normal((64, 1, SEQ, D)).astype(np.float32)
    diffs, lsb = [], out_scale
    for x in tests:
        ours = emu.outputs({"x": x})[out]
        theirs = probe.run({"x": x})[out]
        diffs.append(np.abs(ours - theirs).ravel())
    diffs = np.concatenate(diffs)
    assert lsb is not None
    within = np.mean(diffs <= lsb * 1.0001)
    assert within >= 0.999, f"{within:.5f} of outputs within one LSB ({lsb:.4g})"


@pytest.mark.parametrize("form", ["qdq", "qonnx"])
def test_power_of_two_scales_become_fixed_point_types(tmp_path, form):
    """scale 2**-4, zero point 0: the int8 grid is ap_fixed<8,4>; emulation then equals onnxruntime exactly."""
    rng = np.random.default_rng(2)
    w = onnx.numpy_helper.from_array((rng.standard_normal((D, D)) * 0.25).astype(np.float32), "W")
    s = onnx.numpy_helper.from_array(np.array(2.0 ** -4, np.float32), "s")
    if form == "qdq":
        z = onnx.numpy_helper.from_array(np.array(0, np.int8), "z")
        nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
                 helper.make_node("QuantizeLinear", ["h", "s", "z"], ["hq"], name="q"),
                 helper.make_node("DequantizeLinear", ["hq", "s", "z"], ["y"], name="dq")]
        opsets = [helper.make_opsetid("", 17)]
    else:
        z = onnx.numpy_helper.from_array(np.array(0.0, np.float32), "z")
        b = onnx.numpy_helper.from_array(np.array(8.0, np.float32), "b")
        nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
                 helper.make_node("Quant", ["h", "s", "z", "b"], ["y"], name="quant", domain="qonnx.custom_op.general",
                                  signed=1, narrow=0, rounding_mode="ROUND")]
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("qonnx.custom_op.general", 1)]
    inits = [w, s, z] + ([b] if form == "qonnx" else [])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, D])], inits)
    model = helper.make_model(graph, opset_imports=opsets)
    path = tmp_path / f"{form}.onnx"
    onnx.save(model, str(path))
    if form == "qonnx":  # onnxruntime has no QONNX op: read and lower without running it
        from fpgaformer.compiler.frontend import lower
        from fpgaformer.compiler.frontend.view import OnnxView

        model = onnx.shape_inference.infer_shapes(model)
        graph_ir = lower(OnnxView(model))
    else:
        graph_ir, _ = import_static(path, seq_len=SEQ)
    fq = next(l for l in graph_ir.layers if l.op == "FakeQuant")
    assert (fq.attrs["qmin"], fq.attrs["qmax"]) == (-128, 127)
    x = rng.standard_normal((4, 1, SEQ, D)).astype(np.float32)
    q = quantize(graph_ir, "w16a16", {"x": x}, None)
    t = q.tensors[fq.output].fixed
    assert (t["width"], t["integer"]) == (8, 4) and not q.meta.get("notes")
    from fpgaformer.host.reference import fake_quant

    emu = Emulator(q)
    for xi in x:  # exact: the float reference computed on the emulator's own Linear output grid
        env = emu.run_float({"x": xi})
        want = fake_quant(env[fq.inputs[0]], 2.0 ** -4, 0, -128, 127)
        np.testing.assert_array_equal(env[fq.output], want)
