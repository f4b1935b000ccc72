"""Exact integer kernels computed in float64, in row blocks: the emulator's fast path (numpy only).

Every function here computes *exactly* what its int64 twin in ``host.emulator`` computes (the reference path,
``Emulator(graph, fast=False)``), bit for bit; tests/host/test_emulator_fast.py compares the two on adversarial
values (range limits, negative values, rounding ties, saturation and wrap-around).

Why float64: on x86 without AVX-512 numpy has no SIMD for int64 multiply, arithmetic right shift or
int64<->float64 conversion, while every float64 operation is SIMD; and matrix products go to BLAS. float64
arithmetic is exact on integers, and on integers scaled by powers of two, as long as every value is below
2**53 in magnitude in units of its least significant bit:

* a product or sum of two such values is computed exactly when the exact result is representable, i.e. when
  it is an integer multiple of the finer LSB with magnitude < 2**53 of those units (IEEE 754 rounds only
  results that are not representable);
* multiplying by 2**e is exact (no overflow or underflow happens at the magnitudes here);
* a BLAS matrix product, whatever its summation order, blocking or use of FMA, computes only partial sums
  of subsets of the products; each is bounded by sum_k |a_ik||b_kj| <= K * max|a| * max|b|, so when that
  bound is < 2**53 (in LSB units) every intermediate is exact and so is the result;
* ``np.sum`` of non-negative integers whose total is < 2**53 is exact in any order.

The cast of an exact value v (held as ``v * 2**F(t)`` in float64, i.e. already scaled to the target grid)
into a fixed-point type t is then, for the modes the quantizer emits:
  TRN: floor(v);  RND: floor(v + 1/2)   (adding 1/2 is exact while |v|*2 + 1 < 2**53 in LSB units);
  SAT: clip to [min_code, max_code];  WRAP: the low W bits (done in int64, only when some value overflows).
``cast_ok`` says whether a type takes this path; each caller checks its own magnitude bound first (the
bounds are static, from the operand types) and otherwise keeps the int64 reference kernel.

Work is split into blocks of rows (``spans``) so that temporaries stay in cache and blocks can run on
several threads: numpy ufuncs, reductions, ``take`` and BLAS release the GIL.
"""

from __future__ import annotations

import numpy as np

from .fixed import FixedType

EXACT = 2.0 ** 53


def cast_ok(t: FixedType) -> bool:
    """Types whose cast the float64 path implements (the others keep host.fixed's reference cast)."""
    return t.rounding in ("TRN", "RND") and t.overflow in ("SAT", "WRAP") and t.width <= 52


def code_range(t: FixedType) -> tuple[int, int]:
    """[lo, hi] of the codes a SAT or WRAP type holds (both exact in float64 for W <= 52)."""
    return (-(1 << (t.width - 1)), (1 << (t.width - 1)) - 1) if t.signed else (0, (1 << t.width) - 1)


def code_bound(t: FixedType) -> float:
    """max |code| of a tensor of type t (SAT or WRAP: the W-bit range)."""
    lo, hi = code_range(t)
    return float(max(-lo, hi))


def half(k: int, t: FixedType) -> float:
    """What RND adds before the floor when k = frac(source) - F(t) bits are dropped (nothing when k <= 0)."""
    return 0.5 if (t.rounding == "RND" and k > 0) else 0.0


def store(v: np.ndarray, t: FixedType, out: np.ndarray) -> int:
    """Write floor-rounded exact values v (float64 integers, |v| < 2**53; clobbered) into int64 ``out`` with
    t's overflow mode; returns how many overflowed. v must already be rounded (floor applied)."""
    lo, hi = code_range(t)
    if not v.size or (float(v.min()) >= lo and float(v.max()) <= hi):
        np.copyto(out, v, casting="unsafe")  # integers < 2**53: exact conversion
        return 0
    count = int(np.count_nonzero((v < lo) | (v > hi)))
    if t.overflow == "SAT":
        np.clip(v, lo, hi, out=v)
        np.copyto(out, v, casting="unsafe")
        return count
    r = v.astype(np.int64)
    span = np.int64(1) << np.int64(t.width)
    r &= span - 1
    if t.signed:
        r = np.where(r > hi, r - span, r)
    np.copyto(out, r)
    return count


def round_store(v: np.ndarray, add: float, t: FixedType, out: np.ndarray) -> int:
    """v (float64, exact value scaled to t's grid; clobbered) -> floor(v + add) -> ``store``."""
    if add:
        v += add
    np.floor(v, out=v)
    return store(v, t, out)


def spans(n: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) blocks covering range(n), at most ``parts`` of them, sizes differing by at most one."""
    parts = max(1, min(parts, n))
    edges = [n * i // parts for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts) if edges[i + 1] > edges[i]]


def split_axis(shape: tuple[int, ...], core: int) -> int:
    """The axis to split into blocks: the longest of the leading axes (all but the last ``core``)."""
    lead = shape[:len(shape) - core]
    return int(np.argmax(lead)) if lead else -1


def block(a: np.ndarray, axis: int, lo: int, hi: int) -> np.ndarray:
    """View of rows lo:hi of a along axis."""
    index = [slice(None)] * a.ndim
    index[axis] = slice(lo, hi)
    return a[tuple(index)]


# --------------------------------------------------------------------------------------------- kernels
def linear_block(x: np.ndarray, weight: np.ndarray, addend: np.ndarray | None, t: FixedType,
                 out: np.ndarray) -> int:
    """Rows of a Linear layer: x (m, K) int64 codes; ``weight`` = W * 2**(col_align - k) and ``addend`` =
    (bias aligned + RND's 2**(k-1)) * 2**-k, both float64, prepared by the emulator; so x @ weight + addend
    is the exact accumulator on t's grid (the caller checked K * max|x| * max|W| * 2**max(col_align),
    plus |bias| and the half, < 2**53 at the accumulator's frac). out (m, N) int64."""
    acc = x.astype(np.float64) @ weight
    if addend is not None:
        acc += addend
    np.floor(acc, out=acc)
    return store(acc, t, out)


def linear_block_u8(x: np.ndarray, gemm, scale, addend: np.ndarray | None, t: FixedType, out: np.ndarray) -> int:
    """``linear_block`` with the integer product on onnxruntime's u8 GEMM (host.u8gemm): x @ W = 256 Y_h + Y_l
    exactly; then times ``scale`` = 2**(col_align - k) (a power of two per column, or one) plus ``addend``:
    the same exact accumulator on t's grid as ``linear_block`` (same bound, checked by the caller)."""
    y_h, y_l = gemm.halves(x)
    acc = np.multiply(y_h, 256.0, dtype=np.float64)
    acc += y_l
    acc *= scale
    if addend is not None:
        acc += addend
    np.floor(acc, out=acc)
    return store(acc, t, out)


def matmul_block(a: np.ndarray, b: np.ndarray, b_transposed: bool, scale: float, add: float, t: FixedType,
                 out: np.ndarray) -> int:
    """Stacked activation x activation product a @ b (or a @ b^T when b_transposed: b holds (..., N, K)),
    scaled by ``scale`` = 2**-k onto t's grid (exact: a power of two applied to one integer operand), then
    rounded and stored. The caller checked K * max|a| * max|b| (+ the half) < 2**53."""
    k_dim = a.shape[-1]
    af = np.multiply(a, scale, dtype=np.float64).reshape(-1, a.shape[-2], k_dim)
    bf = b.astype(np.float64)
    if b_transposed:  # BLAS reads the transpose in place (a transposed view of a C-ordered array)
        bf = np.swapaxes(bf.reshape(-1, b.shape[-2], k_dim), -1, -2)
    else:
        bf = bf.reshape(-1, k_dim, b.shape[-1])
    acc = np.matmul(af, bf).reshape(out.shape)
    return round_store(acc, add, t, out)


def affine_block(x: np.ndarray, sx: float, b: np.ndarray | None, sb: float, mul: bool, add: float,
                 t: FixedType, out: np.ndarray) -> int:
    """Add: x*sx + b*sb; Mul: x * (b*sb) (sx unused, 1); b None: x*sx alone. sx, sb are powers of two that put
    the exact result on t's grid; the caller checked the magnitude bound. Then rounded and stored."""
    if mul:
        v = np.multiply(x, sb, dtype=np.float64)
        v *= b
    else:
        v = np.multiply(x, sx, dtype=np.float64)
        if b is not None:
            v += np.multiply(b, sb, dtype=np.float64)
    return round_store(v, add, t, out)


def table_block(x: np.ndarray, table: np.ndarray, offset: int, sat_lo: int, sat_hi: int, out: np.ndarray) -> int:
    """out = table[x - offset]: a unary kernel composed with its input cast into one table over every code of
    x's type (the caller checked that every x lies in the table). Returns how many x lie outside
    [sat_lo, sat_hi] (the codes whose input cast overflows)."""
    np.take(table, x - offset, out=out, mode="clip")  # in range: checked by the caller
    if sat_lo <= offset and sat_hi >= offset + table.shape[0] - 1:
        return 0
    return int(np.count_nonzero((x < sat_lo) | (x > sat_hi)))


def softmax_block(x: np.ndarray, keep: np.ndarray | None, step: float, table: np.ndarray, numer: int,
                  out_scale: float, y_max: int, out: np.ndarray) -> None:
    """The emulator's Softmax on rows of x (int64 codes at F(x)); same math as ``softmax_kernel``:

    xs = x * 2**(k - F(x)) (``step``; exact), masked entries replaced by -2**60 (below every code), so
    i = trunc(min(max(xs) - xs, N - 1)) equals min(d >> (F(x) - k), N - 1) for kept entries (d >= 0, so
    truncation is the floor; the difference of two scaled codes < 2**53 is exact); e = EXP[i] (float64
    integers < 2**53), 0 where masked; s = sum e (exact: non-negative integers, total < 2**53); the per-row
    reciprocal r = floor(2**(E+Fy+R) / s) is an int64 division; y = trunc(min(e * (r * 2**-(E+R)), y_max)):
    e * r <= 2**(E+Fy+R) * e/s < 2**53, so the product is exact and truncation is the floor (e, r >= 0).
    A fully masked row gets s = 0, r = 0 and y = 0, as in the reference.
    """
    xs = np.multiply(x, step, dtype=np.float64)
    if keep is not None:
        np.copyto(xs, -(2.0 ** 60), where=~keep)
    d = xs.max(axis=-1, keepdims=True) - xs
    idx = np.empty(x.shape, np.intp)
    np.minimum(d, table.shape[0] - 1, out=idx, casting="unsafe")
    e = np.take(table, idx)
    if keep is not None:
        e *= keep
    s = e.sum(axis=-1, keepdims=True).astype(np.int64)
    r = np.where(s > 0, np.int64(numer) // np.maximum(s, 1), 0).astype(np.float64)
    r *= out_scale
    e *= r
    np.minimum(e, y_max, out=out, casting="unsafe")
