"""Throughput of host.fixed: quantize / cast / to_float on 10M values. Prints one JSON line per figure.

    python benchmarks/bench_fixed.py [--n 10000000] [--repeat 3]

Each figure is the best of ``--repeat`` runs (wall seconds) and the rate in million values per second.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from fpgaformer.host.fixed import FixedType, cast_count, quantize_count, to_float


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 8.0, size=args.n)  # some values beyond ap_fixed<16,6>'s +-32
    act = FixedType(16, 6, True, "RND_CONV", "SAT")
    acc = FixedType(32, 12)
    narrow = FixedType(8, 3, True, "RND", "SAT_SYM")
    codes16 = quantize_count(x, act)[0]
    codes32 = quantize_count(x, acc)[0]
    figures = [
        ("quantize", f"float64 -> {act.to_hls()}", lambda: quantize_count(x, act)),
        ("quantize", f"float64 -> {FixedType(16, 6).to_hls()}", lambda: quantize_count(x, FixedType(16, 6))),
        ("cast", f"{acc.to_hls()} -> {act.to_hls()}", lambda: cast_count(codes32, acc, act)),
        ("cast", f"{act.to_hls()} -> {narrow.to_hls()}", lambda: cast_count(codes16, act, narrow)),
        ("cast", f"{act.to_hls()} -> {acc.to_hls()} (widening)", lambda: cast_count(codes16, act, acc)),
        ("to_float", act.to_hls(), lambda: to_float(codes16, act)),
    ]
    for op, what, fn in figures:
        seconds = _best(fn, args.repeat)
        print(json.dumps({
            "benchmark": "host.fixed", "op": op, "types": what, "n": args.n, "seconds": round(seconds, 4),
            "mvalues_per_s": round(args.n / seconds / 1e6, 1), "numpy": np.__version__,
            "machine": platform.machine(),
        }), flush=True)


if __name__ == "__main__":
    main()
