// Layout ops (Reshape, Transpose, Slice, Expand, Concat), constants and the padding mask: data movement by
// constant index tables built on the host (emulator: "layout ops" move codes; the value is kept).
//   gather:   y[i] = a[idx[i]]                     (Reshape/Transpose/Slice/Expand: wiring in hardware)
//   concat:   y[i] = idx[i] < n_a ? a[idx[i]] : b[idx[i] - n_a]
//   constant: y[i] = table[i]
//   padding_mask: keep[i] = mask[idx[i]] != 0 && allow[i]   (allow: the causal triangle, or all ones)
#ifndef FF_LAYOUT_H_
#define FF_LAYOUT_H_

#include "ff_common.h"

namespace ff {

template <class data_T, class res_T, typename CONFIG_T>
void gather(data_T a[CONFIG_T::n_a], res_T y[CONFIG_T::n_out], const typename CONFIG_T::index_t idx[CONFIG_T::n_out]) {
Elements:
    for (unsigned i = 0; i < CONFIG_T::n_out; i++) {
#pragma HLS UNROLL factor = CONFIG_T::unroll
        y[i] = a[unsigned(idx[i])];
    }
}

template <class a_T, class b_T, class res_T, typename CONFIG_T>
void concat(a_T a[CONFIG_T::n_a], b_T b[CONFIG_T::n_b], res_T y[CONFIG_T::n_out], const typename CONFIG_T::index_t idx[CONFIG_T::n_out]) {
Elements:
    for (unsigned i = 0; i < CONFIG_T::n_out; i++) {
#pragma HLS UNROLL factor = CONFIG_T::unroll
        unsigned j = unsigned(idx[i]);
        if (j < CONFIG_T::n_a)
            y[i] = a[j];
        else
            y[i] = b[j - CONFIG_T::n_a];
    }
}

template <class res_T, typename CONFIG_T> void constant(res_T y[CONFIG_T::n_out], const typename CONFIG_T::table_t table[CONFIG_T::n_out]) {
    for (unsigned i = 0; i < CONFIG_T::n_out; i++) {
#pragma HLS UNROLL factor = CONFIG_T::unroll
        y[i] = table[i];
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void padding_mask(data_T mask[CONFIG_T::n_a], res_T keep[CONFIG_T::n_out], const typename CONFIG_T::index_t idx[CONFIG_T::n_out],
                  const ap_uint<1> allow[CONFIG_T::n_out]) {
    for (unsigned i = 0; i < CONFIG_T::n_out; i++) {
#pragma HLS UNROLL factor = CONFIG_T::unroll
        keep[i] = (mask[unsigned(idx[i])] != 0 && allow[i] != 0) ? 1 : 0;
    }
}

} // namespace ff

#endif

// ---- incremental decoding (one token at position pos, fixed maximum context) ----
#ifndef FF_LAYOUT_STEP_H_
#define FF_LAYOUT_STEP_H_
namespace ff {

// keep[i] = mask[idx[i]] != 0 && key[i] <= pos: keys after the new token hold no valid cache rows
template <class data_T, class pos_T, class res_T, typename CONFIG_T>
void padding_mask_step(data_T mask[CONFIG_T::n_a], pos_T pos[1], res_T keep[CONFIG_T::n_out],
                       const typename CONFIG_T::index_t idx[CONFIG_T::n_out], const typename CONFIG_T::index_t key[CONFIG_T::n_out]) {
    unsigned p = unsigned(pos[0]);
    for (unsigned i = 0; i < CONFIG_T::n_out; i++) {
#pragma HLS UNROLL factor = CONFIG_T::unroll
        keep[i] = (mask[unsigned(idx[i])] != 0 && unsigned(key[i]) <= p) ? 1 : 0;
    }
}

// row pos of a constant (e.g. causal) keep table of n_rows x n_out flags
template <class pos_T, class res_T, typename CONFIG_T>
void constant_row(pos_T pos[1], res_T y[CONFIG_T::n_out], const typename CONFIG_T::table_t table[CONFIG_T::n_rows * CONFIG_T::n_out]) {
    unsigned p = unsigned(pos[0]);
    for (unsigned i = 0; i < CONFIG_T::n_out; i++) {
#pragma HLS UNROLL factor = CONFIG_T::unroll
        y[i] = table[p * CONFIG_T::n_out + i];
    }
}

// the K/V cache with the new row written at row pos of the token axis (coord[i]: token index of element i,
// row_idx[i]: the element of the new row it takes when coord[i] == pos)
template <class cache_T, class row_T, class pos_T, class res_T, typename CONFIG_T>
void kv_write(cache_T cache[CONFIG_T::n_out], row_T row[CONFIG_T::n_row], pos_T pos[1], res_T y[CONFIG_T::n_out],
              const typename CONFIG_T::index_t coord[CONFIG_T::n_out], const typename CONFIG_T::index_t row_idx[CONFIG_T::n_out]) {
    unsigned p = unsigned(pos[0]);
    for (unsigned i = 0; i < CONFIG_T::n_out; i++) {
#pragma HLS UNROLL factor = CONFIG_T::unroll
        if (unsigned(coord[i]) == p)
            y[i] = row[unsigned(row_idx[i])];
        else
            y[i] = cache[i];
    }
}

} // namespace ff
#endif
