"""C-simulation worker, run in its own process: ``python -m fpgaformer.compiler.backend.csim_worker SPEC``.

SPEC is a JSON file: {"lib": path of the compiled kernel library, "function": "<project>_double",
"inputs": [[npz key, size], ...], "outputs": [[npz key, size], ...], "in": inputs.npz, "out": outputs.npz}.
Each npz array is (N, size) float64. The worker calls the hls4ml C-simulation bridge once per sample (the same
calling convention as hls4ml's ModelGraph.predict) and writes the outputs. A kernel that aborts (a C++
assert) kills only this process; the caller reports it.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time

import numpy as np


def main(argv: list[str]) -> int:
    spec = json.loads(open(argv[0]).read())
    lib = ctypes.cdll.LoadLibrary(spec["lib"])
    fn = getattr(lib, spec["function"])
    fn.restype = None
    fn.argtypes = [np.ctypeslib.ndpointer(ctypes.c_double, flags="C_CONTIGUOUS")] * \
        (len(spec["inputs"]) + len(spec["outputs"]))
    with np.load(spec["in"]) as z:
        ins = [np.ascontiguousarray(z[key], dtype=np.float64).reshape(-1, size) for key, size in spec["inputs"]]
    n = ins[0].shape[0] if ins else 1
    outs = [np.zeros((n, size), np.float64) for _, size in spec["outputs"]]
    seconds = np.zeros(n)
    for i in range(n):
        row_out = [np.zeros(size, np.float64) for _, size in spec["outputs"]]
        row_in = [np.ascontiguousarray(x[i]) for x in ins]
        start = time.perf_counter()
        fn(*row_in, *row_out)  # the first call also loads the weights from their .txt files
        seconds[i] = time.perf_counter() - start
        for o, r in zip(outs, row_out):
            o[i] = r
    np.savez(spec["out"], __seconds__=seconds, **{key: o for (key, _), o in zip(spec["outputs"], outs)})
    return 0


def run(argv: list[str]) -> int:
    """`main`, with the errors a damaged spec, input file or library can cause reported as one line on stderr
    (exit status 2; the caller shows it as the kernel's failure) instead of a traceback."""
    try:
        return main(argv)
    except (MemoryError, OSError, ValueError, KeyError, TypeError, AttributeError, EOFError) as e:
        print(f"C simulation worker: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
