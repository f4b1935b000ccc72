"""Rotary position embedding (RoPE), full or partial, half-split (LLaMA/NeoX) or interleaved (GPT-J).

    rope(x)[..., :r] = x_r * cos + rotate(x_r) * sin,   rope(x)[..., r:] = x[..., r:]
    rotate(v) = concat(-v[..., r/2:], v[..., :r/2])         (half-split)
              | stack(-v[..., 1::2], v[..., 0::2]) pairwise  (interleaved)

cos/sin are the (seq, r) tables, constants once positions are fixed (positions 0..seq-1 computed inside the
export). The rule starts at the Neg of rotate(), takes the two constant multipliers of the region as cos and
sin (trying both roles), and accepts the region only if its numbers equal ``rope`` on random input.
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


def _table(value: np.ndarray, seq: int) -> np.ndarray | None:
    squeezed = value.reshape(value.shape[-2:]) if value.ndim >= 2 and np.prod(value.shape[:-2]) == 1 else None
    if squeezed is None or squeezed.shape[0] != seq:
        return None
    return squeezed.astype(np.float32)


@rule("rope", seeds={"Neg"})
def rope(seed: onnx.NodeProto, view: OnnxView) -> Match | None:
    for x, y, nodes in _region_candidates(view, seed, _ancestors(view, seed.input[0], depth=3)):
        seq = view.shape[x][-2]
        tables = []
        for node in nodes:
            if node.op_type == "Mul":
                for i in node.input:
                    if view.is_const(i) and (t := _table(view.const[i], seq)) is not None:
                        tables.append(t)
        if len(tables) != 2:
            continue
        sample = sample_input(view.shape[x], 1.0)
        got = evaluate(view, nodes, {x: sample}, y)
        for (cos, sin), interleaved in itertools.product([tables, tables[::-1]], (False, True)):
            rotary_dim = cos.shape[-1]
            want = ref.rope(sample.astype(np.float64), cos, sin, rotary_dim, interleaved)
            if agrees(got, want):
                layer = Layer(view.producer[y].name, "RoPE", [x], [y],
                              attrs={"rotary_dim": rotary_dim, "interleaved": interleaved},
                              params={"cos": cos, "sin": sin})
                return Match(nodes, [layer])
    return None


RULES = [rope]
