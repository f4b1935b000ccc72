"""Float executor of the layer graph: the living definition of each IR op (numpy, float32 or float64).

``run(graph, feeds)`` executes one sequence (the graph's batch-1 shapes) and returns every tensor by name, so
each IR tensor can be compared with the ONNX tensor of the same name. Math per op is in ``graph.OPS``.
"""

from __future__ import annotations

import math

import numpy as np

from .graph import Graph, Layer

_SQRT1_2 = 1.0 / math.sqrt(2.0)


def _erf_fast(x: np.ndarray) -> np.ndarray:
    """erf(x) vectorised: numpy has none. erfc by the Chebyshev fit of Numerical Recipes (6.2), fractional
    error < 1.2e-7 everywhere, evaluated in float64."""
    z = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277)))))))))
    erfc = t * np.exp(poly)
    return (np.where(x >= 0, 1.0 - erfc, erfc - 1.0)).astype(x.dtype)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf_fast(x * _SQRT1_2))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, rotary_dim: int, interleaved: bool) -> np.ndarray:
    """x (..., seq, head_dim); cos/sin (seq, rotary_dim). rotate_half: (-x2, x1) on halves (or pairs)."""
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        rotated = np.stack([-x2, x1], axis=-1).reshape(rot.shape)
    else:
        half = rotary_dim // 2
        rotated = np.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
    return np.concatenate([rot * cos + rotated * sin, rest], axis=-1)


def padding_mask(mask: np.ndarray, causal: bool, neg: float, q_len: int, shape=None) -> np.ndarray:
    """attention_mask (1, k) of 0/1 -> additive mask (1, 1, q, k), reshaped or broadcast to ``shape``."""
    k_len = mask.shape[-1]
    keep = np.broadcast_to(mask.reshape(1, 1, 1, k_len) != 0, (1, 1, q_len, k_len))
    if causal:
        offset = k_len - q_len
        keep = keep & (np.arange(k_len)[None, :] <= np.arange(q_len)[:, None] + offset)
    out = np.where(keep, np.float32(0.0), np.float32(neg))
    if shape is None:
        return out
    shape = tuple(shape)
    return out.reshape(shape) if out.size == int(np.prod(shape)) else np.broadcast_to(out, shape)


def fake_quant(x: np.ndarray, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """ONNX QuantizeLinear (round half to even, saturate) followed by DequantizeLinear, in float64."""
    scale = np.asarray(scale, np.float64)
    zp = np.asarray(zero_point, np.float64)
    q = np.clip(np.rint(np.asarray(x, np.float64) / scale) + zp, qmin, qmax)
    return (q - zp) * scale


def _second(layer: Layer, env: dict) -> np.ndarray:
    return layer.params["const"] if "const" in layer.params else env[layer.inputs[1]]


def run_layer(layer: Layer, env: dict[str, np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """Compute one layer's output(s) from the tensors in ``env``."""
    a, op, p = layer.attrs, layer.op, layer.params
    x = env[layer.inputs[0]] if layer.inputs else None
    if op == "Embedding":
        return np.take(p["table"], x.astype(np.int64), axis=0)
    if op == "Linear":
        y = x @ p["weight"]
        return y + p["bias"] if "bias" in p else y
    if op == "MatMul":
        b = env[layer.inputs[1]]
        return x @ (np.swapaxes(b, -1, -2) if a.get("transpose_b") else b)
    if op == "LayerNorm":
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        y = (x - mean) / np.sqrt(var + a["eps"]) * p["gamma"]
        return y + p["beta"] if "beta" in p else y
    if op == "RMSNorm":
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + a["eps"]) * p["gamma"]
    if op == "Softmax":
        if len(layer.inputs) > 1 and layer.inputs[1]:
            mask = env[layer.inputs[1]]
            # keep flags (quantized graphs) or an additive mask (imported graphs)
            x = np.where(mask, x, -np.inf) if mask.dtype == bool else x + mask
        return softmax(x, -1)
    if op == "GELU":
        return gelu(x, a.get("approximate", "none"))
    if op == "SiLU":
        return x / (1.0 + np.exp(-x))
    if op == "Add":
        return x + _second(layer, env)
    if op == "Mul":
        return x * _second(layer, env)
    if op == "RoPE":
        start, rows = a.get("position", 0), x.shape[-2]
        return rope(x, p["cos"][start:start + rows], p["sin"][start:start + rows], a["rotary_dim"],
                    a.get("interleaved", False))
    if op == "Reshape":
        return x.reshape(a["shape"])
    if op == "Transpose":
        return x.transpose(a["perm"])
    if op == "Expand":
        return np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(a["shape"]))).copy()
    if op == "Slice":
        index = [slice(None)] * x.ndim
        for axis, start, end, step in zip(a["axes"], a["starts"], a["ends"], a["steps"]):
            index[axis] = slice(start, end, step)
        return x[tuple(index)]
    if op == "Concat":
        return np.concatenate([env[n] for n in layer.inputs], axis=a["axis"])
    if op == "PaddingMask":
        additive = padding_mask(x, a.get("causal", False), a["neg"], a["q_len"], a.get("shape"))
        return additive == 0 if a.get("keep_flags") else additive
    if op == "Constant":
        return p["value"]
    if op == "FakeQuant":
        return fake_quant(x, p["scale"], p["zero_point"], a["qmin"], a["qmax"])
    raise NotImplementedError(f"float executor has no op {op!r} (layer {layer.name!r})")


def run(graph: Graph, feeds: dict[str, np.ndarray], dtype=np.float32) -> dict[str, np.ndarray]:
    """Execute ``graph`` on one sequence; returns all tensors (inputs included) by name."""
    env: dict[str, np.ndarray] = {}
    for name in graph.inputs:
        if name not in feeds:
            raise KeyError(f"missing input {name!r}")
        value = np.asarray(feeds[name])
        env[name] = value.astype(dtype) if value.dtype.kind == "f" else value
    for layer in graph.layers:
        out = run_layer(layer, env)
        outs = out if isinstance(out, list) else [out]
        for name, value in zip(layer.outputs, outs):
            env[name] = value.astype(dtype, copy=False) if value.dtype.kind == "f" else value
    return env
