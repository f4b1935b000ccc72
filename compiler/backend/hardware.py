"""Hardware shaping of a written kernel project: hls4ml's io_parallel top -> a dataflow top.

hls4ml writes an io_parallel top function for a latency design: ``#pragma HLS PIPELINE`` over the whole
function (every loop of every layer unrolled into one pipeline) and every port and layer output partitioned
completely into registers. That is a C-simulation model of a block, not hardware. `shape_project` rewrites the
written project so that its sources are the hardware the estimator prices (DESIGN.md, "Where hardware lives"):

* the top's ``#pragma HLS PIPELINE`` becomes ``#pragma HLS DATAFLOW``: each layer call is a dataflow stage;
* ``ARRAY_PARTITION`` / ``ARRAY_RESHAPE`` pragmas on ports and layer outputs are dropped unless the array has at
  most `REGISTER_ELEMENTS` elements: the arrays become (ping-pong) memories between stages; ports that lose
  their partitioning get an ``ap_memory`` interface instead of ``ap_vld`` (a scalar handshake);
* the synthesis view is selectable with g++: ``FF_SYNTH`` stands for "what Vitis HLS reads" (hls4ml's
  open-source ap_types refuse ``__SYNTHESIS__`` with ``#error``). Every ``#ifndef __SYNTHESIS__`` guard of the
  top (weight loading from text files), of the weight headers (arrays without initialisers in C simulation)
  and of the project's copy of ``nnet_helpers.h`` (file I/O) becomes
  ``#if !defined(__SYNTHESIS__) && !defined(FF_SYNTH)``: with ``-DFF_SYNTH`` g++ sees the weights from their
  initialisers and no file I/O, exactly like the synthesis tool.

C simulation (hls4ml's build_lib.sh, no FF_SYNTH) is unchanged by these rewrites: pragmas are ignored by g++
and the C-simulation branch of every guard is the same code. All rewrites are idempotent.
"""

from __future__ import annotations

import re
from pathlib import Path

REGISTER_ELEMENTS = 64  # arrays up to this size may stay partitioned into registers
SYNTH_GUARD = "#if !defined(__SYNTHESIS__) && !defined(FF_SYNTH)"
_IFNDEF_SYNTH = re.compile(r"^([ \t]*)#ifndef[ \t]+__SYNTHESIS__[ \t]*$", re.M)
_ARRAY_DECL = re.compile(r"\b([A-Za-z_]\w*)\s*\[\s*(\d+)\s*\]")
_PARTITION = re.compile(r"^[ \t]*#pragma\s+HLS\s+ARRAY_(?:PARTITION|RESHAPE)\b.*?\bvariable\s*=\s*(\w+)[^\n]*\n?",
                        re.M | re.I)
_INTERFACE = re.compile(r"^([ \t]*)#pragma\s+HLS\s+INTERFACE\s+ap_vld\s+port\s*=\s*([\w, ]+?)[ \t]*$", re.M | re.I)
_PIPELINE = re.compile(r"^([ \t]*)#pragma\s+HLS\s+PIPELINE\b[^\n]*$", re.M | re.I)


def synth_guards(text: str) -> str:
    """``#ifndef __SYNTHESIS__`` -> ``#if !defined(__SYNTHESIS__) && !defined(FF_SYNTH)`` (every occurrence)."""
    return _IFNDEF_SYNTH.sub(lambda m: m.group(1) + SYNTH_GUARD, text)


def _top_function(text: str, name: str | None) -> tuple[int, int]:
    """(start, end) of the top function's body in ``text`` (the first function definition, or ``name``'s)."""
    pat = rf"\bvoid\s+{re.escape(name)}\s*\(" if name else r"\bvoid\s+\w+\s*\("
    m = re.search(pat, text)
    if not m:
        raise ValueError(f"no top function {name or ''} in the source")
    brace = text.index("{", text.index(")", m.end()))
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return m.start(), i + 1
    raise ValueError("unbalanced braces in the top function")


def array_sizes(text: str) -> dict[str, int]:
    """Element counts of the arrays declared with a literal size (``type name[N]``) in ``text``."""
    return {m.group(1): int(m.group(2)) for m in _ARRAY_DECL.finditer(text)}


def shape_top(cpp_text: str, kernel_name: str | None = None, keep_elements: int = REGISTER_ELEMENTS) -> str:
    """The hls4ml top ``firmware/<kernel>.cpp`` rewritten as a dataflow top (see the module docstring)."""
    start, end = _top_function(cpp_text, kernel_name)
    body = cpp_text[start:end]
    sizes = array_sizes(body)

    def partition(m: re.Match) -> str:
        size = sizes.get(m.group(1))
        return m.group(0) if size is not None and size <= keep_elements else ""

    body = _PARTITION.sub(partition, body)

    def interface(m: re.Match) -> str:
        ports = [p.strip() for p in m.group(2).split(",") if p.strip()]
        small = [p for p in ports if sizes.get(p, 0) <= keep_elements]
        big = [p for p in ports if p not in small]
        lines = []
        if small:
            lines.append(f"{m.group(1)}#pragma HLS INTERFACE ap_vld port={','.join(small)}")
        if big:
            lines.append(f"{m.group(1)}#pragma HLS INTERFACE ap_memory port={','.join(big)}")
        return "\n".join(lines)

    body = _INTERFACE.sub(interface, body)
    # the whole-function pipeline (outside any loop of the top) becomes the dataflow region
    body = _PIPELINE.sub(lambda m: f"{m.group(1)}#pragma HLS DATAFLOW", body)
    return synth_guards(cpp_text[:start] + body + cpp_text[end:])


def _rewrite(path: Path, fn) -> None:
    text = path.read_text()
    new = fn(text)
    if new != text:
        path.write_text(new)


def shape_project(project_dir: Path, kernel_name: str) -> None:
    """Apply every hardware rewrite to a project written by hls4ml (``BUILD/hls/<kernel>/``)."""
    firmware = Path(project_dir) / "firmware"
    top = firmware / f"{kernel_name}.cpp"
    if not top.is_file():
        raise FileNotFoundError(f"{top}: the kernel's top source is missing")
    _rewrite(top, lambda t: shape_top(t, kernel_name))
    for header in [firmware / "parameters.h", firmware / "nnet_utils" / "nnet_helpers.h",
                   *sorted((firmware / "weights").glob("*.h"))]:
        if header.is_file():
            _rewrite(header, synth_guards)
