"""onnxruntime's contrib Attention / MultiHeadAttention, every mask form, causal or not: IR == onnxruntime.

The zoo (test_zoo.py) meets these ops only as the optimizer writes them for BERT (bidirectional, no scale
attribute); GPT-2-style fusions (unidirectional=1), explicit scales, unequal v width and the three mask
forms are built here as one-node graphs around a random input.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fpgaformer.compiler.compare import compare
from fpgaformer.compiler.frontend import import_static

SEQ, D, HEADS = 8, 16, 2


def _model(op: str, causal: bool, mask: str, scale: float | None, v_width: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    widths = [D, D, v_width]
    weight = (rng.standard_normal((D, sum(widths))) * 0.3).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(weight, "W"),
             onnx.numpy_helper.from_array((rng.standard_normal(sum(widths)) * 0.1).astype(np.float32), "b"),
             onnx.numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = []
    mask_name = ""
    if mask != "none":
        nodes.append(helper.make_node("Cast", ["attention_mask"], ["mask32"], to=TensorProto.INT32))
        mask_name = "mask32"
        if mask == "lengths":
            nodes.append(helper.make_node("ReduceSum", ["mask32", "axis1"], ["lengths"], keepdims=0))
            mask_name = "lengths"
    attrs = {"num_heads": HEADS, "unidirectional": int(causal)}
    if scale is not None:
        attrs["scale"] = scale
    if op == "Attention":
        if v_width != D:
            attrs["qkv_hidden_sizes"] = widths
        nodes.append(helper.make_node("Attention", ["x", "W", "b", mask_name], ["y"], domain="com.microsoft",
                                      **attrs))
    else:
        start = 0
        for role, width in zip("qkv", widths):
            inits.append(onnx.numpy_helper.from_array(weight[:, start:start + width], f"W{role}"))
            nodes.append(helper.make_node("MatMul", ["x", f"W{role}"], [role]))
            start += width
        nodes.append(helper.make_node("MultiHeadAttention", ["q", "k", "v", "b", mask_name], ["y"],
                                      domain="com.microsoft", **attrs))
    graph = helper.make_graph(
        nodes, "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, D]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, SEQ])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, HEADS * (v_width // HEADS)])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)])


@pytest.mark.parametrize("mask", ["none", "raw", "lengths"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "unidirectional"])
@pytest.mark.parametrize("op, scale, v_width", [("Attention", None, D), ("Attention", 0.3, 2 * D),
                                                ("MultiHeadAttention", None, D)])
def test_contrib_attention_matches_onnxruntime(op, scale, v_width, causal, mask, tmp_path):
    path = tmp_path / "attention.onnx"
    onnx.save(_model(op, causal, mask, scale, v_width), str(path))
    graph, static_model = import_static(path, seq_len=SEQ)

    assert not any(l.op in ("Attention", "MultiHeadAttention") for l in graph.layers)
    softmax = [l for l in graph.layers if l.op == "Softmax"]
    assert len(softmax) == 1
    masks = [l for l in graph.layers if l.role == "attn_mask"]
    if mask != "none":
        assert [m.op for m in masks] == ["PaddingMask"] and masks[0].inputs == ["attention_mask"]
        assert masks[0].attrs["causal"] == causal
    else:
        assert [m.op for m in masks] == (["Constant"] if causal else [])
    assert graph.meta["kind"] == ("decoder" if causal else "encoder")
    assert graph.meta["n_heads"] == HEADS and graph.meta["head_dim"] == D // HEADS

    keep = np.ones((1, SEQ), np.int64)
    keep[0, -3:] = 0  # right padding: the one padding the length form describes
    x = np.random.default_rng(1).standard_normal((1, SEQ, D)).astype(np.float32)
    diffs = {d.name: d for d in compare(graph, static_model, {"x": x, "attention_mask": keep})}
    assert diffs["y"].max_abs_err <= 1e-5 * max(1.0, diffs["y"].ref_max_abs), diffs["y"]
