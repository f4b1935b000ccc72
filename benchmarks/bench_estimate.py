"""Estimator figures (ESTIMATES, not measurements): MiniLM-L6 (seq 128) and GPT-2 small (decode, KV 128 and
1024) on every board, with the roofline bounds and the fraction of the tighter bound the fitted design reaches.
Prints one JSON line per (model, board, precision); also the time the fit takes.

Floor: every fitting design reaches >= 70 % of its tighter bound; each fit takes < 5 s.
Run: python benchmarks/bench_estimate.py [--precision w8a16 w8a8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    from fpgaformer.compiler import synthetic
    from fpgaformer.compiler.boards import known_boards, load_board
    from fpgaformer.compiler.fit import choose_hardware

    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", nargs="+", default=["w8a16", "w8a8"])
    args = parser.parse_args(argv)
    models = {"all-MiniLM-L6-v2 (S=128)": synthetic.minilm_l6(seq_len=128),
              "GPT-2 small (KV=128)": synthetic.gpt2_small(seq_len=8, context=128),
              "GPT-2 small (KV=1024)": synthetic.gpt2_small(seq_len=8, context=1024)}
    ok = True
    for precision in args.precision:
        for model, graph in models.items():
            for name in known_boards():
                start = time.perf_counter()
                r = choose_hardware(graph.copy(), load_board(name), precision, apply=False, suggest=False)
                seconds = time.perf_counter() - start
                line = {"figure": "estimate", "model": model, "board": name, "precision": precision,
                        "clock_mhz": r.clock_mhz, "fits": r.fits, "fit_seconds": round(seconds, 2)}
                if r.fits:
                    d, b = r.design, r.bounds
                    line.update(unit=d.unit, throughput=round(d.items_per_s, 1), mode=d.mode, kernel=d.kernel,
                                compute_bound=round(b.compute, 1),
                                memory_bound=None if b.memory == float("inf") else round(b.memory, 1),
                                limited_by=b.limit, fraction=round(r.fraction, 3),
                                utilisation={k: round(v, 2) for k, v in d.utilisation().items()})
                    ok &= r.fraction >= 0.70
                else:
                    line["reason"] = r.reason
                ok &= seconds < 5
                print(json.dumps(line))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
