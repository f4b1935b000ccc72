"""Split a quantized layer graph into kernels: one subgraph per transformer block (the default partition).

``partition(graph)`` returns one `Partition` per block index, in order. Each holds a self-contained `Graph`
(the same layers, tensors and types, parameters shared) that the emulator runs on its own
(``Emulator(p.graph)``) and the backend lowers to one HLS kernel:

* inputs: the residual-stream tensor entering the block (fixed-point), then the mask the block's softmaxes
  read. A ``PaddingMask`` layer that turns the model's ``attention_mask`` into keep flags is copied into every
  block that uses it, so the kernel input is the (1, seq) 0/1 mask, not (seq x seq) flags; constant keep flags
  (a folded causal triangle) are copied in as ``Constant`` layers;
* outputs: every tensor produced in the block and read after it (normally the residual stream leaving it).

Layers outside blocks (embedding, final norm, pooling, LM head) run on the host and are not partitioned.
Invariants: every partition graph validates; the concatenation of the block partitions, fed with the host
layers' outputs, computes exactly what the whole graph computes (the emulator of a block partition is the
emulator of those layers in the whole graph, code for code).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..host.graph import Graph, Layer

COPIED_INTO_BLOCKS = ("PaddingMask", "Constant")


@dataclass
class Partition:
    name: str  # kernel name (an identifier: "block0", ...)
    block: int | None
    graph: Graph

    @property
    def inputs(self) -> list[str]:
        return self.graph.inputs

    @property
    def outputs(self) -> list[str]:
        return self.graph.outputs


def _sub_graph(graph: Graph, layers: list[Layer], kind: str, copied: tuple[Layer, ...] = ()) -> Graph:
    produced = {o for l in layers for o in l.outputs}
    inputs: list[str] = []
    for layer in layers:
        for name in layer.inputs:
            if name and name not in produced and name not in inputs:
                inputs.append(name)
    # residual stream (fixed-point) first, then masks / ids
    inputs.sort(key=lambda n: 0 if graph.tensors[n].fixed is not None else 1)
    names = {l.name for l in layers}
    later_reads = {i for l in graph.layers if l.name not in names for i in l.inputs}
    copied_names = {l.name for l in copied}  # mask layers copied into the block: the host has their outputs
    outputs = [o for l in layers if l.name not in copied_names for o in l.outputs
               if o in later_reads or o in graph.outputs]
    tensors = {n: graph.tensors[n] for n in inputs + sorted(produced)}
    meta = {k: v for k, v in graph.meta.items() if k not in ("onnx_outputs",)}
    meta["partition"] = kind
    sub = Graph(inputs, outputs, tensors, layers, meta).copy()
    for layer, original in zip(sub.layers, layers):
        layer.params = dict(original.params)
    sub.validate()
    return sub


def block_layers(graph: Graph, block: int) -> list[Layer]:
    """The layers of one block, preceded by the mask layers (outside any block) it reads."""
    producer = graph.producer()
    members = [l for l in graph.layers if l.block == block]
    inside = {o for l in members for o in l.outputs}
    extra: list[Layer] = []
    for layer in members:
        for name in layer.inputs:
            src = producer.get(name)
            if src is not None and name not in inside and src.op in COPIED_INTO_BLOCKS and src not in extra:
                if all(i in graph.inputs for i in src.inputs):
                    extra.append(src)
    return extra + members


def partition(graph: Graph) -> list[Partition]:
    """One partition per transformer block (see the module docstring)."""
    if any(t.fixed is None and t.dtype == "float32" for t in graph.tensors.values()):
        raise ValueError("partition needs a quantized graph (run compiler.quantize first)")
    parts = []
    for index in graph.blocks():
        layers = block_layers(graph, index)
        copied = tuple(l for l in layers if l.block != index)
        parts.append(Partition(f"block{index}", index, _sub_graph(graph, layers, "block", copied)))
    return parts
