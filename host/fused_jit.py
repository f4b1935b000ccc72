"""The numba kernels of host.fused (see its module doc for what they compute and why they are exact)."""

from __future__ import annotations

import numba
import numpy as np


def _jit(fn):
    return numba.njit(nogil=True, cache=True)(fn)


@_jit
def _cast(v, k, half, lo, hi, sat, width, signed):
    """(code, overflowed) of the exact value v (int64 at F(t) + k fractional bits) cast into t; k < 0 adds
    bits (exact; the caller keeps |v| * 2**-k below 2**62)."""
    if k > 0:
        v = (v + half) >> k
    elif k < 0:
        v = v << -k
    if v < lo or v > hi:
        if sat:
            return (lo if v < lo else hi), 1
        r = v & ((np.int64(1) << width) - 1)
        if signed and r > hi:
            r -= np.int64(1) << width
        return r, 1
    return v, 0


@_jit
def linear_u8(y_h, y_l, col_align, bias, k, half, lo, hi, sat, width, signed, out):
    """Linear epilogue of the u8 GEMM (host.u8gemm): acc = ((256 Y_h + Y_l) << col_align_j) + bias_j, cast.
    y_h, y_l (m, n) int32; col_align, bias (n,) int64; out (m, n) int64. Returns the overflow count."""
    m, n = out.shape
    count = 0
    for i in range(m):
        for j in range(n):
            acc = ((np.int64(y_h[i, j]) << 8) + np.int64(y_l[i, j])) << col_align[j]
            code, c = _cast(acc + bias[j], k, half, lo, hi, sat, width, signed)
            out[i, j] = code
            count += c
    return count


@_jit
def from_float(acc, col_align, bias, k, half, lo, hi, sat, width, signed, out):
    """Epilogue of a float64 BLAS product whose entries are exact integers (< 2**53): acc (m, n) float64 ->
    ((int64(acc) << col_align_j) + bias_j) cast into out (m, n) int64."""
    m, n = out.shape
    count = 0
    for i in range(m):
        for j in range(n):
            code, c = _cast((np.int64(acc[i, j]) << col_align[j]) + bias[j], k, half, lo, hi, sat, width, signed)
            out[i, j] = code
            count += c
    return count


@_jit
def table(x, offset, lut, sat_lo, sat_hi, out):
    """out = lut[x - offset] over (m, n) int64 arrays; counts x outside [sat_lo, sat_hi] (input casts that
    overflow). The table holds every code of x's type; a code outside it (a broken input) raises."""
    m, n = out.shape
    count = 0
    for i in range(m):
        for j in range(n):
            v = x[i, j]
            if v - offset < 0 or v - offset >= lut.size:
                raise ValueError("a code outside its type's range reached a table kernel")
            out[i, j] = lut[v - offset]
            if v < sat_lo or v > sat_hi:
                count += 1
    return count


@_jit
def add_mul(x, b, mul, ax, ab, k, half, lo, hi, sat, width, signed, out):
    """Add: (x << ax) + (b << ab) (both aligned to the finer frac); Mul: x * b; then cast. x, b, out (m, n)
    (b may be a broadcast view)."""
    m, n = out.shape
    count = 0
    for i in range(m):
        for j in range(n):
            v = x[i, j] * b[i, j] if mul else (x[i, j] << ax) + (b[i, j] << ab)
            code, c = _cast(v, k, half, lo, hi, sat, width, signed)
            out[i, j] = code
            count += c
    return count


@_jit
def softmax(x, keep, shift, left, exp, e_bits, r_bits, fy, y_max, out):
    """The emulator's masked softmax (``softmax_kernel``) row by row: x, keep (bool, may be a broadcast view),
    out (m, n). shift = |F(x) - k|: d >> shift, or d << shift when ``left`` (k > F(x))."""
    m, n = out.shape
    size = exp.size
    numer = np.int64(1) << (e_bits + fy + r_bits)
    e = np.empty(n, np.int64)
    for i in range(m):
        top = np.iinfo(np.int64).min
        for j in range(n):
            if keep[i, j] and x[i, j] > top:
                top = x[i, j]
        s = np.int64(0)
        for j in range(n):
            if keep[i, j]:
                d = top - x[i, j]
                idx = (d << shift) if left else (d >> shift)
                e[j] = exp[min(idx, size - 1)]
                s += e[j]
            else:
                e[j] = 0
        r = numer // s if s > 0 else 0
        for j in range(n):
            out[i, j] = min((e[j] * r) >> (e_bits + r_bits), y_max)
    return 0


@_jit
def norm(x, center, shift, eps_q, t_bits, p_bits, fz, rs, gamma, beta, k, half, lo, hi, sat, width, signed,
         out):
    """The emulator's LayerNorm (center) / RMSNorm (``norm_kernel``) row by row, then cast: x, out (m, n);
    gamma, beta (n,) int64 (beta already aligned to the product's frac). Returns the overflow count."""
    m, n = out.shape
    cs = np.empty(n, np.int64)
    base = np.int64(1) << (t_bits - 2)
    count = 0
    for i in range(m):
        s = np.int64(0)
        if center:
            for j in range(n):
                s += x[i, j]
        total = np.int64(0)
        for j in range(n):
            c = (n * x[i, j] - s) if center else x[i, j]
            cs[j] = c >> shift
            total += cs[j] * cs[j]
        total += eps_q
        length, v = 0, total
        while v > 0:
            v >>= 1
            length += 1
        h = max(0, (length - t_bits + 1) // 2)
        q = max(total >> (2 * h), base)
        r = rs[q - base]
        drop = p_bits + h - fz
        for j in range(n):
            z = (cs[j] * r) >> drop
            code, c = _cast(z * gamma[j] + beta[j], k, half, lo, hi, sat, width, signed)
            out[i, j] = code
            count += c
    return count
