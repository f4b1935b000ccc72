// AXI4-Stream side-channel types for g++ builds (C simulation and the synthesis-configuration syntax check).
//
// Vitis HLS ships its own ap_axi_sdata.h; hls4ml's open-source ap_types do not. This header declares the same
// struct with the same members in the same order (data, keep, strb, user, last, id, dest), so code written
// against Vitis HLS's ap_axiu compiles unchanged. It is used only where the vendor header is absent: the
// overlay's include path puts it after the vendor tool's.
#ifndef FF_AP_AXI_SDATA_H_
#define FF_AP_AXI_SDATA_H_

#include "ap_int.h"

template <int D, int U, int TI, int TD> struct ap_axis {
    ap_int<D> data;
    ap_uint<(D + 7) / 8> keep;
    ap_uint<(D + 7) / 8> strb;
    ap_uint<(U > 0 ? U : 1)> user;
    ap_uint<1> last;
    ap_uint<(TI > 0 ? TI : 1)> id;
    ap_uint<(TD > 0 ? TD : 1)> dest;
};

template <int D, int U, int TI, int TD> struct ap_axiu {
    ap_uint<D> data;
    ap_uint<(D + 7) / 8> keep;
    ap_uint<(D + 7) / 8> strb;
    ap_uint<(U > 0 ? U : 1)> user;
    ap_uint<1> last;
    ap_uint<(TI > 0 ? TI : 1)> id;
    ap_uint<(TD > 0 ? TD : 1)> dest;
};

#endif
