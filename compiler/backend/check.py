"""Hardware checks on generated kernel sources: C-simulation equality proves the arithmetic, these prove the
architecture (DESIGN.md, "Where hardware lives"). Nothing here synthesises: the checks read the sources the
synthesis tool would read and evaluate their compile-time constants.

`check_sources(paths, plan)` reads a project's top ``firmware/<kernel>.cpp``, ``parameters.h`` (the
``configN`` structs: every kernel's compile-time constants), the weight headers (array sizes) and our kernel
headers ``firmware/nnet_utils/ff_*.h``, instantiates every kernel call of the top with its config, and reports:

* an array partitioned or reshaped completely (``complete``, or a factor >= its size) with more than
  `MAX_PARTITIONED` elements, including local arrays declared inside a pipelined loop (the tool partitions
  those implicitly);
* a pipeline over a whole function (the top, or a kernel) instead of a loop;
* a pipelined loop that needs more multipliers than its layer has: a pipelined loop unrolls every loop inside
  it, so it needs ceil(unrolled work / II) lanes (unrolled work = product of the nested trip counts, the
  largest of sibling loops). MAC kernels (``linear``, ``matmul``) must define ``static const n_mult``, equal to
  ceil(row_macs / rf) with rf = min(max(reuse_factor, 1), row_macs) from the config struct (row_macs = n_in *
  n_out, or n_batch * n_n * n_k), no pipelined loop may need more lanes than n_mult, and n_mult may not exceed
  the plan's multipliers for that layer; other kernels are held against the plan where it names them (lanes);
* loop bounds that are not compile-time constants (config constants, literals, constant locals);
* an ``m_axi`` interface without ``depth=``;
* recursion (a cycle in the call graph of the checked functions);
* dynamic allocation (``new``, ``malloc``/``calloc``/``realloc``, ``std::vector``) outside code guarded by
  ``#ifndef __SYNTHESIS__`` / ``#if !defined(__SYNTHESIS__) && !defined(FF_SYNTH)``.

``plan`` maps a layer to its multipliers: keys may be the config index (``4``), ``"config4"``, the hls4ml layer
name (the comment above ``struct config4``) or the IR layer name (matched through ``names.identifier``).

`compile_synthesis_config(project)` compiles the top as the synthesis tool reads it (``-DFF_SYNTH``, see
``hardware.py``) with ``g++ -fsyntax-only`` and checks, on the preprocessed text, that no weight is loaded from
a file and every weight array has its initialiser.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .names import identifier

MAX_PARTITIONED = 4096
MAC_KERNELS = {"linear": ("n_in", "n_out"), "matmul": ("n_batch", "n_n", "n_k")}
SYNTH_TIMEOUT_S = 300


class ExprError(ValueError):
    pass


# ------------------------------------------------------------------------------------ constant expressions
_TOKEN = re.compile(r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)[uUlL]*|([A-Za-z_]\w*(?:\s*::\s*[A-Za-z_]\w*)*)|"
                    r"(<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%()?:<>!~&|^]))")
_BINARY = [("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", "<=", ">", ">="), ("<<", ">>"),
           ("+", "-"), ("*", "/", "%")]


def _tokens(text: str) -> list[tuple[str, object]]:
    out, pos, text = [], 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExprError(f"cannot read {text[pos:]!r}")
        if m.group(1):
            out.append(("num", int(m.group(1), 0)))
        elif m.group(2):
            out.append(("name", re.sub(r"\s+", "", m.group(2))))
        else:
            out.append(("op", m.group(3)))
        pos = m.end()
    return out


def evaluate(text: str, env: dict[str, int]) -> int:
    """Value of a C++ integral constant expression (names from ``env``: ``CONFIG_T::n_in``, locals)."""
    toks = _tokens(text)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else ("end", None)

    def take(op=None):
        nonlocal pos
        t = peek()
        if op is not None and t != ("op", op):
            raise ExprError(f"expected {op!r} in {text!r}")
        pos += 1
        return t

    def cdiv(a, b, mod=False):
        if b == 0:
            raise ExprError(f"division by zero in {text!r}")
        q = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
        return a - q * b if mod else q

    ops = {"||": lambda a, b: int(bool(a) or bool(b)), "&&": lambda a, b: int(bool(a) and bool(b)),
           "|": lambda a, b: a | b, "^": lambda a, b: a ^ b, "&": lambda a, b: a & b,
           "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b), "<": lambda a, b: int(a < b),
           "<=": lambda a, b: int(a <= b), ">": lambda a, b: int(a > b), ">=": lambda a, b: int(a >= b),
           "<<": lambda a, b: a << b, ">>": lambda a, b: a >> b, "+": lambda a, b: a + b,
           "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": cdiv, "%": lambda a, b: cdiv(a, b, True)}

    def conditional():
        c = binary(0)
        if peek() == ("op", "?"):
            take("?")
            a = conditional()
            take(":")
            b = conditional()
            return a if c else b
        return c

    def binary(level):
        if level == len(_BINARY):
            return unary()
        v = binary(level + 1)
        while peek()[0] == "op" and peek()[1] in _BINARY[level]:
            op = take()[1]
            v = ops[op](v, binary(level + 1))
        return v

    def unary():
        t = peek()
        if t == ("op", "-"):
            take()
            return -unary()
        if t == ("op", "+"):
            take()
            return unary()
        if t == ("op", "!"):
            take()
            return int(not unary())
        if t == ("op", "~"):
            take()
            return ~unary()
        if t == ("op", "("):
            take()
            v = conditional()
            take(")")
            return v
        if t[0] == "num":
            take()
            return t[1]
        if t[0] == "name":
            take()
            name = t[1]
            if name in ("true", "false"):
                return int(name == "true")
            if name in env:
                return env[name]
            raise ExprError(f"{name} is not a compile-time constant here")
        raise ExprError(f"cannot read {text!r}")

    v = conditional()
    if pos != len(toks):
        raise ExprError(f"cannot read {text!r}")
    return v


# --------------------------------------------------------------------------------------- source handling
def strip_comments(text: str) -> str:
    """Comments and string/char literals blanked (newlines kept, so line numbers stay)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * (min(j, n) - i - 1) + (c if j < n else ""))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


_CSIM_ONLY = re.compile(r"^\s*#\s*(?:ifndef\s+__SYNTHESIS__\b|if\s+!\s*defined\s*\(?\s*(?:__SYNTHESIS__|FF_SYNTH)\b"
                        r"(?!.*\|\|))")


def synthesis_lines(text: str) -> list[bool]:
    """Per line: True where the synthesis tool reads it (not inside a C-simulation-only guard)."""
    stack: list[bool] = []  # per open #if: is this branch C-simulation only
    seen = []
    for line in text.splitlines():
        s = line.strip()
        if re.match(r"#\s*if", s):
            stack.append(bool(_CSIM_ONLY.match(s)))
            seen.append(False)
            continue
        if re.match(r"#\s*(else|elif)\b", s) and stack:
            stack[-1] = False  # the other branch of a C-simulation guard is the synthesis code
            seen.append(False)
            continue
        if re.match(r"#\s*endif\b", s) and stack:
            stack.pop()
            seen.append(False)
            continue
        seen.append(not any(stack))
    return seen


def _match(text: str, i: int, open_: str, close: str) -> int:
    """Index just past the bracket matching text[i] == open_."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == open_:
            depth += 1
        elif text[j] == close:
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError(f"unbalanced {open_}{close}")


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


@dataclass
class Function:
    name: str
    file: Path
    params: str
    body: str           # text between the braces (comments stripped, directives blanked)
    body_offset: int    # offset of body in the file's stripped text
    text: str = ""      # the file's stripped text


@dataclass
class Loop:
    start: int          # offsets in the function body
    end: int
    label: str
    header: str
    pragmas: list[str] = field(default_factory=list)
    children: list["Loop"] = field(default_factory=list)


_NOT_FUNCTIONS = {"for", "if", "while", "switch", "return", "sizeof", "catch"}


def parse_functions(path: Path, text: str | None = None) -> list[Function]:
    """Function definitions of a C++ source (namespaces looked through)."""
    raw = path.read_text() if text is None else text
    clean = strip_comments(raw)
    # blank preprocessor lines except pragmas, and namespace openers (their closing brace is dropped below)
    clean = re.sub(r"^[ \t]*#(?![ \t]*pragma)[^\n]*", lambda m: " " * len(m.group(0)), clean, flags=re.M)
    funcs: list[Function] = []
    i, start, n = 0, 0, len(clean)
    namespace_depth = 0
    while i < n:
        c = clean[i]
        if c == ";":
            start = i + 1
        elif c == "}":
            namespace_depth -= 1  # closes a namespace (function and struct bodies are skipped whole)
            start = i + 1
        elif c == "{":
            head = clean[start:i]
            if re.search(r"\bnamespace\b[^;{]*$", head):
                namespace_depth += 1
                start = i + 1
            else:
                end = _match(clean, i, "{", "}")
                m = re.search(r"(\w+)\s*\(", head)
                hs = head.rstrip()
                if hs.endswith(")") or re.search(r"\)\s*(const|noexcept)\s*$", hs):
                    # the function name: the identifier before the parameter list's opening parenthesis
                    close = hs.rfind(")")
                    depth, j = 0, close
                    while j >= 0:
                        if hs[j] == ")":
                            depth += 1
                        elif hs[j] == "(":
                            depth -= 1
                            if depth == 0:
                                break
                        j -= 1
                    m = re.search(r"(\w+)\s*$", hs[:j])
                    decl = re.sub(r"\btemplate\s*<[^(]*?>(?=\s*[\w:])", " ", hs[:j])
                    if m and m.group(1) not in _NOT_FUNCTIONS and not re.search(r"\b(struct|class|union|enum)\b", decl):
                        funcs.append(Function(m.group(1), path, hs[j + 1:close], clean[i + 1:end - 1], i + 1, clean))
                i = end
                start = i
                if i < n and clean[i] == ";":
                    start = i + 1
                continue
        i += 1
    return funcs


def parse_loops(body: str) -> list[Loop]:
    """The loop tree of a function body (``for`` loops with their labels and HLS pragmas)."""
    loops: list[Loop] = []
    for m in re.finditer(r"\bfor\s*\(", body):
        hdr_end = _match(body, m.end() - 1, "(", ")")
        header = body[m.end():hdr_end - 1]
        j = hdr_end
        while j < len(body) and body[j].isspace():
            j += 1
        if j < len(body) and body[j] == "{":
            end = _match(body, j, "{", "}")
        else:
            end = body.find(";", j) + 1
        label = re.search(r"(\w+)\s*:\s*$", body[max(0, m.start() - 80):m.start()])
        loops.append(Loop(m.start(), end, label.group(1) if label else "", " ".join(header.split())))
    # nesting: the innermost enclosing loop is the parent
    roots: list[Loop] = []
    for lp in loops:
        parents = [p for p in loops if p is not lp and p.start < lp.start and lp.end <= p.end]
        (min(parents, key=lambda p: p.end - p.start).children if parents else roots).append(lp)
    for m in re.finditer(r"#pragma\s+HLS\s+([^\n]*)", body):
        owners = [lp for lp in loops if lp.start < m.start() < lp.end]
        if owners:
            min(owners, key=lambda p: p.end - p.start).pragmas.append(" ".join(m.group(1).split()))
    return roots


def _all_loops(roots: list[Loop]):
    for lp in roots:
        yield lp
        yield from _all_loops(lp.children)


def _pragma_arg(pragma: str, key: str) -> str | None:
    m = re.search(rf"\b{key}\s*=\s*(.+?)(?=\s+\w+\s*=|\s+(?:complete|cyclic|block|dim|rewind|off)\b|$)", pragma,
                  re.I)
    return m.group(1).strip() if m else None


# ------------------------------------------------------------------------------------------- the project
@dataclass
class Call:
    function: str
    config: int
    layer: str
    line: int


@dataclass
class Project:
    top: Path
    parameters: Path | None
    headers: list[Path]
    configs: dict[int, dict[str, int]]
    layer_of: dict[int, str]
    globals: dict[str, int]        # weight and other global arrays: elements


def _project_files(path: Path) -> tuple[Path, Path | None, list[Path], list[Path]]:
    """(top, parameters.h, kernel headers, weight headers) of a project directory or a top source file."""
    path = Path(path)
    if path.is_dir():
        firmware = path / "firmware"
        name = None
        if (path / "kernel.json").is_file():
            name = json.loads((path / "kernel.json").read_text()).get("project")
        tops = [firmware / f"{name}.cpp"] if name else sorted(firmware.glob("*.cpp"))
        if not tops or not tops[0].is_file():
            raise FileNotFoundError(f"{path}: no top source in firmware/")
        top = tops[0]
    else:
        top, firmware = path, path.parent
    params = firmware / "parameters.h"
    headers = sorted((firmware / "nnet_utils").glob("ff_*.h"))
    weights = sorted((firmware / "weights").glob("*.h"))
    return top, params if params.is_file() else None, headers, weights


def parse_configs(text: str) -> tuple[dict[int, dict[str, int]], dict[int, str]]:
    """``struct configN { static const T key = value; ... }`` -> {N: {key: value}}, and N -> layer name (the
    comment hls4ml writes above the struct)."""
    configs, names = {}, {}
    for m in re.finditer(r"(?:^//[ \t]*(\w+)[ \t]*\n)?^struct\s+config(\d+)\s*\{(.*?)^\};", text, re.M | re.S):
        idx = int(m.group(2))
        consts = {}
        for c in re.finditer(r"static\s+const\s+[\w ]+?\s+(\w+)\s*=\s*([^;]+);", m.group(3)):
            v = c.group(2).strip()
            try:
                consts[c.group(1)] = evaluate(v, consts)
            except ExprError:
                continue
        configs[idx] = consts
        if m.group(1):
            names[idx] = m.group(1)
    return configs, names


def _load(path: Path) -> Project:
    top, params, headers, weights = _project_files(path)
    configs, names = ({}, {})
    if params is not None:
        configs, names = parse_configs(params.read_text())
    glob: dict[str, int] = {}
    for w in weights:
        for m in re.finditer(r"^\s*[\w:<>, ]+?\s+(\w+)\s*\[\s*(\d+)\s*\]", strip_comments(w.read_text()), re.M):
            glob[m.group(1)] = int(m.group(2))
    return Project(top, params, headers, configs, names, glob)


_CONST_LOCAL = re.compile(r"\bconst\s+(?:unsigned|signed|int|long|short|bool|size_t|char|\s)+\s+"
                          r"([^;()]*(?:\([^;]*?\))?[^;]*);")


def _consts(fn: Function, env: dict[str, int]) -> dict[str, int]:
    """``env`` plus the function's constant locals that evaluate at compile time (in order of declaration)."""
    env = dict(env)
    for m in _CONST_LOCAL.finditer(fn.body):
        decl = m.group(1)
        parts, depth, cur = [], 0, ""
        for ch in decl:
            if ch in "(<":
                depth += 1
            elif ch in ")>" and depth:
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        for p in parts:
            mm = re.match(r"\s*(\w+)\s*=\s*(.+)$", p, re.S)
            if not mm:
                continue
            try:
                env[mm.group(1)] = evaluate(mm.group(2), env)
            except ExprError:
                env.pop(mm.group(1), None)
    return env


def _config_env(consts: dict[str, int]) -> dict[str, int]:
    env = {f"CONFIG_T::{k}": v for k, v in consts.items()}
    return env


def _arrays(fn: Function, env: dict[str, int]) -> dict[str, int | None]:
    """Arrays of a function (parameters and locals) -> element count (None where not constant)."""
    out: dict[str, int | None] = {}
    found = [(m.group(1), m.group(2)) for m in re.finditer(r"(\w+)\s*\[([^\[\]]+)\]\s*(?=[,)]|$)", fn.params)]
    found += [(m.group(1), m.group(2)) for m in _LOCAL_ARRAY.finditer(fn.body)]
    for name, size in found:
        try:
            out.setdefault(name, evaluate(size, env))
        except ExprError:
            out.setdefault(name, None)
    return out


# a local array declaration: TYPE name[N]; (TYPE an identifier, qualified or a template instance)
_LOCAL_ARRAY = re.compile(r"(?:^|[;{}])\s*(?:static\s+)?(?:const\s+)?(?:typename\s+)?[A-Za-z_][\w:]*(?:\s*<[^;{}()]*>)?"
                          r"\s+(\w+)\s*\[([^\[\]]+)\]\s*(?:=[^;]*)?;", re.M)


def _loop_bound(loop: Loop, env: dict[str, int]) -> tuple[int | None, str | None]:
    """(trip count, problem) of a canonical ``for (T i = A; i < B; i++)`` loop."""
    parts = loop.header.split(";")
    if len(parts) != 3:
        return None, "is not a counted loop"
    init = re.match(r"\s*(?:[\w:<> ]+\s+)?(\w+)\s*=\s*(.+)$", parts[0])
    cond = re.match(r"\s*(\w+)\s*(<=|<|!=)\s*(.+)$", parts[1])
    if not init or not cond or cond.group(1) != init.group(1):
        return None, f"has no constant bound ({loop.header!r})"
    try:
        a = evaluate(init.group(2), env)
    except ExprError as e:
        return None, f"starts at a value that is not a compile-time constant ({init.group(2).strip()}: {e})"
    try:
        b = evaluate(cond.group(3), env)
    except ExprError as e:
        return None, f"has a bound that is not a compile-time constant ({cond.group(3).strip()}: {e})"
    step = re.match(r"\s*(?:\+\+\s*(\w+)|(\w+)\s*\+\+|(\w+)\s*\+=\s*(.+))\s*$", parts[2])
    if not step:
        return None, f"has a step that is not a constant increment ({parts[2].strip()})"
    inc = 1
    if step.group(4):
        try:
            inc = evaluate(step.group(4), env)
        except ExprError as e:
            return None, f"has a step that is not a compile-time constant ({e})"
    if inc <= 0:
        return None, "has a step that is not positive"
    hi = b + 1 if cond.group(2) == "<=" else b
    return max(0, math.ceil((hi - a) / inc)), None


def _work(loop: Loop, env: dict[str, int]) -> int:
    """Unrolled work of a loop's body: product of nested trip counts (largest of siblings)."""
    inner = max((_work(c, env) for c in loop.children), default=1)
    trips, _ = _loop_bound(loop, env)
    return (trips or 1) * inner


def _ii(pragma: str, env: dict[str, int]) -> int:
    v = _pragma_arg(pragma, "II")
    try:
        return max(1, evaluate(v, env)) if v else 1
    except ExprError:
        return 1


def _plan_lookup(plan: dict, idx: int, layer: str) -> int | None:
    if not plan:
        return None
    for key in (idx, f"config{idx}", layer):
        if key in plan:
            return int(plan[key])
    for key, value in plan.items():
        if isinstance(key, str) and identifier(key, "layer") == layer:
            return int(value)
    return None


def check_sources(paths, plan: dict | None = None) -> list[str]:
    """Hardware problems of generated kernel projects (directories) or top sources: one sentence each."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    plan = plan or {}
    problems: list[str] = []
    for path in paths:
        problems += _check_project(_load(Path(path)), plan)
    return problems


def _check_project(prj: Project, plan: dict) -> list[str]:
    problems: list[str] = []
    files = [prj.top] + ([prj.parameters] if prj.parameters else []) + prj.headers
    funcs: dict[str, list[Function]] = {}
    for f in files:
        for fn in parse_functions(f):
            funcs.setdefault(fn.name, []).append(fn)
    kernels = {fn.name: fn for f in prj.headers for fn in parse_functions(f)}

    problems += _dynamic_allocation(files)
    problems += _recursion(funcs)
    problems += _interfaces(files)

    # the top: whole-function pipeline, partitioned arrays, loops
    top_fns = [fn for fn in funcs.values() for fn in fn if fn.file == prj.top]
    top_text = strip_comments(prj.top.read_text())
    for fn in top_fns:
        problems += _function_checks(fn, {}, prj.globals, f"{prj.top.name}: top function {fn.name}", None, None)

    # every kernel call, instantiated with its config
    calls = []
    for m in re.finditer(r"\bff::(\w+)\s*<([^;]*?)>\s*\(", top_text):
        cfg = re.search(r"\bconfig(\d+)\s*$", m.group(2))
        if cfg:
            idx = int(cfg.group(1))
            calls.append(Call(m.group(1), idx, prj.layer_of.get(idx, f"config{idx}"), _line(top_text, m.start())))
    for call in calls:
        fn = kernels.get(call.function)
        if fn is None:
            problems.append(f"{prj.top.name}:{call.line}: kernel ff::{call.function} (layer {call.layer}) is not "
                            f"defined in any ff_*.h of the project, so it cannot be checked.")
            continue
        consts = prj.configs.get(call.config)
        if consts is None:
            problems.append(f"{prj.top.name}:{call.line}: struct config{call.config} of layer {call.layer} is "
                            f"missing from parameters.h.")
            continue
        env = _config_env(consts)
        where = f"{fn.file.name}: ff::{call.function} of layer {call.layer} (config{call.config})"
        limit = _plan_lookup(plan, call.config, call.layer)
        problems += _kernel_checks(fn, env, kernels, where, limit, consts, call.function, set())
    return problems


def _kernel_checks(fn: Function, env: dict[str, int], kernels: dict[str, Function], where: str, limit: int | None,
                   consts: dict[str, int], name: str, seen: set) -> list[str]:
    problems: list[str] = []
    local = _consts(fn, env)
    n_mult = local.get("n_mult")
    if name in MAC_KERNELS:
        row_macs = math.prod(int(consts.get(k, 1)) for k in MAC_KERNELS[name])
        rf = max(1, min(int(consts.get("reuse_factor", 1)), row_macs))
        expected = math.ceil(row_macs / rf)
        if n_mult is None:
            problems.append(f"{where}: the kernel defines no compile-time 'static const n_mult', so its multipliers "
                            f"cannot be held against ceil({row_macs} MACs per row / reuse factor {rf}) = {expected}.")
        elif n_mult != expected:
            problems.append(f"{where}: n_mult is {n_mult} but ceil(row_macs {row_macs} / reuse factor {rf}) = "
                            f"{expected}.")
        if n_mult is not None and limit is not None and n_mult > limit:
            problems.append(f"{where}: n_mult = {n_mult} multipliers exceed the plan's {limit}.")
    budget = n_mult if n_mult is not None else limit
    problems += _function_checks(fn, local, {}, where, budget, limit if n_mult is None else None)
    # kernels it calls with the same config (layernorm -> norm, softmax -> softmax_rows)
    for other, g in kernels.items():
        if other != fn.name and other not in seen and re.search(rf"\b{other}\s*<[^;]*\bCONFIG_T\b[^;]*>\s*\(", fn.body):
            problems += _kernel_checks(g, env, kernels, f"{where} -> {other}", limit, consts, other, seen | {fn.name})
    return problems


def _function_checks(fn: Function, env: dict[str, int], globals_: dict[str, int], where: str, budget: int | None,
                     plan_lanes: int | None) -> list[str]:
    problems: list[str] = []
    env = _consts(fn, env) if env is not None else {}
    arrays = {**globals_, **_arrays(fn, env)}
    roots = parse_loops(fn.body)
    loops = list(_all_loops(roots))
    in_loop = lambda pos: any(lp.start < pos < lp.end for lp in loops)  # noqa: E731

    # partition / reshape pragmas
    for m in re.finditer(r"#pragma\s+HLS\s+(ARRAY_PARTITION|ARRAY_RESHAPE)\b([^\n]*)", fn.body, re.I):
        prag = " ".join(m.group(2).split())
        var = _pragma_arg(prag, "variable")
        if not var:
            continue
        size = arrays.get(var)
        complete = re.search(r"\bcomplete\b", prag, re.I) is not None
        factor = _pragma_arg(prag, "factor")
        if not complete and factor and size:
            try:
                complete = evaluate(factor, env) >= size
            except ExprError:
                problems.append(f"{where}: {m.group(1)} of array {var} has a factor that is not a compile-time "
                                f"constant ({factor}).")
        if complete and size is not None and size > MAX_PARTITIONED:
            how = "reshaped" if m.group(1).upper() == "ARRAY_RESHAPE" else "partitioned"
            why = "" if re.search(r"\bcomplete\b", prag, re.I) else f" (factor {factor} >= its size)"
            problems.append(f"{where}: array {var} of {size} elements is {how} completely{why}, more than "
                            f"{MAX_PARTITIONED}.")

    # a pipeline over the whole function
    for m in re.finditer(r"#pragma\s+HLS\s+PIPELINE\b([^\n]*)", fn.body, re.I):
        if not in_loop(m.start()) and "off" not in m.group(1).lower():
            problems.append(f"{where}: '#pragma HLS PIPELINE' applies to the whole function (not to a loop), so "
                            f"every loop in it is unrolled.")

    # loops: constant bounds; pipelined work against the multipliers
    for lp in loops:
        name = lp.label or f"for ({lp.header})"
        _, bad = _loop_bound(lp, env)
        if bad:
            problems.append(f"{where}: loop {name} {bad}.")
        pipes = [p for p in lp.pragmas if re.match(r"PIPELINE\b", p, re.I) and "off" not in p.lower()]
        if not pipes:
            continue
        ii = _ii(pipes[0], env)
        work = max((_work(c, env) for c in lp.children), default=1)
        lanes = math.ceil(work / ii)
        if budget is not None and lanes > budget:
            problems.append(f"{where}: pipelined loop {name} unrolls {work} operations at II={ii}, i.e. {lanes} "
                            f"multipliers, more than the layer's {budget}.")
        elif plan_lanes is not None and lanes > plan_lanes:
            problems.append(f"{where}: pipelined loop {name} needs {lanes} lanes ({work} operations at II={ii}), "
                            f"more than the plan's {plan_lanes}.")
        # local arrays declared inside a pipelined loop are partitioned by the tool
        for m in _LOCAL_ARRAY.finditer(fn.body[lp.start:lp.end]):
            size = arrays.get(m.group(1))
            if size is not None and size > MAX_PARTITIONED:
                problems.append(f"{where}: array {m.group(1)} of {size} elements is declared inside pipelined loop "
                                f"{name}, so it is partitioned completely (more than {MAX_PARTITIONED}).")
    return problems


def _dynamic_allocation(files: list[Path]) -> list[str]:
    problems = []
    pat = re.compile(r"\bnew\b|\b(?:malloc|calloc|realloc)\s*\(|\bstd\s*::\s*vector\b")
    for f in files:
        text = strip_comments(f.read_text())
        keep = synthesis_lines(text)
        for n, (line, synth) in enumerate(zip(text.splitlines(), keep), 1):
            m = pat.search(line)
            if synth and m:
                problems.append(f"{f.name}:{n}: dynamic allocation '{m.group(0).rstrip('(').strip()}' outside "
                                f"code guarded from synthesis (#ifndef __SYNTHESIS__ / FF_SYNTH).")
    return problems


def _recursion(funcs: dict[str, list[Function]]) -> list[str]:
    calls = {name: {o for o in funcs if re.search(rf"\b{o}\s*(?:<[^;(){{}}]*>)?\s*\(",
                                                     " ".join(fn.body for fn in fns))}
             for name, fns in funcs.items()}
    problems, done = [], set()

    def visit(name, path):
        if name in path:
            cycle = path[path.index(name):] + [name]
            key = frozenset(cycle)
            if key not in done:
                done.add(key)
                problems.append(f"{funcs[name][0].file.name}: function {name} is recursive "
                                f"({' -> '.join(cycle)}).")
            return
        for o in sorted(calls.get(name, ())):
            visit(o, path + [name])

    for name in sorted(funcs):
        visit(name, [])
    return problems


def _interfaces(files: list[Path]) -> list[str]:
    problems = []
    for f in files:
        text = strip_comments(f.read_text())
        for m in re.finditer(r"#pragma\s+HLS\s+INTERFACE\b([^\n]*)", text, re.I):
            prag = m.group(1)
            if re.search(r"\bm_axi\b", prag, re.I) and not re.search(r"\bdepth\s*=", prag, re.I):
                port = _pragma_arg(" ".join(prag.split()), "port") or "?"
                problems.append(f"{f.name}:{_line(text, m.start())}: m_axi interface of port {port} has no depth=.")
    return problems


# ------------------------------------------------------------------------------------ synthesis compile
def compile_synthesis_config(project_dir: Path, timeout: float = SYNTH_TIMEOUT_S) -> tuple[bool, str]:
    """g++ -fsyntax-only of the top as Vitis HLS reads it (-DFF_SYNTH): (ok, log)."""
    project_dir = Path(project_dir)
    gxx = shutil.which("g++")
    if gxx is None:
        return False, "g++ is not installed"
    top, _, _, _ = _project_files(project_dir)
    rel = top.relative_to(project_dir)
    flags = ["-std=c++14", "-DFF_SYNTH", "-Ifirmware", "-Ifirmware/ap_types"]
    log = []
    cmd = [gxx, *flags, "-fsyntax-only", str(rel)]
    log.append("$ " + " ".join(cmd))
    try:
        done = subprocess.run(cmd, cwd=project_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "\n".join(log + [f"g++ still running after {timeout:.0f} s"])
    log.append(done.stdout)
    if done.returncode != 0:
        return False, "\n".join(log + [f"g++ exit status {done.returncode}"])
    # what the tool reads: no weight loaded from a file, every weight array initialised
    cmd = [gxx, *flags, "-E", "-P", str(rel)]
    log.append("$ " + " ".join(cmd))
    pre = subprocess.run(cmd, cwd=project_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=timeout)
    if pre.returncode != 0:
        return False, "\n".join(log + [pre.stderr, f"g++ -E exit status {pre.returncode}"])
    bad = []
    if re.search(r"\bload_weights_from_txt\s*<", pre.stdout):
        bad.append("the synthesis view still loads weights from text files (load_weights_from_txt)")
    for m in re.finditer(r"^\s*(ffw_\w+_t)\s+(\w+)\s*\[\s*(\d+)\s*\]\s*;", pre.stdout, re.M):
        bad.append(f"weight array {m.group(2)}[{m.group(3)}] has no initialiser in the synthesis view")
    if bad:
        return False, "\n".join(log + bad)
    return True, "\n".join(log + ["ok: synthesis view compiles; weights from their initialisers, no file I/O"])
