"""``fpgaformer estimate (MODEL.onnx | BUILD) --board NAME``: will it fit, how fast, how close to the board's
limits — before any vendor tool runs. Every figure printed is an estimate of the model in
``fpgaformer.compiler.estimate``; synthesis reports found in BUILD are shown beside it.

Exit status: 0 a design fits, 1 nothing fits (the reason and what would fit are printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..host.graph import Graph
from .boards import Board, known_boards, load_board
from . import validate
from .errors import UserError
from .estimate import DesignEstimate, estimate_graph, has_settings
from .fit import MODES, FitResult, choose_hardware
from .precision import DEFAULT_PRESET, PRESETS, SEARCHED, preset_of
from .roofline import Bounds, design_bounds

CAVEAT = ("All figures are ESTIMATES of fpgaformer's hardware model (python -m pydoc "
          "fpgaformer.compiler.estimate), not synthesis results. Published FPGA transformer designs reach "
          "7-41 % of the memory roof at batch 1; run the vendor tools and re-run estimate on BUILD to calibrate.")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``estimate`` on the main CLI's subparsers."""
    p = subparsers.add_parser(
        "estimate", help="estimate resources and speed of a model on a board (fit, bounds, roofline)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, metavar="MODEL.onnx|BUILD", help="an ONNX model or a BUILD directory")
    p.add_argument("--board", required=True, help=f"board name ({', '.join(known_boards())}) or a board .toml")
    p.add_argument("--precision", default=None,
                   help=f"precision preset ({', '.join([*PRESETS, SEARCHED])}); default: the BUILD's, else "
                        f"{DEFAULT_PRESET}")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (ONNX input)")
    p.add_argument("--context", type=int, default=None, help="KV length a decoder attends to (decode step)")
    p.add_argument("--clock", type=float, default=None, metavar="MHZ", help="PL clock (default: the board's)")
    p.add_argument("--budget", type=float, default=0.8, help="utilisation budget per resource (default 0.8)")
    p.add_argument("--mode", choices=("auto", *MODES), default="auto", help="hardware mode(s) to consider")
    p.add_argument("--refit", action="store_true", help="ignore the settings stored in BUILD and fit again")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="draw the roofline plot")
    p.set_defaults(func=run)
    return p


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m fpgaformer.compiler.estimate_cli``): the same exit codes as the CLI."""
    parser = argparse.ArgumentParser(prog="fpgaformer")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["estimate", *(argv if argv is not None else sys.argv[1:])])
    from ..host.artifact import ArtifactError
    try:
        return run(args)
    except (UserError, ArtifactError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------- loading
def load_model(path: Path, seq_len: int | None, context: int | None) -> tuple[Graph, dict | None]:
    """(graph, manifest or None) from a BUILD directory or an ONNX file."""
    path = Path(path)
    if path.is_dir():
        from ..host.artifact import load_artifact
        graph, manifest = load_artifact(path)
    elif path.suffix == ".onnx" and path.is_file():
        try:
            from .frontend import import_onnx
        except ImportError as e:
            raise UserError(f"cannot read {path}: the ONNX front end is not available ({e}). Compile the model "
                            "with `fpgaformer compile` and pass the BUILD directory instead.") from None
        graph, manifest = import_onnx(path, seq_len, context), None
    else:
        raise UserError(f"{path} is neither an .onnx file nor a BUILD directory (one with manifest.json). "
                        "Pass the exported model or the output directory of `fpgaformer compile`.")
    if context:
        graph.meta["context"] = int(context)
    if not any(l.op in ("Linear", "MatMul") for l in graph.layers):
        raise UserError(f"{path} has no Linear or MatMul layer: nothing to estimate.")
    return graph, manifest


# ------------------------------------------------------------------------------------------------- run
def run(args) -> int:
    validate.number(args.budget, "--budget", low=0, low_open=True, high=1, unit="the fraction of each resource "
                    "the design may use, e.g. 0.8")
    validate.positive(args.clock, "--clock", "MHz")
    validate.count(args.seq_len, "--seq-len", what="tokens")
    validate.count(args.context, "--context", what="tokens")
    board = load_board(args.board)
    graph, manifest = load_model(args.model, args.seq_len, args.context)
    stored = graph.meta.get("hardware", {}) if isinstance(graph.meta.get("hardware"), dict) else {}
    precision = args.precision or stored.get("precision") or preset_of(graph.meta.get("precision")) or DEFAULT_PRESET
    modes = MODES if args.mode == "auto" else (args.mode,)
    fit = choose_hardware(graph.copy(), board, precision, args.budget, args.clock, modes)
    design, source = fit.design, "fit"
    if has_settings(graph) and not args.refit:
        design, source = estimate_graph(graph, board, precision, args.clock, args.budget), "BUILD"
    bnds = design_bounds(graph, design) if design is not None else fit.model_bounds
    calibration = []
    if Path(args.model).is_dir() and design is not None:
        from .reports import compare, find_reports
        calibration = compare(find_reports(args.model), design, graph, manifest)
    report = make_report(graph, board, fit, design, source, bnds, calibration)
    if args.json:
        print(json.dumps(_clean(report), indent=1, default=_json_default))
    else:
        print_report(report)
    if args.plot is not None:
        from .roofline import plot
        plot(str(args.plot), design, bnds) if design is not None else _plot_bounds_only(args.plot, fit)
        if not args.json:
            print(f"roofline plot written to {args.plot}")
    return 0 if design is not None and design.fits else 1


def _plot_bounds_only(path: Path, fit: FitResult) -> None:
    from .roofline import plot
    attempt = next((m.attempt for m in fit.modes.values() if m.attempt is not None), None)
    if attempt is None:
        return
    plot(str(path), attempt, fit.model_bounds, title=f"{fit.board.title}: does not fit (estimate of the least "
                                                      "parallel setting)")


def _clean(value):
    """JSON has no infinity: map inf to None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _json_default(value):
    if isinstance(value, float) and math.isinf(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(type(value).__name__)


def _finite(x):
    return None if x is None or (isinstance(x, float) and math.isinf(x)) else x


def _design_json(d: DesignEstimate, b: Bounds | None) -> dict:
    out = {"mode": d.mode, "kernel": d.kernel, "fits": d.fits, "throughput": d.items_per_s, "unit": d.unit,
           "latency_s": d.latency_s, "compute_s": d.compute_s, "memory_s": d.memory_s,
           "offchip_bytes_per_item": d.offchip_bytes, "row_chunk": d.row_chunk, "resources": d.totals,
           "available": d.board.resources(), "utilisation": d.utilisation(), "over_budget": d.over_budget()}
    if b is not None:
        out.update(compute_bound=b.compute, memory_bound=_finite(b.memory), tighter_bound=b.tighter,
                   limited_by=b.limit, fraction_of_bound=d.items_per_s / b.tighter if b.tighter else None)
    return out


def make_report(graph: Graph, board: Board, fit: FitResult, design: DesignEstimate | None, source: str,
                bnds: Bounds, calibration: list[dict]) -> dict:
    from .roofline import bounds_of
    from .estimate import graph_works
    meta = graph.meta
    report = {
        "estimate": True, "note": CAVEAT, "model": meta.get("source"), "kind": fit.kind,
        "board": {"name": board.name, "title": board.title, "part": board.part, **board.resources(),
                  "clock_mhz": fit.clock_mhz, "memory": board.memory_type,
                  "bandwidth_gbs": board.bandwidth_gbs(fit.clock_mhz),
                  "bandwidth_efficiency": board.bandwidth_efficiency},
        "precision": fit.precision.name, "budget": fit.budget, "settings_from": source,
        "seq_len": meta.get("seq_len"), "context": meta.get("context"),
        "fits": design is not None and design.fits, "bounds": bnds.to_json(),
        "model_bounds": fit.model_bounds.to_json() if fit.model_bounds else None,
        "design": None, "layers": [], "modes": {}, "reason": fit.reason, "suggestions": fit.suggestions,
        "calibration": calibration,
    }
    if design is not None:
        report["design"] = _design_json(design, bnds)
        report["layers"] = [e.row() for e in design.stages if e.stage.work.kind in ("mac", "row")]
        if not design.fits:
            report["reason"] = "the stored settings exceed the budget: " + ", ".join(
                f"{k} {v:.0%}" for k, v in design.over_budget().items())
    works = graph_works(graph)
    for name, m in fit.modes.items():
        if m.design is not None:
            b = bounds_of(works, board, fit.precision, fit.clock_mhz, m.design.streamed_bytes)
            report["modes"][name] = _design_json(m.design, b)
        else:
            report["modes"][name] = {"fits": False, "reason": m.reason}
    return report


# ----------------------------------------------------------------------------------------------- printing
def _n(x, digits=0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:,.{digits}f}"


def print_report(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from .validate import shown  # names come from model and board files: no markup, no control characters

    con = Console()
    if not con.is_terminal:
        con = Console(width=200)  # pipes and logs: keep the wide tables whole
    b = {k: shown(v) if isinstance(v, str) else v for k, v in r["board"].items()}
    unit = "tokens/s" if r["kind"] == "decoder" else "sequences/s"
    item = "token (decode step)" if r["kind"] == "decoder" else "sequence"
    con.print(f"[bold]ESTIMATE[/bold] {shown(r.get('model') or '')} ({r['kind']}, seq_len {r.get('seq_len')}"
              + (f", context {r.get('context')}" if r["kind"] == "decoder" else "") + f") on {b['title']} "
              f"({b['part']}), {shown(r['precision'])}, {b['clock_mhz']:g} MHz, budget {r['budget']:.0%}; "
              f"settings from {r['settings_from']}")
    if r["layers"]:
        t = Table(title=f"per layer (estimates; cycles per {item}; xN = instances x uses)")
        for col in ("layer", "role", "op", "xN", "RF|lanes", "strategy", "weights", "DSP", "BRAM36", "URAM",
                    "LUT", "FF", "II", "interval", "latency", "MB off-chip"):
            t.add_column(col, justify="left" if col in ("layer", "role", "op", "strategy", "weights") else "right",
                         no_wrap=True)
        for l in r["layers"]:
            mac = "reuse_factor" in l
            name = l["layer"] if len(l["layer"]) <= 24 else "…" + l["layer"][-23:]
            t.add_row(shown(name), shown(l["role"] or ""), shown(l["op"]), f"{l['instances']}x{l['uses']}",
                      str(l["reuse_factor"] if mac else l.get("lanes", "")),
                      shown(l.get("strategy", "")) if mac else "", shown(l.get("weights", "")) if mac else "",
                      _n(l["dsp"]), _n(l["bram36"], 1), _n(l["uram"]),
                      _n(l["lut"]), _n(l["ff"]), _n(l["ii"]), _n(l["interval"]), _n(l["latency"]),
                      _n(l["offchip_bytes"] / 1e6, 2))
        con.print(t)
    d = r["design"]
    if d is not None:
        t = Table(title="resources (estimate)")
        for col in ("", "DSP", "BRAM36", "URAM", "LUT", "FF"):
            t.add_column(col, justify="right")
        keys = ("dsp", "bram36", "uram", "lut", "ff")
        t.add_row("used", *(_n(d["resources"][k], 1 if k == "bram36" else 0) for k in keys))
        t.add_row("available", *(_n(d["available"][k]) for k in keys))
        t.add_row("utilisation", *(f"{d['utilisation'][k]:.0%}" for k in keys))
        con.print(t)
    t = Table(title=f"throughput vs bounds ({unit}; estimates; bounds at {b['clock_mhz']:g} MHz, "
                    f"{_n(b['bandwidth_gbs'], 1)} GB/s peak)")
    for col in ("mode", "fits", "estimate", "compute bound", "memory bound", "fraction of tighter", "note"):
        t.add_column(col, justify="left" if col in ("mode", "note") else "right")
    for name, m in r["modes"].items():
        if m.get("fits"):
            t.add_row(name, "yes", _n(m["throughput"], 1), _n(m["compute_bound"], 1), _n(m["memory_bound"], 1),
                      f"{m['fraction_of_bound']:.0%}", f"{m['mode']} weights, {m['kernel']} kernel, "
                      f"limited by {m['limited_by']}")
        else:
            t.add_row(name, "[red]no[/red]", "-", "-", "-", "-", shown(m.get("reason", "")))
    con.print(t)
    if d is not None:
        con.print(f"chosen design: [bold]{_n(d['throughput'], 1)} {unit}[/bold] (estimate), latency "
                  f"{d['latency_s'] * 1e3:,.3f} ms per {item}; {d['mode']} weights; tighter bound "
                  f"{_n(d['tighter_bound'], 1)} {unit} ({d['limited_by']}): "
                  f"[bold]{d['fraction_of_bound']:.0%}[/bold] of it")
    if not r["fits"]:
        con.print(f"[red bold]does not fit[/red bold]: {shown(r['reason'])}")
        for s in r["suggestions"]:
            con.print(f"  would fit: {shown(s)}")
    if r["calibration"]:
        t = Table(title="calibration: estimate vs synthesis report, per kernel")
        for col in ("kernel", "layers", "DSP est/rep", "BRAM36 est/rep", "URAM est/rep", "LUT est/rep",
                    "FF est/rep", "latency est/rep"):
            t.add_column(col, justify="left" if col == "kernel" else "right")
        for row in r["calibration"]:
            est, rep = row["estimate"] or {}, row["report"]
            cells = [f"{_n(est.get(k))} / {_n(rep.get(k))}" for k in ("dsp", "bram36", "uram", "lut", "ff",
                                                                      "latency")]
            t.add_row(shown(row["kernel"]), str(row["layers"]), *cells)
        con.print(t)
    con.print(f"[dim]{CAVEAT}[/dim]")


if __name__ == "__main__":
    sys.exit(main())
