"""The ``fpgaformer`` command line: inspect | compile | estimate.

Errors meant for users (``UserError`` and the artifact errors) print one paragraph to stderr and exit 2;
``inspect`` exits 1 when the model has nodes no rule places (the table still lists them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..host.artifact import ArtifactError
from .errors import UserError


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="ONNX file (external data beside it is read too)")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length to fix dynamic dims to")
    p.add_argument("--context", type=int, default=None, help="maximum KV length for decoders")


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


def print_inspect(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"layers of {report['model']}")
    for column in ("name", "op", "role", "block", "shape", "params"):
        table.add_column(column, overflow="fold")
    for l in report["layers"]:
        table.add_row(l["name"], l["op"], l["role"] or "", "" if l["block"] is None else str(l["block"]),
                      "" if l["shape"] is None else "x".join(map(str, l["shape"])), f"{l['params']:,}")
    console.print(table)
    for b in report["blocks"]:
        console.print(f"block {b['index']}: {b['structure']} ({b['layers']} layers, {b['params']:,} params)")
    if "params" in report:
        meta = report["meta"]
        console.print(f"{meta.get('kind', '?')}: {len(report['blocks'])} blocks, d_model {meta.get('d_model')}, "
                      f"{meta.get('n_heads')} heads ({meta.get('n_kv_heads')} kv), parameters "
                      f"{report['params']:,}, {report['macs_per_token'] / 1e6:.2f} M MACs per token")
    if report["unsupported"]:
        console.print(f"[red]{len(report['unsupported'])} node(s) no rule places:[/red]")
        for n in report["unsupported"]:
            console.print(f"  {n['name']} ({n['op_type']})")
    else:
        console.print("every node placed")


def cmd_inspect(args) -> int:
    report = inspect_report(args.model, args.seq_len, args.context)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_inspect(report)
    return 1 if report["unsupported"] else 0


# ------------------------------------------------------------------------------------------------- compile
def compile_model(model: Path, out: Path, seq_len: int | None = None, context: int | None = None):
    """The compile pipeline: import -> write the artifact (atomically)."""
    from ..host.artifact import save_artifact
    from .frontend import import_onnx

    graph = import_onnx(model, seq_len, context)
    save_artifact(out, graph)
    return graph


def cmd_compile(args) -> int:
    graph = compile_model(args.model, args.output, args.seq_len, args.context)
    print(f"wrote {args.output}/manifest.json and weights.npz: {len(graph.layers)} layers, "
          f"{len(graph.blocks())} blocks, {graph.n_params():,} parameters")
    return 0


# ---------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpgaformer", description="Transformer ONNX exports on FPGAs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="list the layers, blocks and unsupported nodes of an ONNX model")
    _model_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("compile", help="compile an ONNX model into a BUILD directory")
    _model_args(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="BUILD directory to write")
    p.set_defaults(func=cmd_compile)

    try:
        from . import estimate_cli
    except ImportError:
        estimate_cli = None
    if estimate_cli is not None:
        estimate_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ArtifactError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
