"""Counts a person wants from a layer graph: parameters, multiply-accumulates per token, block structure.

MACs: Linear (.., in) x (in, out) costs in*out per token; MatMul (.., m, k) x (.., k, n) costs
prod(leading)*m*k*n per sequence, divided by the sequence length for a per-token figure. Norms, softmax and
elementwise ops are not MACs and are not counted.
"""

from __future__ import annotations

import numpy as np

from ..host.graph import Graph, layer_macs


def tokens_per_run(graph: Graph) -> int:
    return int(graph.meta.get("seq_len") or 1)


def macs_per_token(graph: Graph) -> float:
    return sum(layer_macs(l, graph) for l in graph.layers) / tokens_per_run(graph)


def block_summary(graph: Graph) -> list[dict]:
    """One dict per block: index, layer count, the sequence of roles that make it a transformer block."""
    out = []
    for index, layers in graph.blocks().items():
        roles = [l.role for l in layers if l.role not in (None, "layout", "scale")]
        norms = sorted({l.op for l in layers if l.op in ("LayerNorm", "RMSNorm")})
        acts = sorted({l.op for l in layers if l.role == "ffn_act"})
        gated = any(l.role == "ffn_gate" for l in layers)
        parts = [*norms, "attention" if "attn_softmax" in roles else "no-attention",
                 f"{'gated ' if gated else ''}{'/'.join(acts) or 'no'} feed-forward",
                 f"{roles.count('residual')} residual"]
        out.append({"index": index, "layers": len(layers), "structure": " / ".join(parts),
                    "params": sum(l.n_params() for l in layers),
                    "roles": roles})
    return out
