"""Read Vitis HLS / Vivado HLS synthesis reports (``csynth.xml``) and set them beside the estimate.

Vitis HLS writes ``<project>/<solution>/syn/report/csynth.xml`` (and ``<top>_csynth.xml``): a ``<profile>``
with ``UserAssignments`` (Part, TopModelName, TargetClockPeriod), ``PerformanceEstimates``
(``SummaryOfTimingAnalysis/EstimatedClockPeriod``; ``SummaryOfOverallLatency`` with Best-/Worst-caseLatency
and Interval-min/-max in cycles, or "undef") and ``AreaEstimates/Resources`` (BRAM_18K, DSP — ``DSP48E`` in
Vivado HLS —, FF, LUT, URAM) with ``AvailableResources``. BRAM_18K counts 18 kbit halves: BRAM36 = BRAM_18K/2.

Kernels are matched to layers by, in order: ``manifest["kernels"]`` ({kernel: [layer names]} or a list of
{"name", "layers"}), a top name containing ``block<N>`` / ``block_<N>`` (the layers of block N), a top name
equal to a layer name, or — for a single report — the whole design.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from ..host.graph import Graph
from .errors import UserError
from .estimate import DesignEstimate

RESOURCE_TAGS = {"dsp": ("DSP", "DSP48E"), "bram18": ("BRAM_18K",), "uram": ("URAM",), "lut": ("LUT",),
                 "ff": ("FF",)}


@dataclass
class SynthReport:
    """The figures of one csynth.xml (cycles, ns, resource counts; None where the report says "undef")."""

    path: str
    top: str
    part: str = ""
    version: str = ""
    target_clock_ns: float | None = None
    estimated_clock_ns: float | None = None
    latency_best: int | None = None
    latency_worst: int | None = None
    interval_min: int | None = None
    interval_max: int | None = None
    resources: dict[str, float] = field(default_factory=dict)   # dsp, bram36, uram, lut, ff
    available: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _text(root: ET.Element, path: str) -> str | None:
    node = root.find(path)
    return node.text.strip() if node is not None and node.text else None


def _number(text: str | None, kind=float):
    if text is None:
        return None
    try:
        return kind(float(text)) if kind is int else kind(text)
    except ValueError:
        return None  # "undef", "-" ...


def _resources(node: ET.Element | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if node is None:
        return out
    for key, tags in RESOURCE_TAGS.items():
        for tag in tags:
            value = _number(_text(node, tag))
            if value is not None:
                out[key] = value
                break
    if "bram18" in out:
        out["bram36"] = out.pop("bram18") / 2
    return out


def read_csynth(path: str | Path) -> SynthReport:
    """Parse one csynth.xml; a file that is not one raises UserError naming what is missing."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise UserError(f"{path} is not a readable XML synthesis report ({e}). Re-run C synthesis or delete "
                        "the file.") from None
    if root.tag != "profile" or root.find("AreaEstimates") is None:
        raise UserError(f"{path} is not a Vitis/Vivado HLS csynth.xml report (no <profile>/<AreaEstimates>).")
    perf = "PerformanceEstimates/SummaryOfOverallLatency/"
    return SynthReport(
        path=str(path), top=_text(root, "UserAssignments/TopModelName") or path.stem.replace("_csynth", ""),
        part=_text(root, "UserAssignments/Part") or "", version=_text(root, "ReportVersion/Version") or "",
        target_clock_ns=_number(_text(root, "UserAssignments/TargetClockPeriod")),
        estimated_clock_ns=_number(_text(root, "PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod")),
        latency_best=_number(_text(root, perf + "Best-caseLatency"), int),
        latency_worst=_number(_text(root, perf + "Worst-caseLatency"), int),
        interval_min=_number(_text(root, perf + "Interval-min"), int),
        interval_max=_number(_text(root, perf + "Interval-max"), int),
        resources=_resources(root.find("AreaEstimates/Resources")),
        available=_resources(root.find("AreaEstimates/AvailableResources")))


def find_reports(build: str | Path) -> list[SynthReport]:
    """Every top-level csynth report under BUILD (``csynth.xml`` preferred over ``<top>_csynth.xml`` in the
    same folder)."""
    build = Path(build)
    if not build.is_dir():
        return []
    found: dict[Path, Path] = {}
    for p in sorted(build.rglob("*csynth.xml")):
        if p.name == "csynth.xml" or p.parent not in found:
            found[p.parent] = p
    return [read_csynth(p) for p in found.values()]


# --------------------------------------------------------------------------------------------- matching
def _kernel_layers(report: SynthReport, graph: Graph, manifest: dict | None, n_reports: int) -> list[str]:
    kernels = (manifest or {}).get("kernels")
    if isinstance(kernels, dict) and report.top in kernels:
        return list(kernels[report.top])
    if isinstance(kernels, list):
        for k in kernels:
            if isinstance(k, dict) and k.get("name") == report.top:
                return list(k.get("layers", []))
    m = re.search(r"block_?(\d+)", report.top, re.IGNORECASE)
    if m:
        return [l.name for l in graph.layers if l.block == int(m.group(1))]
    safe = {re.sub(r"\W", "_", l.name): l.name for l in graph.layers}
    if report.top in safe:
        return [safe[report.top]]
    if n_reports == 1:
        return [l.name for l in graph.layers]
    return []


def kernel_estimate(design: DesignEstimate, layers: list[str]) -> dict[str, float]:
    """Estimated resources and cycles of the hardware that runs ``layers``: each stage contributes the share
    of its instances those layers use (a shared kernel's stage counts whole once any member is in)."""
    wanted = set(layers)
    out = {"dsp": 0.0, "bram36": 0.0, "uram": 0.0, "lut": 0.0, "ff": 0.0, "latency": 0, "interval": 0}
    for e in design.stages:
        hit = sum(1 for m in e.stage.members if m in wanted)
        if not hit:
            continue
        share = 1.0 if e.stage.instances == 1 else hit / e.stage.instances
        for r in ("dsp", "bram36", "uram", "lut", "ff"):
            out[r] += getattr(e, r) * share
        out["latency"] += e.cost.latency * hit
        out["interval"] = max(out["interval"], e.cost.interval)
    return out


def compare(reports: list[SynthReport], design: DesignEstimate, graph: Graph,
            manifest: dict | None = None) -> list[dict]:
    """One row per report: estimate and report side by side (estimate / report ratio where both exist)."""
    rows = []
    for rep in reports:
        layers = _kernel_layers(rep, graph, manifest, len(reports))
        est = kernel_estimate(design, layers) if layers else None
        row = {"kernel": rep.top, "path": rep.path, "layers": len(layers), "report": {
            **rep.resources, "latency": rep.latency_worst, "interval": rep.interval_max,
            "clock_ns": rep.estimated_clock_ns}, "estimate": est}
        if est:
            row["ratio"] = {k: est[k] / v for k, v in row["report"].items()
                            if k in est and isinstance(v, (int, float)) and v}
        rows.append(row)
    return rows
