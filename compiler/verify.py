"""The quantization check: emulator (bit-accurate fixed point) against onnxruntime float, layer by layer.

For every IR tensor that also exists in the ONNX model (same name), over all input samples:
  max abs error, RMS error, cosine similarity of the flattened tensors, and overflow counts (values the
  kernels saturated or wrapped) of the layer that makes it.
Verdict: every graph output must have a relative RMS error (RMS error / RMS of the reference) within the
tolerance. The default tolerance is derived from the activation width A: 2**-(A/2) (a16: 0.0039, a8: 0.0625),
i.e. half of the bits survive a whole network of roundings; ``--tolerance`` overrides it.
Non-finite values fail the check, each with a sentence in ``problems``: a NaN/inf in the onnxruntime reference
of a graph output (there is nothing to compare the design with), a NaN/inf anywhere in the emulator (fixed point
has none: a bug), or no graph output known to onnxruntime. NaN/inf inside the reference graph (additive -inf
masks) are counted per tensor and left out of its sums.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..host.artifact import load_artifact
from ..host.emulator import Emulator
from ..host.graph import Graph
from .errors import UserError

SOURCE_MODEL = "source.onnx"


@dataclass
class LayerError:
    tensor: str
    layer: str
    op: str
    max_abs: float
    rms: float
    ref_rms: float
    cosine: float
    overflows: int
    ref_nonfinite: int = 0  # NaN/inf values of the onnxruntime reference over all samples (left out of the sums)
    emu_nonfinite: int = 0  # NaN/inf values of the emulator over all samples (left out of the sums)

    @property
    def rel_rms(self) -> float:
        return self.rms / self.ref_rms if self.ref_rms > 0 else self.rms


def default_tolerance(graph: Graph) -> float:
    act_bits = graph.meta.get("precision", {}).get("act_bits", 16)
    return 2.0 ** -(act_bits / 2)


def compare_emulator(graph: Graph, model, samples: dict[str, np.ndarray]) -> list[LayerError]:
    """Per-tensor errors of the emulator against onnxruntime over all samples (first axis of each array)."""
    from .compare import OrtProbe

    names = [l.output for l in graph.layers if graph.tensors[l.output].dtype == "float32"]
    probe = OrtProbe(model, names)
    known = set(probe.names)
    layer_of = {l.output: l for l in graph.layers}
    sums = {n: np.zeros(4) for n in known}  # sq err, sq ref, dot, sq emu
    worst = {n: 0.0 for n in known}
    nonfinite = {n: [0, 0] for n in known}  # reference, emulator
    emulator = Emulator(graph)
    count = next(iter(samples.values())).shape[0]
    for i in range(count):
        feeds = {k: v[i] for k, v in samples.items()}
        ours = emulator.run_float(feeds)
        theirs = probe.run(feeds)
        for name in known:
            a = np.asarray(ours[name], np.float64).ravel()
            b = np.asarray(theirs[name], np.float64).ravel()
            finite_a, finite_b = np.isfinite(a), np.isfinite(b)
            nonfinite[name][0] += b.size - int(np.count_nonzero(finite_b))
            nonfinite[name][1] += a.size - int(np.count_nonzero(finite_a))
            a, b = a[finite_a & finite_b], b[finite_a & finite_b]
            d = a - b
            sums[name] += [d @ d, b @ b, a @ b, a @ a]
            worst[name] = max(worst[name], float(np.max(np.abs(d), initial=0.0)))
    rows = []
    for name in names:
        if name not in known:
            continue
        sq_err, sq_ref, dot, sq_emu = sums[name]
        n = count * int(np.prod(graph.tensors[name].shape))
        layer = layer_of[name]
        cosine = dot / np.sqrt(sq_ref * sq_emu) if sq_ref > 0 and sq_emu > 0 else float(sq_ref == sq_emu)
        rows.append(LayerError(name, layer.name, layer.op, worst[name], float(np.sqrt(sq_err / n)),
                               float(np.sqrt(sq_ref / n)), float(cosine), emulator.overflows.get(layer.name, 0),
                               *nonfinite[name]))
    return rows


DAMAGED = ("{source} is damaged ({why}), so the design cannot be checked against it. Recompile the model into a "
           "new BUILD (`fpgaformer compile MODEL.onnx -o NEW_BUILD`).")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else 'unreadable'}"


def load_source(source: Path):
    """The BUILD's copy of the ONNX model: a file protobuf cannot parse is a UserError (recompile), not a
    traceback. (What parses but onnxruntime refuses is caught where the session is made, `verify_build`.)"""
    import onnx
    from google.protobuf.message import Error as ProtobufError

    try:
        model = onnx.load(str(source))
    except (ProtobufError, OSError, ValueError) as e:
        raise UserError(DAMAGED.format(source=source, why=_first_line(e))) from None
    return model


def _ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's exceptions for a model it cannot load or run (a damaged source.onnx)."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:
        return ()
    return tuple(getattr(state, name) for name in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf",
                                                   "NoSuchFile", "NotImplemented", "RuntimeException")
                 if hasattr(state, name))


def verify_build(build: Path, inputs: Path | None = None, tolerance: float | None = None) -> dict:
    """Run the check on a BUILD directory; returns a JSON-able report with ``ok``."""
    from .passes.calibrate import load_samples, synthetic_samples

    graph, manifest = load_artifact(build)
    if not any(t.fixed for t in graph.tensors.values()):
        raise UserError(f"{build} holds a float graph; compile with --precision to verify the fixed-point design.")
    source = Path(build) / SOURCE_MODEL
    if not source.is_file():
        raise UserError(f"{source} is missing: the build cannot be verified against onnxruntime. Recompile.")
    model = load_source(source)
    samples = load_samples(inputs, graph) if inputs else synthetic_samples(graph, n=8, seed=1)
    tolerance = default_tolerance(graph) if tolerance is None else tolerance
    try:
        rows = compare_emulator(graph, model, samples)
    except _ort_errors() as e:  # onnxruntime cannot build a session of (or run) the BUILD's source model
        raise UserError(DAMAGED.format(source=source, why=f"onnxruntime: {_first_line(e)}")) from None
    outputs = set(graph.outputs)
    verdicts = [r.rel_rms <= tolerance for r in rows if r.tensor in outputs]
    problems = nonfinite_problems(rows, outputs, next(iter(samples.values())).shape[0])
    if not verdicts:
        problems.append("no graph output of the design exists in the source model under the same name, so no "
                        "output was compared; recompile the BUILD from its ONNX model.")
    return {"build": str(build), "precision": graph.meta.get("preset"), "samples": int(
        next(iter(samples.values())).shape[0]), "inputs": str(inputs) if inputs else "synthetic",
        "tolerance_rel_rms": tolerance, "ok": bool(verdicts) and all(verdicts) and not problems,
        "problems": problems,
        "layers": [{**asdict(r), "rel_rms": r.rel_rms, "output": r.tensor in outputs} for r in rows]}


def nonfinite_problems(rows: list[LayerError], outputs: set[str], samples: int) -> list[str]:
    """One sentence per tensor whose NaN/inf values make the comparison fail (module docstring)."""
    problems = []
    for r in rows:
        if r.tensor in outputs and r.ref_nonfinite:
            problems.append(f"the onnxruntime reference of output {r.tensor!r} holds {r.ref_nonfinite} NaN/inf "
                            f"value(s) over {samples} sample(s), so the design cannot be checked against it: the "
                            "float model itself overflows or divides by zero on these inputs. Run the source model "
                            "with onnxruntime on them, and verify with inputs it computes finite outputs for "
                            "(--inputs).")
        if r.emu_nonfinite:
            what = "output" if r.tensor in outputs else "tensor"
            problems.append(f"the emulator's {what} {r.tensor!r} (layer {r.layer!r}) holds {r.emu_nonfinite} "
                            "NaN/inf value(s); fixed point has none, so this is a bug of fpgaformer: please report "
                            "it with the BUILD.")
    return problems


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from .validate import shown  # layer names come from the model file: no markup, no control characters

    console = Console()
    table = Table(title=f"emulator ({shown(report['precision'])}) vs onnxruntime float, {report['samples']} samples")
    for column in ("layer", "op", "max abs err", "rms err", "rel rms", "cosine", "overflows"):
        table.add_column(column, overflow="fold")
    for r in report["layers"]:
        mark = " (output)" if r["output"] else ""
        table.add_row(shown(r["layer"]) + mark, shown(r["op"]), f"{r['max_abs']:.3g}", f"{r['rms']:.3g}",
                      f"{r['rel_rms']:.3g}", f"{r['cosine']:.6f}", str(r["overflows"]) if r["overflows"] else "")
    console.print(table)
    for problem in report.get("problems", []):
        console.print(f"[red]FAILED[/]: {shown(problem)}")
    if report.get("problems"):
        console.print("[red]not verified[/] (NaN/inf values; see above)")
        return
    verdict = "[green]within" if report["ok"] else "[red]OUTSIDE"
    console.print(f"{verdict} tolerance[/] (relative RMS error of the outputs <= {report['tolerance_rel_rms']:.3g})")


def plot_report(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["layers"]
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.08), 4))
    ax.semilogy([max(r["rel_rms"], 1e-12) for r in rows], marker=".", linewidth=0.8, label="relative RMS error")
    ax.semilogy([max(r["max_abs"], 1e-12) for r in rows], marker=".", linewidth=0.8, label="max abs error")
    ax.axhline(report["tolerance_rel_rms"], color="red", linestyle="--", label="tolerance (outputs)")
    ax.set_xlabel("layer (graph order)")
    ax.set_title(f"emulator {report['precision']} vs onnxruntime float")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
