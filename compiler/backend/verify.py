"""Emulator == C simulation, bit for bit, per kernel (the HLS check of DESIGN.md).

``verify_csim(graph, projects, n)`` draws ``n`` model inputs (``calibrate.synthetic_samples`` unless given),
runs the whole-graph emulator on each to get every kernel's inputs as they occur in the model (the residual
stream entering the block, the 0/1 attention mask), runs each kernel's partition through the emulator and its
compiled C simulation on the same inputs, and compares every output code. Compilation is hls4ml's g++ build
(`csim.compile_kernel`); simulation runs in a subprocess (`csim.run_kernel`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ...host.emulator import Emulator
from ...host.fixed import FixedType, to_float
from ...host.graph import Graph
from ..partition import partition
from . import csim
from .hls4ml import KernelProject


@dataclass
class KernelResult:
    kernel: str
    path: str
    samples: int = 0
    identical: bool = False
    outputs: list[dict] = field(default_factory=list)
    compile_s: float = 0.0
    csim_s: float = 0.0
    emulator_s: float = 0.0
    error: str | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


def kernel_feeds(graph: Graph, samples: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Every tensor of the whole-graph emulator (codes) for each sample."""
    emu = Emulator(graph)
    count = next(iter(samples.values())).shape[0]
    return [emu.run({k: v[i] for k, v in samples.items()}) for i in range(count)]


def values_of(codes: np.ndarray, fixed: dict | None) -> np.ndarray:
    return to_float(codes, FixedType.from_dict(fixed)) if fixed else np.asarray(codes, np.float64)


def verify_kernel(project: KernelProject, part_graph: Graph, envs: list[dict[str, np.ndarray]],
                  progress=None) -> KernelResult:
    result = KernelResult(project.name, str(project.path), len(envs))
    try:
        if progress:
            progress(f"compiling {project.name} with g++ (hls4ml build_lib.sh) ...")
        compiled = csim.compile_kernel(project)
        result.compile_s = compiled.seconds
        if progress:
            progress(f"  {project.name}: compiled in {compiled.seconds:.1f} s" if compiled.seconds else
                     f"  {project.name}: library up to date")
        start = time.perf_counter()
        emu = Emulator(part_graph)
        expected = [emu.run({n: env[n] for n in part_graph.inputs}) for env in envs]
        result.emulator_s = time.perf_counter() - start
        inputs = {p.tensor: np.stack([values_of(env[p.tensor], p.fixed) for env in envs]) for p in project.inputs}
        if progress:
            progress(f"simulating {project.name} on {len(envs)} inputs ...")
        start = time.perf_counter()
        got = csim.run_kernel(project, compiled.lib, inputs)
        result.csim_s = time.perf_counter() - start
        identical = True
        for p in project.outputs:
            codes = csim.to_codes(got[p.tensor], p.fixed)
            want = np.stack([e[p.tensor] for e in expected])
            cmp = csim.compare_codes(p.tensor, codes, want)
            identical &= cmp.identical
            result.outputs.append({"tensor": p.tensor, "elements": cmp.elements, "mismatches": cmp.mismatches,
                                   "max_code_diff": cmp.max_code_diff})
        result.identical = identical
    except (csim.CompileError, csim.SimulationError) as e:
        result.error = str(e)
    return result


def verify_csim(graph: Graph, projects: list[KernelProject], samples: dict[str, np.ndarray],
                progress=None) -> list[KernelResult]:
    envs = kernel_feeds(graph, samples)
    parts = {p.name: p for p in partition(graph)}
    results = []
    for project in projects:
        part = parts.get(project.name)
        if part is None:
            results.append(KernelResult(project.name, str(project.path), error=f"no partition {project.name!r} "
                                        "in the graph: the projects are from another compile"))
            continue
        results.append(verify_kernel(project, part.graph, envs, progress))
    return results
