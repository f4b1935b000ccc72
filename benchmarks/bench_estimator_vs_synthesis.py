"""The estimator against published csynth results of single hls4ml Dense layers (tests/data/
hls4ml_synthesis_points.json; sources and licences in tests/data/README.md). Each point is costed by
``estimate_layer.estimate_dense``, which runs the design estimator's own stage cost code.

Prints one JSON line per point (estimated vs reported DSP, BRAM18, LUT, latency and relative errors), then one
summary line per group (Resource strategy, Latency strategy, Latency split by the projects' multiplier
directive): count and median relative error per resource.
Relative error = |estimate - reported| / max(reported, 1); latency is compared with the worst-case latency.
Goals (Resource-strategy points): median DSP <= 10 %, BRAM <= 25 %, latency <= 20 %. LUT: reported, no goal.
Run: python benchmarks/bench_estimator_vs_synthesis.py [--summary-only]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "hls4ml_synthesis_points.json"
RESOURCES = (("dsp", "DSP"), ("bram18", "BRAM_18K"), ("lut", "LUT"), ("latency", "latency_max"))
GOALS = {"Resource": {"dsp": 0.10, "bram18": 0.25, "latency": 0.20}}


def load_points(path: Path = DATA) -> list[dict]:
    return json.loads(path.read_text())["points"]


def rel_error(est: float, rep: float) -> float:
    return abs(est - rep) / max(rep, 1)


def compare(point: dict) -> dict:
    from fpgaformer.compiler.estimate_layer import estimate_dense

    est = estimate_dense(point["n_in"], point["n_out"], point["reuse_factor"], point["strategy"],
                         w_bits=point["weight_bits"], a_bits=point["input_bits"],
                         acc_bits=point.get("accum_bits"), n_zeros=point.get("n_zeros", 0), part=point["part"])
    row = {"source": point["source_repo"], "path": point["path"].rsplit("/", 1)[-1][:60],
           "part": point["part"], "n_in": point["n_in"], "n_out": point["n_out"], "rf": point["reuse_factor"],
           "strategy": point["strategy"], "w_bits": point["weight_bits"], "a_bits": point["input_bits"],
           "mul_impl": point.get("mul_impl_directive", "")}
    for key, field in RESOURCES:
        row[f"est_{key}"] = est[key]
        row[f"rep_{key}"] = point[field]
        row[f"err_{key}"] = round(rel_error(est[key], point[field]), 4)
    return row


def summarise(rows: list[dict], label: str) -> dict:
    out = {"summary": label, "count": len(rows)}
    for key, _ in RESOURCES:
        out[f"median_err_{key}"] = round(statistics.median(r[f"err_{key}"] for r in rows), 4) if rows else None
    return out


def summaries(rows: list[dict]) -> list[dict]:
    groups = [("Resource", [r for r in rows if r["strategy"] == "Resource"]),
              ("Latency", [r for r in rows if r["strategy"] == "Latency"])]
    for impl in sorted({r["mul_impl"] for r in rows if r["strategy"] == "Latency" and r["mul_impl"]}):
        groups.append((f"Latency mul_impl={impl}",
                       [r for r in rows if r["strategy"] == "Latency" and r["mul_impl"] == impl]))
    return [summarise(g, label) for label, g in groups]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    rows = [compare(p) for p in load_points()]
    if not args.summary_only:
        for r in rows:
            print(json.dumps(r))
    ok = True
    for s in summaries(rows):
        goals = GOALS.get(s["summary"], {})
        if goals:
            s["goals"] = goals
            s["meets_goals"] = all(s[f"median_err_{k}"] <= g for k, g in goals.items())
            ok &= s["meets_goals"]
        print(json.dumps(s))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
