// Linear (x @ W + b) and MatMul (activation x activation): exact integer products and sums.
//
// Linear, per output column j (emulator: "Linear"): acc = (sum_k x_k w_kj) << align_j  (+ bias_j at the
// accumulator's frac), w_kj the column's codes on its own grid (per-column weight shift s_j, align_j =
// max(s) - s_j); y = cast(acc at frac F(x)+F(w)+max(s)). MatMul: acc = sum_k a_mk b_kn; y = cast(acc at
// F(a)+F(b)). The accumulator (CONFIG_T::accum_t, an ap_int) holds every bit (and ap_int wrap-around is
// arithmetic mod 2^W), so the order of the sums does not matter: the reuse factor only changes how many
// multipliers the loop shares, never a result bit.
//
// Hardware structure (hls4ml's Resource strategy, nnet_dense_resource.h), per row = one query position:
//   row_macs = n_in*n_out (Linear) or n_batch*n_n*n_k (MatMul: all heads of one query row);
//   rf = min(reuse_factor, row_macs);  n_mult = ceil(row_macs / rf) multipliers;
//   n_cycles = ceil(row_macs / n_mult) <= rf cycles per row (= rf when rf divides row_macs).
//   Init:   accumulators cleared once (each Result pass clears them again for the next row);
//   Load:   the row's input codes into a buffer banked cyclic by min(n_mult, n_in) (one element per cycle);
//   Reuse:  n_cycles iterations, PIPELINE II=1, each an unrolled loop of n_mult multiply-accumulates;
//           MAC f of a row (f = ir*n_mult + im) reads element f of the constant operand (W, row-major K x N,
//           or b in its own layout), which is reshaped cyclic factor=n_mult: bank im, word ir, so every cycle
//           reads one word of n_mult*w_bits from one array of depth n_cycles (the estimator's weight array);
//           when n_mult is a multiple of n_out, multiplier im always feeds column im % n_out;
//   Result: per output column (accumulators banked cyclic by min(n_mult, n_out): one cycle's multipliers
//           touch consecutive columns) shift, bias, one cast, one per cycle; bias and shifts unbanked.
// The cyclic layout (not hls4ml's block factor over a transposed matrix) is what banks our row-major
// (K x N) weights so that each multiplier keeps one output column and the banks never straddle a cycle.
// Loop bounds are compile-time constants; n_mult is a static const so that compiler/backend/check.py can
// read it and hold it against the plan.
#ifndef FF_LINEAR_H_
#define FF_LINEAR_H_

#include "ff_common.h"

namespace ff {

template <class data_T, class res_T, typename CONFIG_T>
void linear(data_T x[CONFIG_T::n_rows * CONFIG_T::n_in], res_T y[CONFIG_T::n_rows * CONFIG_T::n_out],
            const typename CONFIG_T::weight_t w[CONFIG_T::n_in * CONFIG_T::n_out],
            const typename CONFIG_T::bias_t b[CONFIG_T::n_out], const typename CONFIG_T::align_t align[CONFIG_T::n_out]) {
    typedef typename CONFIG_T::accum_t acc_t;
    static const unsigned row_macs = CONFIG_T::n_in * CONFIG_T::n_out;
    static const unsigned rf = CONFIG_T::reuse_factor < 1 ? 1 : (CONFIG_T::reuse_factor > row_macs ? row_macs : CONFIG_T::reuse_factor);
    static const unsigned n_mult = (row_macs + rf - 1) / rf;
    static const unsigned n_cycles = (row_macs + n_mult - 1) / n_mult;

    // one cycle's multipliers touch at most n_mult consecutive inputs and consecutive columns: as many banks
    static const unsigned x_banks = n_mult < CONFIG_T::n_in ? n_mult : CONFIG_T::n_in;
    static const unsigned acc_banks = n_mult < CONFIG_T::n_out ? n_mult : CONFIG_T::n_out;

#pragma HLS function_instantiate variable = w, b, align
#pragma HLS ARRAY_RESHAPE variable = w cyclic factor = n_mult

    ap_int<data_T::width + 1> xb[CONFIG_T::n_in];
#pragma HLS ARRAY_PARTITION variable = xb cyclic factor = x_banks
    acc_t acc[CONFIG_T::n_out];
#pragma HLS ARRAY_PARTITION variable = acc cyclic factor = acc_banks

Init:
    for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
#pragma HLS PIPELINE II = 1
        acc[j] = 0;
    }
Rows:
    for (unsigned r = 0; r < CONFIG_T::n_rows; r++) {
    Load:
        for (unsigned k = 0; k < CONFIG_T::n_in; k++) {
#pragma HLS PIPELINE II = 1
            xb[k] = code(x[r * CONFIG_T::n_in + k]);
        }
    Reuse:
        for (unsigned ir = 0; ir < n_cycles; ir++) {
#pragma HLS PIPELINE II = 1
        Mult:
            for (unsigned im = 0; im < n_mult; im++) {
#pragma HLS UNROLL
                const unsigned f = ir * n_mult + im; // weight w[k][j], k = f / n_out, j = f % n_out
                if (f < row_macs)
                    acc[f % CONFIG_T::n_out] += xb[f / CONFIG_T::n_out] * w[f];
            }
        }
    Result:
        for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
#pragma HLS PIPELINE II = 1
            acc_t v = acc[j] << align[j];
            v += b[j];
            y[r * CONFIG_T::n_out + j] = cast_exact<res_T, acc_t::width, CONFIG_T::frac>(v);
            acc[j] = 0; // ready for the next row
        }
    }
}

// y[t][m][n] = sum_k a[t][m][k] b[t][k][n] (b[t][n][k] when transpose_b); t = batch (heads). A row is one query
// position m over every t: its MACs are numbered in b's own layout (t, then k/n or n/k), so MAC g of a row
// reads b[t*b_stride + g % (n_k*n_n)] = b[g] when b is not broadcast, and b reshaped cyclic factor=n_mult
// gives each multiplier its own bank.
template <class a_T, class b_T, class res_T, typename CONFIG_T>
void matmul(a_T a[CONFIG_T::n_a], b_T b[CONFIG_T::n_b], res_T y[CONFIG_T::n_batch * CONFIG_T::n_m * CONFIG_T::n_n]) {
    typedef typename CONFIG_T::accum_t acc_t;
    static const unsigned n_nk = CONFIG_T::n_n * CONFIG_T::n_k;
    static const unsigned row_macs = CONFIG_T::n_batch * n_nk;
    static const unsigned rf = CONFIG_T::reuse_factor < 1 ? 1 : (CONFIG_T::reuse_factor > row_macs ? row_macs : CONFIG_T::reuse_factor);
    static const unsigned n_mult = (row_macs + rf - 1) / rf;
    static const unsigned n_cycles = (row_macs + n_mult - 1) / n_mult;
    static const unsigned n_row_a = CONFIG_T::n_batch * CONFIG_T::n_k;
    static const unsigned n_row_y = CONFIG_T::n_batch * CONFIG_T::n_n;

    // one cycle's multipliers touch at most n_mult consecutive elements of the row and of the accumulators
    static const unsigned a_banks = n_mult < n_row_a ? n_mult : n_row_a;
    static const unsigned acc_banks = n_mult < n_row_y ? n_mult : n_row_y;

#pragma HLS ARRAY_RESHAPE variable = b cyclic factor = n_mult

    ap_int<a_T::width + 1> ab[n_row_a];
#pragma HLS ARRAY_PARTITION variable = ab cyclic factor = a_banks
    acc_t acc[n_row_y];
#pragma HLS ARRAY_PARTITION variable = acc cyclic factor = acc_banks

Init:
    for (unsigned i = 0; i < n_row_y; i++) {
#pragma HLS PIPELINE II = 1
        acc[i] = 0;
    }
Rows:
    for (unsigned m = 0; m < CONFIG_T::n_m; m++) {
    Load:
        for (unsigned i = 0; i < n_row_a; i++) {
#pragma HLS PIPELINE II = 1
            const unsigned t = i / CONFIG_T::n_k, k = i % CONFIG_T::n_k;
            ab[i] = code(a[t * CONFIG_T::a_stride + m * CONFIG_T::n_k + k]);
        }
    Reuse:
        for (unsigned ir = 0; ir < n_cycles; ir++) {
#pragma HLS PIPELINE II = 1
        Mult:
            for (unsigned im = 0; im < n_mult; im++) {
#pragma HLS UNROLL
                const unsigned g = ir * n_mult + im;
                if (g < row_macs) {
                    const unsigned t = g / n_nk, e = g % n_nk;
                    const unsigned n = CONFIG_T::transpose_b ? e / CONFIG_T::n_k : e % CONFIG_T::n_n;
                    const unsigned k = CONFIG_T::transpose_b ? e % CONFIG_T::n_k : e / CONFIG_T::n_n;
                    acc[t * CONFIG_T::n_n + n] += ab[t * CONFIG_T::n_k + k] * code(b[t * CONFIG_T::b_stride + e]);
                }
            }
        }
    Result:
        for (unsigned i = 0; i < n_row_y; i++) {
#pragma HLS PIPELINE II = 1
            const unsigned t = i / CONFIG_T::n_n, n = i % CONFIG_T::n_n;
            y[(t * CONFIG_T::n_m + m) * CONFIG_T::n_n + n] = cast_exact<res_T, acc_t::width, CONFIG_T::frac>(acc[i]);
            acc[i] = 0; // ready for the next row
        }
    }
}

} // namespace ff

#endif
