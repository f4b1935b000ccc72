// Fork of a dataflow channel: one buffer copied into one buffer per reader (a dataflow region allows one
// reader per buffer; compiler/backend/hardware.py inserts a fork after every layer whose output several layers
// read). Values are copied bit for bit, one element per cycle.
#ifndef FF_FORK_H_
#define FF_FORK_H_

namespace ff {

template <class T, int N> void fork2(T x[N], T a[N], T b[N]) {
Copy:
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        T v = x[i];
        a[i] = v;
        b[i] = v;
    }
}

template <class T, int N> void fork3(T x[N], T a[N], T b[N], T c[N]) {
Copy:
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        T v = x[i];
        a[i] = v;
        b[i] = v;
        c[i] = v;
    }
}

template <class T, int N> void fork4(T x[N], T a[N], T b[N], T c[N], T d[N]) {
Copy:
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        T v = x[i];
        a[i] = v;
        b[i] = v;
        c[i] = v;
        d[i] = v;
    }
}

} // namespace ff

#endif
