"""Emulator versus hls4ml C simulation on the same inputs: block 0 of all-MiniLM-L6-v2 (real weights) at seq 16,
and the g++ compile time of each kernel. Prints one JSON line per figure.

Floor: the emulator is >= 100x faster than C simulation per input (both bit-identical; the check runs too).
Timing: the emulator runs the inputs one at a time and as one batch (``Emulator.run_batch``, after a warm-up),
and "speedup" uses the batch (the emulator's way of running many inputs; the one-at-a-time figure is printed
too). The emulator runs as users run it: its default worker threads (one per CPU this process may use; 2 on
the reference machine), each block with one BLAS thread (OPENBLAS_NUM_THREADS=1 below only sets BLAS's
default; the C simulation is single-threaded). C simulation is the
per-call time inside the simulation process (hls4ml's bridge, g++ -O3), the first call (which loads the
weights) excluded. Run: python benchmarks/bench_csim.py [--preset w8a16] [--count 32] [--out DIR]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # BLAS's default; the emulator runs its own worker threads
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from fpgaformer.compiler.backend import csim
    from fpgaformer.compiler.backend.hls4ml import write_project
    from fpgaformer.compiler.backend.verify import kernel_feeds, values_of
    from fpgaformer.compiler.frontend import import_static
    from fpgaformer.compiler.hf_export import export, load_minilm
    from fpgaformer.compiler.partition import partition
    from fpgaformer.compiler.passes.calibrate import synthetic_samples
    from fpgaformer.compiler.quantize import quantize
    from fpgaformer.host.emulator import Emulator

    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", nargs="+", default=["w8a16", "w16a16"])
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="where to write the projects (default: a temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-csim-"))
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = export(load_minilm()[0], out / "minilm.onnx", args.seq_len, "torchscript")
    graph, static = import_static(onnx_path, seq_len=args.seq_len)
    ok = True
    for preset in args.preset:
        q = quantize(graph, preset, synthetic_samples(graph, 16, seed=0), static)
        part = partition(q)[0]
        samples = synthetic_samples(q, args.count, seed=7)
        envs = kernel_feeds(q, samples)
        feeds = [{n: env[n] for n in part.graph.inputs} for env in envs]

        start = time.perf_counter()
        project = write_project(part, out / preset / "hls")
        write_s = time.perf_counter() - start
        compiled = csim.compile_kernel(project, reuse=False)
        print(json.dumps({"figure": "gxx_compile", "kernel": f"minilm_{project.name}", "preset": preset,
                          "seconds": round(compiled.seconds, 1), "write_project_seconds": round(write_s, 1)}))

        emu = Emulator(part.graph)
        emu.run(feeds[0])  # warm-up
        emu_times, expected = [], []
        for f in feeds:
            start = time.perf_counter()
            expected.append(emu.run(f))
            emu_times.append(time.perf_counter() - start)
        inputs = {p.tensor: np.stack([values_of(e[p.tensor], p.fixed) for e in envs]) for p in project.inputs}
        timings: list[float] = []
        got = csim.run_kernel(project, compiled.lib, inputs, timings=timings)
        identical = all(np.array_equal(csim.to_codes(got[p.tensor], p.fixed),
                                       np.stack([e[p.tensor] for e in expected])) for p in project.outputs)
        emu_s = float(np.mean(emu_times))
        csim_s = float(np.mean(timings[1:] if len(timings) > 1 else timings))
        batch_s = None
        if hasattr(emu, "run_batch"):  # the same inputs as one batch: one large matrix product per layer
            stacked = {n: np.stack([f[n] for f in feeds]) for n in part.graph.inputs}
            emu.run_batch(stacked)  # warm-up
            runs = []
            for _ in range(5):  # median of 5: the machine's slow spells do not decide the figure
                start = time.perf_counter()
                batched = emu.run_batch(stacked)
                runs.append(time.perf_counter() - start)
            batch_s = float(np.median(runs)) / len(feeds)
            identical &= all(np.array_equal(batched[p.tensor], np.stack([e[p.tensor] for e in expected]))
                             for p in project.outputs)
        ratio = csim_s / (batch_s or emu_s)
        ok &= identical and ratio >= 100
        print(json.dumps({"figure": "emulator_vs_csim", "kernel": f"minilm_{project.name}", "seq_len": args.seq_len,
                          "preset": preset, "inputs": len(feeds), "bit_identical": identical,
                          "emulator_ms_per_input": round(emu_s * 1e3, 2),
                          "emulator_batched_ms_per_input": None if batch_s is None else round(batch_s * 1e3, 3),
                          "speedup_one_at_a_time": round(csim_s / emu_s, 1),
                          "csim_ms_per_input": round(csim_s * 1e3, 1),
                          "csim_first_call_ms": round(timings[0] * 1e3, 1),
                          "speedup": round(ratio, 1), "floor": 100, "meets_floor": ratio >= 100}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
