// fpgaformer kernels: shared helpers (raw codes of ap_fixed values, exact casts).
//
// Every fpgaformer kernel computes on the integer *codes* of its fixed-point operands (value = code * 2^-F),
// exactly as host/emulator.py specifies, and converts an exact integer result to the output type with one
// ap_fixed assignment (the output type's rounding and overflow modes apply), so C simulation equals the
// emulator bit for bit by construction.
#ifndef FF_COMMON_H_
#define FF_COMMON_H_

#include "ap_fixed.h"
#include "ap_int.h"

namespace ff {

// code of a value, sign-extended into a signed integer one bit wider than the type (exact)
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
inline ap_int<W + 1> code(const ap_fixed<W, I, Q, O, N> &x) {
    ap_int<W> c;
    c.range(W - 1, 0) = x.range(W - 1, 0);
    return c;
}
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
inline ap_int<W + 1> code(const ap_ufixed<W, I, Q, O, N> &x) {
    ap_uint<W> c;
    c.range(W - 1, 0) = x.range(W - 1, 0);
    return c;
}
template <int W> inline ap_int<W + 1> code(const ap_int<W> &x) { return x; }
template <int W> inline ap_int<W + 1> code(const ap_uint<W> &x) { return x; }

// the emulator's int64: exact intermediate integers of the non-MAC kernels (never overflow by construction)
typedef long long wide_t;
typedef unsigned long long uwide_t;

// code of a value as an int64
template <class T> inline wide_t icode(const T &x) { return code(x).to_int64(); }

// the exact value v * 2^-F (v held in N bits) assigned to T: T's rounding and overflow modes apply
template <class T, int N, int F> inline T cast_exact(const ap_int<N> &v) {
    ap_fixed<N, N - F> a;
    a.range(N - 1, 0) = v.range(N - 1, 0);
    return T(a);
}
template <class T, int F> inline T cast_exact64(wide_t v) { return cast_exact<T, 64, F>(ap_int<64>(v)); }

// write a code (already in range) into a fixed-point variable bit for bit
template <class T, int N> inline void set_code(T &y, const ap_int<N> &c) { y.range(T::width - 1, 0) = c.range(T::width - 1, 0); }

// arithmetic shift of an exact integer: left by s >= 0, right (floor) by -s
inline wide_t shift(wide_t v, int s) { return s >= 0 ? wide_t(uwide_t(v) << s) : wide_t(v >> (-s)); }

// number of bits of a non-negative value (0 for 0)
inline int bit_length(uwide_t v) {
    int n = 0;
    for (int b = 0; b < 64; b++) {
#pragma HLS UNROLL
        if ((v >> b) & 1)
            n = b + 1;
    }
    return n;
}

} // namespace ff

#endif
