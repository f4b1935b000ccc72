"""Regions: the nodes that compute one tensor ``y`` from one tensor ``x`` (plus constants), and a numeric check.

Exporters spell the same function many ways (GELU as x*0.5*(1+erf(x/sqrt2)) or 0.5*x*(erf(x*0.7071)+1),
LayerNorm with Pow or Mul, Div or Reciprocal). Rules therefore find a *region* structurally and then prove
what it computes numerically: the region is run by onnx's reference evaluator on random inputs and compared
with the candidate IR op's float definition (host.reference). A rule only fires when the numbers agree.
"""

from __future__ import annotations

import numpy as np
import onnx

from .view import OnnxView

MAX_REGION = 24  # nodes; every fused pattern fpgaformer knows is smaller


def forward_region(view: OnnxView, x: str, y: str, extra_inputs: tuple[str, ...] = (),
                   limit: int | None = MAX_REGION) -> list[onnx.NodeProto] | None:
    """Nodes on paths from ``x`` (and ``extra_inputs``) to ``y`` when y depends only on them and constants.

    Returns the nodes in graph order, or None when ``y`` needs another non-constant tensor or the region has
    more than ``limit`` nodes (None: no limit).
    """
    sources = {x, *extra_inputs}
    region: dict[str, onnx.NodeProto] = {}
    stack = [y]
    while stack:
        name = stack.pop()
        if name in sources or view.is_const(name):
            continue
        node = view.producer.get(name)
        if node is None:
            return None
        if node.name in region:
            continue
        region[node.name] = node
        if limit is not None and len(region) > limit:
            return None
        stack.extend(i for i in node.input if i)
    return sorted(region.values(), key=lambda n: view.order[n.name])


def is_closed(view: OnnxView, nodes: list[onnx.NodeProto], y: str) -> bool:
    """True when no tensor made inside the region except ``y`` is used outside it."""
    names = {n.name for n in nodes}
    for node in nodes:
        for out in node.output:
            if out == y or not out:
                continue
            if out in view.outputs or any(u.name not in names for u in view.users(out)):
                return False
    return True


def evaluate(view: OnnxView, nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], y: str) -> np.ndarray:
    """Run ``nodes`` with the given inputs (and the model's constants) through onnx.reference."""
    from onnx.reference import ReferenceEvaluator

    used = {i for n in nodes for i in n.input if i}
    inits = [onnx.numpy_helper.from_array(view.const[c], c) for c in used if view.is_const(c)]
    inputs = [onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in feeds.items()]
    outputs = [onnx.helper.make_tensor_value_info(y, onnx.TensorProto.UNDEFINED, None)]
    graph = onnx.helper.make_graph(nodes, "region", inputs, outputs, initializer=inits)
    model = onnx.helper.make_model(graph, opset_imports=view.model.opset_import)
    return np.asarray(ReferenceEvaluator(model).run(None, feeds)[0])


POINTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Erf", "Tanh", "Sigmoid", "Neg", "Cast",
             "Exp", "Abs", "ReduceMean", "Identity", "Relu", "Softplus"}


def probe_shape(view: OnnxView, nodes: list[onnx.NodeProto], x: str) -> tuple[int, ...]:
    """A small shape to probe a region with: only a few rows when the region works row by row.

    Valid when every node is elementwise (or reduces the last axis) and every constant varies at most
    along the last axis, so rows are independent; otherwise the full shape of ``x``.
    """
    shape = view.shape[x]
    if len(shape) < 2 or any(n.op_type not in POINTWISE for n in nodes):
        return shape
    for node in nodes:
        for i in node.input:
            if view.is_const(i) and int(np.prod(view.const[i].shape[:-1])) > 1:
                return shape
    return (1,) * (len(shape) - 2) + (min(4, shape[-2]), shape[-1])


def sample_input(shape: tuple[int, ...], scale: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def agrees(got: np.ndarray, want: np.ndarray, tol: float = 1e-4) -> bool:
    if got.shape != want.shape:
        return False
    scale = max(1.0, float(np.max(np.abs(want))))
    return bool(np.max(np.abs(got.astype(np.float64) - want)) <= tol * scale)


def descendants_in_order(view: OnnxView, start: str, limit: int = MAX_REGION) -> list[str]:
    """Tensors reachable from ``start`` in graph order, the first ``limit`` of them (candidate region ends)."""
    seen: set[str] = set()
    frontier = [start]
    found: list[onnx.NodeProto] = []
    while frontier and len(found) < 4 * limit:
        name = frontier.pop()
        for user in view.users(name):
            if user.name not in seen:
                seen.add(user.name)
                found.append(user)
                frontier.extend(o for o in user.output if o)
    found.sort(key=lambda n: view.order[n.name])
    return [o for n in found[:limit] for o in n.output if o]


def evaluate_ort(view: OnnxView, nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray],
                 y: str) -> np.ndarray:
    """Run ``nodes`` with onnxruntime: for onnxruntime's contrib ops (com.microsoft), which onnx.reference lacks."""
    import onnxruntime as ort

    used = {i for n in nodes for i in n.input if i}
    inits = [onnx.numpy_helper.from_array(view.const[c], c) for c in used if view.is_const(c) and c not in feeds]
    inputs = [onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in feeds.items()]
    elem = onnx.helper.np_dtype_to_tensor_dtype(view.dtype.get(y, np.dtype(np.float32)))
    outputs = [onnx.helper.make_tensor_value_info(y, elem, None)]  # onnxruntime wants the type
    graph = onnx.helper.make_graph(nodes, "region", inputs, outputs, initializer=inits)
    opsets = list(view.model.opset_import)
    if not any(o.domain == "com.microsoft" for o in opsets):
        opsets.append(onnx.helper.make_opsetid("com.microsoft", 1))
    model = onnx.helper.make_model(graph, opset_imports=opsets)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run([y], feeds)[0])


def run_layers(layers, feeds: dict[str, np.ndarray], y: str) -> np.ndarray:
    """The float definition (host.reference) of a candidate lowering, on the given inputs, in float64."""
    from ...host.reference import run_layer

    env = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in feeds.items()}
    for layer in layers:
        out = run_layer(layer, env)
        for name, value in zip(layer.outputs, out if isinstance(out, list) else [out]):
            env[name] = value
    return env[y]
