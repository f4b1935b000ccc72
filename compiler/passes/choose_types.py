"""Choose a fixed-point type for every tensor and parameter, and configure every kernel (see host/emulator.py).

Activations (width A): integer bits from the calibrated range with headroom,
    I = max(1, ceil(log2(headroom * max|x|)) + 1)  (sign bit included),  F = A - I,
rounding RND and overflow SAT (a value beyond the calibrated range saturates instead of wrapping).
Weights (width Wb): I = ceil(log2(max|W|)) + 1, rounding RND_CONV, SAT; Linear weights add per output column
s_j = I - I_j extra fractional bits (I_j from that column's range): column j is quantized on the finer grid
2**-(F + s_j) with the same Wb-bit codes, and its accumulator is shifted left by max(s) - s_j before the output
cast (a constant shift per column in hardware).
Accumulators are exact by construction: frac = F(x) + F(w), integer bits I(x) + I(w) + ceil(log2 K), so
hls4ml's product casts never lose a bit and never wrap; biases are stored at the accumulator's frac.
Softmax: output ufixed<A, 1>; exp table over [0, 16) with step 2**-6 (1024 entries) for A < 16 and 2**-10
(16384 entries) for A >= 16, E = max(A, 12) bits;
reciprocal with R = 8 extra bits.
GELU/SiLU: input table type of min(A, 14) bits (2**bits entries) over the calibrated input range.
LayerNorm/RMSNorm: 1/sqrt table of T = 12 index bits (3 * 2**10 entries), P = 20 bits; the normalised
value z keeps Fz = max(A, 12) - 4 fractional bits (|z| <= sqrt(n)); gamma 16-bit; eps folded in as eps_q.
RoPE: cos/sin as ap_fixed<16, 2>.
Per-layer overrides (``overrides`` = {layer name: {"weight_bits": b, "act_bits": b}}) take precedence.
"""

from __future__ import annotations

import math

import numpy as np

from ...host.fixed import FixedType
from ...host.graph import Graph, Layer

HEADROOM = 1.25
EXP_K, EXP_K_WIDE, RECIP_BITS = 6, 10, 8
NORM_TABLE_BITS = 12


def int_bits(max_abs: float, headroom: float = HEADROOM, signed: bool = True) -> int:
    """Integer bits (sign included) for values up to max_abs * headroom; may be <= 0 for small ranges
    (ap_fixed<8,-1> holds [-0.25, 0.25) with 9 fractional bits), never below -16."""
    if max_abs <= 0 or not math.isfinite(max_abs):
        return 1
    return max(-16, math.ceil(math.log2(max_abs * headroom)) + (1 if signed else 0))


def act_type(max_abs: float, width: int) -> FixedType:
    return FixedType(width, int_bits(max_abs), True, "RND", "SAT")


def weight_type(values: np.ndarray, width: int) -> FixedType:
    return FixedType(width, int_bits(float(np.max(np.abs(values))), headroom=1.0), True, "RND_CONV", "SAT")


def exact_type(frac: int, integer: int, rounding: str = "TRN") -> FixedType:
    """A type that holds a value with ``frac`` fractional and ``integer`` integer bits exactly (<= 64 bits)."""
    width = min(64, max(2, frac + integer))
    return FixedType(width, width - frac, True, rounding, "WRAP")


def qdq_type(layer: Layer, fallback: FixedType, graph: Graph) -> FixedType:
    """The fixed-point type of a QDQ pair: its own integer grid when scale = 2**-f and zero point = 0."""
    scale = float(layer.params["scale"])
    zp = int(layer.params["zero_point"])
    bits = layer.attrs.get("bits", 8 if layer.attrs["qtype"].endswith("int8") else 16)
    signed = not layer.attrs["qtype"].startswith("u")
    f = -math.log2(scale) if scale > 0 else 0.0
    if zp == 0 and f == round(f):
        return FixedType(bits, bits - int(round(f)), signed, "RND_CONV", "SAT")
    graph.meta.setdefault("notes", []).append(
        f"{layer.name}: scale {scale:.6g} with zero point {zp} is not a fixed-point grid (scale must be a power "
        f"of two and zero point 0); emulated exactly on the QDQ grid and stored as {fallback.to_hls()}, which "
        f"holds each grid value within {fallback.lsb / 2:.3g}")
    return fallback


def choose_types(graph: Graph, ranges: dict[str, float], weight_bits: int, act_bits: int,
                 overrides: dict[str, dict] | None = None) -> Graph:
    overrides = overrides or {}
    producer = graph.producer()

    def bits_for(layer: Layer) -> tuple[int, int]:
        o = overrides.get(layer.name, {})
        return o.get("weight_bits", weight_bits), o.get("act_bits", act_bits)

    for name in graph.inputs:
        t = graph.tensors[name]
        if t.dtype == "float32":
            t.fixed = act_type(ranges.get(name, 1.0), act_bits).to_dict()

    for layer in graph.layers:
        wb, ab = bits_for(layer)
        out = graph.tensors[layer.output]
        if out.dtype != "float32":
            continue
        t_x = FixedType.from_dict(graph.tensors[layer.inputs[0]].fixed) if layer.inputs and \
            graph.tensors[layer.inputs[0]].fixed else None
        q: dict = {}
        op = layer.op
        if op in ("Reshape", "Transpose", "Slice", "Expand", "Concat"):
            out.fixed = graph.tensors[layer.inputs[0]].fixed
            if op == "Concat":  # all inputs must share a type: take the widest range
                types = [FixedType.from_dict(graph.tensors[i].fixed) for i in layer.inputs]
                out.fixed = max(types, key=lambda t: t.integer).to_dict()
            continue
        if op == "Softmax":
            y = FixedType(ab, 1, False, "TRN", "SAT")
            k = EXP_K if ab < 16 else EXP_K_WIDE  # table step 2**-k: relative error of each weight < 2**-k
            q.update(exp_k=k, exp_size=16 << k, exp_bits=max(ab, 12), recip_bits=RECIP_BITS)
        else:
            y = act_type(ranges.get(layer.output, 1.0), ab)
        if op == "Embedding":
            q["table_type"] = weight_type(layer.params["table"], ab).to_dict()
            y = FixedType.from_dict(q["table_type"])
        elif op == "Linear":
            weight = layer.params["weight"]
            w = weight_type(weight, wb)
            # per output column: extra fractional bits where the column's range allows (a shift in hardware)
            col_int = [int_bits(float(m), 1.0) for m in np.max(np.abs(weight), axis=0)]
            shifts = [max(0, w.integer - ci) for ci in col_int]
            q["weight_type"] = w.to_dict()
            q["weight_col_shift"] = shifts
            frac = t_x.frac + w.frac + max(shifts)
            k = weight.shape[0]
            q["accum_type"] = exact_type(frac, t_x.integer + w.integer + math.ceil(math.log2(k))).to_dict()
            if "bias" in layer.params:
                q["bias_type"] = exact_type(frac, int_bits(float(np.max(np.abs(layer.params["bias"]))), 1.0),
                                            "RND_CONV").to_dict()
        elif op == "MatMul":
            t_b = FixedType.from_dict(graph.tensors[layer.inputs[1]].fixed)
            k = graph.tensors[layer.inputs[0]].shape[-1]
            q["accum_type"] = exact_type(t_x.frac + t_b.frac,
                                         t_x.integer + t_b.integer + math.ceil(math.log2(k))).to_dict()
        elif op in ("Add", "Mul") and "const" in layer.params:
            c = layer.params["const"]
            if op == "Mul":
                q["const_type"] = FixedType(16, int_bits(float(np.max(np.abs(c))), 1.0), True, "RND_CONV",
                                            "SAT").to_dict()
            else:
                q["const_type"] = FixedType(32, 32 - t_x.frac, True, "RND_CONV", "SAT").to_dict()
        elif op in ("GELU", "SiLU"):
            in_bits = min(ab, 14)
            q["in_type"] = FixedType(in_bits, int_bits(ranges.get(layer.inputs[0], 1.0)), True, "RND",
                                     "SAT").to_dict()
        elif op in ("LayerNorm", "RMSNorm"):
            n = graph.tensors[layer.inputs[0]].shape[-1]
            log_n = math.ceil(math.log2(n))
            c_bits = t_x.width + (log_n + 1 if op == "LayerNorm" else 0)
            shift = max(0, math.ceil((2 * c_bits + log_n - 62) / 2))
            eps = float(layer.attrs.get("eps", 1e-5))
            scale = (n ** 3 if op == "LayerNorm" else n) * 2.0 ** (2 * (t_x.frac - shift))
            q.update(table_bits=NORM_TABLE_BITS, p_bits=20, z_frac=max(ab, 12) - 4, pre_shift=shift,
                     eps_q=int(round(eps * scale)))
            q["gamma_type"] = weight_type(layer.params["gamma"], 16).to_dict()
            if "beta" in layer.params:
                frac = q["z_frac"] + FixedType.from_dict(q["gamma_type"]).frac
                q["beta_type"] = exact_type(frac, int_bits(float(np.max(np.abs(layer.params["beta"]))), 1.0),
                                            "RND_CONV").to_dict()
        elif op == "FakeQuant":
            y = qdq_type(layer, y, graph)
        elif op == "RoPE":
            q["cos_type"] = q["sin_type"] = FixedType(16, 2, True, "RND_CONV", "SAT").to_dict()
        out.fixed = y.to_dict()
        layer.attrs["quant"] = q
    graph.meta["precision"] = {"weight_bits": weight_bits, "act_bits": act_bits}
    return graph
