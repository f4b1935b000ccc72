"""Front end: ONNX export -> static graph -> rules -> layer graph (IR) -> cleanup passes.

``import_onnx`` is the one pipeline; each step is a module of this package or of compiler.passes.
"""

from __future__ import annotations

from pathlib import Path

from ...host.graph import Graph
from .engine import assemble, place, unsupported_error
from .load import load_static
from .rules import ALL_RULES
from .rules.mask import match_all as mask_matches
from .view import OnnxView


def _place(path: str | Path, seq_len: int | None, context: int | None):
    """Load and make static, then run every rule: (static model, view, matches, unplaced nodes)."""
    model = load_static(path, seq_len, context)
    view = OnnxView(model)
    matches, unplaced = place(view, ALL_RULES, prematches=mask_matches(view))
    return model, view, matches, unplaced


def _finish(view: OnnxView, matches, path: str | Path, seq_len: int | None, context: int | None) -> Graph:
    from ..passes import frontend_cleanup

    graph = assemble(view, matches)
    graph.meta.update({"source": Path(path).name, "seq_len": seq_len, "context": context})
    props = {p.key: p.value for p in view.model.metadata_props}
    if "fpgaformer.kv_cache_inputs" in props:  # an export that carried its KV cache (load.strip_cache)
        graph.meta["folded_kv_cache"] = {"inputs": props["fpgaformer.kv_cache_inputs"].split(","),
                                         "outputs": [o for o in props["fpgaformer.kv_cache_outputs"].split(",") if o]}
        graph.meta["seq_len"] = context or seq_len  # compiled over the whole context
    return frontend_cleanup(graph)


def analyse(path: str | Path, seq_len: int | None = None, context: int | None = None):
    """Like import_static, but never fails on unplaced nodes: returns (graph or None, layers, unplaced nodes).

    ``layers`` are the layers the rules recognised (a partial graph when nodes are unplaced).
    """
    _, view, matches, unplaced = _place(path, seq_len, context)
    if unplaced:
        layers = [layer for _, m in sorted(matches, key=lambda pm: pm[0]) for layer in m.layers]
        return None, layers, unplaced
    graph = _finish(view, matches, path, seq_len, context)
    return graph, graph.layers, []


def lower(view: OnnxView) -> Graph:
    """Place every node of a static model into IR layers; raise one UserError listing all unplaced nodes."""
    matches, unplaced = place(view, ALL_RULES, prematches=mask_matches(view))
    if unplaced:
        raise unsupported_error(unplaced)
    return assemble(view, matches)


def import_static(path: str | Path, seq_len: int | None = None, context: int | None = None):
    """ONNX file -> (float layer graph with blocks and roles annotated, the static ONNX model it came from)."""
    model, view, matches, unplaced = _place(path, seq_len, context)
    if unplaced:
        raise unsupported_error(unplaced)
    return _finish(view, matches, path, seq_len, context), model


def import_onnx(path: str | Path, seq_len: int | None = None, context: int | None = None) -> Graph:
    """ONNX file -> float layer graph with blocks and roles annotated."""
    return import_static(path, seq_len, context)[0]
