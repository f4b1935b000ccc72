"""Fold ``Add(Linear(x), c)`` into the Linear's bias when c is a constant vector of the output width.

Exporters write the bias as a separate Add (MatMul + Add), onnxruntime's optimizer moves it into BiasGelu or
SkipLayerNormalization; afterwards the IR always has Linear(x) = x @ W + b. The Linear takes the Add's output
name, so comparisons with ONNX by name still hold.
"""

from __future__ import annotations

import numpy as np

from ...host.graph import Graph


def merge_bias(graph: Graph) -> Graph:
    users = graph.consumers()
    drop: set[str] = set()
    for layer in graph.layers:
        if layer.op != "Linear" or "bias" in layer.params:
            continue
        following = users.get(layer.output, [])
        if len(following) != 1 or layer.output in graph.outputs:
            continue
        add = following[0]
        width = layer.params["weight"].shape[1]
        const = add.params.get("const")
        if add.op != "Add" or const is None or const.size != width or const.shape[-1] != width:
            continue
        layer.params["bias"] = const.reshape(width).astype(np.float32)
        graph.tensors.pop(layer.output, None)
        layer.outputs = [add.output]
        layer.onnx_nodes = layer.onnx_nodes + add.onnx_nodes
        drop.add(add.name)
    graph.layers = [l for l in graph.layers if l.name not in drop]
    graph.validate()
    return graph
