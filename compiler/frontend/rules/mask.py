"""Attention masks built from ``attention_mask``, whatever ops the exporter used to build them.

Every exporter turns the (batch, seq) 0/1 ``attention_mask`` into an additive mask on the attention scores,
each with different ops (Cast/Sub/Mul by finfo.min, Where/IsNaN, Expand, And with a causal triangle, ...).
Instead of one pattern per exporter this rule works on meaning:

1. the *mask domain* is every node whose non-constant inputs all derive from ``attention_mask`` alone;
2. its *frontier* tensors are mask-domain float tensors used by nodes outside the domain;
3. each frontier's subgraph is run on probe masks (all ones, right padding, left padding, random holes) and
   must equal ``neg * (1 - keep[q, k])`` with keep[q, k] = mask[k] (and k <= q + offset when causal) for one
   constant ``neg`` <= -1e4 (finfo.min and -inf included).

A frontier that passes becomes one ``PaddingMask`` layer; one that does not stays unplaced and is reported.
"""

from __future__ import annotations

import numpy as np
import onnx

from ....host.graph import Layer
from ....host.reference import padding_mask
from ..engine import Match
from ..regions import evaluate, forward_region
from ..view import OnnxView

NEG_MIN = -1e4


def mask_inputs(view: OnnxView) -> list[str]:
    """Candidate mask inputs, by meaning not by name: (batch, seq) inputs that are not lookup indices (token
    ids, positions). Whether a candidate is a mask is decided by probing what the graph computes from it."""
    out = []
    for name in view.inputs:
        if len(view.shape.get(name, ())) != 2:
            continue
        if any(u.op_type in ("Gather", "GatherElements", "GatherND") and list(u.input)[1:2] == [name]
               or u.op_type == "EmbedLayerNormalization" and name in [u.input[k] for k in (0, 1, 8)
                                                                        if k < len(u.input)]
               for u in view.users(name)):
            continue
        out.append(name)
    return out


_WEIGHTED = {"MatMul", "Gemm", "Conv", "MatMulInteger", "QLinearMatMul", "Attention", "MultiHeadAttention"}


def mask_domain(view: OnnxView, source: str) -> set[str]:
    """Names of nodes computing only from ``source`` and constants."""
    tensors = {source}
    nodes = set()
    for node in view.nodes:
        live = [i for i in node.input if i and not view.is_const(i)]
        if live and all(i in tensors for i in live):
            nodes.add(node.name)
            tensors.update(o for o in node.output if o)
    return nodes


def probe_masks(length: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    right = np.ones(length, np.int64)
    right[length // 2:] = 0
    left = np.ones(length, np.int64)
    left[: length // 3] = 0
    holes = (rng.random(length) > 0.3).astype(np.int64)
    holes[0] = 1
    return [np.ones(length, np.int64), right, left, holes]


def classify(outputs: list[np.ndarray], masks: list[np.ndarray], shape: tuple[int, ...]) -> dict | None:
    """Find (causal, neg) such that every probe output is the additive mask of its probe; else None."""
    q_len = shape[-2] if len(shape) >= 2 else 1
    k_len = shape[-1]
    negs = [float(o.min()) for o in outputs if o.min() < 0]
    if not negs:
        return None
    neg = min(negs)
    if neg > NEG_MIN:
        return None
    for causal in (False, True):
        ok = True
        for out, m in zip(outputs, masks):
            want = padding_mask(m.reshape(1, k_len), causal, neg, q_len, out.shape)
            masked_here = want < 0
            if not (np.all(out[~masked_here] == 0) and np.all(out[masked_here] <= NEG_MIN)):
                ok = False
                break
        if ok:
            return {"causal": causal, "neg": neg, "q_len": q_len}
    return None


def _frontiers(view: OnnxView, domain: set[str]) -> list[str]:
    out = []
    for node in view.nodes:
        if node.name not in domain:
            continue
        for name in node.output:
            if not name or view.dtype.get(name, np.dtype("f4")).kind != "f":
                continue
            if name in view.outputs or any(u.name not in domain for u in view.users(name)):
                out.append(name)
    return out


def match_all(view: OnnxView) -> list[Match]:
    """One match per mask input: the domain nodes behind every frontier that probes as an additive mask.

    Frontiers share nodes (one mask feeds every layer), so all of them form a single match.
    """
    matches = []
    for source in mask_inputs(view):
        covered: dict[str, onnx.NodeProto] = {}
        layers = []
        domain = mask_domain(view, source)
        if any(view.nodes[view.order[n]].op_type in _WEIGHTED for n in domain):
            continue  # computes activations from the input (a data input, not a mask): nothing to probe
        (batch, length) = view.shape[source]
        for frontier in _frontiers(view, domain):
            # every non-constant input of the domain derives from the mask input: the region exists
            nodes = forward_region(view, source, frontier, limit=None)
            if nodes is None:
                continue
            masks = probe_masks(length)
            try:
                outs = [evaluate(view, nodes, {source: m.reshape(batch, length).astype(view.dtype[source])},
                                 frontier) for m in masks]
            except Exception:
                continue
            found = classify(outs, masks, view.shape[frontier])
            if found is None:
                continue
            layers.append(Layer(frontier, "PaddingMask", [source], [frontier],
                                attrs={**found, "shape": list(view.shape[frontier])}, role="attn_mask"))
            covered.update((n.name, n) for n in nodes)
        if layers:
            nodes = sorted(covered.values(), key=lambda n: view.order[n.name])
            matches.append(Match(nodes, layers))
    return matches

