"""Fused functions of one tensor: GELU (erf and tanh forms), SiLU, LayerNorm and RMSNorm, however spelled.

Each rule starts at a characteristic node (Erf, Tanh, Sigmoid, ReduceMean, Pow), proposes input tensors
``x`` among the seed's close ancestors and output tensors ``y`` among its descendants, and accepts the first
closed region (see regions.py) whose numbers equal the IR op's float definition on random input:

  GELU(x)    = x * Phi(x)                         (erf form)   | 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))
  SiLU(x)    = x * sigmoid(x)
  LayerNorm  = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta   (last axis; gamma/beta may be absent)
  RMSNorm    = x / sqrt(mean(x^2) + eps) * gamma

eps, gamma and beta are read from the region's constants (eps: the positive scalar added before the square
root; gamma: the last-axis vector it multiplies by; beta: the one it adds), then the whole candidate is
checked numerically, so an exporter's odd spelling is either proven equal or left unplaced.
Fused ONNX / onnxruntime ops (LayerNormalization, SkipLayerNormalization, SimplifiedLayerNormalization,
SkipSimplifiedLayerNormalization, Gelu, BiasGelu, FastGelu) map directly.
"""

from __future__ import annotations

import numpy as np
import onnx

from ....host import reference as ref
from ....host.graph import Layer
from ..engine import Match, rule
from ..regions import (agrees, descendants_in_order, evaluate, forward_region, is_closed, probe_shape,
                       sample_input)
from ..view import OnnxView


def _ancestors(view: OnnxView, name: str, depth: int = 4) -> list[str]:
    """Non-constant float tensors feeding ``name`` within ``depth`` nodes, nearest first."""
    found, frontier = [], [name]
    for _ in range(depth):
        nxt = []
        for t in frontier:
            if t in found or view.is_const(t):
                continue
            if view.dtype.get(t, np.dtype("f4")).kind == "f":
                found.append(t)
            node = view.producer.get(t)
            if node is not None:
                nxt.extend(i for i in node.input if i)
        frontier = nxt
    return found


def _region_candidates(view: OnnxView, seed: onnx.NodeProto, xs: list[str]):
    """Yield (x, y, nodes) closed regions containing ``seed``, smallest y first for each x."""
    ys = descendants_in_order(view, seed.output[0], limit=16)
    for x in xs:
        if x not in view.shape:
            continue
        for y in [seed.output[0], *ys]:
            if view.shape.get(y) != view.shape[x]:
                continue
            nodes = forward_region(view, x, y)
            if nodes is None or seed not in nodes or not is_closed(view, nodes, y):
                continue
            yield x, y, nodes


def _layer_for(name_node: onnx.NodeProto, y: str, op: str, x: str, attrs=None, params=None) -> Layer:
    return Layer(name_node.name, op, [x], [y], attrs=attrs or {}, params=params or {})


# ------------------------------------------------------------------------------------------ activations
@rule("gelu", seeds={"Erf", "Tanh"})
def gelu(seed: onnx.NodeProto, view: OnnxView) -> Match | None:
    for x, y, nodes in _region_candidates(view, seed, _ancestors(view, seed.input[0])):
        sample = sample_input(probe_shape(view, nodes, x), 3.0)
        got = evaluate(view, nodes, {x: sample}, y).astype(np.float64)
        # The erf and tanh forms differ by < 2e-4 (near |x| = 2), inside ``agrees``' tolerance for outputs of
        # size ~10: take the form closer to the region's numbers, then require agreement.
        wants = {a: ref.gelu(sample.astype(np.float64), a) for a in ("none", "tanh")}
        approximate = min(wants, key=lambda a: float(np.max(np.abs(got - wants[a]), initial=0.0)))
        if agrees(got, wants[approximate]):
            producer = view.producer[y]
            return Match(nodes, [_layer_for(producer, y, "GELU", x, {"approximate": approximate})])
    return None


@rule("silu", seeds={"Sigmoid"})
def silu(seed: onnx.NodeProto, view: OnnxView) -> Match | None:
    x = seed.input[0]
    for user in view.users(seed.output[0]):
        if user.op_type == "Mul" and set(user.input) == {x, seed.output[0]}:
            return Match([seed, user], [_layer_for(user, user.output[0], "SiLU", x)])
    return None


# --------------------------------------------------------------------------------------------- norms
def _norm_constants(view: OnnxView, nodes: list[onnx.NodeProto], width: int):
    eps, gamma, beta = [], None, None
    for node in nodes:
        for i in node.input:
            if not view.is_const(i):
                continue
            value = view.const[i]
            if value.size == 1 and node.op_type == "Add" and 0 < float(value.reshape(())) < 1e-2:
                eps.append(float(value.reshape(())))
            elif value.size == width and value.shape[-1] == width:
                if node.op_type == "Mul":
                    gamma = value.reshape(width).astype(np.float32)
                elif node.op_type == "Add":
                    beta = value.reshape(width).astype(np.float32)
    return eps, gamma, beta


def _norm_match(seed: onnx.NodeProto, view: OnnxView, kinds: tuple[str, ...]) -> Match | None:
    """The largest agreeing region wins, so a trailing Mul(gamma) / Add(beta) is absorbed into the norm."""
    best = None
    for match in _norm_candidates(seed, view, kinds):
        best = match
    return best


def _norm_candidates(seed: onnx.NodeProto, view: OnnxView, kinds: tuple[str, ...]):
    xs = _ancestors(view, seed.input[0], depth=2)
    for x, y, nodes in _region_candidates(view, seed, xs):
        width = view.shape[x][-1]
        eps_list, gamma, beta = _norm_constants(view, nodes, width)
        if not eps_list:
            continue
        sample = sample_input(probe_shape(view, nodes, x), 1.5) + 0.3
        got = evaluate(view, nodes, {x: sample}, y)
        xd = sample.astype(np.float64)
        for kind in kinds:
            for eps in eps_list:
                params = {"gamma": gamma if gamma is not None else np.ones(width, np.float32)}
                if kind == "LayerNorm" and beta is not None:
                    params["beta"] = beta
                probe = Layer("probe", kind, ["x"], ["y"], attrs={"eps": eps}, params=params)
                if agrees(got, ref.run_layer(probe, {"x": xd})):
                    producer = view.producer[y]
                    yield Match(nodes, [_layer_for(producer, y, kind, x, {"eps": eps, "axis": -1}, params)])
                    break
            else:
                continue
            break


@rule("layernorm_decomposed", seeds={"ReduceMean"})
def layernorm_decomposed(seed: onnx.NodeProto, view: OnnxView) -> Match | None:
    return _norm_match(seed, view, ("LayerNorm", "RMSNorm"))


def _fused_norm(node: onnx.NodeProto, view: OnnxView, x: str, op: str) -> Layer | None:
    a = view.attrs(node)
    rank = len(view.shape[node.input[0]])
    if a.get("axis", -1) % rank != rank - 1:
        return None
    params = {"gamma": view.const[node.input[2 if "Skip" in node.op_type else 1]].astype(np.float32)}
    beta_index = 3 if "Skip" in node.op_type else 2
    if op == "LayerNorm" and len(node.input) > beta_index and node.input[beta_index]:
        params["beta"] = view.const[node.input[beta_index]].astype(np.float32)
    return Layer(node.name, op, [x], [node.output[0]], attrs={"eps": float(a.get("epsilon", 1e-5)), "axis": -1},
                 params=params)


@rule("layernorm_fused", seeds={"LayerNormalization", "SimplifiedLayerNormalization"})
def layernorm_fused(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    if any(o and view.users(o) for o in node.output[1:]) or not all(view.is_const(i) for i in node.input[1:] if i):
        return None
    op = "LayerNorm" if node.op_type == "LayerNormalization" else "RMSNorm"
    layer = _fused_norm(node, view, node.input[0], op)
    return None if layer is None else Match([node], [layer])


@rule("skip_layernorm", seeds={"SkipLayerNormalization", "SkipSimplifiedLayerNormalization"})
def skip_layernorm(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    """onnxruntime's fused residual: sum = input + skip (+ bias); output = norm(sum). Output 3 is the sum."""
    x, skip = node.input[0], node.input[1]
    if not all(view.is_const(i) for i in node.input[2:] if i):
        return None
    if any(o and view.users(o) for o in node.output[1:3]):
        return None
    total = node.output[3] if len(node.output) > 3 and node.output[3] else f"{node.output[0]}::residual"
    layers = [Layer(f"{node.name}::residual", "Add", [x, skip], [total])]
    new = {total: (view.shape[node.output[0]], "float32")} if total.endswith("::residual") else {}
    bias_index = 4 if node.op_type == "SkipLayerNormalization" else 3
    if len(node.input) > bias_index and node.input[bias_index]:
        biased = f"{node.output[0]}::residual_in"
        layers = [Layer(f"{node.name}::bias", "Add", [x], [biased],
                        params={"const": view.const[node.input[bias_index]].astype(np.float32)}),
                  Layer(f"{node.name}::residual", "Add", [biased, skip], [total])]
        new[biased] = (view.shape[node.output[0]], "float32")
    norm = _fused_norm(node, view, total, "LayerNorm" if node.op_type == "SkipLayerNormalization" else "RMSNorm")
    if norm is None:
        return None
    return Match([node], [*layers, norm], new_tensors=new)


@rule("gelu_fused", seeds={"Gelu", "BiasGelu", "FastGelu", "QuickGelu"})
def gelu_fused(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    if node.op_type == "QuickGelu":
        return None
    approximate = "tanh" if node.op_type == "FastGelu" else view.attrs(node).get("approximate", "none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()
    x, out = node.input[0], node.output[0]
    layers = []
    new = {}
    if len(node.input) > 1 and node.input[1]:
        if not view.is_const(node.input[1]):
            return None
        biased = f"{out}::biased"
        layers.append(Layer(f"{node.name}::bias", "Add", [x], [biased],
                            params={"const": view.const[node.input[1]].astype(np.float32)}))
        new[biased] = (view.shape[out], "float32")
        x = biased
    layers.append(Layer(node.name, "GELU", [x], [out], attrs={"approximate": approximate}))
    return Match([node], layers, new_tensors=new)


RULES = [layernorm_fused, skip_layernorm, gelu_fused, layernorm_decomposed, gelu, silu]
