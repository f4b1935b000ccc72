"""C simulation of kernel projects and the bit-for-bit comparison with the emulator.

* `compile_kernel(project)`: runs the project's ``build_lib.sh`` (what hls4ml's ``ModelGraph.compile`` runs:
  g++ -O3 of the kernel and hls4ml's C-simulation bridge into a shared library) with a timeout; a failure
  becomes a `CompileError` naming the kernel, the first g++ error lines and the project path.
* `run_kernel(project, inputs)`: runs the library in a separate process (``csim_worker``), so an abort in C++
  cannot take the caller down, with a timeout.
* `to_codes` / `compare_codes`: C-simulation outputs (doubles, exact for types up to 53 bits) -> integer
  codes of the output type, and the bit-exact comparison with the emulator's codes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...host.fixed import FixedType
from .hls4ml import KernelProject

COMPILE_TIMEOUT_S = 1200
RUN_TIMEOUT_S = 1800


class CompileError(Exception):
    def __init__(self, kernel: str, path: Path, log: str, reason: str = "g++ failed"):
        self.kernel, self.path, self.log = kernel, path, log
        lines = error_lines(log)
        super().__init__(f"kernel {kernel!r} does not compile ({reason}); project {path}:\n" + "\n".join(lines))


class SimulationError(Exception):
    pass


def error_lines(log: str, limit: int = 6) -> list[str]:
    """The first g++ error lines of a build log (or its last lines if none look like errors)."""
    lines = log.splitlines()
    errors = [l for l in lines if re.search(r"\berror\b|fatal|Error", l)]
    return (errors or lines[-limit:])[:limit]


@dataclass
class Compiled:
    kernel: str
    lib: Path
    seconds: float


def _run_group(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a process group of its own: on a timeout, Ctrl-C or any other exception the whole
    group (bash, g++ and cc1plus under it, or the C-simulation worker) is killed and reaped, so nothing keeps
    running after fpgaformer returns. Raises subprocess.TimeoutExpired (with the output so far) on a timeout."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException as e:  # TimeoutExpired, KeyboardInterrupt, SystemExit...
        out = _kill_group(proc)
        if isinstance(e, subprocess.TimeoutExpired):
            raise subprocess.TimeoutExpired(argv, timeout, output=out or e.output) from None
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, None)


def _kill_group(proc: subprocess.Popen) -> str:
    """Kill the child's process group and reap the child; returns what it printed (if it could be read)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group's id is the child's pid (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        return proc.communicate(timeout=10)[0] or ""
    except BaseException:
        proc.kill()
        proc.wait()
        return ""


def _library(project: KernelProject) -> Path | None:
    libs = sorted((project.path / "firmware").glob(f"{project.project}-*.so"), key=lambda p: p.stat().st_mtime)
    return libs[-1] if libs else None


def compile_kernel(project: KernelProject, timeout: float = COMPILE_TIMEOUT_S, reuse: bool = True) -> Compiled:
    """g++-compile one kernel project (hls4ml's build_lib.sh); reuses an up-to-date library when ``reuse``."""
    lib = _library(project)
    sources = [p for p in (project.path / "firmware").rglob("*") if p.suffix in (".h", ".cpp", ".txt")]
    if reuse and lib is not None and all(s.stat().st_mtime <= lib.stat().st_mtime for s in sources):
        return Compiled(project.name, lib, 0.0)
    folder = Path(os.path.abspath(project.path))  # absolute: the script is run from inside its own folder
    script = folder / "build_lib.sh"
    if not script.is_file():
        raise CompileError(project.name, project.path, "", "build_lib.sh is missing: rewrite the project")
    start = time.perf_counter()
    try:
        done = _run_group(["bash", str(script)], timeout, cwd=folder)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise CompileError(project.name, project.path, out, f"g++ still running after {timeout:.0f} s") from None
    seconds = time.perf_counter() - start
    lib = _library(project)
    if done.returncode != 0 or lib is None:
        raise CompileError(project.name, project.path, done.stdout, f"g++ exit status {done.returncode}")
    return Compiled(project.name, lib, seconds)


def run_kernel(project: KernelProject, lib: Path, inputs: dict[str, np.ndarray],
               timeout: float = RUN_TIMEOUT_S, timings: list | None = None) -> dict[str, np.ndarray]:
    """C simulation of N samples: inputs {tensor: (N, ...) values} -> outputs {tensor: (N, ...) float64}.

    ``timings``, if given, receives the seconds of each call of the kernel (the first includes loading the
    weights)."""
    n = next(iter(inputs.values())).shape[0]
    with tempfile.TemporaryDirectory(prefix="ff-csim-") as tmp:
        tmp = Path(tmp)
        keys_in = [(f"i{i}", int(np.prod(p.shape))) for i, p in enumerate(project.inputs)]
        keys_out = [(f"o{i}", int(np.prod(p.shape))) for i, p in enumerate(project.outputs)]
        np.savez(tmp / "in.npz", **{k: np.asarray(inputs[p.tensor], np.float64).reshape(n, -1)
                                    for (k, _), p in zip(keys_in, project.inputs)})
        spec = {"lib": str(lib), "function": f"{project.project}_double", "inputs": keys_in,
                "outputs": keys_out, "in": str(tmp / "in.npz"), "out": str(tmp / "out.npz")}
        (tmp / "spec.json").write_text(json.dumps(spec))
        env = dict(os.environ)
        try:
            done = _run_group([sys.executable, "-m", "fpgaformer.compiler.backend.csim_worker",
                               str(tmp / "spec.json")], timeout, env=env)
        except subprocess.TimeoutExpired:
            raise SimulationError(f"kernel {project.name!r}: C simulation of {n} samples still running after "
                                  f"{timeout:.0f} s; project {project.path}") from None
        if done.returncode != 0:
            tail = "\n".join(done.stdout.splitlines()[-8:])
            raise SimulationError(f"kernel {project.name!r}: C simulation failed (exit status {done.returncode}); "
                                  f"project {project.path}:\n{tail}")
        with np.load(tmp / "out.npz") as z:
            if timings is not None:
                timings.extend(float(t) for t in z["__seconds__"])
            return {p.tensor: z[k].reshape((n, *p.shape)) for (k, _), p in zip(keys_out, project.outputs)}


def to_codes(values: np.ndarray, fixed: dict | None) -> np.ndarray:
    """Values of a fixed-point type (exact in float64) -> int64 codes; flags -> 0/1."""
    if fixed is None:
        return np.asarray(values).astype(np.int64)
    t = FixedType.from_dict(fixed)
    scaled = np.ldexp(np.asarray(values, np.float64), t.frac)
    codes = np.rint(scaled)
    if not np.array_equal(codes, scaled):
        raise SimulationError("C-simulation output is not on the output type's grid")
    return codes.astype(np.int64)


@dataclass
class BitCompare:
    tensor: str
    elements: int
    mismatches: int
    max_code_diff: int

    @property
    def identical(self) -> bool:
        return self.mismatches == 0


def compare_codes(tensor: str, csim: np.ndarray, emulator: np.ndarray) -> BitCompare:
    csim, emulator = np.asarray(csim, np.int64), np.asarray(emulator, np.int64).reshape(csim.shape)
    diff = np.abs(csim - emulator)
    return BitCompare(tensor, int(csim.size), int(np.count_nonzero(diff)), int(diff.max(initial=0)))


def run_cli(args) -> int:
    """``fpgaformer verify BUILD --csim``: the CLI's entry into this check (see compiler.verify_cli)."""
    from ..verify_cli import run

    return run(args)
