// LayerNorm and RMSNorm over the last axis of n values (emulator: "LayerNorm", norm_kernel):
//   c_i = n x_i - sum x (LayerNorm) or x_i (RMSNorm);  cs_i = c_i >> pre_shift;  q = sum cs_i^2 + eps_q;
//   q = m * 4^h with m in [2^(T-2), 2^T) (h = max(0, ceil((bits(q) - T) / 2)));  r = RS[m - 2^(T-2)],
//   RS[m] = round(sqrt(n) m^-1/2 2^P);  z_i = (cs_i * r) >> (P + h - Fz);  y_i = cast(z_i g_i + beta_i
//   aligned to Fz + F(g)).  The normalised 1/sqrt table covers every variance (hls4ml's saturates at 1).
#ifndef FF_NORM_H_
#define FF_NORM_H_

#include "ff_common.h"

namespace ff {

template <class data_T, class res_T, typename CONFIG_T>
void norm(data_T x[CONFIG_T::n_rows * CONFIG_T::n], res_T y[CONFIG_T::n_rows * CONFIG_T::n],
          const typename CONFIG_T::gamma_t gamma[CONFIG_T::n], const typename CONFIG_T::beta_t beta[CONFIG_T::n],
          const typename CONFIG_T::table_t rs[CONFIG_T::table_size], bool center) {
    const int T = CONFIG_T::table_bits;
    const int F = CONFIG_T::z_frac + CONFIG_T::gamma_frac;
Rows:
    for (unsigned r = 0; r < CONFIG_T::n_rows; r++) {
#pragma HLS PIPELINE II = CONFIG_T::reuse_factor
        wide_t xc[CONFIG_T::n];
        wide_t sum = 0;
        for (unsigned i = 0; i < CONFIG_T::n; i++) {
            xc[i] = icode(x[r * CONFIG_T::n + i]);
            sum += xc[i];
        }
        wide_t cs[CONFIG_T::n];
        uwide_t q = CONFIG_T::eps_q;
        for (unsigned i = 0; i < CONFIG_T::n; i++) {
            wide_t c = center ? wide_t(wide_t(CONFIG_T::n) * xc[i] - sum) : xc[i];
            cs[i] = c >> CONFIG_T::pre_shift;
            q += uwide_t(cs[i] * cs[i]);
        }
        int length = bit_length(q);
        int h = length - T + 1 > 0 ? (length - T + 1) / 2 : 0;
        uwide_t m = q >> (2 * h);
        if (m < (uwide_t(1) << (T - 2)))
            m = uwide_t(1) << (T - 2);
        wide_t rr = rs[unsigned(m - (uwide_t(1) << (T - 2)))].to_int64();
        for (unsigned i = 0; i < CONFIG_T::n; i++) {
            wide_t z = (cs[i] * rr) >> (CONFIG_T::p_bits + h - CONFIG_T::z_frac);
            wide_t v = z * gamma[i].to_int64();
            if (CONFIG_T::has_beta)
                v += shift(beta[i].to_int64(), F - CONFIG_T::beta_frac);
            y[r * CONFIG_T::n + i] = cast_exact64<res_T, F>(v);
        }
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void layernorm(data_T x[CONFIG_T::n_rows * CONFIG_T::n], res_T y[CONFIG_T::n_rows * CONFIG_T::n],
               const typename CONFIG_T::gamma_t gamma[CONFIG_T::n], const typename CONFIG_T::beta_t beta[CONFIG_T::n],
               const typename CONFIG_T::table_t rs[CONFIG_T::table_size]) {
    norm<data_T, res_T, CONFIG_T>(x, y, gamma, beta, rs, true);
}

template <class data_T, class res_T, typename CONFIG_T>
void rmsnorm(data_T x[CONFIG_T::n_rows * CONFIG_T::n], res_T y[CONFIG_T::n_rows * CONFIG_T::n],
             const typename CONFIG_T::gamma_t gamma[CONFIG_T::n], const typename CONFIG_T::table_t rs[CONFIG_T::table_size]) {
    typename CONFIG_T::beta_t none[CONFIG_T::n];
    norm<data_T, res_T, CONFIG_T>(x, y, gamma, none, rs, false);
}

} // namespace ff

#endif
