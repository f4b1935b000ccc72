"""One-to-one lowerings: ONNX ops that are already IR ops (after constant folding, with static shapes).

* Add / Mul with a variable and a constant -> Add / Mul with param ``const``; Sub(x, c) -> Add(-c);
  Div(x, c) -> Mul(1/c). Two variables: Add / Mul.
* MatMul of two activations -> MatMul (QK^T, P.V).
* Softmax on the last axis -> Softmax.
* Reshape / Unsqueeze / Squeeze / Flatten -> Reshape (target = the static output shape);
  Transpose, Expand, Slice, Concat -> the IR op of the same name; Gather of a contiguous run of constant
  indices from an activation -> Slice.
* Dropout, Identity and float->float Cast produce the value they read: aliases; so does an integer Cast
  (int64 -> int32) of a graph input such as token ids or a 0/1 mask.
* Where(IsNaN(p), 0, p) after a Softmax (torch's SDPA guard for fully masked rows) is the identity for every
  row with at least one unmasked key: alias.
"""

from __future__ import annotations

import numpy as np
import onnx

from ....host.graph import Layer
from ..engine import Match, rule
from ..view import OnnxView


def _layer(node: onnx.NodeProto, op: str, inputs: list[str], **attrs) -> Layer:
    return Layer(node.name, op, inputs, [node.output[0]], attrs=attrs)


@rule("elementwise_const", seeds={"Add", "Mul", "Sub", "Div"})
def elementwise(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    var, const = view.split_const(node)
    a, b = node.input[0], node.input[1]
    if var is None:
        if view.is_const(a) or view.is_const(b) or node.op_type not in ("Add", "Mul"):
            return None
        return Match([node], [_layer(node, node.op_type, [a, b])])
    c = view.const[const].astype(np.float32)
    if node.op_type == "Sub":
        if const != b:
            return None  # c - x: not an IR op
        op, c = "Add", -c
    elif node.op_type == "Div":
        if const != b:
            return None
        op, c = "Mul", (1.0 / c.astype(np.float64)).astype(np.float32)
    else:
        op = node.op_type
    layer = _layer(node, op, [var])
    layer.params["const"] = c
    return Match([node], [layer])


@rule("matmul", seeds={"MatMul"})
def matmul(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    a, b = node.input
    if view.is_const(a) or view.is_const(b):
        return None
    return Match([node], [_layer(node, "MatMul", [a, b])])


@rule("softmax", seeds={"Softmax"})
def softmax(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    rank = len(view.shape[node.input[0]])
    axis = view.attrs(node).get("axis", -1)
    if axis % rank != rank - 1:
        return None
    return Match([node], [_layer(node, "Softmax", [node.input[0]])])


@rule("reshape", seeds={"Reshape", "Unsqueeze", "Squeeze", "Flatten"})
def reshape(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    out = node.output[0]
    if view.is_const(node.input[0]):
        return None
    return Match([node], [_layer(node, "Reshape", [node.input[0]], shape=list(view.shape[out]))])


@rule("transpose", seeds={"Transpose"})
def transpose(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    rank = len(view.shape[node.input[0]])
    perm = view.attrs(node).get("perm", list(range(rank))[::-1])
    return Match([node], [_layer(node, "Transpose", [node.input[0]], perm=[int(p) for p in perm])])


@rule("expand", seeds={"Expand"})
def expand(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    if view.is_const(node.input[0]):
        return None
    return Match([node], [_layer(node, "Expand", [node.input[0]], shape=list(view.shape[node.output[0]]))])


@rule("slice", seeds={"Slice"})
def slice_(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    x = node.input[0]
    if not all(view.is_const(i) for i in node.input[1:] if i):
        return None
    rank = len(view.shape[x])
    starts = view.const[node.input[1]].tolist()
    ends = view.const[node.input[2]].tolist()
    axes = view.const[node.input[3]].tolist() if len(node.input) > 3 and node.input[3] else list(range(len(starts)))
    steps = view.const[node.input[4]].tolist() if len(node.input) > 4 and node.input[4] else [1] * len(starts)
    big = np.iinfo(np.int64).max
    ends = [None if e >= big // 2 else (None if e <= -big // 2 else e) for e in ends]
    return Match([node], [_layer(node, "Slice", [x], axes=[a % rank for a in axes], starts=starts, ends=ends,
                                 steps=steps)])


@rule("concat", seeds={"Concat"})
def concat(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    if any(view.is_const(i) for i in node.input):
        return None
    rank = len(view.shape[node.output[0]])
    return Match([node], [_layer(node, "Concat", list(node.input), axis=view.attrs(node)["axis"] % rank)])


@rule("split", seeds={"Split"})
def split(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    """Split -> one Slice per output (e.g. GPT-2's packed QKV projection)."""
    x = node.input[0]
    rank = len(view.shape[x])
    axis = view.attrs(node).get("axis", 0) % rank
    layers, start = [], 0
    for out in node.output:
        size = view.shape[out][axis]
        layers.append(Layer(f"{node.name}:{out}", "Slice", [x], [out],
                            attrs={"axes": [axis], "starts": [start], "ends": [start + size], "steps": [1]}))
        start += size
    return Match([node], layers)


def _float_cast(view: OnnxView, src: str, out: str) -> bool:
    return view.dtype.get(src, np.dtype("i8")).kind == "f" == view.dtype[out].kind


def _id_cast(view: OnnxView, src: str, out: str) -> bool:
    """int64 -> int32 (or wider) of a graph input (token ids, a 0/1 mask), as onnxruntime's fused ops want:
    every value such an input takes survives the cast."""
    kinds = (view.dtype.get(src, np.dtype("f4")), view.dtype.get(out, np.dtype("f4")))
    return src in view.inputs and all(k.kind in "iu" for k in kinds) and kinds[1].itemsize >= 4


@rule("gather_select", seeds={"Gather", "GatherND"})
def gather_select(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    """Gather(x, constant indices) of an activation, indices a contiguous ascending run -> Slice, then Reshape
    when the output drops or adds axes (a scalar index). GatherND with batch_dims 0 and one-element index
    tuples is the same selection on axis 0. Falcon picks its shared key and value heads these ways."""
    x, indices = node.input
    if view.is_const(x) or not view.is_const(indices):
        return None
    rank = len(view.shape[x])
    index = view.const[indices].astype(np.int64)
    if node.op_type == "GatherND":
        if view.attrs(node).get("batch_dims", 0) != 0 or index.ndim < 1 or index.shape[-1] != 1:
            return None
        axis = 0
    else:
        axis = view.attrs(node).get("axis", 0) % rank
    size = view.shape[x][axis]
    picked = (index.reshape(-1) % size).tolist()
    if not picked or picked != list(range(picked[0], picked[0] + len(picked))):
        return None
    attrs = {"axes": [axis], "starts": [picked[0]], "ends": [picked[-1] + 1], "steps": [1]}
    out = node.output[0]
    shape = list(view.shape[x])
    shape[axis] = len(picked)
    if tuple(shape) == view.shape[out]:
        return Match([node], [Layer(node.name, "Slice", [x], [out], attrs=attrs)])
    sliced = f"{out}::sliced"
    layers = [Layer(f"{node.name}::slice", "Slice", [x], [sliced], attrs=attrs),
              Layer(node.name, "Reshape", [sliced], [out], attrs={"shape": list(view.shape[out])})]
    return Match([node], layers, new_tensors={sliced: (tuple(shape), "float32")})


@rule("passthrough", seeds={"Dropout", "Identity", "Cast"})
def passthrough(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    src, out = node.input[0], node.output[0]
    if node.op_type == "Cast" and not (_float_cast(view, src, out) or _id_cast(view, src, out)):
        return None
    extra = [o for o in node.output[1:] if o and view.users(o)]
    if extra:
        return None  # a Dropout mask that is used: training graph
    return Match([node], aliases={out: src})


@rule("nan_guard", seeds={"Where"})
def nan_guard(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    cond, zero, value = node.input
    isnan = view.producer.get(cond)
    if isnan is None or isnan.op_type != "IsNaN" or isnan.input[0] != value or view.scalar(zero) != 0.0:
        return None
    source = view.producer.get(value)
    if source is None or source.op_type != "Softmax":
        return None
    return Match([isnan, node], aliases={node.output[0]: value})


@rule("linear", seeds={"MatMul", "Gemm"})
def linear(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    """MatMul(x, W) with W constant (in, out); Gemm(x, B, C) with transB / alpha / beta folded in."""
    if node.op_type == "MatMul":
        x, w = node.input
        if view.is_const(x) or not view.is_const(w) or view.const[w].ndim != 2:
            return None
        layer = _layer(node, "Linear", [x])
        layer.params["weight"] = view.const[w].astype(np.float32)
        return Match([node], [layer])
    a = view.attrs(node)
    x, w = node.input[0], node.input[1]
    if a.get("transA", 0) or view.is_const(x) or not view.is_const(w):
        return None
    weight = view.const[w].astype(np.float32)
    weight = weight.T if a.get("transB", 0) else weight
    layer = _layer(node, "Linear", [x])
    layer.params["weight"] = np.ascontiguousarray(weight * np.float32(a.get("alpha", 1.0)))
    if len(node.input) > 2 and node.input[2]:
        if not view.is_const(node.input[2]):
            return None
        layer.params["bias"] = (view.const[node.input[2]] * a.get("beta", 1.0)).astype(np.float32).reshape(-1)
    return Match([node], [layer])


@rule("embedding", seeds={"Gather"})
def embedding(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    table, ids = node.input
    if not view.is_const(table) or view.is_const(ids) or view.attrs(node).get("axis", 0) != 0:
        return None
    layer = _layer(node, "Embedding", [ids])
    layer.params["table"] = view.const[table].astype(np.float32)
    return Match([node], [layer])


RULES = [linear, embedding, gather_select, nan_guard, passthrough, elementwise, matmul, softmax, reshape, transpose, expand,
         slice_, concat, split]
