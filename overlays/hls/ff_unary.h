// GELU and SiLU (emulator: "GELU, SiLU"): a table on a narrow input type.
//   c = x assigned to CONFIG_T::in_t (its rounding and saturation apply);  y = LUT[code(c) - min code(in_t)],
// LUT holding the output codes, built on the host from the exact function (one entry per input code).
#ifndef FF_UNARY_H_
#define FF_UNARY_H_

#include "ff_common.h"

namespace ff {

template <class data_T, class res_T, typename CONFIG_T>
void unary_lut(data_T x[CONFIG_T::n_in], res_T y[CONFIG_T::n_in], const typename CONFIG_T::table_t table[CONFIG_T::table_size]) {
Elements:
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
#pragma HLS UNROLL factor = CONFIG_T::unroll
        typename CONFIG_T::in_t c = x[i];
        wide_t idx = icode(c) - wide_t(CONFIG_T::in_min_code);
        set_code(y[i], ap_int<res_T::width + 1>(table[unsigned(idx)]));
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void gelu(data_T x[CONFIG_T::n_in], res_T y[CONFIG_T::n_in], const typename CONFIG_T::table_t table[CONFIG_T::table_size]) {
    unary_lut<data_T, res_T, CONFIG_T>(x, y, table);
}

template <class data_T, class res_T, typename CONFIG_T>
void silu(data_T x[CONFIG_T::n_in], res_T y[CONFIG_T::n_in], const typename CONFIG_T::table_t table[CONFIG_T::table_size]) {
    unary_lut<data_T, res_T, CONFIG_T>(x, y, table);
}

} // namespace ff

#endif
