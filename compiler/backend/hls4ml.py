"""hls4ml backend: quantized layer graph -> one HLS kernel per partition (by default one per transformer block).

    partition (compiler.partition) -> lower each partition to an hls4ml layer list -> ModelGraph.from_layer_list
    -> write BUILD/hls/<kernel>/ (hls4ml project + our kernel headers + vendor build scripts + kernel.json)

hls4ml's own ONNX front end cannot read transformers, and its kernels differ from our specification in the
places that matter (1/sqrt range of LayerNorm, unmasked softmax, no GELU/SiLU/RMSNorm/RoPE, per-column weight
shifts), so every IR op is lowered to one of *our* kernels (``overlays/hls/ff_*.h``), registered with hls4ml
through its extension API (``register_layer``, backend ``register_template`` and ``register_source``). Each
kernel header is a literal transcription of its emulator twin's integer arithmetic (``host/emulator.py``): it
works on the codes of its operands and casts an exact integer result to the output type once, so the C
simulation equals the emulator bit for bit. hls4ml provides the model graph, type system, writer (project,
weights, C-simulation bridge, Vivado/Vitis HLS build scripts) and the g++ build.

All constants (quantized weights with their per-column shifts, aligned biases, exp / 1/sqrt / GELU tables,
index tables of layout ops) are taken from the emulator's own prepared constants (``Emulator._prepared``), so the
hardware and the emulator cannot disagree on them. They are written as integer codes (exact in text).

Names: every ONNX-derived name goes through ``compiler.backend.names`` before it becomes a C++ identifier or a
path component; nothing is written outside ``BUILD/hls``.

Precisions come from the IR (``Tensor.fixed``, ``Layer.attrs["quant"]``); reuse factors and strategies from
``Layer.hw`` (``reuse_factor``, ``strategy``; default 1 / Latency). Embedding and LM head stay on the host.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...host import reference
from ...host.emulator import Emulator, exp_table
from ...host.fixed import FixedType
from ...host.graph import Graph, Layer
from ..partition import KV_WRITE, POSITION, Partition, partition
from .hardware import shape_project
from .names import Namer, identifier, path_component

OVERLAY_DIR = Path(__file__).resolve().parents[2] / "overlays" / "hls"
HEADERS = ("ff_common.h", "ff_linear.h", "ff_elementwise.h", "ff_softmax.h", "ff_unary.h", "ff_norm.h",
           "ff_rope.h", "ff_layout.h", "ff_fork.h")
DEFAULT_BACKEND = "Vitis"
DEFAULT_PART = "xczu9eg-ffvb1156-2-e"
DEFAULT_CLOCK_NS = 5.0
KERNEL_INDEX = "kernels.json"

# IR op -> hls4ml class name of our kernel
KERNEL_CLASS = {
    "Linear": "FfLinear", "MatMul": "FfMatMul", "Add": "FfAdd", "Mul": "FfMul", "Softmax": "FfSoftmax",
    "GELU": "FfGELU", "SiLU": "FfSiLU", "LayerNorm": "FfLayerNorm", "RMSNorm": "FfRMSNorm", "RoPE": "FfRoPE",
    "Reshape": "FfGather", "Transpose": "FfGather", "Slice": "FfGather", "Expand": "FfGather",
    "Concat": "FfConcat", "Constant": "FfConstant", "PaddingMask": "FfPaddingMask", "KVWrite": "FfKVWrite",
}
POSITION_PRECISION = "ap_uint<16>"
INDEX_TABLES = ("idx", "ia", "ib", "keep_idx", "coord", "row_idx", "key")


class BackendError(Exception):
    """A graph the backend cannot lower (names the layer and the reason)."""


# --------------------------------------------------------------------------------------- hls4ml extension
_REGISTERED: set[str] = set()


def register(backends: tuple[str, ...] = ("Vivado", "Vitis")) -> None:
    """Register our kernels with hls4ml (layer classes, templates, header sources). Idempotent."""
    import hls4ml
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
    from hls4ml.model.layers import Layer as HlsLayer, register_layer

    classes = {}
    for name in sorted(set(KERNEL_CLASS.values())):
        cls = globals().get(f"_cls_{name}")
        if cls is None:
            cls = type(name, (HlsLayer,), {"initialize": _initialize})
            globals()[f"_cls_{name}"] = cls
        classes[name] = cls
        register_layer(name, cls)
    layer_classes = tuple(classes.values())

    class FfConfigTemplate(LayerConfigTemplate):
        def __init__(self):
            super().__init__(layer_classes)

        def format(self, node):
            return _format_config(node)

    class FfFunctionTemplate(FunctionCallTemplate):
        def __init__(self):
            super().__init__(layer_classes, include_header=[f"nnet_utils/{h}" for h in HEADERS])

        def format(self, node):
            return _format_call(node)

    for backend_name in backends:
        if backend_name in _REGISTERED:
            continue
        backend = hls4ml.backends.get_backend(backend_name)
        backend.register_template(FfConfigTemplate)
        backend.register_template(FfFunctionTemplate)
        for header in HEADERS:
            backend.register_source(OVERLAY_DIR / header)
        _REGISTERED.add(backend_name)


def _initialize(self) -> None:
    """hls4ml Layer.initialize of every fpgaformer kernel: one output variable, integer-code weight arrays."""
    self.add_output_variable([int(np.prod(self.get_attr("ff_shape")))], precision=self.get_attr("ff_precision"))
    for key, (data, precision) in self.get_attr("ff_weights").items():
        self.add_weights_variable(name=f"ffw_{key}", var_name=f"{key}{{index}}", precision=precision,
                                  data=np.ascontiguousarray(data).reshape(-1))


def _type_name(node, key: str) -> str:
    return node.get_weights(f"ffw_{key}").type.name


def _format_config(node) -> str:
    lines = [f"struct config{node.index} {{"]
    for key, value in node.get_attr("ff_consts").items():
        if isinstance(value, bool):
            lines.append(f"    static const bool {key} = {'true' if value else 'false'};")
        elif isinstance(value, int) and value < 0:
            lines.append(f"    static const int {key} = {value};")
        elif isinstance(value, int) and value >= 2 ** 31:
            lines.append(f"    static const unsigned long long {key} = {value}ULL;")
        else:
            lines.append(f"    static const {'int' if key.startswith(('frac', 'shift')) else 'unsigned'} "
                         f"{key} = {int(value)};")
    for alias, key in node.get_attr("ff_weight_types").items():
        lines.append(f"    typedef {_type_name(node, key)} {alias};")
    for alias, cpp in node.get_attr("ff_types").items():
        lines.append(f"    typedef {cpp} {alias};")
    lines.append("};\n")
    return "\n".join(lines)


def _format_call(node) -> str:
    fn = node.get_attr("ff_function")
    # a kernel without inputs (constant) gets a dummy input from hls4ml (the previous layer): not passed
    in_vars = [node.get_input_variable(i) for i in node.inputs] if fn != "constant" else []
    out = node.get_output_variable()
    types = [v.type.name for v in in_vars]
    args = [v.name for v in in_vars]
    const_inputs = node.get_attr("ff_const_inputs")  # weight arrays that stand for an operand (Add/Mul const)
    for key in const_inputs:
        types.append(_type_name(node, key))
        args.append(node.get_weights(f"ffw_{key}").name)
    types.append(out.type.name)
    args.append(out.name)
    args += [node.get_weights(f"ffw_{k}").name for k in node.get_attr("ff_weight_args")]
    return f"ff::{fn}<{', '.join(types)}, config{node.index}>({', '.join(args)});"


# ------------------------------------------------------------------------------------------------- lowering
def hls_precision(t: FixedType | None, dtype: str = "float32"):
    from hls4ml.model.types import FixedPrecisionType, IntegerPrecisionType

    if t is None:
        return IntegerPrecisionType(1, signed=False)  # keep flags, 0/1 attention masks
    return FixedPrecisionType(t.width, t.integer, t.signed, t.rounding, t.overflow)


def int_precision(data: np.ndarray, signed: bool = True):
    """The narrowest ap_int/ap_uint that holds every value of ``data`` (integer codes)."""
    from hls4ml.model.types import IntegerPrecisionType

    data = np.asarray(data, dtype=np.int64)
    big = int(np.max(np.abs(data), initial=0))
    if not signed and data.size and data.min() < 0:
        raise ValueError("negative value in an unsigned table")
    width = max(1, big.bit_length()) + (1 if signed else 0)
    return IntegerPrecisionType(width, signed=signed)


def _bits(bound: float) -> int:
    return max(2, math.ceil(math.log2(bound + 1)) + 1) if bound > 0 else 2


def _broadcast_index(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[bool, np.ndarray]:
    """(needs a table, table) for reading an operand of ``shape`` at each element of ``out_shape``."""
    size = int(np.prod(shape))
    stripped = tuple(shape)
    while stripped and stripped[0] == 1:
        stripped = stripped[1:]
    if stripped == tuple(out_shape[len(out_shape) - len(stripped):]) if stripped else True:
        return False, np.zeros(1, np.int64)
    table = np.broadcast_to(np.arange(size).reshape(shape), out_shape).reshape(-1)
    return True, table


@dataclass
class KernelIO:
    """One kernel port: IR tensor name, C++ name, shape and type (None: a 0/1 flag)."""

    tensor: str
    cpp: str
    shape: tuple[int, ...]
    fixed: dict | None
    ctype: str | None = None  # the port's C++ type as hls4ml wrote it (known once the project is written)

    def to_json(self) -> dict:
        return {"tensor": self.tensor, "cpp": self.cpp, "shape": list(self.shape), "fixed": self.fixed,
                "ctype": self.ctype}


@dataclass
class LoweredKernel:
    name: str
    layers: list[dict]
    inputs: list[KernelIO]
    outputs: list[KernelIO]
    layer_config: dict = field(default_factory=dict)
    layer_names: dict = field(default_factory=dict)  # C++ name (hls4ml layer, its comment) -> IR layer name


def lower(part: Partition) -> LoweredKernel:
    """One partition -> hls4ml layer dicts of our kernels (``ModelGraph.from_layer_list`` input)."""
    graph = part.graph
    emu = Emulator(graph)
    namer = Namer(reserved=("input", "layer", "config", "w", "b", "x", "y"))
    cpp_of: dict[str, str] = {}  # IR tensor -> hls4ml layer (= output variable) name
    layers: list[dict] = []
    inputs: list[KernelIO] = []
    layer_config: dict = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        cpp = namer.ident(f"in_{name}", "in")
        cpp_of[name] = cpp
        layers.append({"class_name": "InputLayer", "name": cpp, "input_shape": [int(np.prod(t.shape))]})
        ftype = FixedType.from_dict(t.fixed) if t.fixed else None
        precision = POSITION_PRECISION if name == POSITION else str(hls_precision(ftype))
        layer_config[cpp] = {"Precision": {"result": precision}}
        inputs.append(KernelIO(name, cpp, tuple(t.shape), t.fixed))
    aliases: dict[str, str] = {}
    names: dict[str, str] = {}
    for layer in graph.layers:
        if layer.op == "Reshape" and layer.output not in graph.outputs:
            aliases[layer.output] = aliases.get(layer.inputs[0], layer.inputs[0])
            continue
        try:
            spec = _lower_layer(layer, graph, emu, aliases)
        except BackendError:
            raise
        except (KeyError, ValueError, NotImplementedError) as e:
            raise BackendError(f"layer {layer.name!r} ({layer.op}): {e}") from None
        cpp = namer.ident(layer.name, "layer")
        cpp_of[layer.output] = cpp
        names[cpp] = layer.name
        spec["name"] = cpp
        spec["inputs"] = [cpp_of[aliases.get(i, i)] for i in spec.pop("ir_inputs")]
        rf = int(layer.hw.get("reuse_factor", 1))
        spec["ff_consts"] = {"reuse_factor": rf, "unroll": 1, **spec.get("ff_consts", {})}
        layers.append(spec)
        if layer.hw.get("strategy"):
            layer_config[cpp] = {"Strategy": layer.hw["strategy"]}
    outputs = []
    for name in graph.outputs:
        t = graph.tensors[name]
        outputs.append(KernelIO(name, cpp_of[aliases.get(name, name)], tuple(t.shape), t.fixed))
    return LoweredKernel(identifier(part.name, "kernel"), layers, inputs, outputs, layer_config, names)


def _ftype(graph: Graph, name: str) -> FixedType:
    d = graph.tensors[name].fixed
    if d is None:
        raise BackendError(f"tensor {name!r} has no fixed-point type")
    return FixedType.from_dict(d)


def _lower_layer(layer: Layer, graph: Graph, emu: Emulator, aliases: dict[str, str]) -> dict:
    """The hls4ml layer dict (without name/inputs) of one IR layer."""
    op = layer.op
    if op not in KERNEL_CLASS:
        raise BackendError(f"layer {layer.name!r}: op {op} has no HLS kernel")
    p = emu._prepared[layer.name]
    q = layer.attrs.get("quant", {})
    out = graph.tensors[layer.output]
    t_y = FixedType.from_dict(out.fixed) if out.fixed else None
    spec = {"class_name": KERNEL_CLASS[op], "ff_shape": list(out.shape), "ff_precision": hls_precision(t_y),
            "ff_weights": {}, "ff_weight_types": {}, "ff_types": {}, "ff_consts": {}, "ff_weight_args": [],
            "ff_const_inputs": [], "ir_inputs": [aliases.get(i, i) for i in layer.inputs if i]}
    w, consts = spec["ff_weights"], spec["ff_consts"]

    def weight(key: str, data, signed: bool = True, alias: str | None = None, arg: bool = True):
        from hls4ml.model.types import IntegerPrecisionType

        data = np.asarray(data, dtype=np.int64).reshape(-1)
        # index tables of one layer share CONFIG_T::index_t: one width for all of them
        w[key] = (data, IntegerPrecisionType(32, signed=False) if key in INDEX_TABLES else int_precision(data, signed))
        if alias:
            spec["ff_weight_types"][alias] = key
        if arg:
            spec["ff_weight_args"].append(key)

    def in_shape(i: int = 0) -> tuple[int, ...]:
        return tuple(graph.tensors[layer.inputs[i]].shape)

    if op == "Linear":
        k, n = layer.params["weight"].shape
        t_x = _ftype(graph, layer.inputs[0])
        align = p["col_align"] if p["col_align"] is not None else np.zeros(n, np.int64)
        bias = p.get("bias_aligned", np.zeros(n, np.int64))
        bound = k * 2.0 ** (t_x.width - 1) * float(np.max(np.abs(p["weight"]), initial=1)) * 2.0 ** int(align.max())
        bound += float(np.max(np.abs(bias), initial=0))
        consts.update(n_rows=int(np.prod(in_shape())) // k, n_in=k, n_out=n, frac=int(p["frac"]))
        weight("w", p["weight"], alias="weight_t")
        weight("b", bias, alias="bias_t")
        weight("align", align, signed=False, alias="align_t")
        spec["ff_types"]["accum_t"] = f"ap_int<{min(64, _bits(bound))}>"
        spec["ff_function"] = "linear"
    elif op == "MatMul":
        a_shape, b_shape = in_shape(0), in_shape(1)
        t_a, t_b = _ftype(graph, layer.inputs[0]), _ftype(graph, layer.inputs[1])
        tb = bool(layer.attrs.get("transpose_b"))
        m, kk = a_shape[-2], a_shape[-1]
        nn = b_shape[-2] if tb else b_shape[-1]
        batch = int(np.prod(out.shape[:-2]))

        def stride(shape):
            lead = int(np.prod(shape[:-2]))
            if lead == batch:
                return shape[-2] * shape[-1]
            if lead == 1:
                return 0
            raise BackendError(f"layer {layer.name!r}: MatMul broadcasting {a_shape} x {b_shape} is not supported")

        bound = kk * 2.0 ** (t_a.width - 1 + (0 if t_a.signed else 1)) * 2.0 ** (t_b.width - 1 + (0 if t_b.signed else 1))
        consts.update(n_batch=batch, n_m=m, n_k=kk, n_n=nn, a_stride=stride(a_shape), b_stride=stride(b_shape),
                      transpose_b=tb, frac=t_a.frac + t_b.frac, n_a=int(np.prod(a_shape)), n_b=int(np.prod(b_shape)))
        spec["ff_types"]["accum_t"] = f"ap_int<{min(64, _bits(bound))}>"
        spec["ff_function"] = "matmul"
    elif op in ("Add", "Mul") and "const_slice" in layer.attrs:
        # decoder step: the constant's row at `position` along its token axis (learned absolute positions)
        t_a = _ftype(graph, layer.inputs[0])
        axis, _, _ = (int(v) for v in layer.attrs["const_slice"])
        full = np.asarray(layer.params["const"])
        if int(np.prod(full.shape[:axis])) != 1:
            raise BackendError(f"layer {layer.name!r}: a position table with leading dims is not supported")
        sliced = list(full.shape)
        sliced[axis] = 1
        table_a, ia = _broadcast_index(in_shape(0), tuple(out.shape))
        table_b, ib = _broadcast_index(tuple(sliced), tuple(out.shape))
        consts.update(n_a=int(np.prod(in_shape(0))), n_b=int(full.size), n_bs=int(np.prod(sliced)),
                      n_rows=int(full.shape[axis]), row_stride=int(np.prod(full.shape[axis + 1:])),
                      n_out=int(np.prod(out.shape)), frac_a=t_a.frac, frac_b=int(p["const_frac"]),
                      table_a=table_a, table_b=table_b, n_ia=ia.size, n_ib=ib.size)
        weight("const", p["const"], arg=False)
        spec["ff_const_inputs"].append("const")
        weight("ia", ia, signed=False, alias="index_t")
        weight("ib", ib, signed=False)
        spec["ff_function"] = "add_row" if op == "Add" else "mul_row"
    elif op in ("Add", "Mul"):
        t_a = _ftype(graph, layer.inputs[0])
        if "const" in p:
            b_codes, fb = p["const"], int(p["const_frac"])
            b_shape = tuple(np.shape(layer.params["const"])) or (1,)
            weight("const", b_codes, arg=False)
            spec["ff_const_inputs"].append("const")
        else:
            fb = _ftype(graph, layer.inputs[1]).frac
            b_shape = in_shape(1)
        table_a, ia = _broadcast_index(in_shape(0), tuple(out.shape))
        table_b, ib = _broadcast_index(b_shape, tuple(out.shape))
        consts.update(n_a=int(np.prod(in_shape(0))), n_b=int(np.prod(b_shape)), n_out=int(np.prod(out.shape)),
                      frac_a=t_a.frac, frac_b=fb, table_a=table_a, table_b=table_b, n_ia=ia.size, n_ib=ib.size)
        if max(t_a.frac, fb) - min(t_a.frac, fb) > 40:
            raise BackendError(f"layer {layer.name!r}: operands' fractional bits differ by more than 40")
        weight("ia", ia, signed=False, alias="index_t")
        weight("ib", ib, signed=False)
        spec["ff_function"] = "add" if op == "Add" else "mul"
    elif op == "Softmax":
        t_x = _ftype(graph, layer.inputs[0])
        shape = in_shape(0)
        n = shape[-1]
        masked = len(layer.inputs) > 1 and bool(layer.inputs[1])
        consts.update(n_rows=int(np.prod(shape)) // n, n=n, frac_x=t_x.frac, exp_k=int(q["exp_k"]),
                      exp_size=int(q["exp_size"]), exp_bits=int(q["exp_bits"]), recip_bits=int(q["recip_bits"]),
                      frac_y=t_y.frac, y_max=int(t_y.max_code))
        if q["exp_bits"] + t_y.frac + q["recip_bits"] > 62:
            raise BackendError(f"layer {layer.name!r}: softmax reciprocal needs more than 62 bits")
        weight("exp", exp_table(q["exp_k"], q["exp_size"], q["exp_bits"]), signed=False, alias="exp_t")
        if masked:
            table, idx = _broadcast_index(in_shape(1), shape)
            consts.update(n_keep=int(np.prod(in_shape(1))), keep_table=table, n_keep_index=idx.size)
            weight("keep_idx", idx, signed=False, alias="index_t")
            spec["ff_function"] = "softmax_masked"
        else:
            consts.update(n_keep=1, keep_table=False, n_keep_index=1)
            spec["ff_types"]["index_t"] = "ap_uint<1>"
            spec["ff_function"] = "softmax"
    elif op in ("GELU", "SiLU"):
        t_in = p["in_type"]
        consts.update(n_in=int(np.prod(out.shape)), table_size=int(p["lut"].size), in_min_code=int(t_in.min_code))
        spec["ff_types"]["in_t"] = t_in.to_hls()
        weight("lut", p["lut"], alias="table_t")
        spec["ff_function"] = op.lower()
    elif op in ("LayerNorm", "RMSNorm"):
        n = in_shape(0)[-1]
        if int(q["p_bits"]) < int(q["z_frac"]):
            raise BackendError(f"layer {layer.name!r}: norm table precision below the output precision")
        consts.update(n_rows=int(np.prod(in_shape(0))) // n, n=n, table_bits=int(q["table_bits"]),
                      table_size=int(p["rs"].size), p_bits=int(q["p_bits"]), z_frac=int(q["z_frac"]),
                      pre_shift=int(q["pre_shift"]), eps_q=int(q["eps_q"]), gamma_frac=int(p["gamma_frac"]),
                      has_beta="beta" in p, beta_frac=int(p.get("beta_frac", 0)))
        weight("gamma", p["gamma"], alias="gamma_t")
        if op == "LayerNorm":
            weight("beta", p["beta"] if "beta" in p else np.zeros(n, np.int64), alias="beta_t")
        else:
            spec["ff_types"]["beta_t"] = "ap_int<2>"
        weight("rs", p["rs"], signed=False, alias="table_t")
        spec["ff_function"] = "layernorm" if op == "LayerNorm" else "rmsnorm"
    elif op == "RoPE":
        t_x = _ftype(graph, layer.inputs[0])
        shape = in_shape(0)
        rd = int(layer.attrs["rotary_dim"])
        cos = np.asarray(p["cos"]).reshape(-1, rd)
        sin = np.asarray(p["sin"]).reshape(-1, rd)
        step = bool(layer.attrs.get("step"))
        if step and shape[-2] != 1:
            raise BackendError(f"layer {layer.name!r}: a decoder step has one row per head")
        if not step and shape[-2] != cos.shape[0]:
            raise BackendError(f"layer {layer.name!r}: RoPE tables of {cos.shape[0]} positions for a sequence "
                               f"of {shape[-2]}")
        consts.update(n_rows=int(np.prod(shape)) // shape[-1], head_dim=shape[-1], rotary_dim=rd,
                      interleaved=bool(layer.attrs.get("interleaved", False)), frac_x=t_x.frac,
                      frac_cs=int(p["cos_frac"]), n_pos=1 if step else cos.shape[0], rows_per_pos=1,
                      n_table=cos.size)
        weight("cos", cos, alias="table_t")
        weight("sin", sin)
        spec["ff_function"] = "rope_step" if step else "rope"
    elif op in ("Reshape", "Transpose", "Slice", "Expand"):
        src = np.arange(int(np.prod(in_shape(0))), dtype=np.int64).reshape(in_shape(0))
        idx = np.asarray(reference.run_layer(layer, {layer.inputs[0]: src})).reshape(-1)
        consts.update(n_a=src.size, n_out=idx.size)
        weight("idx", idx, signed=False, alias="index_t")
        spec["ff_function"] = "gather"
    elif op == "Concat":
        if len(layer.inputs) != 2:
            raise BackendError(f"layer {layer.name!r}: Concat of {len(layer.inputs)} inputs (2 supported)")
        na, nb = int(np.prod(in_shape(0))), int(np.prod(in_shape(1)))
        env = {layer.inputs[0]: np.arange(na).reshape(in_shape(0)),
               layer.inputs[1]: na + np.arange(nb).reshape(in_shape(1))}
        idx = np.asarray(reference.run_layer(layer, env)).reshape(-1)
        consts.update(n_a=na, n_b=nb, n_out=idx.size)
        weight("idx", idx, signed=False, alias="index_t")
        spec["ff_function"] = "concat"
    elif op == "Constant":
        value = np.asarray(layer.params["value"])
        if value.dtype != bool:
            raise BackendError(f"layer {layer.name!r}: only constant keep flags are supported in kernels")
        if layer.attrs.get("step_row"):  # decoder step: row `position` of a (..., C, C) keep table
            if int(np.prod(value.shape[:-2])) != 1:
                raise BackendError(f"layer {layer.name!r}: constant masks with leading dims are not supported")
            consts.update(n_rows=value.shape[-2], n_out=value.shape[-1])
            spec["ff_function"] = "constant_row"
        else:
            consts.update(n_out=value.size)
            spec["ff_function"] = "constant"
        weight("table", value.astype(np.int64), alias="table_t")
    elif op == "PaddingMask":
        k_len = int(np.prod(in_shape(0)))
        q_len = int(layer.attrs["q_len"])
        kidx = np.broadcast_to(np.arange(k_len), (1, 1, q_len, k_len))
        allow = np.ones((1, 1, q_len, k_len), bool)
        if layer.attrs.get("causal", False):
            allow = np.arange(k_len)[None, :] <= np.arange(q_len)[:, None] + (k_len - q_len)
            allow = allow.reshape(1, 1, q_len, k_len)
        shape = layer.attrs.get("shape")
        if shape is not None:
            shape = tuple(shape)
            fit = (lambda a: a.reshape(shape)) if kidx.size == int(np.prod(shape)) else \
                (lambda a: np.broadcast_to(a, shape))
            kidx, allow = fit(kidx), fit(allow)
        consts.update(n_a=k_len, n_out=int(kidx.size))
        weight("idx", kidx, signed=False, alias="index_t")
        if layer.attrs.get("step"):  # decoder step: keys k <= position (checked in the kernel)
            weight("key", kidx, signed=False)
            spec["ff_function"] = "padding_mask_step"
        else:
            weight("allow", allow.astype(np.int64), signed=False)
            spec["ff_function"] = "padding_mask"
    elif op == KV_WRITE:
        shape = tuple(out.shape)
        axis = int(layer.attrs["axis"])
        coords = np.indices(shape)
        row_shape = list(shape)
        row_shape[axis] = 1
        row_coords = [c if a != axis else np.zeros_like(c) for a, c in enumerate(coords)]
        row_idx = np.ravel_multi_index(row_coords, row_shape)
        consts.update(n_out=int(np.prod(shape)), n_row=int(np.prod(row_shape)))
        weight("coord", coords[axis], signed=False, alias="index_t")
        weight("row_idx", row_idx, signed=False)
        spec["ff_function"] = "kv_write"
    return spec


# ------------------------------------------------------------------------------------------------- projects
@dataclass
class KernelProject:
    """A written kernel project: where it is and what its ports are (kernel.json)."""

    name: str
    path: Path
    project: str  # hls4ml project name = top function
    inputs: list[KernelIO]
    outputs: list[KernelIO]
    block: int | None = None
    layer_names: dict = field(default_factory=dict)  # C++ layer name -> IR layer name

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path.name, "project": self.project, "block": self.block,
                "inputs": [i.to_json() for i in self.inputs], "outputs": [o.to_json() for o in self.outputs],
                "layers": self.layer_names}

    @classmethod
    def from_json(cls, d: dict, root: Path) -> "KernelProject":
        """A kernel.json / kernels.json entry, checked: a ValueError (GraphError) says what is malformed (names,
        port shapes within the graph's limits, fixed-point types valid)."""
        from ...host.graph import GraphError, check_fixed, check_shape

        if not isinstance(d, dict):
            raise GraphError(f"a kernel entry must be an object, got {type(d).__name__}")
        for key in ("name", "path", "project"):
            if not isinstance(d.get(key), str) or not d[key]:
                raise GraphError(f"a kernel entry has no {key!r} string")
        what = f"kernel {d['name']!r}"
        if d.get("block") is not None and (isinstance(d["block"], bool) or not isinstance(d["block"], int)):
            raise GraphError(f"{what}: block must be a whole number, got {d['block']!r}")
        if d.get("layers") is not None and not isinstance(d["layers"], dict):
            raise GraphError(f"{what}: layers must be an object")

        def io(e, where: str) -> KernelIO:
            if not isinstance(e, dict) or not isinstance(e.get("tensor"), str) or not isinstance(e.get("cpp"), str):
                raise GraphError(f"{what}: {where} must be an object with tensor and cpp names")
            if e.get("ctype") is not None and not isinstance(e["ctype"], str):
                raise GraphError(f"{what}: {where} ctype must be a string")
            shape = check_shape(e.get("shape"), f"{what}: {where} {e['tensor']!r}")
            if e.get("fixed") is not None:
                check_fixed(e["fixed"], f"{what}: {where} {e['tensor']!r}")
            return KernelIO(e["tensor"], e["cpp"], shape, e.get("fixed"), e.get("ctype"))

        ports = {}
        for key in ("inputs", "outputs"):
            if not isinstance(d.get(key), list):
                raise GraphError(f"{what}: {key} must be a list")
            ports[key] = [io(e, f"{key}[{i}]") for i, e in enumerate(d[key])]
        path = root / path_component(d["path"])
        return cls(d["name"], path, identifier(d["project"]), ports["inputs"], ports["outputs"], d.get("block"),
                   dict(d.get("layers") or {}))


def namespace_of(kernel_name: str) -> str:
    """The C++ namespace a kernel project's code lives in (``ff_<kernel>``), so that several kernels link
    into one overlay without their hls4ml names (``config2``, ``layer2_t``, weight arrays) colliding."""
    return identifier(f"ff_{kernel_name}", "ff")


def hls_config(kernel: LoweredKernel, out_dir: Path, backend: str, part: str, clock_ns: float) -> dict:
    from hls4ml.utils.config import create_config

    config = create_config(output_dir=str(out_dir), project_name=kernel.name, backend=backend, part=part,
                           clock_period=clock_ns, io_type="io_parallel")
    config["WriterConfig"] = {**config.get("WriterConfig", {}), "Namespace": namespace_of(kernel.name)}
    config["HLSConfig"] = {"Model": {"Precision": "ap_fixed<16,6>", "ReuseFactor": 1, "Strategy": "Latency",
                                     "BramFactor": 1_000_000_000},
                           "LayerName": kernel.layer_config}
    return config


def build_model(kernel: LoweredKernel, out_dir: Path, backend: str = DEFAULT_BACKEND, part: str = DEFAULT_PART,
                clock_ns: float = DEFAULT_CLOCK_NS):
    """The hls4ml ModelGraph of one lowered kernel (from_layer_list)."""
    import warnings

    from hls4ml.model import ModelGraph

    register()
    config = hls_config(kernel, out_dir, backend, part, clock_ns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ModelGraph.from_layer_list(config, kernel.layers, inputs=[i.cpp for i in kernel.inputs],
                                          outputs=[o.cpp for o in kernel.outputs])


def _inside(path: Path, root: Path) -> Path:
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    if path != root and root not in path.parents:
        raise BackendError(f"refusing to write {path}: outside {root}")
    return path


def write_project(part: Partition, hls_root: Path, backend: str = DEFAULT_BACKEND, part_name: str = DEFAULT_PART,
                  clock_ns: float = DEFAULT_CLOCK_NS, dir_name: str | None = None) -> KernelProject:
    """Lower one partition and write its hls4ml project to ``hls_root/<kernel>/``."""
    kernel = lower(part)
    out_dir = _inside(hls_root / path_component(dir_name or kernel.name), hls_root)
    model = build_model(kernel, out_dir, backend, part_name, clock_ns)
    model.write()
    shape_project(out_dir, kernel.name)  # hardware shape: dataflow top, FF_SYNTH guards
    ports = kernel.inputs + kernel.outputs
    for port, var in zip(ports, model.get_input_variables() + model.get_output_variables()):
        port.ctype = var.type.precision.definition_cpp()  # what the top's prototype declares
    _parallel_build(out_dir / "build_lib.sh")
    project = KernelProject(kernel.name, out_dir, kernel.name, kernel.inputs, kernel.outputs, part.block,
                            kernel.layer_names)
    (out_dir / "kernel.json").write_text(json.dumps(project.to_json(), indent=1))
    _write_vendor_scripts(out_dir, kernel.name, backend)
    return project


# hls4ml's build_lib.sh passes the project folder into C++ as a macro: WEIGHTS_DIR="\"${BASEDIR}/firmware/weights\""
# would let a BUILD path holding `"` end the string literal and put code into the kernel library. It is replaced by
# a C string literal the script computes from the folder's bytes, every byte other than [A-Za-z0-9/_.-] as a
# three-digit octal escape (`\ooo`: exact, cannot end the literal, no trigraph `??` survives), so any path works.
HLS4ML_WEIGHTS_DIR = 'WEIGHTS_DIR="\\"${BASEDIR}/firmware/weights\\""'
SAFE_WEIGHTS_DIR = r'''# fpgaformer: the weights folder as a C string literal of its bytes, each byte other than
# [A-Za-z0-9/_.-] as an octal escape, so that no character of the BUILD path can end the literal or become C++ code
ff_c_string() {
  local LC_ALL=C s="$1" out="" c i
  for ((i = 0; i < ${#s}; i++)); do
    c="${s:i:1}"
    case "$c" in
      [A-Za-z0-9/_.-]) out+="$c" ;;
      *) printf -v c '\\%03o' "'$c"; out+="$c" ;;
    esac
  done
  printf '"%s"' "$out"
}
WEIGHTS_DIR="$(ff_c_string "${BASEDIR}/firmware/weights")"'''


def _parallel_build(script: Path) -> None:
    """Post-process hls4ml's build_lib.sh: the weights folder reaches C++ only as an escaped string literal
    (``SAFE_WEIGHTS_DIR``; a script of another form is refused), and the kernel and the C-simulation bridge
    compile at the same time (two g++ processes, then the link): the same commands and flags, about 40 % less
    wall time on two cores."""
    text = script.read_text()
    lines = text.splitlines()
    assignments = [i for i, l in enumerate(lines) if "WEIGHTS_DIR=" in l and not l.lstrip().startswith("${CC}")]
    if [lines[i].strip() for i in assignments] != [HLS4ML_WEIGHTS_DIR]:
        raise BackendError(f"{script}: hls4ml wrote a build_lib.sh whose WEIGHTS_DIR line fpgaformer does not know "
                           f"(expected {HLS4ML_WEIGHTS_DIR!r}), so it cannot make the BUILD path safe to pass to g++. "
                           "Install the hls4ml version fpgaformer requires (pyproject.toml).")
    lines[assignments[0]] = SAFE_WEIGHTS_DIR
    compiles = [i for i, l in enumerate(lines) if l.startswith("${CC}") and " -c " in l]
    if len(compiles) == 2 and not any(l.rstrip().endswith("&") for l in lines):
        for n, i in enumerate(compiles):
            lines[i] = f"{lines[i]} &\nFF_JOB{n}=$!"
        lines.insert(compiles[-1] + 1, 'wait "$FF_JOB0"\nwait "$FF_JOB1"')
    script.write_text("\n".join(lines) + "\n")


def _write_vendor_scripts(out_dir: Path, project: str, backend: str) -> None:
    """build.sh: synthesis and IP export with the vendor tool hls4ml's build_prj.tcl is written for."""
    tool = "vitis_hls" if backend.lower() == "vitis" else "vivado_hls"
    script = out_dir / "build.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"# Synthesise the fpgaformer kernel '{project}' and export it as IP ({tool}).\n"
        "# Options are hls4ml's build_prj.tcl arguments, e.g. csim=1 synth=1 cosim=0 export=1.\n"
        "set -e\n"
        'cd "$(dirname "$0")"\n'
        f'exec {tool} -f build_prj.tcl "reset=1 csim=0 synth=1 cosim=0 validation=0 export=1 vsynth=0 $*"\n')
    script.chmod(0o755)


def write_projects(graph: Graph, build_dir: Path, backend: str = DEFAULT_BACKEND, part_name: str = DEFAULT_PART,
                   clock_ns: float = DEFAULT_CLOCK_NS, progress=None) -> list[KernelProject]:
    """Write one project per partition under ``build_dir/hls`` and the index ``build_dir/hls/kernels.json``."""
    hls_root = Path(build_dir) / "hls"
    hls_root.mkdir(parents=True, exist_ok=True)
    projects = []
    parts = partition(graph)
    for i, part in enumerate(parts):
        if progress:
            progress(f"writing kernel {part.name} ({i + 1}/{len(parts)})")
        projects.append(write_project(part, hls_root, backend, part_name, clock_ns))
    from ...host.artifact import write_graph

    graph_dir = hls_root / "graph"
    graph_dir.mkdir(exist_ok=True)
    write_graph(graph_dir, graph)  # the quantized graph the kernels were made from (verify reads it)
    kernels = [{**p.to_json(), "files": project_checksums(p.path)} for p in projects]
    (hls_root / KERNEL_INDEX).write_text(json.dumps({"backend": backend, "part": part_name, "clock_ns": clock_ns,
                                                     "kernels": kernels}, indent=1))
    return projects


def project_checksums(project_dir: Path) -> dict[str, str]:
    """sha256 of every file of a kernel project (scripts, sources, headers, weights), keyed by its path relative to
    the project: the index ``verify --csim`` checks before it runs a BUILD's build_lib.sh and loads its library."""
    import hashlib

    project_dir = Path(project_dir)
    return {p.relative_to(project_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(project_dir.rglob("*")) if p.is_file() and not p.is_symlink()}


def read_projects(build_dir: Path) -> list[KernelProject]:
    """The kernel projects of ``hls/kernels.json``; a ValueError says what is malformed (the caller adds what
    to do)."""
    hls_root = Path(build_dir) / "hls"
    try:
        index = json.loads((hls_root / KERNEL_INDEX).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start})") from None
    if not isinstance(index, dict) or not isinstance(index.get("kernels"), list) or not index["kernels"]:
        raise ValueError("it has no list of kernels")
    projects = [KernelProject.from_json(d, hls_root) for d in index["kernels"]]
    names = [p.name for p in projects]
    if len(set(names)) != len(names) or len({p.path for p in projects}) != len(projects):
        raise ValueError("a kernel name or folder is listed twice")
    return projects


def read_graph(build_dir: Path) -> Graph:
    """The quantized graph stored beside the kernel projects."""
    from ...host.artifact import load_artifact

    return load_artifact(Path(build_dir) / "hls" / "graph")[0]
