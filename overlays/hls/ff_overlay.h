// The overlay's plumbing around the kernels (ff_model, generated per BUILD, is built from these pieces):
// AXI4-Stream records in and out, lanes in device memory (m_axi gmem0: weight image, gmem1: KV cache).
//
// Contract (host/protocol.py, overlays/README.md): a W-bit code travels in a lane of 8/16/32/64 bits,
// little-endian, sign-extended for signed types; records are padded with zero bytes to whole beats; the input
// packet of a launch ends with TLAST on its last beat, every output record ends with TLAST. Device memory is an
// array of B-bit words; a lane never straddles two words (entries are 64-byte aligned, lanes are naturally
// aligned inside them). Every loop bound is a compile-time constant.
#ifndef FF_OVERLAY_H_
#define FF_OVERLAY_H_

#include "ap_axi_sdata.h"
#include "ff_common.h"
#include "hls_stream.h"

namespace ff {

typedef long long lane_t;

// the value of the low `width` bits of a raw lane (two's complement when `is_signed`)
inline lane_t lane_value(ap_uint<64> raw, unsigned width, bool is_signed) {
    unsigned long long mask = width >= 64 ? ~0ULL : ((1ULL << width) - 1);
    unsigned long long v = raw.to_uint64() & mask;
    if (is_signed && width < 64 && ((v >> (width - 1)) & 1))
        v |= ~mask;
    return lane_t(v);
}

// one lane of `bits` at byte address `byte` of a B-bit word memory
template <int B> inline ap_uint<64> mem_read(const ap_uint<B> *mem, unsigned long long byte, unsigned bits) {
    const unsigned beat = B / 8;
    ap_uint<B> word = mem[byte / beat];
    unsigned lo = unsigned(byte % beat) * 8;
    ap_uint<B> shifted = word >> lo;
    unsigned long long mask = bits >= 64 ? ~0ULL : ((1ULL << bits) - 1);
    return ap_uint<64>(ap_uint<64>(shifted.range(63, 0)).to_uint64() & mask);
}

// write one lane (read-modify-write of its word)
template <int B> inline void mem_write(ap_uint<B> *mem, unsigned long long byte, unsigned bits, lane_t value) {
    const unsigned beat = B / 8;
    ap_uint<B> word = mem[byte / beat];
    unsigned lo = unsigned(byte % beat) * 8;
    for (unsigned b = 0; b < 64; b++) {
#pragma HLS UNROLL
        if (b < bits)
            word[lo + b] = (ap_uint<64>(value) >> b) & 1;
    }
    mem[byte / beat] = word;
}

// the input packet, byte by byte; reading past TLAST gives zeros and flags a stream error
template <int B> struct StreamIn {
    typedef ap_axiu<B, 0, 0, 0> beat_t;
    ap_uint<B> data;
    unsigned pos;   // next byte in `data`
    bool have;      // `data` holds a beat
    bool ended;     // the beat in `data` carried TLAST
    bool error;     // the packet ended early or late
    StreamIn() : data(0), pos(0), have(false), ended(false), error(false) {}

    unsigned char byte(hls::stream<beat_t> &s) {
        if (!have || pos == B / 8) {
            if (ended) {
                error = true;
                return 0;
            }
            beat_t beat = s.read();
            data = beat.data;
            ended = beat.last == 1;
            have = true;
            pos = 0;
        }
        unsigned char v = data.range(pos * 8 + 7, pos * 8).to_uint();
        pos++;
        return v;
    }
    ap_uint<64> lane(hls::stream<beat_t> &s, unsigned bits) {
        ap_uint<64> v = 0;
        for (unsigned i = 0; i < 8; i++) {
            if (i < bits / 8)
                v.range(i * 8 + 7, i * 8) = byte(s);
        }
        return v;
    }
    void align() { pos = B / 8; }  // records are padded to whole beats
    // the end of the packet: its last beat must carry TLAST; a longer packet is drained (at most max_beats)
    void finish(hls::stream<beat_t> &s, unsigned long long max_beats) {
        if (!have || !ended) {
            error = true;
            for (unsigned long long i = 0; i < max_beats; i++) {
                if (ended)
                    break;
                beat_t beat = s.read();
                ended = beat.last == 1;
                have = true;
            }
        }
    }
};

// output records, byte by byte, TLAST on each record's last beat
template <int B> struct StreamOut {
    typedef ap_axiu<B, 0, 0, 0> beat_t;
    ap_uint<B> data;
    unsigned pos;
    StreamOut() : data(0), pos(0) {}

    void flush(hls::stream<beat_t> &s, bool last) {
        beat_t beat;
        beat.data = data;
        beat.keep = -1;
        beat.strb = -1;
        beat.user = 0;
        beat.id = 0;
        beat.dest = 0;
        beat.last = last ? 1 : 0;
        s.write(beat);
        data = 0;
        pos = 0;
    }
    void byte(hls::stream<beat_t> &s, unsigned char v) {
        if (pos == B / 8)
            flush(s, false);
        data.range(pos * 8 + 7, pos * 8) = v;
        pos++;
    }
    void lane(hls::stream<beat_t> &s, lane_t value, unsigned bits) {
        ap_uint<64> v = ap_uint<64>(value);
        for (unsigned i = 0; i < 8; i++) {
            if (i < bits / 8)
                byte(s, v.range(i * 8 + 7, i * 8).to_uint());
        }
    }
    void end_record(hls::stream<beat_t> &s) { flush(s, true); }  // zero padding to the beat, TLAST
};

// a lane value (the exact integer v * 2^-F) into T: T's rounding and overflow modes apply
template <class T, int F> inline T from_lane(lane_t v) { return cast_exact64<T, F>(v); }

// a lane value written into T bit for bit (the lane holds a code of T)
template <class T> inline T code_to(lane_t v) {
    T y;
    set_code(y, ap_int<64>(v));
    return y;
}

} // namespace ff

#endif
