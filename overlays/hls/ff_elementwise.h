// Add and Mul (emulator: "Add, Mul"): exact sum (both operands aligned to the larger frac) or exact product,
// then one cast to the output type. Broadcasting: operand element = operand[i % n] when its shape is a
// trailing part of the output's (same shape, a row vector, a scalar), else operand[index[i]] from a
// constant index table. The second operand may be a constant (a weight array of codes).
#ifndef FF_ELEMENTWISE_H_
#define FF_ELEMENTWISE_H_

#include "ff_common.h"

namespace ff {

template <typename CONFIG_T> inline unsigned operand_index(unsigned i, unsigned n, bool table, const typename CONFIG_T::index_t *idx) {
    return table ? unsigned(idx[i]) : i % n;
}

template <class a_T, class b_T, class res_T, typename CONFIG_T>
void add(a_T a[CONFIG_T::n_a], b_T b[CONFIG_T::n_b], res_T y[CONFIG_T::n_out],
         const typename CONFIG_T::index_t ia[CONFIG_T::n_ia], const typename CONFIG_T::index_t ib[CONFIG_T::n_ib]) {
    const int F = CONFIG_T::frac_a > CONFIG_T::frac_b ? CONFIG_T::frac_a : CONFIG_T::frac_b;
Elements:
    for (unsigned i = 0; i < CONFIG_T::n_out; i++) {
#pragma HLS UNROLL factor = CONFIG_T::unroll
        wide_t va = icode(a[operand_index<CONFIG_T>(i, CONFIG_T::n_a, CONFIG_T::table_a, ia)]);
        wide_t vb = icode(b[operand_index<CONFIG_T>(i, CONFIG_T::n_b, CONFIG_T::table_b, ib)]);
        wide_t s = shift(va, F - CONFIG_T::frac_a) + shift(vb, F - CONFIG_T::frac_b);
        y[i] = cast_exact64<res_T, F>(s);
    }
}

template <class a_T, class b_T, class res_T, typename CONFIG_T>
void mul(a_T a[CONFIG_T::n_a], b_T b[CONFIG_T::n_b], res_T y[CONFIG_T::n_out],
         const typename CONFIG_T::index_t ia[CONFIG_T::n_ia], const typename CONFIG_T::index_t ib[CONFIG_T::n_ib]) {
Elements:
    for (unsigned i = 0; i < CONFIG_T::n_out; i++) {
#pragma HLS UNROLL factor = CONFIG_T::unroll
        wide_t va = icode(a[operand_index<CONFIG_T>(i, CONFIG_T::n_a, CONFIG_T::table_a, ia)]);
        wide_t vb = icode(b[operand_index<CONFIG_T>(i, CONFIG_T::n_b, CONFIG_T::table_b, ib)]);
        wide_t p = va * vb;
        y[i] = cast_exact64<res_T, CONFIG_T::frac_a + CONFIG_T::frac_b>(p);
    }
}

// Add / Mul with row `pos` of a constant table along its token axis (decoder step: learned absolute positions;
// emulator: the "const_slice" of Add/Mul). b element = b[index_b(i) + pos * row_stride]; a position outside
// the table reads row 0 (the overlay reports the range error before it gets here).
template <class a_T, class pos_T, class b_T, class res_T, typename CONFIG_T>
void add_row(a_T a[CONFIG_T::n_a], pos_T pos[1], b_T b[CONFIG_T::n_b], res_T y[CONFIG_T::n_out],
             const typename CONFIG_T::index_t ia[CONFIG_T::n_ia], const typename CONFIG_T::index_t ib[CONFIG_T::n_ib]) {
    const int F = CONFIG_T::frac_a > CONFIG_T::frac_b ? CONFIG_T::frac_a : CONFIG_T::frac_b;
    const unsigned row = unsigned(pos[0]) < CONFIG_T::n_rows ? unsigned(pos[0]) : 0;
Elements:
    for (unsigned i = 0; i < CONFIG_T::n_out; i++) {
#pragma HLS PIPELINE II = 1
        wide_t va = icode(a[operand_index<CONFIG_T>(i, CONFIG_T::n_a, CONFIG_T::table_a, ia)]);
        wide_t vb = icode(b[operand_index<CONFIG_T>(i, CONFIG_T::n_bs, CONFIG_T::table_b, ib) + row * CONFIG_T::row_stride]);
        wide_t s = shift(va, F - CONFIG_T::frac_a) + shift(vb, F - CONFIG_T::frac_b);
        y[i] = cast_exact64<res_T, F>(s);
    }
}

template <class a_T, class pos_T, class b_T, class res_T, typename CONFIG_T>
void mul_row(a_T a[CONFIG_T::n_a], pos_T pos[1], b_T b[CONFIG_T::n_b], res_T y[CONFIG_T::n_out],
             const typename CONFIG_T::index_t ia[CONFIG_T::n_ia], const typename CONFIG_T::index_t ib[CONFIG_T::n_ib]) {
    const unsigned row = unsigned(pos[0]) < CONFIG_T::n_rows ? unsigned(pos[0]) : 0;
Elements:
    for (unsigned i = 0; i < CONFIG_T::n_out; i++) {
#pragma HLS PIPELINE II = 1
        wide_t va = icode(a[operand_index<CONFIG_T>(i, CONFIG_T::n_a, CONFIG_T::table_a, ia)]);
        wide_t vb = icode(b[operand_index<CONFIG_T>(i, CONFIG_T::n_bs, CONFIG_T::table_b, ib) + row * CONFIG_T::row_stride]);
        y[i] = cast_exact64<res_T, CONFIG_T::frac_a + CONFIG_T::frac_b>(va * vb);
    }
}

} // namespace ff

#endif
