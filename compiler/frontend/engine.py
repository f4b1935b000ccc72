"""Rule engine: place every ONNX node into IR layers, or list the ones no rule could place.

A rule is ``fn(node, view) -> Match | None`` registered with the op types of the nodes it may start from
(its seeds). Rules run in priority order (fusions before the 1:1 lowerings); each rule visits the unplaced
seed nodes in graph order. A match is accepted only when none of its nodes is placed already and no tensor
made inside it is used outside it except those it exports (layer outputs and aliases).

IR layer names are unique by construction: one ``Namer`` knows every ONNX node name and every name already
given. A layer keeps the name of the ONNX node it lowers; a name a rule derives (``node::bias``, a mask
frontier's tensor name) that is some ONNX node's name or a name already given gets a ``#k`` suffix. Tensors a
rule creates (``new_tensors``) are renamed the same way when they clash with an ONNX tensor or another rule's.

IR tensor names are the ONNX tensor names; an alias says that an ONNX tensor holds the same value as another
(Dropout at inference, Identity, a float->float Cast), and is resolved when the graph is assembled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import onnx

from ...host.graph import Graph, Layer, Tensor
from ..errors import UserError
from .view import OnnxView


@dataclass
class Match:
    nodes: list[onnx.NodeProto]
    layers: list[Layer] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    # shapes/dtypes of tensors a rule creates that do not exist in the ONNX graph
    new_tensors: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)


RuleFn = Callable[[onnx.NodeProto, OnnxView], "Match | None"]


@dataclass
class Rule:
    name: str
    seeds: frozenset[str]
    fn: RuleFn


def rule(name: str, seeds: Iterable[str]):
    """Decorator: turn ``fn(node, view)`` into a Rule starting from nodes of the given op types."""
    def wrap(fn: RuleFn) -> Rule:
        return Rule(name, frozenset(seeds), fn)
    return wrap


class Namer:
    """Hands out unique names: never one already given; a reserved name (an ONNX node's) only to its owner."""

    def __init__(self, reserved: Iterable[str] = ()):
        self.reserved = set(reserved)
        self.given: set[str] = set()

    def fresh(self, base: str, owned: bool = False) -> str:
        name = base
        k = 2
        while name in self.given or (name in self.reserved and not owned):
            name, k, owned = f"{base}#{k}", k + 1, False
        self.given.add(name)
        return name


def _name_match(match: Match, view: OnnxView, layers: Namer, tensors: Namer) -> None:
    """Rename, in place, the layers and created tensors of an accepted match so that no name is given twice."""
    own = {n.name for n in match.nodes}
    renamed: dict[str, str] = {}
    for name in match.new_tensors:
        renamed[name] = tensors.fresh(name)
    renamed = {a: b for a, b in renamed.items() if a != b}
    if renamed:
        match.new_tensors = {renamed.get(k, k): v for k, v in match.new_tensors.items()}
        for layer in match.layers:
            layer.inputs = [renamed.get(i, i) for i in layer.inputs]
            layer.outputs = [renamed.get(o, o) for o in layer.outputs]
        match.aliases = {k: renamed.get(v, v) for k, v in match.aliases.items()}
    for layer in match.layers:
        layer.name = layers.fresh(layer.name, owned=layer.name in own)


def _exports(match: Match) -> set[str]:
    out = {o for layer in match.layers for o in layer.outputs}
    return out | set(match.aliases)


def _acceptable(match: Match, view: OnnxView, placed: dict[str, str]) -> bool:
    names = {n.name for n in match.nodes}
    if any(n in placed for n in names):
        return False
    exported = _exports(match)
    for node in match.nodes:
        for out in node.output:
            if not out or out in exported:
                continue
            if out in view.outputs or any(u.name not in names for u in view.users(out)):
                return False
    return True


def place(view: OnnxView, rules: list[Rule], prematches: list[Match] = ()
          ) -> tuple[list[tuple[int, Match]], list[onnx.NodeProto]]:
    """Apply rules; return accepted matches with their graph position, and the nodes left unplaced.

    ``prematches`` (found by whole-graph analyses such as the mask rule) are accepted first.
    """
    placed: dict[str, str] = {}
    matches: list[tuple[int, Match]] = []
    layer_names = Namer(view.order)
    onnx_tensors = set(view.shape) | set(view.dtype) | set(view.producer) | set(view.consumers) | set(view.inputs)
    tensor_names = Namer()
    tensor_names.given.update(onnx_tensors)

    def accept(match: Match | None, rule_name: str) -> None:
        if match is None or not _acceptable(match, view, placed):
            return
        for n in match.nodes:
            placed[n.name] = rule_name
        _name_match(match, view, layer_names, tensor_names)
        for layer in match.layers:
            layer.onnx_nodes = layer.onnx_nodes or [n.name for n in match.nodes]
            layer.attrs.setdefault("rule", rule_name)
        matches.append((max(view.order[n.name] for n in match.nodes), match))

    for match in prematches:
        accept(match, "mask")
    for r in rules:
        for node in view.nodes:
            if node.name not in placed and node.op_type in r.seeds:
                accept(r.fn(node, view), r.name)
    unplaced = [n for n in view.nodes if n.name not in placed]
    return matches, unplaced


def unsupported_error(unplaced: list[onnx.NodeProto]) -> UserError:
    lines = "\n".join(f"  {n.name} ({n.op_type}{'' if n.domain in ('', 'ai.onnx') else ', ' + n.domain})"
                      for n in unplaced)
    return UserError(f"{len(unplaced)} ONNX node(s) match no fpgaformer rule:\n{lines}\n"
                     "These ops are not supported yet. Export without them (e.g. attn_implementation='eager', "
                     "no training-only ops), or report the model so a rule can be added.")


def assemble(view: OnnxView, matches: list[tuple[int, Match]]) -> Graph:
    """Order the matched layers, resolve aliases and attach shapes/types."""
    aliases: dict[str, str] = {}
    new_tensors: dict[str, tuple[tuple[int, ...], str]] = {}
    keyed: list[tuple[int, int, Layer]] = []
    for position, match in matches:
        aliases.update(match.aliases)
        new_tensors.update(match.new_tensors)
        for sub, layer in enumerate(match.layers):
            # a layer sits where the ONNX node making its output sits (a match may span the graph)
            producer = view.producer.get(layer.outputs[0])
            keyed.append((view.order[producer.name] if producer is not None and len(match.layers) > 1
                          else position, sub, layer))
    ordered = [layer for _, _, layer in sorted(keyed, key=lambda k: (k[0], k[1]))]

    def resolve(name: str) -> str:
        seen = set()
        while name in aliases and name not in seen:
            seen.add(name)
            name = aliases[name]
        return name

    tensors: dict[str, Tensor] = {}

    def describe(name: str) -> Tensor:
        if name in new_tensors:
            shape, dtype = new_tensors[name]
            return Tensor(name, tuple(shape), dtype)
        dtype = view.dtype.get(name, np.dtype(np.float32))
        kind = "float32" if dtype.kind == "f" else ("bool" if dtype.kind == "b" else "int64")
        return Tensor(name, view.shape[name], kind)

    used: set[str] = set()
    for layer in ordered:
        layer.inputs = [resolve(i) if i else i for i in layer.inputs]
        used.update(i for i in layer.inputs if i)
        for out in layer.outputs:
            tensors[out] = describe(out)
    inputs = [i for i in view.inputs if i in used]
    for name in inputs:
        tensors[name] = describe(name)
    outputs = [resolve(o) for o in view.outputs]
    graph = Graph(inputs, outputs, tensors, ordered,
                  meta={"onnx_outputs": {o: resolve(o) for o in view.outputs}})
    graph.validate()
    return graph
