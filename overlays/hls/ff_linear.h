// Linear (x @ W + b) and MatMul (activation x activation): exact integer products and sums.
//
// Linear, per output column j (emulator: "Linear"): acc = (sum_k x_k w_kj) << align_j  (+ bias_j at the
// accumulator's frac), w_kj the column's codes on its own grid (per-column weight shift s_j, align_j =
// max(s) - s_j); y = cast(acc at frac F(x)+F(w)+max(s)). MatMul: acc = sum_k a_mk b_kn; y = cast(acc at
// F(a)+F(b)). The accumulator (CONFIG_T::accum_t, an ap_int) holds every bit, so the order of the sums does
// not matter: the reuse factor only changes how many multipliers the loop shares.
#ifndef FF_LINEAR_H_
#define FF_LINEAR_H_

#include "ff_common.h"

namespace ff {

template <class data_T, class res_T, typename CONFIG_T>
void linear(data_T x[CONFIG_T::n_rows * CONFIG_T::n_in], res_T y[CONFIG_T::n_rows * CONFIG_T::n_out],
            const typename CONFIG_T::weight_t w[CONFIG_T::n_in * CONFIG_T::n_out],
            const typename CONFIG_T::bias_t b[CONFIG_T::n_out], const typename CONFIG_T::align_t align[CONFIG_T::n_out]) {
    typedef typename CONFIG_T::accum_t acc_t;
Rows:
    for (unsigned r = 0; r < CONFIG_T::n_rows; r++) {
#pragma HLS PIPELINE II = CONFIG_T::reuse_factor
        ap_int<data_T::width + 1> xc[CONFIG_T::n_in];
        for (unsigned k = 0; k < CONFIG_T::n_in; k++)
            xc[k] = code(x[r * CONFIG_T::n_in + k]);
    Cols:
        for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
            acc_t acc = 0;
        Dot:
            for (unsigned k = 0; k < CONFIG_T::n_in; k++) {
                acc += xc[k] * w[k * CONFIG_T::n_out + j];
            }
            acc = acc << align[j];
            acc += b[j];
            y[r * CONFIG_T::n_out + j] = cast_exact<res_T, acc_t::width, CONFIG_T::frac>(acc);
        }
    }
}

template <class a_T, class b_T, class res_T, typename CONFIG_T>
void matmul(a_T a[CONFIG_T::n_a], b_T b[CONFIG_T::n_b], res_T y[CONFIG_T::n_batch * CONFIG_T::n_m * CONFIG_T::n_n]) {
    typedef typename CONFIG_T::accum_t acc_t;
Batch:
    for (unsigned t = 0; t < CONFIG_T::n_batch; t++) {
    Rows:
        for (unsigned m = 0; m < CONFIG_T::n_m; m++) {
#pragma HLS PIPELINE II = CONFIG_T::reuse_factor
        Cols:
            for (unsigned n = 0; n < CONFIG_T::n_n; n++) {
                acc_t acc = 0;
            Dot:
                for (unsigned k = 0; k < CONFIG_T::n_k; k++) {
                    unsigned ia = t * CONFIG_T::a_stride + m * CONFIG_T::n_k + k;
                    unsigned ib = t * CONFIG_T::b_stride +
                                  (CONFIG_T::transpose_b ? n * CONFIG_T::n_k + k : k * CONFIG_T::n_n + n);
                    acc += code(a[ia]) * code(b[ib]);
                }
                y[(t * CONFIG_T::n_m + m) * CONFIG_T::n_n + n] = cast_exact<res_T, acc_t::width, CONFIG_T::frac>(acc);
            }
        }
    }
}

} // namespace ff

#endif
