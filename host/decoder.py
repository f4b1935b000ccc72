"""Incremental decoding with a KV cache, on a decoder graph compiled for the full context (numpy only).

A causal-LM export has no cache: it maps ``input_ids (1, S)`` to ``logits (1, S, V)``. Every op in it works
row by row along the token axis except attention, which mixes rows only through the key axis of the scores.
So the same graph runs T new tokens at positions p..p+T-1 when

  * every tensor axis that carries tokens is resized: *query* axes (rows of new tokens) to T, *key* axes
    (the scores' and probabilities' last axis) to p + T;
  * the two attention operands that provide keys, the second inputs of ``attn_scores`` (K or K^T) and of
    ``attn_context`` (V), are the *cache points*: their T new rows are appended to the cached rows of that
    block, and the matmul reads all p + T rows;
  * RoPE reads table rows p..p+T-1; masks are built for keys 0..p+T-1 (causal offset p).

Which axes carry tokens is found by propagating from the token axis of ``input_ids`` through every layer
(`token_axes`). Reshape targets are rewritten from that map, never guessed from dim values.

With the emulator's row-independent kernels (masked keys get exactly zero weight) a step is bit-identical to
the matching rows of a full-sequence run: the tests check this. The cache holds the tensors at the cache
points in their layout (for grouped-query attention after the KV heads are repeated).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .emulator import Emulator
from .graph import Graph, Layer

Q, K = "q", "k"


def _reshape_axes(src: tuple[int, ...], dst: tuple[int, ...], axes: dict[int, str]) -> dict[int, str]:
    """Map token axes through a reshape: an axis keeps its role where the product of the dims before it
    and its own size are the same in both shapes."""
    out = {}
    for axis, kind in axes.items():
        before = int(np.prod(src[:axis]))
        for b in range(len(dst)):
            if int(np.prod(dst[:b])) == before and dst[b] == src[axis]:
                out[b] = kind
                break
        else:
            raise ValueError(f"cannot follow the token axis through reshape {src} -> {dst}")
    return out


def token_axes(graph: Graph) -> dict[str, dict[int, str]]:
    """tensor -> {axis: 'q' | 'k'} for every tensor whose size depends on the number of tokens."""
    axes: dict[str, dict[int, str]] = {}
    shape = {n: tuple(t.shape) for n, t in graph.tensors.items()}
    for name in graph.inputs:
        if len(shape[name]) >= 2:
            axes[name] = {1: Q}
    for layer in graph.layers:
        a = [axes.get(i, {}) for i in layer.inputs]
        op, out = layer.op, layer.output
        x = a[0] if a else {}
        rank = len(shape[out])
        if op == "Reshape":
            result = _reshape_axes(shape[layer.inputs[0]], shape[out], x)
        elif op == "Transpose":
            perm = layer.attrs["perm"]
            result = {perm.index(ax): k for ax, k in x.items()}
        elif op == "MatMul":
            b = a[1]
            result = {}
            ra = len(shape[layer.inputs[0]])
            for ax, k in x.items():
                if ax == ra - 2:
                    result[rank - 2] = k
                elif ax < ra - 2:
                    result[ax + rank - ra] = k
            rb = len(shape[layer.inputs[1]])
            if layer.role == "attn_scores":
                tok = [ax for ax in b if ax >= rb - 2]
                if tok:
                    result[rank - 1] = K
            elif (rb - 1) in b:
                result[rank - 1] = b[rb - 1]
        elif op == "PaddingMask":
            result = {rank - 2: Q, rank - 1: K} if rank >= 2 else {}
            if shape[out][-2] == 1:
                result.pop(rank - 2)
        elif op == "Constant":
            result = {}
            if layer.role == "attn_mask" and rank >= 2:
                result = {rank - 2: Q, rank - 1: K}
        elif op in ("Concat", "Embedding"):  # Embedding appends the feature axis after the id axes
            result = dict(x)
        else:  # elementwise, norms, Linear, Softmax, RoPE, Embedding, Slice, Expand: axes pass through
            merged: dict[int, str] = {}
            for i, ai in enumerate(a):
                offset = rank - len(shape[layer.inputs[i]])
                for ax, k in ai.items():
                    if shape[layer.inputs[i]][ax] != 1 or k == K:
                        merged[ax + offset] = k if merged.get(ax + offset) != K else K
            result = merged
        if result:
            axes[out] = result
    return axes


@dataclass
class CachePoint:
    block: int | None
    layer: str      # the attention MatMul that reads the cache
    tensor: str     # its second input
    axis: int       # the token axis of that tensor (rows appended there)


@dataclass
class DecodeState:
    """Per-sequence state: tokens seen so far (their attention mask) and the cache tensors (codes)."""

    length: int = 0
    mask: list[int] = field(default_factory=list)
    cache: dict[str, np.ndarray] = field(default_factory=dict)


class IncrementalDecoder:
    """Runs a quantized causal-LM graph (compiled with seq_len = context) token step by token step."""

    def __init__(self, graph: Graph, emulator: Emulator | None = None):
        self.graph = graph
        self.emulator = emulator or Emulator(graph)
        self.context = graph.tensors[graph.inputs[0]].shape[1]
        self.axes = token_axes(graph)
        self.cache_points = []
        for layer in graph.layers:
            if layer.role in ("attn_scores", "attn_context"):
                tensor = layer.inputs[1]
                rank = len(graph.tensors[tensor].shape)
                tok = [ax for ax in self.axes.get(tensor, {}) if ax >= rank - 2]
                if len(tok) != 1:
                    raise ValueError(f"cannot find the token axis of {tensor!r} (input of {layer.name!r})")
                self.cache_points.append(CachePoint(layer.block, layer.name, tensor, tok[0]))
        self._cache_tensors = {c.tensor: c for c in self.cache_points}

    def new_state(self) -> DecodeState:
        return DecodeState()

    def _resized(self, name: str, t: int, total: int) -> tuple[int, ...]:
        shape = list(self.graph.tensors[name].shape)
        for ax, kind in self.axes.get(name, {}).items():
            shape[ax] = t if kind == Q else total
        return tuple(shape)

    def _layer_for_step(self, layer: Layer, t: int, total: int, start: int) -> Layer:
        attrs = dict(layer.attrs)
        if layer.op in ("Reshape", "Expand"):
            attrs["shape"] = list(self._resized(layer.output, t, total))
        elif layer.op == "PaddingMask":
            attrs["q_len"] = t
            attrs["shape"] = list(self._resized(layer.output, t, total))
        elif layer.op == "RoPE":
            attrs["position"] = start
        elif layer.op in ("Add", "Mul") and "const" in layer.params:
            # constants with a token axis (learned absolute positions folded in): rows of these tokens
            const = layer.params["const"]
            rank_x = len(self.graph.tensors[layer.inputs[0]].shape)
            for ax, kind in self.axes.get(layer.inputs[0], {}).items():
                cax = ax - (rank_x - const.ndim)
                if kind == Q and cax >= 0 and const.shape[cax] == self.context and self.context > 1:
                    attrs["const_slice"] = [cax, start, total]
        elif layer.op == "Constant" and layer.role == "attn_mask":
            value = layer.params["value"][..., start:total, :total]
            return dataclasses.replace(layer, params={"value": value})
        elif layer.op == "Slice":
            for ax in attrs["axes"]:
                if ax in self.axes.get(layer.inputs[0], {}):
                    raise ValueError(f"slicing along the token axis ({layer.name!r}) is not supported in "
                                     "incremental decoding")
        return dataclasses.replace(layer, attrs=attrs)

    def step(self, state: DecodeState, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Feed T new tokens (ids (T,), attention mask (T,) of 0/1, default ones); returns output codes
        (the graph's first output, e.g. logits (1, T, V)) and updates ``state`` in place."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        t = ids.size
        start = state.length
        total = start + t
        if total > self.context:
            raise ValueError(f"context full: {start} cached + {t} new tokens > {self.context}")
        new_mask = np.ones(t, np.int64) if mask is None else np.asarray(mask, np.int64).reshape(-1)
        full_mask = np.concatenate([np.asarray(state.mask, np.int64), new_mask])
        env: dict[str, np.ndarray] = {}
        emu = self.emulator
        # the mask inputs are those a PaddingMask layer reads (by meaning, not by name); the others are ids
        masks = {l.inputs[0] for l in self.graph.layers if l.op == "PaddingMask" and l.inputs}
        for name in self.graph.inputs:
            env[name] = full_mask.reshape(1, total) if name in masks else ids.reshape(1, t)
        for layer in self.graph.layers:
            step_layer = self._layer_for_step(layer, t, total, start)
            out, count = emu._run_layer(step_layer, env)
            if layer.output in self._cache_tensors:
                point = self._cache_tensors[layer.output]
                cached = state.cache.get(point.tensor)
                out = out if cached is None else np.concatenate([cached, out], axis=point.axis)
                state.cache[point.tensor] = out
            env[layer.output] = out
            if count:
                emu.overflows[layer.name] = emu.overflows.get(layer.name, 0) + count
        state.length = total
        state.mask = list(full_mask)
        return env[self.graph.outputs[0]]
