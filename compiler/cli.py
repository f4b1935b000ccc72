"""The ``fpgaformer`` command line: inspect | compile | verify | estimate (| build | run | generate).

Errors meant for users (``UserError`` and the artifact errors) print one paragraph to stderr and exit 2;
``inspect`` exits 1 when the model has nodes no rule places (the table still lists them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..host.artifact import ArtifactError
from . import validate
from .errors import UserError


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="ONNX file (external data beside it is read too)")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length to fix dynamic dims to")
    p.add_argument("--context", type=int, default=None,
                   help="maximum KV length for decoders that carry past_key_values (default: --seq-len)")


# ------------------------------------------------------------------------------------------------- inspect
def inspect_report(path: Path, seq_len: int | None, context: int | None) -> dict:
    from .frontend import analyse
    from .summary import block_summary, macs_per_token

    graph, layers, unplaced = analyse(path, seq_len, context)

    def shape_of(layer):
        if graph is not None:
            return list(graph.tensors[layer.output].shape)
        return None

    report = {
        "model": str(path),
        "layers": [{"name": l.name, "op": l.op, "role": l.role, "block": l.block, "shape": shape_of(l),
                    "params": l.n_params()} for l in layers],
        "blocks": block_summary(graph) if graph is not None else [],
        "unsupported": [{"name": n.name, "op_type": n.op_type, "domain": n.domain} for n in unplaced],
    }
    if graph is not None:
        report["meta"] = {k: v for k, v in graph.meta.items() if k != "onnx_outputs"}
        report["params"] = graph.n_params()
        report["macs_per_token"] = macs_per_token(graph)
    return report


def print_inspect(report: dict, layers: bool = False) -> None:
    """The blocks summary; with ``layers`` also the table of every recognised layer."""
    from rich.console import Console
    from rich.table import Table

    from .validate import shown  # names and paths come from the model file: no markup, no control characters

    console = Console()
    if layers:
        table = Table(title=f"layers of {shown(report['model'])}")
        for column in ("name", "op", "role", "block", "shape", "params"):
            table.add_column(column, overflow="fold")
        for l in report["layers"]:
            table.add_row(shown(l["name"]), shown(l["op"]), shown(l["role"] or ""),
                          "" if l["block"] is None else str(l["block"]),
                          "" if l["shape"] is None else "x".join(map(str, l["shape"])), f"{l['params']:,}")
        console.print(table)
    else:
        outside = [l for l in report["layers"] if l["block"] is None]
        console.print(f"{shown(report['model'])}: {len(report['layers'])} layers recognised (`--layers` lists "
                      f"them); outside the blocks: " +
                      (", ".join(f"{shown(l['op'])} ({shown(l['role'] or '-')})" for l in outside) or "none"))
    for b in report["blocks"]:
        console.print(f"block {b['index']}: {shown(b['structure'])} ({b['layers']} layers, {b['params']:,} params)")
    if "params" in report:
        meta = report["meta"]
        console.print(f"{shown(meta.get('kind', '?'))}: {len(report['blocks'])} blocks, d_model {meta.get('d_model')}, "
                      f"{meta.get('n_heads')} heads ({meta.get('n_kv_heads')} kv), parameters "
                      f"{report['params']:,}, {report['macs_per_token'] / 1e6:.2f} M MACs per token")
        folded = meta.get("folded_kv_cache")
        if folded:
            console.print(f"the export carries a KV cache ({len(folded['inputs'])} past inputs, "
                          f"{len(folded['outputs'])} present outputs): compiled at past length 0 over the whole "
                          "context; the device keeps the cache and runs one token step at a time")
    if report["unsupported"]:
        console.print(f"[red]{len(report['unsupported'])} node(s) no rule places:[/red]")
        for n in report["unsupported"]:
            console.print(f"  {shown(n['name'])} ({shown(n['op_type'])})")
    else:
        console.print("every node placed")


def _check_model_args(args) -> None:
    validate.count(args.seq_len, "--seq-len", what="tokens")
    validate.count(args.context, "--context", what="tokens")


def cmd_inspect(args) -> int:
    _check_model_args(args)
    report = inspect_report(args.model, args.seq_len, args.context)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_inspect(report, layers=args.layers)
    return 1 if report["unsupported"] else 0


# ------------------------------------------------------------------------------------------------- compile
def compile_model(model: Path, out: Path, seq_len: int | None = None, context: int | None = None,
                  precision: str | None = None, calib: Path | None = None, board: str | None = None,
                  overrides: Path | None = None, tolerance: float | None = None, hls: bool = True, log=print):
    """The compile pipeline, one straight line:

    import (ONNX -> float IR) -> quantize (calibrate, types, kernel settings) -> fit to a board (reuse
    factors, strategies, weight placement) -> write BUILD atomically (manifest, weights, the static ONNX model
    for verification, the tokenizer found beside the model) with one hls4ml project per kernel in BUILD/hls.
    """
    import onnx

    from ..host.artifact import check_output, staged_directory, write_graph
    from .frontend import import_static
    from .passes.calibrate import load_samples
    from .precision import SEARCHED, preset_bits
    from .quantize import quantize
    from .verify import SOURCE_MODEL

    inputs = _input_files(model, calib, overrides)
    check_output(out, inputs)  # fail before the long work (staged_directory checks again before replacing)
    if precision is not None:
        preset_bits(precision)  # fail early on a bad name
    board_spec = None
    if board is not None:
        from .boards import load_board

        board_spec = load_board(board)
    graph, static = import_static(model, seq_len, context)
    pins = _read_overrides(overrides)
    if pins:
        from .plan import check_overrides

        check_overrides(graph, pins)
    if precision is not None:
        samples = load_samples(calib, graph) if calib else None
        if samples is None:
            log("no --calib file given: calibrating on the synthetic set (random token ids, random padding); "
                "give real inputs with --calib FILE.npz for accurate ranges")
        if precision == SEARCHED:
            from .search import search_precision

            graph = search_precision(graph, static, samples, tolerance, log=log)
        else:
            graph = quantize(graph, precision, samples, static, overrides=pins)
    if board_spec is not None:
        from .fit import choose_hardware

        result = choose_hardware(graph, board_spec,
                                 precision=None if precision in (None, SEARCHED) else precision)
        log(f"fit to {board}: " + (result.reason or "fits"))
    elif precision is not None:
        from .plan import default_plan

        default_plan(graph)
    if precision is not None:
        from .plan import pin_hardware

        pinned = pin_hardware(graph, pins)
        if pinned:
            log(f"hardware pinned by --overrides: {', '.join(pinned)}")
        hw = graph.meta.get("hardware") or {}
        log(f"hardware plan: {hw.get('mode', 'on_chip')} weights, {hw.get('kernel', 'block')} kernels "
            f"({hw.get('reason') or 'fit to ' + str(hw.get('board'))}); see plan.json")
    with staged_directory(out, inputs) as tmp:
        if precision is not None and hls:
            from .backend.hls4ml import write_projects

            write_projects(graph, tmp, progress=log)  # BUILD/hls/<kernel>/ (+ graph files it indexes)
        write_graph(tmp, graph)
        if precision is not None:
            from .plan import PLAN_FILE, plan_of

            (tmp / PLAN_FILE).write_text(json.dumps(plan_of(graph), indent=1))
        onnx.save(static, str(tmp / SOURCE_MODEL))
        _copy_tokenizer(Path(model).parent / "tokenizer.json", tmp / "tokenizer.json", log)
    return graph


def _input_files(model: Path, calib: Path | None, overrides: Path | None) -> list[Path]:
    """Every file the compile reads: the model, its external data files, --calib and --overrides (a BUILD may
    not be written over a folder that holds one of them)."""
    files = [Path(model)] + [Path(p) for p in (calib, overrides) if p is not None]
    try:
        import onnx
        from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

        proto = onnx.load(str(model), load_external_data=False)
        for tensor in _get_all_tensors(proto):
            if uses_external_data(tensor):
                files.append(Path(model).parent / ExternalDataInfo(tensor).location)
    except Exception:  # an unreadable model is reported by the front end, with its own message
        pass
    return files


def _copy_tokenizer(source: Path, dest: Path, log) -> None:
    """Copy tokenizer.json found beside the model, only when it is a regular file (never through a link,
    which could read a file outside the inputs)."""
    import os
    import stat

    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return
    except OSError:
        if os.path.islink(source):
            log(f"note: {source} is a symbolic link; it was not copied into the BUILD (fpgaformer copies only "
                "a regular tokenizer.json beside the model). Copy the file itself there, or pass --tokenizer to "
                "`fpgaformer run`.")
        else:
            log(f"note: {source} cannot be read; it was not copied into the BUILD.")
        return
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            log(f"note: {source} is not a regular file; it was not copied into the BUILD.")
            return
        dest.write_bytes(f.read())


def _read_overrides(path: Path | None) -> dict | None:
    """Per-layer overrides: JSON {layer name: {"weight_bits": b, "act_bits": b, "reuse_factor": r,
    "strategy": "latency"|"resource", "weights": "on_chip"|"streamed"}} (any subset of the keys)."""
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the overrides file {path} ({e}); give JSON like "
                        '{"layer name": {"weight_bits": 16, "act_bits": 16}}.') from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"{path}: overrides must map layer names to objects with weight_bits / act_bits / "
                        "reuse_factor / strategy / weights.")
    return data


def cmd_compile(args) -> int:
    _check_model_args(args)
    validate.positive(args.tolerance, "--tolerance", "the relative RMS error allowed on the outputs, e.g. 0.01")
    if args.precision == "float":
        args.precision = None
    elif args.precision is None:
        from .precision import DEFAULT_PRESET

        args.precision = DEFAULT_PRESET
    graph = compile_model(args.model, args.output, args.seq_len, args.context, args.precision, args.calib,
                          args.board, args.overrides, args.tolerance)
    kind = f"fixed point ({graph.meta.get('preset')})" if args.precision else "float"
    print(f"wrote {args.output}: {len(graph.layers)} layers, {len(graph.blocks())} blocks, "
          f"{graph.n_params():,} parameters, {kind}")
    return 0


# -------------------------------------------------------------------------------------------------- verify
def cmd_verify(args) -> int:
    from .verify import plot_report, print_report, verify_build

    validate.positive(args.tolerance, "--tolerance", "the relative RMS error allowed on the outputs, e.g. 0.01")
    validate.count(args.count, "--count", what="inputs per kernel")
    if getattr(args, "csim", False):  # C simulation == emulator, bit for bit (compiler/verify_cli.py)
        from . import verify_cli

        args.samples = args.inputs
        return verify_cli.run(args)
    report = verify_build(args.build, args.inputs, args.tolerance)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    if args.plot:
        plot_report(report, args.plot)
    return 0 if report["ok"] else 1


def add_verify_parser(sub) -> None:
    p = sub.add_parser("verify", help="check the fixed-point design against onnxruntime (and C simulation)")
    p.add_argument("build", type=Path)
    p.add_argument("--inputs", type=Path, default=None, help=".npz of inputs (default: a synthetic set)")
    p.add_argument("--tolerance", type=float, default=None, help="relative RMS error allowed on outputs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", type=Path, default=None, help="PNG of the error per layer")
    p.add_argument("--csim", action="store_true", help="compile every HLS kernel with g++ and compare its C "
                   "simulation with the emulator, bit for bit")
    p.add_argument("-n", "--count", type=int, default=8, help="--csim: inputs per kernel (default 8)")
    p.add_argument("--kernel", action="append", default=None, help="--csim: only this kernel (repeatable)")
    p.set_defaults(func=cmd_verify)


# ---------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpgaformer", description="Transformer ONNX exports on FPGAs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="list the layers, blocks and unsupported nodes of an ONNX model")
    _model_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--layers", action="store_true", help="also print the table of every recognised layer")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("compile", help="compile an ONNX model into a BUILD directory")
    _model_args(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="BUILD directory to write")
    p.add_argument("--precision", default=None,
                   help="w16a16 | w8a16 | w8a8 | auto (default w8a16; 'float' keeps the float graph)")
    p.add_argument("--calib", type=Path, default=None, help=".npz of calibration inputs keyed by input name")
    p.add_argument("--overrides", type=Path, default=None, help="JSON of per-layer overrides: weight_bits, act_bits, reuse_factor, strategy "
                        "(latency|resource), weights (on_chip|streamed)")
    p.add_argument("--tolerance", type=float, default=None, help="accuracy target of --precision auto")
    p.add_argument("--board", default=None, help="fit the kernels to this board (see boards/)")
    p.set_defaults(func=cmd_compile)

    add_verify_parser(sub)

    try:
        from . import estimate_cli
    except ImportError:
        estimate_cli = None
    if estimate_cli is not None:
        estimate_cli.add_parser(sub)
    from . import build_cli, run_cli  # the overlay (build) and the runtime (run, generate)

    build_cli.add_parser(sub)
    run_cli.add_parser(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions whose message is for the user (exit 2, no traceback): UserError, the artifact errors, and the
    backend's BackendError (a design it cannot lower: names the layer and the reason). The backend module is
    looked up only if it was imported (it pulls in hls4ml), since only then can its error have been raised."""
    errors: list[type[BaseException]] = [UserError, ArtifactError]
    backend = sys.modules.get(f"{__package__}.backend.hls4ml")
    if backend is not None:
        errors.append(backend.BackendError)
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # compile writes its BUILD atomically (nothing appears until it is complete); other commands name
        # their own partial outputs where they have any (verify --csim)
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
