"""Hardware shaping of a written kernel project: hls4ml's io_parallel top -> a dataflow top.

hls4ml writes an io_parallel top function for a latency design: ``#pragma HLS PIPELINE`` over the whole
function (every loop of every layer unrolled into one pipeline) and every port and layer output partitioned
completely into registers. That is a C-simulation model of a block, not hardware. `shape_project` rewrites the
written project so that its sources are the hardware the estimator prices (DESIGN.md, "Where hardware lives"):

* the top's ``#pragma HLS PIPELINE`` becomes ``#pragma HLS DATAFLOW``: each layer call is a dataflow stage;
* ``ARRAY_PARTITION`` / ``ARRAY_RESHAPE`` pragmas on ports and layer outputs are dropped unless the array has at
  most `REGISTER_ELEMENTS` elements: the arrays become (ping-pong) memories between stages; ports that lose
  their partitioning get an ``ap_memory`` interface instead of ``ap_vld`` (a scalar handshake);
* a dataflow region allows one reader per buffer: every channel several layers read (the block input read by
  the Q, K, V projections and the residual add, a LayerNorm output read by the FFN and the residual) gets a
  fork (``ff_fork.h``) that copies it into one buffer per reader (`fork_channels`);
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


_CALL = re.compile(r"^([ \t]*)(ff::\w+<[^;()]*>)\(([^;()]*)\);(.*)$", re.M)
_LOCAL_DECL = re.compile(r"^[ \t]*(\w+)[ \t]+(\w+)\[(\d+)\];[ \t]*$", re.M)
_PARAM = re.compile(r"(\w+)\s+(\w+)\s*\[\s*(\d+)\s*\]")
MAX_FORK = 4  # ff_fork.h has fork2 .. fork4; more readers are forked in a tree


def channels(body: str, signature: str) -> tuple[dict[str, tuple[str, int]], dict[str, list[int]], dict[str, int],
                                                 list]:
    """The dataflow channels of a top: ({array: (type, size)}, {array: indices of the calls that read it},
    {array: index of the call that writes it}, the calls as regex matches). Input ports (named ``in_*`` by the
    lowering) are read by every call that names them; a layer output or output port is written by the first
    call that names it and read by every later one."""
    ports = {m.group(2): (m.group(1), int(m.group(3))) for m in _PARAM.finditer(signature)}
    locals_ = {m.group(2): (m.group(1), int(m.group(3))) for m in _LOCAL_DECL.finditer(body)}
    calls = list(_CALL.finditer(body))
    readers: dict[str, list[int]] = {}
    writer: dict[str, int] = {}
    for i, call in enumerate(calls):
        for arg in (a.strip() for a in call.group(3).split(",")):
            if arg in ports and arg.startswith("in_"):
                readers.setdefault(arg, []).append(i)
            elif arg in locals_ or arg in ports:
                if arg in writer:
                    readers.setdefault(arg, []).append(i)
                else:
                    writer[arg] = i
    return {**ports, **locals_}, readers, writer, calls


def fork_channels(cpp_text: str, kernel_name: str | None = None) -> str:
    """Give every dataflow channel of the top one reader: after the write of a channel read by several layers
    (before the first call, for an input port), a fork copies it into one buffer per reader (ff_fork.h). An
    output port that layers also read is written to a buffer that the fork copies to the port and the readers."""
    start, end = _top_function(cpp_text, kernel_name)
    body = cpp_text[start:end]
    brace = body.index("{")
    signature, inner = body[:brace], body[brace:]
    arrays, readers, writer, calls = channels(inner, signature)
    ports = {m.group(2) for m in _PARAM.finditer(signature)}
    shared = {name: idx for name, idx in readers.items() if len(idx) > 1 or (name in ports and name in writer)}
    if not shared:
        return cpp_text
    names = set(arrays)
    inserts: dict[int, list[str]] = {}  # call index after which to insert (-1: before the first call)
    renamed: dict[tuple[int, str], str] = {}
    declarations: list[str] = []

    def fresh(base: str) -> str:
        while base in names:
            base += "_"
        names.add(base)
        return base

    for name, idx in shared.items():
        ctype, size = arrays[name]
        copies = [fresh(f"{name}_f{k}") for k in range(len(idx))]
        for i, copy in zip(idx, copies):
            renamed[(i, name)] = copy
        source, leaves = name, list(copies)
        if name in ports and name in writer:  # an output port also read inside: write a buffer, fork to both
            source = fresh(f"{name}_w")
            renamed[(writer[name], name)] = source
            leaves = [name] + leaves
            declarations.append(f"    {ctype} {source}[{size}];")
        declarations.append(f"    {ctype} {', '.join(f'{c}[{size}]' for c in copies)};")
        out: list[str] = []

        def tree(src: str, outs: list[str]) -> None:
            """fork ``src`` into ``outs``: forks of at most MAX_FORK outputs, through middle buffers."""
            if len(outs) <= MAX_FORK:
                out.append(f"    ff::fork{len(outs)}<{ctype}, {size}>({src}, {', '.join(outs)});")
                return
            per = -(-len(outs) // MAX_FORK)
            groups = [outs[i:i + per] for i in range(0, len(outs), per)]
            heads = []
            for g in groups:
                if len(g) == 1:
                    heads.append(g[0])
                    continue
                mid = fresh(f"{name}_m")
                declarations.append(f"    {ctype} {mid}[{size}];")
                heads.append(mid)
            out.append(f"    ff::fork{len(heads)}<{ctype}, {size}>({src}, {', '.join(heads)});")
            for head, g in zip(heads, groups):
                if len(g) > 1:
                    tree(head, g)

        if len(leaves) == 1:  # cannot happen: a shared channel has two readers, or a port and a reader
            continue
        tree(source, leaves)
        inserts.setdefault(writer.get(name, -1), []).extend(out)
    first = calls[0].start()
    pieces = [inner[:first], "\n".join(declarations), "\n"]
    if -1 in inserts:
        pieces.append("\n".join(inserts[-1]) + "\n")
    pieces.append("\n")
    at = first
    for i, call in enumerate(calls):
        pieces.append(inner[at:call.start()])
        args = [renamed.get((i, a.strip()), a.strip()) for a in call.group(3).split(",")]
        pieces.append(f"{call.group(1)}{call.group(2)}({', '.join(args)});{call.group(4)}")
        if i in inserts:
            pieces.append("\n" + "\n".join(inserts[i]))
        at = call.end()
    pieces.append(inner[at:])
    return cpp_text[:start] + signature + "".join(pieces) + cpp_text[end:]


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
    _rewrite(top, lambda t: fork_channels(shape_top(t, kernel_name), kernel_name))
    for header in [firmware / "parameters.h", firmware / "nnet_utils" / "nnet_helpers.h",
                   *sorted((firmware / "weights").glob("*.h"))]:
        if header.is_file():
            _rewrite(header, synth_guards)
