"""A read-only view of a static ONNX graph for pattern rules: constants, shapes, producers and consumers."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper


class OnnxView:
    """Index over a static model (every tensor has a known shape; see load.make_static)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        g = model.graph
        self.nodes: list[onnx.NodeProto] = list(g.node)
        # every node gets a unique name: unnamed nodes ``{op}_{i}``, repeated names ``name#k``; a made-up name
        # never takes a real node's name (the rule engine keys nodes, and IR layers, by name)
        taken = {node.name for node in self.nodes if node.name}
        seen: set[str] = set()
        for i, node in enumerate(self.nodes):
            if node.name and node.name not in seen:
                seen.add(node.name)
                continue
            base = node.name or f"{node.op_type}_{i}"
            name, k = base, 2
            while name in taken or name in seen:
                name, k = f"{base}#{k}", k + 1
            node.name = name
            seen.add(name)
        self.order = {node.name: i for i, node in enumerate(self.nodes)}
        self.const: dict[str, np.ndarray] = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
        self.inputs = [i.name for i in g.input if i.name not in self.const]
        self.outputs = [o.name for o in g.output]
        self.shape: dict[str, tuple[int, ...]] = {}
        self.dtype: dict[str, np.dtype] = {}
        for info in list(g.input) + list(g.value_info) + list(g.output):
            tt = info.type.tensor_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                self.shape[info.name] = tuple(d.dim_value for d in tt.shape.dim)
            if tt.elem_type:
                self.dtype[info.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        for name, value in self.const.items():
            self.shape[name] = tuple(value.shape)
            self.dtype[name] = value.dtype
        self.producer: dict[str, onnx.NodeProto] = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)

    # ------------------------------------------------------------------------------------------- helpers
    def is_const(self, name: str) -> bool:
        return name in self.const

    def users(self, name: str) -> list[onnx.NodeProto]:
        return self.consumers.get(name, [])

    def only_user(self, name: str) -> onnx.NodeProto | None:
        users = self.users(name)
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def attrs(self, node: onnx.NodeProto) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def scalar(self, name: str) -> float | None:
        """The value of a constant with a single element, else None."""
        value = self.const.get(name)
        if value is None or value.size != 1:
            return None
        return float(value.reshape(()))

    def split_const(self, node: onnx.NodeProto) -> tuple[str | None, str | None]:
        """For a binary node with one constant operand: (variable input, constant input)."""
        a, b = node.input[0], node.input[1]
        if self.is_const(b) and not self.is_const(a):
            return a, b
        if self.is_const(a) and not self.is_const(b):
            return b, a
        return None, None
