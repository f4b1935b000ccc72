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

from .fixed import MAX_SIGNED_WIDTH, MAX_UNSIGNED_WIDTH, FixedType, FixedTypeError

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


# Limits of a graph read from a file (`Graph.from_json`): far above any model fpgaformer can place on an FPGA, far
# below what would exhaust the host when a corrupted manifest declares it.
MAX_TENSOR_ELEMENTS = 1 << 31  # elements of one tensor (one sequence)
MAX_PARAM_ELEMENTS = 1 << 31  # elements of one parameter array
MAX_PARAMS_BYTES = 1 << 36  # bytes of all parameter arrays together
MAX_RANK = 8
PARAM_KINDS = "biuf"  # numpy dtype kinds a parameter may have: bool, integers, floats (no objects, strings, complex)
TENSOR_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
# meta fields the code reads: name -> (allowed python types, low, high); None is always allowed (unknown)
META_INTS = {"seq_len": 1 << 20, "context": 1 << 20, "n_layers": 1 << 16, "d_model": 1 << 24, "n_heads": 1 << 16,
             "n_kv_heads": 1 << 16, "head_dim": 1 << 20, "d_ffn": 1 << 26, "vocab": 1 << 31}
KINDS = ("encoder", "decoder", "unknown")  # "unknown": compile found no transformer block (compiler.passes.blocks)


class GraphError(ValueError):
    """A graph that breaks the IR's rules, or a serialised graph (manifest) that is malformed: the message names
    the layer, tensor or field and what is wrong with it."""


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_shape(shape, what: str, limit: int = MAX_TENSOR_ELEMENTS, minimum: int = 1) -> tuple[int, ...]:
    """``shape`` as a tuple if it is a list/tuple of at most MAX_RANK whole numbers >= ``minimum`` whose product is
    at most ``limit``; a GraphError naming ``what`` otherwise."""
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_RANK or \
            not all(_is_int(d) and d >= minimum for d in shape):
        raise GraphError(f"{what} has shape {shape!r}; a shape is a list of at most {MAX_RANK} whole numbers "
                         f">= {minimum}")
    size = 1
    for dim in shape:
        size *= int(dim)
    if size > limit:
        raise GraphError(f"{what} has shape {list(shape)} ({size:,} elements), more than the {limit:,} a graph may "
                         "hold")
    return tuple(int(d) for d in shape)


def check_fixed(d, what: str) -> FixedType:
    """A fixed-point type dict of the IR: valid, and narrow enough for the int64 codes of the emulator."""
    try:
        t = FixedType.from_dict(d)
    except FixedTypeError as e:
        raise GraphError(f"{what}: {e}") from None
    if t.width > (MAX_SIGNED_WIDTH if t.signed else MAX_UNSIGNED_WIDTH):
        raise GraphError(f"{what}: {t.to_hls()} is wider than fpgaformer's int64 codes hold")
    return t


def check_meta(meta) -> dict:
    """The graph's ``meta`` dict: the fields the code reads have their types and ranges (others are free)."""
    if not isinstance(meta, dict):
        raise GraphError(f"graph 'meta' must be a JSON object, got {type(meta).__name__}")
    for key, high in META_INTS.items():
        value = meta.get(key)
        if value is not None and (not _is_int(value) or not 1 <= value <= high):
            raise GraphError(f"meta.{key} must be a whole number of 1..{high}, got {value!r}")
    kind = meta.get("kind")
    if kind is not None and kind not in KINDS:
        raise GraphError(f"meta.kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    precision = meta.get("precision")
    if precision is not None:
        if not isinstance(precision, dict):
            raise GraphError(f"meta.precision must be a JSON object of bit widths, got {precision!r}")
        for key in ("weight_bits", "act_bits"):
            bits = precision.get(key)
            if bits is not None and (not _is_int(bits) or not 1 <= bits <= MAX_SIGNED_WIDTH):
                raise GraphError(f"meta.precision.{key} must be a whole number of 1..{MAX_SIGNED_WIDTH}, got {bits!r}")
    for key in ("hardware", "folded_kv_cache", "onnx_outputs"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise GraphError(f"meta.{key} must be a JSON object, got {meta[key]!r}")
    for key in ("preset", "source"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise GraphError(f"meta.{key} must be a string, got {meta[key]!r}")
    if meta.get("notes") is not None and not isinstance(meta["notes"], list):
        raise GraphError(f"meta.notes must be a list, got {meta['notes']!r}")
    return meta


def _names(value, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GraphError(f"{what} must be a list of tensor names, got {value!r}"[:300])
    return value


def declared_params(d) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Check the structure of a serialised graph (`Graph.to_json`) and return the parameters it declares:
    {"<layer>/<param>": (shape, dtype)}, each within MAX_PARAM_ELEMENTS and all within MAX_PARAMS_BYTES. The
    loader reads no array the manifest does not declare, and none larger than declared."""
    if not isinstance(d, dict):
        raise GraphError(f"'graph' must be a JSON object, got {type(d).__name__}")
    for key, kind in (("inputs", list), ("outputs", list), ("tensors", list), ("layers", list)):
        if key not in d:
            raise GraphError(f"graph.{key} is missing")
        if not isinstance(d[key], kind):
            raise GraphError(f"graph.{key} must be a list, got {type(d[key]).__name__}")
    _names(d["inputs"], "graph.inputs")
    _names(d["outputs"], "graph.outputs")
    check_meta(d.get("meta", {}))
    seen = set()
    for i, t in enumerate(d["tensors"]):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise GraphError(f"graph.tensors[{i}] must be an object with a string 'name'")
        name = t["name"]
        if name in seen:
            raise GraphError(f"tensor {name!r} is listed twice")
        seen.add(name)
        if "shape" not in t:
            raise GraphError(f"tensor {name!r} has no shape")
        check_shape(t["shape"], f"tensor {name!r}")
        dtype = t.get("dtype", "float32")
        if dtype not in TENSOR_DTYPES:
            raise GraphError(f"tensor {name!r} has dtype {dtype!r}; known: {', '.join(TENSOR_DTYPES)}")
        if t.get("fixed") is not None:
            check_fixed(t["fixed"], f"tensor {name!r}")
    params: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    total = 0
    layer_names = set()
    for i, ld in enumerate(d["layers"]):
        if not isinstance(ld, dict) or not isinstance(ld.get("name"), str):
            raise GraphError(f"graph.layers[{i}] must be an object with a string 'name'")
        name = ld["name"]
        if name in layer_names:
            raise GraphError(f"layer {name!r} is listed twice")
        layer_names.add(name)
        if not isinstance(ld.get("op"), str):
            raise GraphError(f"layer {name!r} has no op name")
        if ld["op"] not in OPS:
            raise GraphError(f"layer {name!r}: unknown op {ld['op']!r}")
        _names(ld.get("inputs"), f"layer {name!r}: inputs")
        _names(ld.get("outputs"), f"layer {name!r}: outputs")
        if not ld["outputs"]:
            raise GraphError(f"layer {name!r} has no outputs")
        for key, kind in (("attrs", dict), ("params", dict), ("hw", dict), ("onnx_nodes", list)):
            if key in ld and not isinstance(ld[key], kind):
                raise GraphError(f"layer {name!r}: {key} must be a JSON {'object' if kind is dict else 'list'}")
        if ld.get("block") is not None and not _is_int(ld["block"]):
            raise GraphError(f"layer {name!r}: block must be a whole number, got {ld['block']!r}")
        if ld.get("role") is not None and not isinstance(ld["role"], str):
            raise GraphError(f"layer {name!r}: role must be a string, got {ld['role']!r}")
        quant = ld.get("attrs", {}).get("quant")
        if quant is not None:
            if not isinstance(quant, dict):
                raise GraphError(f"layer {name!r}: attrs.quant must be a JSON object")
            for key, value in quant.items():
                if key.endswith("_type"):
                    check_fixed(value, f"layer {name!r}: {key}")
        for key, spec in ld.get("params", {}).items():
            what = f"parameter {name}/{key}"
            if not isinstance(spec, dict) or "shape" not in spec or not isinstance(spec.get("dtype"), str):
                raise GraphError(f"{what} must be declared as {{shape, dtype}}, got {spec!r}"[:300])
            shape = check_shape(spec["shape"], what, MAX_PARAM_ELEMENTS, minimum=0)
            try:
                dtype = np.dtype(spec["dtype"])
            except (TypeError, ValueError, SyntaxError):
                raise GraphError(f"{what} has an unknown dtype {spec['dtype']!r}") from None
            if dtype.kind not in PARAM_KINDS or dtype.hasobject:
                raise GraphError(f"{what} has dtype {dtype}; parameters are booleans, integers or floats")
            total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            params[f"{name}/{key}"] = (shape, dtype)
    if total > MAX_PARAMS_BYTES:
        raise GraphError(f"the parameters declare {total:,} bytes, more than the {MAX_PARAMS_BYTES:,} a graph may hold")
    return params


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
        """Raise GraphError (a ValueError) if the invariants in the module docstring do not hold."""
        known = set()
        for name in self.inputs:
            if name in known:
                raise GraphError(f"graph input {name!r} is listed twice")
            if name not in self.tensors:
                raise GraphError(f"graph input {name!r} has no shape/type entry")
            known.add(name)
        for layer in self.layers:
            if layer.op not in OPS:
                raise GraphError(f"layer {layer.name!r}: unknown op {layer.op!r}")
            missing = [p for p in OPS[layer.op][0] if p not in layer.params]
            if missing:
                raise GraphError(f"layer {layer.name!r} ({layer.op}) lacks params {missing}")
            for name in layer.inputs:
                if name and name not in known:
                    raise GraphError(f"layer {layer.name!r} reads {name!r} before it is produced")
            for name in layer.outputs:
                if name in known:
                    raise GraphError(f"tensor {name!r} is produced twice")
                if name not in self.tensors:
                    raise GraphError(f"tensor {name!r} has no shape/type entry")
                known.add(name)
        for name in self.outputs:
            if name not in known:
                raise GraphError(f"graph output {name!r} is never produced")
        for name, t in self.tensors.items():
            check_shape(t.shape, f"tensor {name!r}")

    # ------------------------------------------------------------------------------------ serialisation
    def to_json(self) -> dict:
        return {"inputs": self.inputs, "outputs": self.outputs, "meta": self.meta,
                "tensors": [t.to_json() for t in self.tensors.values()],
                "layers": [layer.to_json() for layer in self.layers]}

    def weights(self) -> dict[str, np.ndarray]:
        return {f"{layer.name}/{k}": v for layer in self.layers for k, v in layer.params.items()}

    @classmethod
    def from_json(cls, d: dict, weights: dict[str, np.ndarray]) -> "Graph":
        """The graph of a manifest (`to_json`) with its parameter arrays. Everything read is checked once, here:
        the structure (`declared_params`), every array against its declaration (same names, shapes and dtypes;
        finite values; quantized parameters within their fixed-point type), and the invariants (`validate`).
        Raises GraphError; the rest of the code trusts a graph this returns."""
        declared = declared_params(d)
        missing = sorted(set(declared) - set(weights))
        extra = sorted(set(weights) - set(declared))
        if missing or extra:
            raise GraphError(f"the weights do not match the parameters the graph declares (missing: "
                             f"{missing[:3] or 'none'}; not declared: {extra[:3] or 'none'})")
        for key, (shape, dtype) in declared.items():
            a = weights[key]
            if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dtype:
                got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                raise GraphError(f"parameter {key} is {got}; the graph declares {dtype} {shape}")
        layers = []
        for ld in d["layers"]:
            params = {k: weights[f"{ld['name']}/{k}"] for k in ld.get("params", {})}
            layers.append(Layer(ld["name"], ld["op"], list(ld["inputs"]), list(ld["outputs"]),
                                ld.get("attrs", {}), params, ld.get("hw", {}), ld.get("block"),
                                ld.get("role"), ld.get("onnx_nodes", [])))
        tensors = {t["name"]: Tensor.from_json(t) for t in d["tensors"]}
        graph = cls(list(d["inputs"]), list(d["outputs"]), tensors, layers, d.get("meta", {}))
        graph.validate()
        for layer in layers:
            _check_param_values(layer)
        return graph

    def copy(self) -> "Graph":
        """A deep copy of structure and settings; parameter arrays are shared (treat them as read-only)."""
        layers = [dataclasses.replace(l, inputs=list(l.inputs), outputs=list(l.outputs),
                                      attrs=json.loads(json.dumps(l.attrs)), params=dict(l.params),
                                      hw=json.loads(json.dumps(l.hw)), onnx_nodes=list(l.onnx_nodes))
                  for l in self.layers]
        tensors = {k: dataclasses.replace(t) for k, t in self.tensors.items()}
        return Graph(list(self.inputs), list(self.outputs), tensors, layers, json.loads(json.dumps(self.meta)))


def _check_param_values(layer: Layer) -> None:
    """Parameter values of a loaded layer: no NaN; no inf (except in a Constant, e.g. a -inf mask); a parameter
    the kernels quantize (``<param>_type`` in the quant attrs, saturating) within twice its type's range (the
    compiler chooses the type from the values, so a value far outside it was not written by the compiler)."""
    quant = layer.attrs.get("quant") or {}
    for key, value in layer.params.items():
        if value.dtype.kind != "f" or value.size == 0:
            continue
        what = f"parameter {layer.name}/{key}"
        if np.isnan(value).any():
            raise GraphError(f"{what} holds NaN values")
        if layer.op != "Constant" and np.isinf(value).any():
            raise GraphError(f"{what} holds infinite values")
        t = quant.get(f"{key}_type")
        if t is None:
            continue
        t = FixedType.from_dict(t)  # checked by declared_params
        if t.overflow == "WRAP":
            continue
        scaled = np.abs(value.astype(np.float64))
        if layer.op == "Linear" and key == "weight" and "weight_col_shift" in quant:
            shift = quant["weight_col_shift"]
            shifts = shift if isinstance(shift, list) else [shift]
            if value.ndim < 1 or not (_is_int(shift) or len(shifts) == value.shape[-1]) or \
                    not all(_is_int(s) and 0 <= s <= 64 for s in shifts):
                raise GraphError(f"layer {layer.name!r}: weight_col_shift must list one shift of 0..64 per output "
                                 f"column ({value.shape[-1]})")
            scaled = scaled * np.ldexp(1.0, np.asarray(shift, np.int64))
        limit = 2 * max(abs(t.max_value), abs(t.min_value), t.lsb)
        if scaled.max() > limit:
            raise GraphError(f"{what} holds values up to {float(scaled.max()):.3g}, far outside its type {t} "
                             f"(range {t.min_value:g}..{t.max_value:g})")


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
