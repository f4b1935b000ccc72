// RoPE (emulator: "RoPE", rope_kernel): on rows of head_dim values, position p of a row selects the cos/sin
// row; y = cast(x*cos + rot(x)*sin at F(x)+F(cs)) on the first rotary_dim values, rot(x) = (-x2, x1) on
// halves (or on pairs when interleaved); the remaining values pass through, aligned to the same frac.
// The position of row r is pos_base + (r / rows_per_pos) % n_pos (pos_base: 0, or the step's position input).
#ifndef FF_ROPE_H_
#define FF_ROPE_H_

#include "ff_common.h"

namespace ff {

template <class data_T, class res_T, typename CONFIG_T>
void rope_at(data_T x[CONFIG_T::n_rows * CONFIG_T::head_dim], res_T y[CONFIG_T::n_rows * CONFIG_T::head_dim],
             const typename CONFIG_T::table_t cos_t[CONFIG_T::n_table], const typename CONFIG_T::table_t sin_t[CONFIG_T::n_table],
             unsigned pos_base) {
    const unsigned D = CONFIG_T::head_dim, R = CONFIG_T::rotary_dim, H = R / 2;
    const int F = CONFIG_T::frac_x + CONFIG_T::frac_cs;
Rows:
    for (unsigned r = 0; r < CONFIG_T::n_rows; r++) {
#pragma HLS PIPELINE II = CONFIG_T::reuse_factor
        unsigned p = pos_base + (r / CONFIG_T::rows_per_pos) % CONFIG_T::n_pos;
        for (unsigned d = 0; d < D; d++) {
            wide_t v;
            wide_t xv = icode(x[r * D + d]);
            if (d < R) {
                wide_t other;
                if (CONFIG_T::interleaved)
                    other = (d % 2 == 0) ? wide_t(-(icode(x[r * D + d + 1]))) : wide_t(icode(x[r * D + d - 1]));
                else
                    other = (d < H) ? wide_t(-(icode(x[r * D + d + H]))) : wide_t(icode(x[r * D + d - H]));
                v = xv * cos_t[p * R + d].to_int64() + other * sin_t[p * R + d].to_int64();
            } else {
                v = shift(xv, CONFIG_T::frac_cs);
            }
            y[r * D + d] = cast_exact64<res_T, F>(v);
        }
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void rope(data_T x[CONFIG_T::n_rows * CONFIG_T::head_dim], res_T y[CONFIG_T::n_rows * CONFIG_T::head_dim],
          const typename CONFIG_T::table_t cos_t[CONFIG_T::n_table], const typename CONFIG_T::table_t sin_t[CONFIG_T::n_table]) {
    rope_at<data_T, res_T, CONFIG_T>(x, y, cos_t, sin_t, 0);
}

template <class data_T, class pos_T, class res_T, typename CONFIG_T>
void rope_step(data_T x[CONFIG_T::n_rows * CONFIG_T::head_dim], pos_T pos[1], res_T y[CONFIG_T::n_rows * CONFIG_T::head_dim],
               const typename CONFIG_T::table_t cos_t[CONFIG_T::n_table], const typename CONFIG_T::table_t sin_t[CONFIG_T::n_table]) {
    rope_at<data_T, res_T, CONFIG_T>(x, y, cos_t, sin_t, unsigned(pos[0]));
}

} // namespace ff

#endif
