"""``fpgaformer build --check``: is the generated overlay hardware an HLS tool could place, and is it the plan?

Without a vendor tool, the strongest checks available on the sources Vitis HLS would read:

1. every kernel project against the BUILD's hardware plan (`check.check_sources`: no large array partitioned
   completely, no pipeline over a whole function, each matrix product's multipliers n_mult =
   ceil(row MACs / RF) equal to the plan's, constant loop bounds, recursion, dynamic allocation), and every
   dataflow buffer of its top read by one process (`single_readers`);
2. the overlay's own sources (top, ``ff_model``): every ``m_axi`` port with a depth, no dynamic allocation, every
   loop bound a literal (loops over ``n_items`` run to a constant and break);
3. every translation unit in its synthesis configuration (``g++ -fsyntax-only -DFF_SYNTH``: no file I/O, weights
   from their initialisers). hls4ml writes weights as initialiser lists that g++ parses at about 50 µs per
   element with the open-source ap_types (minutes for a MiniLM block), so kernels above `BIG_WEIGHTS` elements
   are checked on a copy whose weight headers keep their declarations and first values, after every literal of
   the original lists was read here and checked against the array's size and its type's range;
4. the plan's choices that the overlay does not generate (`overlay.not_emitted`) are reported as problems.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...host.graph import Graph
from .check import check_sources, strip_comments
from .overlay import COMPILE_TIMEOUT_S, HLS_DIR, KERNELS, _compile_units, not_emitted

BIG_WEIGHTS = 100_000
_WEIGHT_DECL = re.compile(r"^(\s*)(\w+)\s+(\w+)\[(\d+)\]\s*=\s*\{([^}]*)\};", re.M)
_TYPEDEF = re.compile(r"typedef\s+ap_(u?)int<(\d+)>\s+(\w+);")


def _int_types(defines: str) -> dict[str, tuple[int, int]]:
    """{typedef: (min, max)} of the ap_int/ap_uint weight types in a project's defines.h."""
    out = {}
    for unsigned, width, name in _TYPEDEF.findall(defines):
        w = int(width)
        out[name] = (0, 2 ** w - 1) if unsigned else (-(2 ** (w - 1)), 2 ** (w - 1) - 1)
    return out


def _shadow_weights(firmware: Path, into: Path) -> list[str]:
    """Copy ``firmware`` to ``into`` with every weight initialiser cut to its first values, after checking each
    original list (element count = array size, every literal in its type's range). Returns problems."""
    shutil.copytree(firmware, into, symlinks=False)
    types = _int_types((firmware / "defines.h").read_text())
    problems = []
    for header in sorted((into / "weights").glob("*.h")):
        text = header.read_text()

        def cut(m: re.Match) -> str:
            indent, ctype, name, size, body = m.groups()
            values = [v for v in body.replace("\n", " ").split(",") if v.strip()]
            if len(values) != int(size):
                problems.append(f"{header.name}: {name} has {len(values)} initial values for {size} elements")
            bounds = types.get(ctype)
            try:
                ints = [int(v) for v in values]
            except ValueError:
                problems.append(f"{header.name}: {name} has an initial value that is not an integer literal")
                ints = []
            if bounds and ints and not all(bounds[0] <= v <= bounds[1] for v in ints):
                problems.append(f"{header.name}: {name} has values outside {ctype} {bounds}")
            return f"{indent}{ctype} {name}[{size}] = {{{', '.join(values[:4])}}};"

        header.write_text(_WEIGHT_DECL.sub(cut, text))
    return problems


def _weights(firmware: Path) -> int:
    return sum(int(n) for h in (firmware / "weights").glob("*.h")
               for n in re.findall(r"\w+\s+\w+\[(\d+)\]\s*=", h.read_text()))


def synthesis_syntax(build_dir: Path) -> list[str]:
    """Problems of `g++ -fsyntax-only` over every overlay unit in its synthesis configuration (point 3)."""
    from .csim import error_lines

    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ff-synth-check-") as tmp:
        units = []
        for src, flags in _compile_units(build_dir, True):
            firmware = src.parent
            if firmware.name == "firmware" and _weights(firmware) > BIG_WEIGHTS:
                shadow = Path(tmp) / firmware.parent.name / "firmware"
                problems += _shadow_weights(firmware, shadow)
                flags = [f.replace(str(firmware), str(shadow)) for f in flags]
                src = shadow / src.name
            units.append((src, flags))

        def one(unit):
            src, flags = unit
            done = subprocess.run(["g++", "-fsyntax-only", *flags, str(src)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=COMPILE_TIMEOUT_S)
            return None if done.returncode == 0 else f"{src.name}: " + " | ".join(error_lines(done.stdout, 3))

        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            problems += [p for p in pool.map(one, units) if p]
    return problems


def overlay_sources(build_dir: Path) -> list[str]:
    """Point 2: the top and ff_model."""
    hls = Path(build_dir) / HLS_DIR
    problems = []
    for name in ("fpgaformer_top.cpp", "ff_model.cpp"):
        text = strip_comments((hls / name).read_text())
        for m in re.finditer(r"#pragma\s+HLS\s+INTERFACE[^\n]*m_axi[^\n]*", text):
            if "depth=" not in m.group(0):
                problems.append(f"{name}: m_axi interface without a depth: {m.group(0).strip()}")
        if re.search(r"\bnew\b|\bmalloc\s*\(|std::vector", text):
            problems.append(f"{name}: dynamic allocation")
        for m in re.finditer(r"for\s*\([^;]*;\s*\w+\s*<\s*([^;]+);", text):
            if not re.fullmatch(r"\s*\d+[uUlL]*\s*|\s*FF_[A-Z_]+\s*", m.group(1)):
                problems.append(f"{name}: loop bound {m.group(1).strip()!r} is not a compile-time literal")
    return problems


def single_readers(project: Path) -> list[str]:
    """Every dataflow channel of a kernel's top has one reader (hardware.channels): Vitis HLS refuses a
    ping-pong buffer that several processes read."""
    from .hardware import _PARAM, _top_function, channels

    name = json.loads((project / "kernel.json").read_text())["project"]
    text = strip_comments((project / "firmware" / f"{name}.cpp").read_text())
    start, end = _top_function(text, name)
    body = text[start:end]
    brace = body.index("{")
    _, readers, writer, _ = channels(body[brace:], body[:brace])
    ports = {m.group(2) for m in _PARAM.finditer(body[:brace])}
    return [f"{name}: buffer {buf} is read by {len(idx)} dataflow processes" for buf, idx in readers.items()
            if len(idx) > 1 or (buf in ports and buf in writer)]


def check_build(build_dir: Path, graph: Graph, syntax: bool = True) -> list[str]:
    """Every problem of points 1-4 (module docstring), one sentence each; [] when the overlay passes."""
    from ..plan import plan_of

    plan = {e["layer"]: e["multipliers"] for e in plan_of(graph)["layers"]}
    projects = sorted(p for p in (Path(build_dir) / HLS_DIR / KERNELS).iterdir() if (p / "kernel.json").is_file())
    problems = []
    for project in projects:
        names = json.loads((project / "kernel.json").read_text()).get("layers", {})
        local = {cpp: plan[ir] for cpp, ir in names.items() if ir in plan}
        problems += [f"kernel {project.name}: {p}" for p in check_sources([project], local)]
        problems += [f"kernel {project.name}: {p}" for p in single_readers(project)]
    problems += overlay_sources(build_dir)
    if syntax:
        problems += synthesis_syntax(build_dir)
    problems += [f"plan: {p}" for p in not_emitted(graph)]
    return problems
