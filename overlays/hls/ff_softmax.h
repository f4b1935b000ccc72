// Masked softmax over the last axis (emulator: "Softmax", softmax_kernel), one row of n values at a time:
//   m = max of kept x;  d = m - x >= 0;  i = min(d >> (F(x) - k), N - 1)  (left shift when k > F(x));
//   e = EXP[i] (E fractional bits), 0 for masked keys;  s = sum e;  r = floor(2^(E + Fy + R) / s) (one
//   division per row, 0 when no key is kept);  y = min((e * r) >> (E + R), max code of y).
// Keep flags are read as keep[i % n_keep] (a mask broadcast over heads/rows) or keep[index[i]].
#ifndef FF_SOFTMAX_H_
#define FF_SOFTMAX_H_

#include "ff_common.h"

namespace ff {

template <class data_T, class keep_T, class res_T, typename CONFIG_T>
void softmax_rows(data_T x[CONFIG_T::n_rows * CONFIG_T::n], keep_T keep[CONFIG_T::n_keep], res_T y[CONFIG_T::n_rows * CONFIG_T::n],
                  const typename CONFIG_T::exp_t exp_table[CONFIG_T::exp_size],
                  const typename CONFIG_T::index_t keep_index[CONFIG_T::n_keep_index], bool masked) {
    const int shift = CONFIG_T::frac_x - CONFIG_T::exp_k; // d >> shift (or << -shift) is the table index
Rows:
    for (unsigned r = 0; r < CONFIG_T::n_rows; r++) {
#pragma HLS PIPELINE II = CONFIG_T::reuse_factor
        bool kept[CONFIG_T::n];
        wide_t xc[CONFIG_T::n];
        bool any = false;
        wide_t m = 0;
        for (unsigned j = 0; j < CONFIG_T::n; j++) {
            unsigned i = r * CONFIG_T::n + j;
            bool k = true;
            if (masked) {
                unsigned ik = CONFIG_T::keep_table ? unsigned(keep_index[i]) : i % CONFIG_T::n_keep;
                k = keep[ik] != 0;
            }
            kept[j] = k;
            xc[j] = icode(x[i]);
            if (k && (!any || xc[j] > m))
                m = xc[j];
            any = any || k;
        }
        uwide_t e[CONFIG_T::n];
        uwide_t s = 0;
        for (unsigned j = 0; j < CONFIG_T::n; j++) {
            wide_t d = m - xc[j];
            wide_t idx = ff::shift(d, -shift);
            if (idx > CONFIG_T::exp_size - 1)
                idx = CONFIG_T::exp_size - 1;
            e[j] = kept[j] ? uwide_t(exp_table[unsigned(idx)].to_uint64()) : uwide_t(0);
            s += e[j];
        }
        uwide_t recip = 0;
        if (s > 0) {
            uwide_t one = uwide_t(1) << (CONFIG_T::exp_bits + CONFIG_T::frac_y + CONFIG_T::recip_bits);
            recip = one / s; // the one division of the row
        }
        for (unsigned j = 0; j < CONFIG_T::n; j++) {
            uwide_t v = (e[j] * recip) >> (CONFIG_T::exp_bits + CONFIG_T::recip_bits);
            if (v > CONFIG_T::y_max)
                v = CONFIG_T::y_max;
            set_code(y[r * CONFIG_T::n + j], ap_int<64>(wide_t(v)));
        }
    }
}

template <class data_T, class keep_T, class res_T, typename CONFIG_T>
void softmax_masked(data_T x[CONFIG_T::n_rows * CONFIG_T::n], keep_T keep[CONFIG_T::n_keep], res_T y[CONFIG_T::n_rows * CONFIG_T::n],
                    const typename CONFIG_T::exp_t exp_table[CONFIG_T::exp_size],
                    const typename CONFIG_T::index_t keep_index[CONFIG_T::n_keep_index]) {
    softmax_rows<data_T, keep_T, res_T, CONFIG_T>(x, keep, y, exp_table, keep_index, true);
}

template <class data_T, class res_T, typename CONFIG_T>
void softmax(data_T x[CONFIG_T::n_rows * CONFIG_T::n], res_T y[CONFIG_T::n_rows * CONFIG_T::n],
             const typename CONFIG_T::exp_t exp_table[CONFIG_T::exp_size]) {
    ap_uint<1> none[CONFIG_T::n_keep];
    typename CONFIG_T::index_t no_index[CONFIG_T::n_keep_index];
    softmax_rows<data_T, ap_uint<1>, res_T, CONFIG_T>(x, none, y, exp_table, no_index, false);
}

} // namespace ff

#endif
