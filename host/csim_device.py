"""CsimDevice: the generated overlay itself, C-simulated behind the runtime's register and DMA model.

`SimDevice` models the overlay's registers, AXI DMA, reset GPIO and device memory; its kernel computes with the
emulator. CsimDevice keeps all of that and replaces the kernel by the overlay ``fpgaformer build`` generated —
``fpgaformer_top`` -> ``ff_model`` -> the hls4ml kernels (compiler/backend/overlay.py) — compiled with g++ into
one shared library and called through ctypes (numpy and the standard library only). Per launch the MM2S packet
goes into the top's input stream byte for byte, device memory is the top's m_axi arrays (gmem0: the weight
image the runtime wrote; gmem1: the KV cache, written back after the launch), and the output stream's beats,
split at TLAST, are the S2MM packets. The status register is what the generated code returned.

The library is made by `compiler.backend.overlay.compile_overlay(BUILD)` (``fpgaformer run/generate --csim``
does that); this module only loads it.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from . import protocol as P
from .device import DeviceError
from .sim_device import SimDevice

_u8p = ctypes.POINTER(ctypes.c_ubyte)
_u32p = ctypes.POINTER(ctypes.c_uint)


def _ptr(array: np.ndarray):
    return array.ctypes.data_as(_u8p)


class CsimDevice(SimDevice):
    """SimDevice whose kernel is the C-simulated generated overlay (``library``: its shared library)."""

    def __init__(self, library: Path, graph=None, coherence: str = "shared", faults: set[str] | None = None):
        super().__init__(graph, coherence=coherence, faults=faults)
        self.library = Path(library)
        lib = ctypes.CDLL(str(self.library))
        fn = lib.ff_overlay_launch
        fn.restype = ctypes.c_longlong
        fn.argtypes = [_u8p, ctypes.c_ulonglong, _u8p, _u8p, ctypes.c_ulonglong, ctypes.c_uint, ctypes.c_uint,
                       ctypes.c_uint, ctypes.c_uint, _u8p, ctypes.c_ulonglong, _u8p, ctypes.c_ulonglong, _u32p, _u32p]
        self._launch = fn
        self._lib = lib

    def _compute(self, mode: int, n: int, argmax: bool, in_rec: P.Record, data: np.ndarray, want: int):
        c = self.contract
        beat = c.beat
        weights = self.memory.view(self._pointer("weights"), c.weights_bytes)
        kv = self.memory.view(self._pointer("kv_cache"), c.kv_bytes) if c.kind == "decoder" else \
            np.zeros(P.ALIGN, np.uint8)
        records_max = max(1, n) if mode == P.MODE_ENCODE else 1
        record = max(c.out_record(False).nbytes, c.out_record(True).nbytes)
        beats_max = records_max * record // beat + 1
        out = np.zeros(beats_max * beat, np.uint8)
        last = np.zeros(beats_max, np.uint8)
        data = np.ascontiguousarray(data, np.uint8)
        kv_copy = np.ascontiguousarray(kv)
        design_id, status = ctypes.c_uint(0), ctypes.c_uint(0)
        got = self._launch(_ptr(data), data.size, _ptr(out), _ptr(last), beats_max, mode, n,
                           self._arg("position"), self._arg("flags"), _ptr(np.ascontiguousarray(weights)),
                           weights.size, _ptr(kv_copy), kv_copy.size, ctypes.byref(design_id), ctypes.byref(status))
        if got == -1:
            raise DeviceError("the C-simulated overlay sent more output than one launch can return")
        if got == -2:
            raise DeviceError("the C-simulated overlay left input beats unread")
        if c.kind == "decoder":
            kv[:] = kv_copy
        if design_id.value != c.design_id:
            raise DeviceError(f"the C-simulated overlay reports design id {design_id.value:#010x}, the contract "
                              f"{c.design_id:#010x}: rebuild it (`fpgaformer build`)")
        records, start = [], 0
        for i in range(int(got)):
            if last[i]:
                records.append(out[start * beat:(i + 1) * beat].copy())
                start = i + 1
        if start != got:
            records.append(out[start * beat:int(got) * beat].copy())
        return records, int(status.value), self._launch_cycles(mode, max(1, n))
