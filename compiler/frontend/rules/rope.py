"""Rotary position embedding (RoPE), full or partial, half-split (LLaMA/NeoX) or interleaved (GPT-J).

    rope(x)[..., :r] = x_r * cos + rotate(x_r) * sin,   rope(x)[..., r:] = x[..., r:]
    rotate(v) = concat(-v[..., r/2:], v[..., :r/2])         (half-split)
              | stack(-v[..., 1::2], v[..., 0::2]) pairwise  (interleaved)

cos/sin are the (seq, r) tables, constants once positions are fixed (positions 0..seq-1 computed inside the
export). The rule starts at the Neg of rotate(), takes the two constant multipliers of the region as cos and
sin (trying both roles), and accepts the region only if its numbers equal ``rope`` on random input.

The IR's RoPE works on x (..., seq, head_dim). GPT-J rotates before moving heads forward, on
x (batch, seq, heads, head_dim) with tables (1, seq, 1, r); the rule then lowers the region to
Transpose(seq <-> heads) -> RoPE -> Transpose back, which computes the same numbers.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx

from ....host import reference as ref
from ....host.graph import Layer
from ..engine import Match, rule
from ..regions import agrees, evaluate, sample_input
from ..view import OnnxView
from .functions import _ancestors, _region_candidates


def _table(value: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, int] | None:
    """A cos/sin constant broadcast against x of ``shape``: ((seq, r) table, axis of x that is seq) or None.

    The table's last axis is the rotary width; exactly one other axis of it is longer than 1, and it lines up
    (from the right) with x's axis -2 (heads-major x) or -3 (seq-major x).
    """
    if value.ndim < 2 or value.ndim > len(shape):
        return None
    long_axes = [a for a in range(value.ndim - 1) if value.shape[a] > 1]
    if len(long_axes) != 1:
        return None
    axis = long_axes[0] - value.ndim  # counted from the right, as broadcasting aligns it
    if axis not in (-2, -3) or value.shape[axis] != shape[axis]:
        return None
    return value.reshape(value.shape[axis], value.shape[-1]).astype(np.float32), axis


def _swap_seq_heads(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -2, -3)


@rule("rope", seeds={"Neg"})
def rope(seed: onnx.NodeProto, view: OnnxView) -> Match | None:
    for x, y, nodes in _region_candidates(view, seed, _ancestors(view, seed.input[0], depth=3)):
        shape = view.shape[x]
        tables = []
        for node in nodes:
            if node.op_type == "Mul":
                for i in node.input:
                    if view.is_const(i) and (t := _table(view.const[i], shape)) is not None:
                        tables.append(t)
        if len(tables) != 2 or tables[0][1] != tables[1][1]:
            continue
        seq_axis = tables[0][1]
        sample = sample_input(shape, 1.0)
        got = evaluate(view, nodes, {x: sample}, y)
        # rope() wants (..., seq, head_dim): move seq there for a seq-major x, and back afterwards
        heads_major = sample.astype(np.float64) if seq_axis == -2 else _swap_seq_heads(sample.astype(np.float64))
        pairs = [(tables[0][0], tables[1][0]), (tables[1][0], tables[0][0])]
        for (cos, sin), interleaved in itertools.product(pairs, (False, True)):
            rotary_dim = cos.shape[-1]
            want = ref.rope(heads_major, cos, sin, rotary_dim, interleaved)
            if seq_axis == -3:
                want = _swap_seq_heads(want)
            if agrees(got, want):
                layers, new_tensors = _lowering(view, x, y, cos, sin, interleaved, seq_axis)
                return Match(nodes, layers, new_tensors=new_tensors)
    return None


def _lowering(view: OnnxView, x: str, y: str, cos, sin, interleaved: bool, seq_axis: int):
    """(layers, new_tensors): RoPE alone, or Transpose -> RoPE -> Transpose for a seq-major x."""
    name = view.producer[y].name
    attrs = {"rotary_dim": int(cos.shape[-1]), "interleaved": interleaved}
    params = {"cos": cos, "sin": sin}
    if seq_axis == -2:
        return [Layer(name, "RoPE", [x], [y], attrs=attrs, params=params)], {}
    rank = len(view.shape[x])
    perm = list(range(rank))
    perm[-2], perm[-3] = perm[-3], perm[-2]
    moved = tuple(view.shape[x][p] for p in perm)
    inner, rotated = f"{y}::heads_major", f"{y}::rotated"
    layers = [Layer(f"{name}::heads_major", "Transpose", [x], [inner], attrs={"perm": perm}),
              Layer(name, "RoPE", [inner], [rotated], attrs=attrs, params=params),
              Layer(f"{name}::seq_major", "Transpose", [rotated], [y], attrs={"perm": perm})]
    return layers, {inner: (moved, "float32"), rotated: (moved, "float32")}


RULES = [rope]
