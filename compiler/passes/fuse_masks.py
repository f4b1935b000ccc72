"""Move attention masks into the Softmax kernel: Softmax(Add(scores, mask)) -> Softmax(scores, keep).

Hardware has no -inf: the masked softmax kernel takes boolean keep flags and gives masked keys exactly zero
weight. The PaddingMask layer then produces keep flags (``keep_flags`` attr, dtype bool); a constant additive
mask (a folded causal triangle) becomes a Constant of keep flags (entries > -1e4 are kept).
Float semantics are unchanged: softmax(x + mask) == softmax(where(keep, x, -inf)) for masks of 0 / <= -1e4
(the difference, exp(-1e4), underflows float32).
"""

from __future__ import annotations

import numpy as np

from ...host.graph import Graph, Layer, Tensor

NEG_MIN = -1e4


def fuse_masks(graph: Graph) -> Graph:
    producer = graph.producer()
    users = graph.consumers()
    drop = set()
    extra: list[tuple[int, Layer]] = []
    for index, layer in enumerate(graph.layers):
        if layer.op != "Softmax" or len(layer.inputs) > 1:
            continue
        add = producer.get(layer.inputs[0])
        if add is None or add.op != "Add" or len(users.get(add.output, [])) != 1:
            continue
        if "const" in add.params:
            const = add.params["const"]
            if const.min() > NEG_MIN or np.any((const < 0) & (const > NEG_MIN)):
                continue
            keep_name = f"{add.output}::keep"
            keep = Layer(keep_name, "Constant", [], [keep_name], params={"value": const > NEG_MIN},
                         block=add.block, role="attn_mask")
            graph.tensors[keep_name] = Tensor(keep_name, tuple(const.shape), "bool")
            extra.append((index, keep))
            layer.inputs = [add.inputs[0], keep_name]
        else:
            mask_side = [i for i in add.inputs if i in producer and producer[i].op == "PaddingMask"]
            if len(mask_side) != 1:
                continue
            mask = producer[mask_side[0]]
            mask.attrs["keep_flags"] = True
            graph.tensors[mask.output].dtype = "bool"
            scores = next(i for i in add.inputs if i != mask_side[0])
            layer.inputs = [scores, mask.output]
        layer.onnx_nodes = add.onnx_nodes + layer.onnx_nodes
        drop.add(add.name)
        graph.tensors.pop(add.output, None)
    layers = [l for l in graph.layers if l.name not in drop]
    for index, keep in extra:  # constants go first; order among layers does not matter for them
        layers.insert(0, keep)
    graph.layers = layers
    graph.validate()
    return graph
