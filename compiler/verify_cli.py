"""``fpgaformer verify BUILD [--csim] [--json]``: check a build against its references.

``--csim``: every HLS kernel in BUILD/hls is compiled with g++ (hls4ml's C-simulation build) and run on the same
inputs as the emulator; the report says per kernel whether every output bit is identical. Inputs are drawn like
calibration samples (``--samples`` .npz of model inputs, else synthetic token ids and masks), ``-n`` of them,
run through the whole-graph emulator so each kernel sees the inputs it sees in the model.

Exit status: 0 all checks passed, 1 a mismatch or a kernel that failed to compile/simulate, 2 bad input.
Other checks (emulator vs onnxruntime) are further options of the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("verify", help="check a BUILD: --csim compares C simulation with the emulator",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("build", type=Path, metavar="BUILD", help="a BUILD directory written by compile")
    p.add_argument("--csim", action="store_true", help="compile every HLS kernel with g++ and compare its C "
                   "simulation with the emulator, bit for bit")
    p.add_argument("-n", "--count", type=int, default=8, help="number of inputs per kernel (default 8)")
    p.add_argument("--samples", type=Path, default=None, help=".npz of model inputs (default: synthetic)")
    p.add_argument("--kernel", action="append", default=None, help="only this kernel (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
    return p


def _progress(quiet: bool):
    """Progress lines on stderr (also with --json, whose report goes to stdout)."""
    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)
    return say


def _kernels(build: Path, say):
    """(quantized graph, kernel projects) of BUILD; writes the projects from the BUILD's graph if missing."""
    from ..host.artifact import load_artifact
    from .backend.hls4ml import KERNEL_INDEX, read_graph, read_projects, write_projects

    if (build / "hls" / KERNEL_INDEX).is_file():
        return read_graph(build), read_projects(build)
    graph = load_artifact(build)[0]
    if any(t.dtype == "float32" and t.fixed is None for t in graph.tensors.values()):
        raise UserError(f"{build} holds a float graph: C simulation needs fixed-point kernels. Compile with "
                        "--precision (e.g. w8a16) first.")
    say(f"writing the HLS kernel projects into {build / 'hls'} ...")
    return graph, write_projects(graph, build, progress=say)


def run_csim(args) -> dict:
    from .backend.verify import verify_csim
    from .passes.calibrate import load_samples, synthetic_samples

    args.build = Path(args.build)
    say = _progress(getattr(args, "json", False))
    graph, projects = _kernels(args.build, say)
    count = getattr(args, "count", None) or 8
    sample_file = getattr(args, "samples", None) or getattr(args, "inputs", None)
    wanted = getattr(args, "kernel", None)
    if wanted:
        unknown = sorted(set(wanted) - {p.name for p in projects})
        if unknown:
            raise UserError(f"no kernel {', '.join(unknown)} in {args.build}; kernels: "
                            f"{', '.join(p.name for p in projects)}.")
        projects = [p for p in projects if p.name in wanted]
    if count < 1:
        raise UserError("--count must be at least 1.")
    samples = load_samples(sample_file, graph) if sample_file else synthetic_samples(graph, count, seed=1)
    samples = {k: v[:count] for k, v in samples.items()}
    results = verify_csim(graph, projects, samples, progress=say)
    return {"build": str(args.build), "check": "csim", "samples": int(next(iter(samples.values())).shape[0]),
            "kernels": [r.to_json() for r in results],
            "passed": all(r.identical and r.error is None for r in results)}


def print_report(report: dict) -> None:
    print(f"C simulation vs emulator, {report['samples']} inputs per kernel ({report['build']})")
    for k in report["kernels"]:
        if k["error"]:
            print(f"  {k['kernel']:<16} FAILED\n" + "\n".join("    " + l for l in k["error"].splitlines()))
            continue
        verdict = "bit-identical" if k["identical"] else "MISMATCH"
        bad = sum(o["mismatches"] for o in k["outputs"])
        total = sum(o["elements"] for o in k["outputs"])
        print(f"  {k['kernel']:<16} {verdict:<14} {total - bad}/{total} output codes equal; g++ "
              f"{k['compile_s']:.1f} s, C-sim {k['csim_s']:.2f} s, emulator {k['emulator_s']:.3f} s")
    print("passed" if report["passed"] else "FAILED")


def run(args) -> int:
    """``verify --csim``; other verify checks live in compiler.verify (the same command)."""
    if not getattr(args, "csim", False):
        raise UserError("nothing to verify: give --csim (C simulation == emulator, bit for bit).")
    report = run_csim(args)
    if getattr(args, "json", False):
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    return 0 if report["passed"] else 1
