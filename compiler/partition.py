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

import numpy as np

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


def external_inputs(layers: list[Layer]) -> list[str]:
    """The tensors ``layers`` read that none of them produces, in first-read order."""
    produced = {o for l in layers for o in l.outputs}
    inputs: list[str] = []
    for layer in layers:
        for name in layer.inputs:
            if name and name not in produced and name not in inputs:
                inputs.append(name)
    return inputs


def _sub_graph(graph: Graph, layers: list[Layer], kind: str, copied: tuple[Layer, ...] = ()) -> Graph:
    produced = {o for l in layers for o in l.outputs}
    inputs = external_inputs(layers)
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


# ----------------------------------------------------------------------------------------- decoder step
POSITION = "position"  # kernel input: index of the new token (= number of cached rows)
KV_WRITE = "KVWrite"   # kernel-internal op: the cache with the new row written at `position`


def cache_input(tensor: str) -> str:
    return f"{tensor}::cache"


@dataclass
class StepPartition(Partition):
    """One block of a causal LM as an incremental-decoding kernel: one token in, fixed maximum context.

    Inputs: the residual-stream row entering the block (1, 1, d), the 0/1 attention mask of the context
    (1, C), the position p of the new token, and one cache input per cache point (the K / V tensor at the point
    where attention reads it, with all C rows; rows >= p are ignored). Outputs: the row leaving the block, then
    the new K / V rows (the host writes them into its cache at row p).

    The graph is not a plain IR graph: it holds step variants of RoPE (table row from ``position``), the mask
    (keys k <= p), constant causal masks (row p) and the kernel-internal op ``KVWrite``. Its reference is
    `emulate_step`, which runs the same layers the way host/decoder.py does (cache rows concatenated).
    """

    context: int = 0
    cache_points: dict = None  # tensor -> token axis
    source: Graph = None       # the whole quantized graph the block came from


def decoder_step_partition(graph: Graph, block: int, decoder=None) -> StepPartition:
    """The incremental-decoding kernel of ``block`` (see `StepPartition`)."""
    import dataclasses

    from ..host.decoder import IncrementalDecoder
    from ..host.graph import Tensor

    dec = decoder or IncrementalDecoder(graph)
    context = dec.context
    points = {c.tensor: c.axis for c in dec.cache_points if c.block == block}
    if not points:
        raise ValueError(f"block {block} reads no K/V cache: not a decoder block")
    layers = block_layers(graph, block)
    names = {l.name for l in layers}
    produced = {o for l in layers for o in l.outputs}
    tensors: dict[str, Tensor] = {}

    def resized(name: str) -> Tensor:
        t = graph.tensors[name]
        if name in graph.inputs and t.fixed is None:  # the attention mask covers the whole context
            return Tensor(name, tuple(t.shape), t.dtype, t.fixed)
        return Tensor(name, dec._resized(name, 1, context), t.dtype, t.fixed)

    step_layers: list[Layer] = []
    inputs = external_inputs(layers)
    for name in inputs:
        tensors[name] = resized(name)
    tensors[POSITION] = Tensor(POSITION, (1,), "int64")
    for layer in layers:
        step = dec._layer_for_step(layer, 1, context, 0)
        step = dataclasses.replace(step, inputs=list(step.inputs), attrs=dict(step.attrs))
        step.attrs.pop("position", None)
        if layer.op == "Constant":
            step = dataclasses.replace(layer, inputs=[POSITION], attrs={**layer.attrs, "step_row": True})
        elif layer.op in ("RoPE", "PaddingMask"):
            step.inputs = step.inputs + [POSITION]
            step.attrs["step"] = True
        elif layer.op in ("Add", "Mul") and "const_slice" in step.attrs:
            raise ValueError(f"layer {layer.name!r}: a position-dependent constant inside a block is not "
                             "supported in the decoder-step kernel")
        for out in layer.outputs:
            tensors[out] = resized(out)
        step_layers.append(step)
        if layer.output in points:
            axis = points[layer.output]
            cache = cache_input(layer.output)
            shape = list(tensors[layer.output].shape)
            shape[axis] = context
            tensors[cache] = Tensor(cache, tuple(shape), "float32", tensors[layer.output].fixed)
            inputs.append(cache)
            full = f"{layer.output}::kv"
            tensors[full] = Tensor(full, tuple(shape), "float32", tensors[layer.output].fixed)
            step_layers.append(Layer(full, KV_WRITE, [cache, layer.output, POSITION], [full],
                                     {"axis": axis}, block=block, role="kv_write"))
    for step in step_layers:  # attention reads the cache with the new row written
        if step.op == "MatMul" and len(step.inputs) > 1 and step.inputs[1] in points:
            step.inputs[1] = f"{step.inputs[1]}::kv"
    # inputs: residual row, mask, position, caches
    kinds = lambda n: 0 if tensors[n].fixed is not None and "::cache" not in n else \
        (1 if tensors[n].dtype != "float32" else 3)  # noqa: E731
    ordered = sorted(inputs, key=kinds)
    ordered.insert(next((i for i, n in enumerate(ordered) if kinds(n) == 3), len(ordered)), POSITION)
    later_reads = {i for l in graph.layers if l.name not in names for i in l.inputs}
    copied = {l.name for l in layers if l.block != block}
    outputs = [o for l in layers if l.name not in copied for o in l.outputs
               if (o in later_reads or o in graph.outputs)] + list(points)
    meta = {k: v for k, v in graph.meta.items() if k != "onnx_outputs"}
    meta.update(partition="decoder_step", context=context)
    sub = Graph(ordered, outputs, tensors, step_layers, meta)
    for l, orig in zip(sub.layers, step_layers):
        l.params = dict(orig.params)
    return StepPartition(f"block{block}_step", block, sub, context, points, graph)


def emulate_step(part: StepPartition, decoder, x_row: np.ndarray, caches: dict[str, np.ndarray],
                 mask: np.ndarray, position: int) -> dict[str, np.ndarray]:
    """Reference of the step kernel: host/decoder.py's step for one block (codes in, codes out).

    ``caches``: tensor -> the cached rows 0..p-1 (codes, p = position); ``mask``: 0/1 of tokens 0..p.
    Returns the block's outputs: the row leaving it and the new K / V rows (by tensor name)."""
    graph, p = part.source, int(position)
    env: dict[str, np.ndarray] = {}
    row_input = next(n for n in part.graph.inputs if part.graph.tensors[n].fixed is not None
                     and "::cache" not in n)
    env[row_input] = x_row
    for name in part.graph.inputs:
        if name != row_input and name != POSITION and "::cache" not in name:
            env[name] = np.asarray(mask, np.int64).reshape(1, p + 1)
    for layer in block_layers(graph, part.block):
        step = decoder._layer_for_step(layer, 1, p + 1, p)
        out, _ = decoder.emulator._run_layer(step, env)
        if layer.output in part.cache_points:
            env[f"{layer.output}::new"] = out
            cached = caches.get(layer.output)
            if cached is not None and p > 0:
                out = np.concatenate([np.take(cached, np.arange(p), axis=part.cache_points[layer.output]), out],
                                     axis=part.cache_points[layer.output])
        env[layer.output] = out
    return {name: env[f"{name}::new"] if name in part.cache_points else env[name] for name in part.graph.outputs}
