"""The layer graph: fpgaformer's IR and the in-memory form of an artifact (numpy only).

A `Graph` is a topologically ordered list of `Layer`s over named `Tensor`s. Layers are transformer-level
operations (see `OPS`), not ONNX ops. Every tensor has a shape (batch 1 included where the ONNX model has it)
and an element type: ``float32`` before quantization, a fixed-point type (``host.fixed.FixedType``, stored
here as its dict) after; ``int64`` for token ids and ``bool`` for masks.

Tensor names are the ONNX tensor names wherever an IR tensor computes the same value as an ONNX tensor, so
the float executor can be compared with onnxruntime name by name. Layer names are the ONNX node names of the
node that produced their output (untrusted text: sanitise before use in C++ or paths).

Parameters (weights) live in ``Layer.params`` as numpy arrays; the manifest stores them in ``weights.npz``
under the key ``"<layer>/<param>"``.

Invariants (checked by `Graph.validate`):
  * every layer input is a graph input or the output of an earlier layer;
  * every tensor name is produced exactly once;
  * every layer's op is in `OPS` and carries the params that op needs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# op name -> (required params, doc). The single list of IR operations; emulator, HLS kernels and tests share
# these names.
OPS: dict[str, tuple[tuple[str, ...], str]] = {
    "Embedding": (("table",), "y[..., :] = table[ids[...]]; table (vocab, d)"),
    "Linear": (("weight",), "y = x @ weight + bias; weight (in, out), bias (out,) optional"),
    "MatMul": ((), "y = a @ b over the last two axes, broadcasting leading axes (activation x activation)"),
    "LayerNorm": (("gamma",), "y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis"),
    "RMSNorm": (("gamma",), "y = x / sqrt(mean(x^2) + eps) * gamma over the last axis"),
    "Softmax": ((), "y = exp(x - max) / sum(exp(x - max)) over the last axis; optional additive mask input 2"),
    "GELU": ((), "y = x * Phi(x) (approximate='none') or the tanh form (approximate='tanh')"),
    "SiLU": ((), "y = x * sigmoid(x)"),
    "Add": ((), "y = a + b (broadcasting); b may be the constant param 'const'"),
    "Mul": ((), "y = a * b (broadcasting); b may be the constant param 'const'"),
    "RoPE": (("cos", "sin"), "rotary embedding on the first rotary_dim features: x*cos + rotate(x)*sin"),
    "Reshape": ((), "y = x.reshape(shape)"),
    "Transpose": ((), "y = x.transpose(perm)"),
    "Expand": ((), "y = broadcast_to(x, shape)"),
    "Slice": ((), "y = x[starts:ends:steps] on axes"),
    "Concat": ((), "y = concatenate(inputs, axis)"),
    "PaddingMask": ((), "additive mask from attention_mask (batch, seq): 0 where attended, neg elsewhere; "
                        "shape (1, 1, q, k); causal=True also masks k > q"),
    "Constant": (("value",), "y = value (a tensor fixed at compile time, e.g. a causal mask)"),
    "FakeQuant": (("scale", "zero_point"), "QuantizeLinear -> DequantizeLinear of a pre-quantized model: "
                                           "y = (clip(round_half_even(x / scale) + zp, qmin, qmax) - zp) * scale"),
}


@dataclass
class Tensor:
    """A named value: shape and element type (``float32``, ``int64``, ``bool`` or a fixed-point dict)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    fixed: dict | None = None  # FixedType as dict once quantized

    def to_json(self) -> dict:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.fixed is not None:
            d["fixed"] = self.fixed
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Tensor":
        return cls(d["name"], tuple(d["shape"]), d.get("dtype", "float32"), d.get("fixed"))


@dataclass
class Layer:
    """One IR operation.

    ``attrs`` are JSON-able settings of the op (axis, eps, heads...); ``params`` are constant arrays;
    ``hw`` holds per-layer hardware settings (reuse factor, strategy, precision overrides) filled by later
    passes; ``block`` is the transformer block index (None outside blocks); ``role`` says what the layer is
    inside a block (``q_proj``, ``attn_softmax``, ``ffn_act``...); ``onnx_nodes`` lists the ONNX nodes the
    layer replaces.
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    hw: dict[str, Any] = field(default_factory=dict)
    block: int | None = None
    role: str | None = None
    onnx_nodes: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.outputs[0]

    def n_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def to_json(self) -> dict:
        d = {"name": self.name, "op": self.op, "inputs": self.inputs, "outputs": self.outputs,
             "attrs": self.attrs, "params": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                                             for k, v in self.params.items()}}
        for key in ("hw", "block", "role", "onnx_nodes"):
            value = getattr(self, key)
            if value not in (None, {}, []):
                d[key] = value
        return d


@dataclass
class Graph:
    """Ordered layers over named tensors, with graph inputs and outputs."""

    inputs: list[str]
    outputs: list[str]
    tensors: dict[str, Tensor]
    layers: list[Layer]
    meta: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------------------------------------- queries
    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def producer(self) -> dict[str, Layer]:
        return {out: layer for layer in self.layers for out in layer.outputs}

    def consumers(self) -> dict[str, list[Layer]]:
        users: dict[str, list[Layer]] = {}
        for layer in self.layers:
            for name in layer.inputs:
                users.setdefault(name, []).append(layer)
        return users

    def blocks(self) -> dict[int, list[Layer]]:
        found: dict[int, list[Layer]] = {}
        for layer in self.layers:
            if layer.block is not None:
                found.setdefault(layer.block, []).append(layer)
        return dict(sorted(found.items()))

    def n_params(self) -> int:
        return sum(layer.n_params() for layer in self.layers)

    def validate(self) -> None:
        """Raise ValueError if the invariants in the module docstring do not hold."""
        known = set(self.inputs)
        for layer in self.layers:
            if layer.op not in OPS:
                raise ValueError(f"layer {layer.name!r}: unknown op {layer.op!r}")
            missing = [p for p in OPS[layer.op][0] if p not in layer.params]
            if missing:
                raise ValueError(f"layer {layer.name!r} ({layer.op}) lacks params {missing}")
            for name in layer.inputs:
                if name and name not in known:
                    raise ValueError(f"layer {layer.name!r} reads {name!r} before it is produced")
            for name in layer.outputs:
                if name in known:
                    raise ValueError(f"tensor {name!r} is produced twice")
                if name not in self.tensors:
                    raise ValueError(f"tensor {name!r} has no shape/type entry")
                known.add(name)
        for name in self.outputs:
            if name not in known:
                raise ValueError(f"graph output {name!r} is never produced")

    # ------------------------------------------------------------------------------------ serialisation
    def to_json(self) -> dict:
        return {"inputs": self.inputs, "outputs": self.outputs, "meta": self.meta,
                "tensors": [t.to_json() for t in self.tensors.values()],
                "layers": [layer.to_json() for layer in self.layers]}

    def weights(self) -> dict[str, np.ndarray]:
        return {f"{layer.name}/{k}": v for layer in self.layers for k, v in layer.params.items()}

    @classmethod
    def from_json(cls, d: dict, weights: dict[str, np.ndarray]) -> "Graph":
        layers = []
        for ld in d["layers"]:
            params = {k: np.asarray(weights[f"{ld['name']}/{k}"]) for k in ld.get("params", {})}
            layers.append(Layer(ld["name"], ld["op"], list(ld["inputs"]), list(ld["outputs"]),
                                ld.get("attrs", {}), params, ld.get("hw", {}), ld.get("block"),
                                ld.get("role"), ld.get("onnx_nodes", [])))
        tensors = {t["name"]: Tensor.from_json(t) for t in d["tensors"]}
        return cls(list(d["inputs"]), list(d["outputs"]), tensors, layers, d.get("meta", {}))

    def copy(self) -> "Graph":
        """A deep copy of structure and settings; parameter arrays are shared (treat them as read-only)."""
        layers = [dataclasses.replace(l, inputs=list(l.inputs), outputs=list(l.outputs),
                                      attrs=json.loads(json.dumps(l.attrs)), params=dict(l.params),
                                      hw=json.loads(json.dumps(l.hw)), onnx_nodes=list(l.onnx_nodes))
                  for l in self.layers]
        tensors = {k: dataclasses.replace(t) for k, t in self.tensors.items()}
        return Graph(list(self.inputs), list(self.outputs), tensors, layers, json.loads(json.dumps(self.meta)))


def layer_macs(layer: Layer, graph: Graph) -> int:
    """Multiply-accumulates of one execution of ``layer`` on the graph's shapes (one sequence).

    Linear (.., in) x (in, out): rows * in * out; MatMul (.., m, k) x (.., k, n): prod(output) * k; other ops
    are not MACs (0)."""
    if layer.op == "Linear":
        rows = int(np.prod(graph.tensors[layer.output].shape[:-1]))
        return rows * int(np.prod(layer.params["weight"].shape))
    if layer.op == "MatMul":
        return int(np.prod(graph.tensors[layer.output].shape)) * int(graph.tensors[layer.inputs[0]].shape[-1])
    return 0
