"""Bit-accurate emulator of fpgaformer's hardware kernels (numpy, vectorised, integer codes).

It executes a *quantized* layer graph: every tensor carries a `FixedType` (``Tensor.fixed``) and every layer
its kernel settings (``Layer.attrs["quant"]``). Values are int64 codes (value = code * 2**-frac). The math of
each kernel below is the specification its HLS twin in ``overlays/hls/`` implements, operation for operation.

Notation: ``F(t)`` = fractional bits of type t; ``cast(v, F, t)`` = ap_fixed assignment of an exact value held
as integer v at F fractional bits into t (rounding and overflow modes of t), counted when it overflows.

* Linear        acc_j = (sum_k x_k w_kj) << (S - s_j)  (+ b_j aligned)   exact at F(x)+F(w)+S, where column j
                of W is quantized with s_j extra fractional bits and S = max s_j; y = cast(acc, F(x)+F(w)+S, t_y).
                hls4ml's dense kernel is this when its accumulator keeps every product bit (frac(acc) >=
                F(x)+F(w), enough integer bits): casts of products into the accumulator are then exact, so the
                whole layer is one integer matrix product (done in float64 BLAS when |acc| < 2**53, else int64).
* MatMul        same, activation x activation (QK^T, P.V).
* Add, Mul      exact sum (aligned to the larger F) or product, then cast to t_y.
* Softmax       over the last axis, masked keys excluded (mask: keep flags, broadcast):
                  m = max of kept x;  d = m - x  (>= 0, at F(x));
                  i = min(d >> (F(x) - k), N - 1)               (a step of 2**-k; left shift if k > F(x))
                  e = EXP[i] (ufixed, E fractional bits, EXP[i] = round(exp(-i 2**-k) 2**E)), 0 when masked;
                  s = sum e (exact integer);  r = floor(2**(E + Fy + R) / s)  (one division per row; 0 if s=0);
                  y = (e * r) >> (E + R)   at Fy fractional bits (floor), clamped to max code of t_y.
* GELU, SiLU    table on a narrow input type t_in: c = cast(x, t_in) (RND, SAT); y = LUT[c - min_code(t_in)],
                LUT[j] = round(f(value of code j + min_code) 2**F(t_y)) saturated to t_y.
* LayerNorm     over the last axis of n values:  s = sum x;  c_i = n x_i - s;  q = sum c_i^2 + eps_q
                (eps_q = round(eps n^3 2**(2F(x))));  normalise q = m * 2**(2h) with m in [2**(T-2), 2**T);
                RS[m] = round(sqrt(n) m^-1/2 2**P);  z_i = (c_i * RS[m]) >> (P + h - Fz)  (floor; the
                normalised value at Fz fractional bits);  y = cast(z_i g_i + (b_i aligned), Fz+F(g), t_y).
                The 1/sqrt table thus covers every variance: nothing is lost for var >= 1 (hls4ml's table
                saturates there).
  RMSNorm       the same with c_i = x_i (no mean) and sqrt(n) in RS.
* RoPE          y = cast(x*cos + rot(x)*sin, F(x)+F(t_cs), t_y) with cos/sin tables quantized to t_cs.
* Embedding     y = table codes (quantized to t_y) gathered by id.
* FakeQuant     a pre-quantized model's QuantizeLinear/DequantizeLinear pair on the exact value of x, then
                quantized to t_y: an exact cast when the scale is 2**-f and the zero point 0 (t_y is then that
                integer grid); otherwise the grid value rounded to t_y (documented in graph.meta["notes"]).
* layout ops    move codes (Reshape, Transpose, Slice, Expand); the type is unchanged. Concat first casts
                each input to the output type.

Overflows (saturations and wraps) are counted per layer in ``Emulator.overflows``.

Two implementations of the same math: the int64 numpy kernels below (the reference,
``Emulator(graph, fast=False)``) and, by default for tensors of at least ``FAST_MIN`` elements, the fused
kernels of ``host.fused`` (numba): the same
integer operations in one compiled pass per tensor, with matrix products on exact engines (float64 BLAS while
every partial sum is below 2**53; int8 x int16 products on onnxruntime's u8 GEMM, ``host.u8gemm``), in
blocks of rows spread over ``threads`` worker threads (default: the CPUs this process may use) with BLAS
held to one thread per block (threadpoolctl). Layers whose types or bounds fall outside them run the
reference kernel; without numba every layer does. Both give the same codes and overflow counts, bit for bit
(tests/host/test_emulator_fast.py).
"""

from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from . import fused, reference, u8gemm
from .fixed import FixedType, cast_count, quantize, quantize_count, to_float
from .graph import Graph, Layer

EXACT_FLOAT = 2.0 ** 53


def ftype(d: dict | None) -> FixedType | None:
    return None if d is None else FixedType.from_dict(d)


def _frac_align(codes: np.ndarray, frac: int, target: int) -> np.ndarray:
    """Exact re-expression of integer codes at ``frac`` fractional bits with ``target`` >= frac bits."""
    return codes << np.int64(target - frac) if target > frac else codes


def _at_frac(codes: np.ndarray, frac: int, target: int) -> np.ndarray:
    """Codes at ``frac`` fractional bits moved to ``target``: exact when adding bits, floor when dropping."""
    return _frac_align(codes, frac, target) if frac <= target else codes >> np.int64(frac - target)


def code_bound(t: FixedType) -> float:
    """max |code| of a tensor of type t."""
    return float(max(-t.min_code, t.max_code))


def exact_cast(acc: np.ndarray, frac: int, t: FixedType) -> tuple[np.ndarray, int]:
    """cast of the exact value acc * 2**-frac into t (acc may need up to 63 bits).

    Fast path for the modes the quantizer emits (TRN or RND rounding; WRAP or SAT overflow) when dropping
    k = frac - F(t) >= 0 bits: TRN is acc >> k, RND is (acc + 2**(k-1)) >> k (= floor(v + 1/2)); SAT
    clips, WRAP keeps the low W bits. Every other case goes through host.fixed.cast_count (the reference
    that is tested against ap_fixed); the two agree bit for bit (tests/host/test_emulator_kernels.py)."""
    k = frac - t.frac
    if 0 <= k < 62 and t.rounding in ("TRN", "RND") and t.overflow in ("SAT", "WRAP") and t.width < 63 \
            and acc.dtype == np.int64:
        if t.rounding == "RND" and k > 0:
            acc = acc + (np.int64(1) << np.int64(k - 1))
        r = acc >> np.int64(k) if k else acc
        lo, hi = (-(1 << (t.width - 1)), (1 << (t.width - 1)) - 1) if t.signed else (0, (1 << t.width) - 1)
        if not r.size or (int(r.min()) >= lo and int(r.max()) <= hi):  # the common case: two reductions
            return r, 0
        count = int(np.count_nonzero((r < lo) | (r > hi)))
        if t.overflow == "SAT":
            return np.clip(r, lo, hi), count
        span = np.int64(1) << np.int64(t.width)
        wrapped = r & (span - 1)
        return (np.where(wrapped > hi, wrapped - span, wrapped) if t.signed else wrapped), count
    src = FixedType(64, 64 - frac, True, "TRN", "WRAP")
    return cast_count(acc, src, t)


def int_matmul(a: np.ndarray, b: np.ndarray, bound: float) -> np.ndarray:
    """Exact integer a @ b: float64 BLAS when every partial sum is < 2**53 in magnitude, else int64."""
    if b.ndim == 2 and a.ndim > 2:  # one large GEMM instead of a stack of small ones
        return int_matmul(a.reshape(-1, a.shape[-1]), b, bound).reshape(*a.shape[:-1], b.shape[-1])
    if bound < EXACT_FLOAT:  # C order: numpy's stacked matmul only reaches BLAS for contiguous operands
        fa = np.ascontiguousarray(a, dtype=np.float64)
        fb = np.ascontiguousarray(b, dtype=np.float64)
        # integer operands and |partial sums| < 2**53: the float64 result is the exact integer
        if fa.ndim > 2 or fb.ndim > 2:  # numpy's stacked float64 matmul is ~30x slower than einsum here
            return np.einsum("...ij,...jk->...ik", fa, fb).astype(np.int64)
        return (fa @ fb).astype(np.int64)
    return a.astype(np.int64) @ b.astype(np.int64)


def _abs_max(codes: np.ndarray) -> int:
    return int(np.max(np.abs(codes))) if codes.size else 0


# -------------------------------------------------------------------------------------------- tables
def exp_table(k: int, size: int, e_bits: int) -> np.ndarray:
    i = np.arange(size, dtype=np.float64)
    return np.floor(np.exp(-i * 2.0 ** -k) * 2.0 ** e_bits + 0.5).astype(np.int64)


def rsqrt_table(t_bits: int, p_bits: int, n: int) -> np.ndarray:
    m = np.arange(1 << (t_bits - 2), 1 << t_bits, dtype=np.float64)
    return np.floor(math.sqrt(n) / np.sqrt(m) * 2.0 ** p_bits + 0.5).astype(np.int64)


def unary_table(fn, t_in: FixedType, t_out: FixedType) -> np.ndarray:
    codes = np.arange(t_in.min_code, t_in.max_code + 1, dtype=np.int64)
    return quantize(fn(to_float(codes, t_in)), t_out)


UNARY = {"GELU": lambda x, a: reference.gelu(x, a.get("approximate", "none")),
         "SiLU": lambda x, a: x / (1.0 + np.exp(-x))}


# --------------------------------------------------------------------------------------------- kernels
def bit_length(v: np.ndarray) -> np.ndarray:
    """Number of bits of non-negative int64 values (0 for 0), exact."""
    v = v.astype(np.int64)
    out = np.zeros(v.shape, np.int64)
    for shift in (32, 16, 8, 4, 2, 1):
        big = v >= (np.int64(1) << shift)
        out += np.where(big, shift, 0)
        v = np.where(big, v >> shift, v)
    return out + (v > 0)


def norm_kernel(x: np.ndarray, fx: int, q: dict, gamma: np.ndarray, fg: int, beta, fb: int,
                rs: np.ndarray, center: bool) -> tuple[np.ndarray, int]:
    """LayerNorm (center=True) / RMSNorm core: returns (exact value codes, their frac). See module doc."""
    n = x.shape[-1]
    c = n * x - x.sum(-1, keepdims=True) if center else x
    shift = q["pre_shift"]  # keeps sum c^2 below 2**62; chosen by the quantizer from the input width
    cs = c >> np.int64(shift)
    total = (cs * cs).sum(-1, keepdims=True) + q["eps_q"]
    t_bits, p_bits, fz = q["table_bits"], q["p_bits"], q["z_frac"]
    length = bit_length(total)
    h = np.maximum(0, (length - t_bits + 1) // 2)  # total = m * 4**h, m < 2**T
    m = total >> (2 * h)
    m = np.maximum(m, 1 << (t_bits - 2))  # tiny variances: the table's first entry (eps keeps q > 0)
    r = rs[m - (1 << (t_bits - 2))]
    # z = cs * r * 2**-(P + h) in units of the value of cs (whose frac is fx - shift, and sqrt(n) relative
    # scaling cancels the shift: c / sqrt(sum c^2) is scale-free)
    z = (cs * r) >> (p_bits + h - fz)
    y = z * gamma  # frac fz + fg
    frac = fz + fg
    if beta is not None:
        y = y + _at_frac(beta, fb, frac)
    return y, frac


def softmax_kernel(x: np.ndarray, fx: int, keep: np.ndarray | None, q: dict, fy: int, y_max: int) -> np.ndarray:
    k, size, e_bits, r_bits = q["exp_k"], q["exp_size"], q["exp_bits"], q["recip_bits"]
    table = exp_table(k, size, e_bits)
    if keep is None:
        keep = np.ones(x.shape, bool)
    keep = np.broadcast_to(keep, x.shape)
    lowest = np.iinfo(np.int64).min
    m = np.max(np.where(keep, x, lowest), axis=-1, keepdims=True)
    d = np.where(keep, m - x, 0)
    idx = d >> np.int64(fx - k) if fx >= k else d << np.int64(k - fx)
    e = np.where(keep, table[np.minimum(idx, size - 1)], 0)
    s = e.sum(-1, keepdims=True)
    r = np.where(s > 0, (np.int64(1) << np.int64(e_bits + fy + r_bits)) // np.maximum(s, 1), 0)
    y = (e * r) >> np.int64(e_bits + r_bits)
    return np.minimum(y, y_max)


def rope_kernel(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, rotary_dim: int, interleaved: bool) -> np.ndarray:
    """Exact x*cos + rot(x)*sin on codes (frac F(x)+F(cs)); pass-through part aligned to the same frac."""
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    if interleaved:
        rotated = np.stack([-rot[..., 1::2], rot[..., 0::2]], axis=-1).reshape(rot.shape)
    else:
        half = rotary_dim // 2
        rotated = np.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
    return rot * cos + rotated * sin, rest


# -------------------------------------------------------------------------------------------- emulator
@dataclass
class Emulator:
    """Executes a quantized graph on integer codes; ``run`` returns codes, ``run_float`` values."""

    graph: Graph
    overflows: dict[str, int] = field(default_factory=dict)
    fast: bool = True  # False: the int64 reference kernels only
    threads: int | None = None  # worker threads for the fast path; None: the CPUs available to this process

    def __post_init__(self):
        if self.threads is None:
            self.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads = max(1, int(self.threads))
        self.fast = self.fast and fused.available()  # without numba: the reference kernels
        self._pool: ThreadPoolExecutor | None = None
        self._free: dict[tuple[int, ...], list[np.ndarray]] = {}  # released outputs, by shape (``_alloc``)
        self.types = {name: ftype(t.fixed) for name, t in self.graph.tensors.items()}
        self._prepared: dict[str, dict] = {}
        self._batched = False  # set by run_batch: a leading axis of N sequences on every tensor
        self._batched_layers: dict[tuple[str, int], Layer] = {}
        for layer in self.graph.layers:
            self._prepared[layer.name] = self._prepare(layer)
        # for ``run(keep=...)``: tensors some layer reads, and per layer those it is the last to read
        self._consumed = {n for layer in self.graph.layers for n in layer.inputs if n}
        last = {n: i for i, layer in enumerate(self.graph.layers) for n in layer.inputs if n}
        self._last_use: list[list[str]] = [[] for _ in self.graph.layers]
        for name, i in last.items():
            self._last_use[i].append(name)

    # ----------------------------------------------------------------------------- constant preparation
    def _prepare(self, layer: Layer) -> dict:
        q = layer.attrs.get("quant", {})
        p = {}
        for key in ("bias", "gamma", "beta", "const", "table", "cos", "sin"):  # Linear weights: below
            tkey = f"{key}_type"
            if key in layer.params and tkey in q:
                p[key] = quantize(layer.params[key], ftype(q[tkey]))
                p[f"{key}_frac"] = ftype(q[tkey]).frac
        if layer.op == "Linear":
            base = ftype(q["weight_type"])
            shifts = np.asarray(q.get("weight_col_shift", 0), dtype=np.int64)
            p["weight"] = quantize(layer.params["weight"] * np.ldexp(1.0, shifts), base)
            p["col_align"] = (shifts.max(initial=0) - shifts) if shifts.ndim else None
            t_x = self.types[layer.inputs[0]]
            p["frac"] = t_x.frac + base.frac + int(shifts.max(initial=0))
            # |x @ W| <= K * max|code of x's type| * max|W|; with the column shifts and the bias: ``shifted``
            p["bound"] = float(layer.params["weight"].shape[0]) * code_bound(t_x) * float(_abs_max(p["weight"]))
            p["weight_f"] = np.ascontiguousarray(p["weight"], dtype=np.float64)
            # the column shifts and the bias applied in float64 too, while every value stays < 2**53
            p["scale_f"] = None if p["col_align"] is None else np.ldexp(1.0, p["col_align"])
            shifted = p["bound"] * 2.0 ** int(np.max(p["col_align"], initial=0) if p["col_align"] is not None else 0)
            if "bias" in p:
                p["bias_aligned"] = _align_to(p["bias"], p["bias_frac"], p["frac"])
                shifted += float(_abs_max(p["bias_aligned"]))
            p["float_exact"] = shifted < EXACT_FLOAT
            if self.fast:
                self._prepare_fast_linear(p, shifted, t_x, self.types[layer.output])
        elif layer.op in ("GELU", "SiLU"):
            t_in = ftype(q["in_type"])
            p["lut"] = unary_table(lambda v: UNARY[layer.op](v, layer.attrs), t_in, self.types[layer.output])
            p["in_type"] = t_in
            if self.fast:
                self._prepare_fast_table(p, self.types[layer.inputs[0]])
        elif layer.op in ("LayerNorm", "RMSNorm"):
            n = self.graph.tensors[layer.inputs[0]].shape[-1]
            p["rs"] = rsqrt_table(q["table_bits"], q["p_bits"], n)
        return p

    def _prepare_fast_linear(self, p: dict, shifted: float, t_x: FixedType, t_y: FixedType) -> None:
        """Constants of the fused Linear (host.fused): the epilogue's column shifts, aligned bias and cast,
        and whether the u8 GEMM applies. Taken when every accumulator is exact: ``shifted`` (K * max|code of
        x's type| * max|W| * 2**max(col_align) + max|bias|) < 2**53 (a float64 BLAS product of integers is
        then exact in any summation order), and the int64 epilogue cannot overflow (shifted * 2**-k < 2**62)."""
        k = p["frac"] - t_y.frac
        if not (fused.cast_ok(t_x) and fused.cast_ok(t_y)) or not p["float_exact"] or shifted * 2.0 ** -k >= INT_SAFE:
            return
        n = p["weight"].shape[1]
        col = p["col_align"] if p["col_align"] is not None else np.zeros(n, np.int64)
        bias = p.get("bias_aligned", np.zeros(n, np.int64))
        p["epilogue"] = (np.ascontiguousarray(col, np.int64), np.ascontiguousarray(bias, np.int64),
                         *fused.cast_args(k, t_y))
        p["u8"] = u8gemm.eligible(p["weight"], t_x.min_code, t_x.max_code)  # int8 x int16: the u8 GEMM

    def _prepare_fast_table(self, p: dict, t_x: FixedType | None) -> None:
        """GELU/SiLU on a narrow input (<= 20 bits): compose the input cast and the table into one table over
        every code of x's type, built with the reference cast (``exact_cast``) itself; the codes whose cast
        overflows form the two ends of that range (rounding is monotone), kept as [sat_lo, sat_hi]."""
        if not (t_x is not None and fused.cast_ok(t_x) and t_x.width <= 20):
            return
        t_in = p["in_type"]
        lo, hi = t_x.min_code, t_x.max_code
        codes = np.arange(lo, hi + 1, dtype=np.int64)
        wide = FixedType(62, 62 - t_in.frac, True, t_in.rounding, "WRAP")  # the same rounding, no overflow
        rounded = exact_cast(codes, t_x.frac, wide)[0]
        inside = (rounded >= t_in.min_code) & (rounded <= t_in.max_code)
        if not inside.any():
            return
        first, last = np.flatnonzero(inside)[[0, -1]]
        if not inside[first:last + 1].all():
            return
        c = exact_cast(codes, t_x.frac, t_in)[0]
        p["table_x"] = p["lut"][c - t_in.min_code]
        p["table_x_range"] = (lo, int(codes[first]), int(codes[last]))

    # ------------------------------------------------------------------------------------------- run
    def run(self, feeds: dict[str, np.ndarray], keep=None) -> dict[str, np.ndarray]:
        """Execute on one sequence. Float inputs are quantized to the input tensor's type; ids pass as ints.

        Returns the codes of every tensor, or with ``keep`` (tensor names) only those: every other tensor is
        then dropped as soon as its last consumer has run, which keeps memory (and page faults) low."""
        if self.fast and self.threads > 1:
            with _one_blas_thread():
                return self._run(feeds, keep)
        return self._run(feeds, keep)

    def _run(self, feeds: dict[str, np.ndarray], keep) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = {}
        for name in self.graph.inputs:
            value = np.asarray(feeds[name])
            t = self.types.get(name)
            env[name] = quantize(value, t) if (t is not None and value.dtype.kind == "f") else value
        drop = None
        if keep is not None:
            keep = set(keep)
            missing = keep - set(self.types) - set(self.graph.inputs)
            if missing:
                raise KeyError(f"no tensors named {sorted(missing)}")
            drop = [[n for n in names if n not in keep] for names in self._last_use]
            for name in [n for n in self.graph.inputs if n not in keep and n not in self._consumed]:
                env.pop(name, None)
        for i, layer in enumerate(self.graph.layers):
            out, count = self._run_layer(layer, env)
            env[layer.output] = out
            if count:
                self.overflows[layer.name] = self.overflows.get(layer.name, 0) + count
            if drop is not None:
                for name in drop[i]:
                    self._release(env.pop(name, None))
                if layer.output not in keep and layer.output not in self._consumed:
                    self._release(env.pop(layer.output, None))
        return env

    def _alloc(self, shape: tuple[int, ...]) -> np.ndarray:
        """An int64 output array: a released one of this shape when there is one (no fresh pages to fault
        in), else a new one."""
        free = self._free.get(tuple(shape))
        return free.pop() if free else np.empty(shape, np.int64)

    def _release(self, value) -> None:
        """Keep a dropped tensor's memory for ``_alloc`` when nothing else refers to it: an int64 array that
        owns its data and has no views (a view holds a reference to its base), with ``run``'s ``keep`` only
        (without it every tensor is returned to the caller)."""
        if isinstance(value, np.ndarray) and value.base is None and value.dtype == np.int64 \
                and value.flags.c_contiguous and sys.getrefcount(value) <= 2:
            self._free.setdefault(value.shape, []).append(value)

    def run_batch(self, feeds: dict[str, np.ndarray], keep=None) -> dict[str, np.ndarray]:
        """Execute N sequences at once: every feed has a leading axis N before the graph's own shape.

        The same kernels run on the stacked arrays (one large matrix product per layer instead of N small
        ones); layout ops get their axes shifted by one. Results equal N calls of ``run``, bit for bit.
        ``keep`` as in ``run``."""
        self._batched = True
        try:
            return self.run(feeds, keep)
        finally:
            self._batched = False

    def _batched_layer(self, layer: Layer, n: int) -> Layer:
        key = (layer.name, n)
        cache = self._batched_layers
        if key not in cache:
            a = dict(layer.attrs)
            if layer.op in ("Reshape", "Expand"):
                a["shape"] = [n, *a["shape"]]
            elif layer.op == "Transpose":
                a["perm"] = [0, *(p + 1 for p in a["perm"])]
            elif layer.op == "Slice":
                a["axes"] = [ax + 1 for ax in a["axes"]]
            elif layer.op == "Concat":
                a["axis"] = a["axis"] + 1
            cache[key] = Layer(layer.name, layer.op, layer.inputs, layer.outputs, a, layer.params)
        return cache[key]

    def run_float(self, feeds: dict[str, np.ndarray], keep=None) -> dict[str, np.ndarray]:
        env = self.run(feeds, keep)
        return {k: (to_float(v, self.types[k]) if self.types.get(k) is not None and v.dtype.kind in "iu"
                    and self.graph.tensors[k].dtype not in ("int64", "bool") else v) for k, v in env.items()}

    def outputs(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env = self.run_float(feeds, keep=self.graph.outputs)
        return {name: env[name] for name in self.graph.outputs}

    def _run_layer(self, layer: Layer, env: dict) -> tuple[np.ndarray, int]:
        if self.fast and layer.op in FAST_OPS and env[layer.inputs[0]].size >= FAST_MIN:
            done = self._run_fast(layer, env)
            if done is not None:
                return done
        return self._run_reference(layer, env)

    # ------------------------------------------------------------------------------------ fast path
    def _blockwise(self, fn, out: np.ndarray, *arrays: np.ndarray, per_block: int | None = None) -> int:
        """fn(*row blocks of arrays, row block of out) -> overflow count, over blocks of whole rows (axis 0)
        of about ``per_block`` output elements, a multiple of the thread count when there is enough work;
        the blocks run on the worker threads."""
        rows, per_block = out.shape[0], per_block or BLOCK
        parts = max(1, min(rows, -(-out.size // per_block)))
        if self.threads > 1 and out.size >= 2 * MIN_BLOCK:
            parts = min(rows, -(-max(parts, self.threads) // self.threads) * self.threads)
        edges = [rows * i // parts for i in range(parts + 1)]
        blocks = [(lo, hi) for lo, hi in zip(edges, edges[1:]) if hi > lo]

        def one(block):
            lo, hi = block
            return fn(*(a[lo:hi] for a in arrays), out[lo:hi])
        if len(blocks) == 1 or self.threads == 1:
            return sum(map(one, blocks))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fpgaformer-emulator")
        return sum(self._pool.map(one, blocks))

    def _u8_gemm(self, p: dict):
        """The layer's u8 GEMM (host.u8gemm), made on first use; None where not eligible, where onnxruntime
        is missing or where its self-check failed (the float64 product is used then)."""
        if "u8_gemm" not in p:
            gemm = None
            if p.get("u8"):
                try:
                    gemm = u8gemm.U8Gemm(p["weight"])
                except ImportError:
                    pass
            p["u8_gemm"] = gemm if gemm is not None and gemm.ok else None
        return p["u8_gemm"]

    def _run_fast(self, layer: Layer, env: dict) -> tuple[np.ndarray, int] | None:
        """The fused kernels of host.fused on (rows, last axis) matrices, or None where a type, a shape or a
        bound needs the reference kernel."""
        op, p, q = layer.op, self._prepared[layer.name], layer.attrs.get("quant", {})
        t_y, K = self.types[layer.output], fused.jit()
        x = env[layer.inputs[0]]
        t_x = self.types.get(layer.inputs[0])
        if t_x is None or x.dtype != np.int64 or not x.size or not fused.cast_ok(t_x) or not fused.cast_ok(t_y):
            return None  # empty tensors (a decoder's first step) take the reference kernels
        if op == "Linear":
            if "epilogue" not in p:
                return None
            epi, gemm, weight = p["epilogue"], self._u8_gemm(p), p["weight_f"]
            out = self._alloc((*x.shape[:-1], weight.shape[1]))

            def fn(a, o):
                if gemm is not None:
                    return K.linear_u8(*gemm.halves(a), *epi, o)
                return K.from_float(a.astype(np.float64) @ weight, *epi, o)
            return out, self._blockwise(fn, *_rows(out, x), per_block=LINEAR_BLOCK)
        if op == "MatMul":
            b, t_b = env[layer.inputs[1]], self.types[layer.inputs[1]]
            trans = bool(layer.attrs.get("transpose_b"))
            if t_b is None or b.dtype != np.int64 or not b.size or not fused.cast_ok(t_b) or x.ndim < 2 \
                    or b.ndim != x.ndim or x.shape[:-2] != b.shape[:-2] \
                    or (b.shape[-1] if trans else b.shape[-2]) != x.shape[-1]:
                return None
            k = t_x.frac + t_b.frac - t_y.frac
            bound = x.shape[-1] * code_bound(t_x) * code_bound(t_b)
            if bound >= EXACT_FLOAT or bound * 2.0 ** -k >= INT_SAFE:
                return None  # the float64 product must be exact, the int64 cast must not overflow
            n = b.shape[-2] if trans else b.shape[-1]
            out = self._alloc((*x.shape[:-1], n))
            cast, zeros = fused.cast_args(k, t_y), np.zeros(n, np.int64)

            def fn(a, bb, o):  # stacks of matrices: (..., m, K) @ (..., K, n), or (..., n, K) transposed
                bf = bb.astype(np.float64)  # (copies of strided views are made here, on the worker threads)
                acc = np.matmul(a.astype(np.float64), np.swapaxes(bf, -1, -2) if trans else bf)
                return K.from_float(acc.reshape(-1, n), zeros, zeros, *cast, o.reshape(-1, n))
            # blocks along the first axis (the batch); one sequence: along its stack of matrices (heads)
            arrays = (out, x, b) if x.shape[0] > 1 else [a.reshape(-1, *a.shape[-2:]) for a in (out, x, b)]
            return out, self._blockwise(fn, *arrays, per_block=MATMUL_BLOCK)
        if op in ("Add", "Mul"):
            if "const" in p:
                b, fb = p["const"], p["const_frac"]
                if "const_slice" in layer.attrs:
                    axis, start, stop = layer.attrs["const_slice"]
                    b = np.take(b, np.arange(start, stop), axis=axis)
                b_bound = float(_abs_max(b))
            else:
                b, t_b = env[layer.inputs[1]], self.types.get(layer.inputs[1])
                if t_b is None or not fused.cast_ok(t_b):
                    return None
                fb, b_bound = t_b.frac, code_bound(t_b)
            if b.dtype != np.int64 or np.broadcast_shapes(x.shape, b.shape) != x.shape:
                return None
            frac = t_x.frac + fb if op == "Mul" else max(t_x.frac, fb)
            ax, ab = (0, 0) if op == "Mul" else (frac - t_x.frac, frac - fb)
            x_bound = code_bound(t_x)
            bound = x_bound * b_bound if op == "Mul" else x_bound * 2.0 ** ax + b_bound * 2.0 ** ab
            if bound * 2.0 ** max(0, t_y.frac - frac) >= INT_SAFE:  # int64 arithmetic must not overflow
                return None
            out = self._alloc(x.shape)
            mul, cast = op == "Mul", fused.cast_args(frac - t_y.frac, t_y)
            fn = lambda a, c, o: K.add_mul(a, c, mul, ax, ab, *cast, o)  # noqa: E731
            return out, self._blockwise(fn, *_rows(out, x, np.broadcast_to(b, x.shape)))
        if op == "Softmax":
            keep = env[layer.inputs[1]] if len(layer.inputs) > 1 and layer.inputs[1] else None
            if keep is not None and (keep.dtype != bool or np.broadcast_shapes(x.shape, keep.shape) != x.shape):
                return None
            k, size, e_bits, r_bits = q["exp_k"], q["exp_size"], q["exp_bits"], q["recip_bits"]
            if "exp" not in p:
                p["exp"] = exp_table(k, size, e_bits)
            exp, shift, left = p["exp"], abs(t_x.frac - k), k > t_x.frac
            out = self._alloc(x.shape)
            fn = lambda a, kk, o: K.softmax(a, kk, shift, left, exp, e_bits, r_bits,  # noqa: E731
                                                t_y.frac, t_y.max_code, o)
            return out, self._blockwise(fn, *_rows(out, x, np.broadcast_to(True if keep is None else keep,
                                                                           x.shape)))
        if op in ("GELU", "SiLU"):
            if "table_x" not in p:
                return None
            (offset, sat_lo, sat_hi), table = p["table_x_range"], p["table_x"]  # every code of x's type
            out = self._alloc(x.shape)
            fn = lambda a, o: K.table(a, offset, table, sat_lo, sat_hi, o)  # noqa: E731
            return out, self._blockwise(fn, *_rows(out, x))
        if op in ("LayerNorm", "RMSNorm"):
            frac = q["z_frac"] + p["gamma_frac"]
            if frac < t_y.frac or q["p_bits"] < q["z_frac"]:  # the reference's shifts, non-negative
                return None
            n = x.shape[-1]
            beta = np.zeros(n, np.int64) if p.get("beta") is None else _at_frac(p["beta"], p["beta_frac"], frac)
            args = (op == "LayerNorm", q["pre_shift"], q["eps_q"], q["table_bits"], q["p_bits"], q["z_frac"], p["rs"],
                    np.broadcast_to(p["gamma"], (n,)).astype(np.int64), np.broadcast_to(beta, (n,)).astype(np.int64),
                    *fused.cast_args(frac - t_y.frac, t_y))
            out = self._alloc(x.shape)
            return out, self._blockwise(lambda a, o: K.norm(a, *args, o), *_rows(out, x))
        return None

    # ------------------------------------------------------------------------------ reference path
    def _run_reference(self, layer: Layer, env: dict) -> tuple[np.ndarray, int]:
        op, p, q = layer.op, self._prepared[layer.name], layer.attrs.get("quant", {})
        t_y = self.types[layer.output]
        x = env[layer.inputs[0]] if layer.inputs else None
        t_x = self.types.get(layer.inputs[0]) if layer.inputs else None
        if op == "Embedding":
            return np.take(p["table"], x.astype(np.int64), axis=0), 0
        if op == "PaddingMask":
            a = layer.attrs
            if self._batched:
                return np.stack([reference.padding_mask(m, a.get("causal", False), -1.0, a["q_len"],
                                                        a.get("shape")) == 0 for m in x]), 0
            return reference.padding_mask(x, a.get("causal", False), -1.0, a["q_len"], a.get("shape")) == 0, 0
        if op in ("Reshape", "Transpose", "Slice", "Concat", "Expand"):
            if self._batched:
                layer = self._batched_layer(layer, x.shape[0])
            if op == "Concat":  # every part in the output type first (inputs may differ in type)
                parts = [cast_count(env[n], self.types[n], t_y)[0] if self.types.get(n) not in (None, t_y)
                         else env[n] for n in layer.inputs]
                return np.concatenate(parts, axis=layer.attrs["axis"]), 0
            return reference.run_layer(layer, env), 0
        if op == "Linear":
            if p["float_exact"]:  # one GEMM, shift and bias in float64, one conversion (all exact)
                fx = np.ascontiguousarray(x, dtype=np.float64)
                acc_f = fx.reshape(-1, fx.shape[-1]) @ p["weight_f"]
                if p["scale_f"] is not None:
                    acc_f *= p["scale_f"]
                if "bias_aligned" in p:
                    acc_f += p["bias_aligned"]
                acc = acc_f.astype(np.int64).reshape(*x.shape[:-1], acc_f.shape[-1])
                return exact_cast(acc, p["frac"], t_y)
            acc = int_matmul(x, p["weight"], p["bound"])
            if p["col_align"] is not None:
                acc = acc << p["col_align"]
            if "bias_aligned" in p:
                acc = acc + p["bias_aligned"]
            return exact_cast(acc, p["frac"], t_y)
        if op == "MatMul":
            b = env[layer.inputs[1]]
            t_b = self.types[layer.inputs[1]]
            if layer.attrs.get("transpose_b"):
                b = np.swapaxes(b, -1, -2)
            bound = float(x.shape[-1]) * _abs_max(x) * _abs_max(b)
            return exact_cast(int_matmul(x, b, bound), t_x.frac + t_b.frac, t_y)
        if op in ("Add", "Mul"):
            if "const" in p:
                b, fb = p["const"], p["const_frac"]
                if "const_slice" in layer.attrs:  # position-dependent constant, incremental decoding
                    axis, start, stop = layer.attrs["const_slice"]
                    b = np.take(b, np.arange(start, stop), axis=axis)
            else:
                b, fb = env[layer.inputs[1]], self.types[layer.inputs[1]].frac
            if op == "Mul":
                return exact_cast(x * b, t_x.frac + fb, t_y)
            frac = max(t_x.frac, fb)
            return exact_cast(_frac_align(x, t_x.frac, frac) + _frac_align(b, fb, frac), frac, t_y)
        if op == "Softmax":
            keep = env[layer.inputs[1]] if len(layer.inputs) > 1 and layer.inputs[1] else None
            if keep is not None and keep.dtype != bool:
                raise ValueError(f"softmax {layer.name}: the mask must be keep flags (run the quantizer)")
            return softmax_kernel(x, t_x.frac, keep, q, t_y.frac, t_y.max_code), 0
        if op in ("GELU", "SiLU"):
            c, n_in = exact_cast(x, t_x.frac, p["in_type"])  # codes of t_x are exact values at F(t_x)
            return p["lut"][c - p["in_type"].min_code], n_in
        if op in ("LayerNorm", "RMSNorm"):
            y, frac = norm_kernel(x, t_x.frac, q, p["gamma"], p["gamma_frac"], p.get("beta"),
                                  p.get("beta_frac", 0), p["rs"], op == "LayerNorm")
            return exact_cast(y, frac, t_y)
        if op == "RoPE":
            start, rows = layer.attrs.get("position", 0), x.shape[-2]  # table rows of these tokens
            rotated, rest = rope_kernel(x, p["cos"][start:start + rows], p["sin"][start:start + rows],
                                        layer.attrs["rotary_dim"],
                                        layer.attrs.get("interleaved", False))
            frac = t_x.frac + p["cos_frac"]
            return exact_cast(np.concatenate([rotated, _frac_align(rest, t_x.frac, frac)], -1), frac, t_y)
        if op == "FakeQuant":  # a pre-quantized model's QDQ pair, on the exact value of x
            y = reference.fake_quant(to_float(x, t_x), layer.params["scale"], layer.params["zero_point"],
                                     layer.attrs["qmin"], layer.attrs["qmax"])
            return quantize_count(y, t_y)
        if op == "Constant":
            return p["value"] if "value" in p else layer.params["value"], 0
        raise NotImplementedError(f"the emulator has no kernel for op {op!r} (layer {layer.name!r})")


FAST_OPS = frozenset({"Linear", "MatMul", "Add", "Mul", "Softmax", "GELU", "SiLU", "LayerNorm", "RMSNorm"})
# block sizes (output elements): a block's rows are one task for a worker thread
LINEAR_BLOCK = 1 << 17
MATMUL_BLOCK = 1 << 16
BLOCK = 1 << 15
MIN_BLOCK = 1 << 13
INT_SAFE = 2.0 ** 62  # magnitude below which the fused kernels' int64 arithmetic cannot overflow
# Smaller tensors (a decoder's one-token step) take the reference kernels: there the two are about as fast,
# and a process that never meets a larger tensor never loads the compiled kernels (about 0.6 s).
FAST_MIN = 1 << 15

_BLAS = None


@contextmanager
def _one_blas_thread():
    """One BLAS thread while the emulator's own threads each run a block (threadpoolctl; a no-op without)."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS = ThreadpoolController()
        except ImportError:
            _BLAS = False
    if not _BLAS:
        yield
        return
    with _BLAS.limit(limits=1, user_api="blas"):
        yield


def _rows(*arrays: np.ndarray) -> list[np.ndarray]:
    """Arrays of one shape as (rows, last axis) matrices for a row-wise fused kernel: views where numpy can
    merge the axes (the first array, a fresh output, always; a broadcast input stays a zero-stride view),
    else copies (inputs only)."""
    return [a.reshape(-1, a.shape[-1]) for a in arrays]


def _align_to(codes: np.ndarray, frac: int, target: int) -> np.ndarray:
    if frac > target:
        raise ValueError(f"bias with {frac} fractional bits cannot be added exactly at {target}")
    return codes << np.int64(target - frac)
