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
import time
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
    from ..host.artifact import check_no_symlinks, load_artifact
    from .backend.hls4ml import KERNEL_INDEX, read_graph, read_projects, write_projects

    if (build / "hls" / KERNEL_INDEX).is_file():
        try:
            index = json.loads((build / "hls" / KERNEL_INDEX).read_text())
            projects = read_projects(build)
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{build / 'hls' / KERNEL_INDEX} is not a kernel index fpgaformer wrote ({e}); "
                            f"{REDO}.") from None
        _check_sources(build, projects, index)
        return read_graph(build), projects
    graph = load_artifact(build)[0]
    if any(t.dtype == "float32" and t.fixed is None for t in graph.tensors.values()):
        raise UserError(f"{build} holds a float graph: C simulation needs fixed-point kernels. Compile with "
                        "--precision (e.g. w8a16) first.")
    check_no_symlinks(build, build / "hls")
    say(f"writing the HLS kernel projects into {build / 'hls'} ...")
    return graph, write_projects(graph, build, progress=say)


REDO = "recompile the model into a new BUILD (`fpgaformer compile MODEL.onnx --precision w8a16 -o NEW_BUILD`)"


def _check_sources(build: Path, projects, index: dict) -> None:
    """Before anything of BUILD runs (``--csim`` runs each project's build_lib.sh and loads the library it makes):
    every file of every kernel project must be the one compile wrote (sha256 in kernels.json, ``files``), with
    no file added (only g++'s outputs: ``*.o`` and ``firmware/<project>-*.so``) and no symbolic link."""
    import hashlib
    import os

    from ..host.artifact import check_no_symlinks

    recorded = {k.get("name"): k.get("files") for k in index.get("kernels", []) if isinstance(k, dict)}
    for project in projects:
        files = recorded.get(project.name)
        if not isinstance(files, dict) or not files:
            raise UserError(f"{build} records no checksums of its kernel project {project.path} (written by an "
                            "older fpgaformer, or edited); `verify --csim` runs only kernel projects whose files "
                            f"are the ones compile wrote, so nothing was run. {REDO[:1].upper() + REDO[1:]}.")
        check_no_symlinks(build, project.path)
        problems, seen = [], set()
        for folder, dirs, names in os.walk(project.path):
            for name in dirs + names:
                path = Path(folder) / name
                rel = path.relative_to(project.path).as_posix()
                if path.is_symlink():
                    problems.append(f"{rel} is a symbolic link")
                elif name in names:
                    seen.add(rel)
                    output = (rel.endswith(".o") and "/" not in rel) or (
                        rel.startswith(f"firmware/{project.project}-") and rel.endswith(".so") and rel.count("/") == 1)
                    if rel in files:
                        if hashlib.sha256(path.read_bytes()).hexdigest() != files[rel]:
                            problems.append(f"{rel} was changed")
                    elif not output:
                        problems.append(f"{rel} was added")
        problems += [f"{rel} is missing" for rel in sorted(set(files) - seen)]
        if problems:
            shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
            raise UserError(f"the kernel project {project.path} is not the one fpgaformer compile wrote ({shown}). "
                            "`verify --csim` would run its build_lib.sh and load the library it builds, so nothing "
                            "was run: a BUILD is code, trust it only as you would trust its author's code. "
                            f"{REDO[:1].upper() + REDO[1:]}.")


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
    from .validate import plain  # names, paths and compiler logs: control characters shown, never sent raw

    print(f"C simulation vs emulator, {report['samples']} inputs per kernel ({plain(report['build'])})")
    for k in report["kernels"]:
        if k["error"]:
            lines = (plain(line) for line in k["error"].splitlines())
            print(f"  {plain(k['kernel']):<16} FAILED\n" + "\n".join("    " + line for line in lines))
            continue
        verdict = "bit-identical" if k["identical"] else "MISMATCH"
        bad = sum(o["mismatches"] for o in k["outputs"])
        total = sum(o["elements"] for o in k["outputs"])
        print(f"  {plain(k['kernel']):<16} {verdict:<14} {total - bad}/{total} output codes equal; g++ "
              f"{k['compile_s']:.1f} s, C-sim {k['csim_s']:.2f} s, emulator {k['emulator_s']:.3f} s")
    print("passed" if report["passed"] else "FAILED")


def _interrupted(build: Path, started: float) -> str:
    """The interrupt message, true to what this run wrote: the files under BUILD changed since it started."""
    from .validate import plain

    written = []
    try:
        for p in build.rglob("*"):
            try:
                if p.is_file() and p.stat().st_mtime >= started - 1:
                    written.append(p)
            except OSError:
                continue
    except OSError:
        pass
    if not written:
        return "interrupted; verify --csim stopped g++ and the C simulations, and wrote nothing."
    libs = [p for p in written if p.suffix == ".so"]
    items = libs or written
    shown = ", ".join(plain(str(p.relative_to(build))) for p in items[:4])
    if len(items) > 4:
        shown += f" and {len(items) - 4} more"
    what = (f"{len(libs)} compiled kernel librar{'y' if len(libs) == 1 else 'ies'}" if libs
            else f"{len(written)} file(s)")
    others = len(written) - len(libs) if libs else 0
    also = f" and {others} other build file(s)" if others else ""
    return (f"interrupted; verify --csim stopped g++ and the C simulations. It had written {what} ({shown}){also} "
            f"under {plain(str(build))}: build outputs that the next verify --csim reuses when up to date; nothing "
            "else in the BUILD was changed.")


def run(args) -> int:
    """``verify --csim``; other verify checks live in compiler.verify (the same command)."""
    if not getattr(args, "csim", False):
        raise UserError("nothing to verify: give --csim (C simulation == emulator, bit for bit).")
    started = time.time()
    try:
        report = run_csim(args)
    except KeyboardInterrupt:  # g++ and the C-simulation workers are killed with their process groups (csim.py)
        print(_interrupted(Path(args.build), started), file=sys.stderr)
        return 130
    if getattr(args, "json", False):
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    return 0 if report["passed"] else 1
