"""host.fixed against the real C++ ap_fixed types (hls4ml's vendored ap_types headers), bit for bit.

One C++ harness is generated with a dispatch table over every (format, rounding, overflow) instantiation used
below, compiled once per session with g++, and fed binary files. For every element it writes the raw bits of the
converted value (sign-extended to int64), its to_double(), and whether the conversion overflowed. The overflow
flag is computed independently of host.fixed: the same value is also converted to a *saturating* type with the
same rounding and fractional bits and a larger range, which holds the ideally rounded value, and the flag is
``wide != narrow`` (see `_wide`).

Every rounding mode x every overflow mode sees >= 100,000 float inputs (quantize) and >= 100,000 codes (cast),
built to hit exact ties (+-), values at / just beyond / far beyond both range limits, zero, -0.0, +-inf, tiny and
subnormal values.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from fpgaformer.host.fixed import (
    OVERFLOW_MODES,
    ROUNDING_MODES,
    FixedType,
    cast,
    cast_count,
    quantize,
    quantize_count,
    to_float,
)

# Formats are (width, integer, signed). Every rounding x overflow mode is compiled once per job, and compile time
# is what this file spends, so: the CORE formats / pairs run every one of the 28 modes; the ODD ones run a cyclic
# cover (`_cover`: each sees all 7 rounding and all 4 overflow modes, and together they hit every combination).
CORE_FORMATS = [(16, 6, True), (8, 3, True), (8, 2, False), (18, 8, True), (32, 16, True), (10, -2, True)]
# negative fractional bits; the int64 limits (signed 64, unsigned 63); more fractional bits than a double's
# mantissa; 1 bit (where SAT_SYM's "-max" is -1, not 0).
ODD_FORMATS = [(64, 32, True), (63, 20, False), (5, 8, True), (60, -3, True), (1, 1, True)]
# (src, dst); every dst is a quantize format, so the harness instantiates no extra target types.
CORE_PAIRS = [
    ((16, 6, True), (8, 3, True)),  # narrowing
    ((8, 3, True), (16, 6, True)),  # widening
    ((16, 6, True), (8, 2, False)),  # signed -> unsigned
    ((8, 2, False), (8, 3, True)),  # unsigned -> signed
    ((32, 16, True), (18, 8, True)),
    ((18, 8, True), (10, -2, True)),
]
ODD_PAIRS = [
    ((10, -2, True), (16, 6, True)),
    ((64, 32, True), (32, 16, True)),
    ((64, 0, True), (1, 1, True)),  # right shift by exactly 64
    ((64, 0, True), (5, 8, True)),  # right shift by 67: every source bit is discarded
    ((5, 8, True), (64, 32, True)),  # left shift by 35 into 64 bits
    ((5, 8, True), (60, -3, True)),  # left shift by 66: every bit leaves the target
    ((8, 3, True), (63, 20, False)),
    ((63, 40, False), (60, -3, True)),
    ((8, 3, True), (8, 3, True)),  # identity
]


def _cover(items):
    """item i with rounding r gets overflow mode (r + i) % 4: every item sees every mode of both kinds, and any
    4 consecutive items see all 28 combinations."""
    return [(item, r, OVERFLOW_MODES[(ri + i) % len(OVERFLOW_MODES)])
            for i, item in enumerate(items) for ri, r in enumerate(ROUNDING_MODES)]


QUANT_FORMATS = CORE_FORMATS + ODD_FORMATS
QUANT_JOBS = [(f, r, o) for f in CORE_FORMATS for r in ROUNDING_MODES for o in OVERFLOW_MODES] + _cover(ODD_FORMATS)
CAST_JOBS = [(p, r, o) for p in CORE_PAIRS for r in ROUNDING_MODES for o in OVERFLOW_MODES] + _cover(ODD_PAIRS)
# values per job: every (rounding, overflow) combination gets >= 7 quantize jobs and >= 8 cast jobs, so
# >= 100,000 values each.
N_PER_QUANT_JOB = 14_300
N_PER_CAST_JOB = 12_500


def _type(fmt, rounding="TRN", overflow="WRAP") -> FixedType:
    w, i, s = fmt
    return FixedType(w, i, s, rounding, overflow)


def _wide(fmt, rounding) -> str:
    """C++ template arguments ``WW, Wide`` of the overflow reference: a signed saturating type with the same
    fractional bits and a strictly larger range. It holds the ideally rounded value R whenever R fits the narrow
    type, and otherwise (R itself or its clamp) lies outside the narrow range, so ``wide != narrow`` exactly when
    R is outside [min_code, max_code]."""
    w, i, s = fmt
    extra = 1 if s else 2
    return f"{w + extra}, ap_fixed<{w + extra},{i + extra},AP_{rounding},AP_SAT>"


HARNESS_HEADER = r"""
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "ap_fixed.h"

// The W-bit pattern of v as an int64 code (sign-extended when S); W <= 64.
template <int W, bool S, class T> static int64_t code_of(const T& v) {
  uint64_t raw = v.range(W - 1, 0).to_uint64();
  if (!S) return (int64_t)raw;
  const int up = (64 - W) & 63;
  return (int64_t)(raw << up) >> up;
}

// Code of a signed WW-bit value (WW <= 66); false if it does not fit int64.
template <int WW, class Wide> static bool wide_code(const Wide& w, int64_t* out) {
  if (WW <= 64) { *out = code_of<(WW <= 64 ? WW : 64), true>(w); return true; }
  const uint64_t top = w.range(WW - 1, 63).to_uint64(), ones = (1ull << ((WW - 63) & 63)) - 1;
  if (top != 0 && top != ones) return false;
  *out = (int64_t)w.range(63, 0).to_uint64();
  return true;
}

// to_double() depends only on (W, I, signed): call it on the plain type holding the same bits, so it is
// instantiated once per format rather than once per mode.
template <int W, int I, bool S> struct plain { typedef ap_fixed<W, I> type; };
template <int W, int I> struct plain<W, I, false> { typedef ap_ufixed<W, I> type; };

template <int W, int I, bool S, class T, int WW, class Wide>
static void record(const T& v, const Wide& w, int64_t* code, double* back, uint8_t* flag) {
  *code = code_of<W, S>(v);
  typename plain<W, I, S>::type p;
  p.setBits((ap_ulong)*code);
  *back = p.to_double();
  int64_t wc;
  *flag = !(wide_code<WW>(w, &wc) && wc == *code);  // same fractional bits: equal codes <=> equal values
}

template <int W, int I, bool S, class T, int WW, class Wide>
static void quant(const double* x, int64_t* code, double* back, uint8_t* flag, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    T v = x[i];
    Wide w = x[i];
    record<W, I, S, T, WW, Wide>(v, w, code + i, back + i, flag + i);
  }
}

template <int W2, bool S2, class Src, int W, int I, bool S, class T, int WW, class Wide>
static void conv(const int64_t* in, int64_t* code, double* back, uint8_t* flag, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    Src s;
    s.setBits((ap_ulong)in[i]);
    if (code_of<W2, S2>(s) != in[i]) { fprintf(stderr, "bad source code %lld\n", (long long)in[i]); exit(3); }
    T v = s;
    Wide w = s;
    record<W, I, S, T, WW, Wide>(v, w, code + i, back + i, flag + i);
  }
}
"""

HARNESS_MAIN = r"""
// usage: harness JOBS; each line of JOBS: <q|c> <id> <n> <input file> <output file>
// output file: n int64 codes, n float64 to_double() values, n uint8 overflow flags.
int main(int argc, char** argv) {
  if (argc != 2) return 2;
  FILE* jobs = fopen(argv[1], "r");
  if (!jobs) return 2;
  char kind, in_path[4096], out_path[4096];
  int id;
  size_t n;
  while (fscanf(jobs, " %c %d %zu %4095s %4095s", &kind, &id, &n, in_path, out_path) == 5) {
    std::vector<double> xd(n);
    std::vector<int64_t> xi(n), code(n);
    std::vector<double> back(n);
    std::vector<uint8_t> flag(n);
    FILE* f = fopen(in_path, "rb");
    if (!f) return 4;
    size_t got = kind == 'q' ? fread(xd.data(), 8, n, f) : fread(xi.data(), 8, n, f);
    fclose(f);
    if (got != n) return 5;
    bool ok = kind == 'q' ? qdispatch(id, xd.data(), code.data(), back.data(), flag.data(), n)
                          : cdispatch(id, xi.data(), code.data(), back.data(), flag.data(), n);
    if (!ok) { fprintf(stderr, "unknown job %c %d\n", kind, id); return 6; }
    f = fopen(out_path, "wb");
    fwrite(code.data(), 8, n, f);
    fwrite(back.data(), 8, n, f);
    fwrite(flag.data(), 1, n, f);
    fclose(f);
  }
  fclose(jobs);
  return 0;
}
"""

N_UNITS = 4  # translation units, compiled in parallel


def _unit_of_format() -> dict:
    """Every job whose target is format f goes to the same translation unit, so each ap_fixed class is
    instantiated once; units are balanced greedily by job count."""
    load = {fmt: sum(f == fmt for f, _, _ in QUANT_JOBS) + sum(dst == fmt for (_, dst), _, _ in CAST_JOBS)
            for fmt in QUANT_FORMATS}
    totals, unit = [0] * N_UNITS, {}
    for fmt in sorted(load, key=load.get, reverse=True):
        u = totals.index(min(totals))
        unit[fmt] = u
        totals[u] += load[fmt]
    return unit


def _harness_sources() -> list[str]:
    """Generated C++: N_UNITS files of instantiations (each with q/c dispatch functions) and one main; all
    include HARNESS_HEADER as harness.h."""
    unit = _unit_of_format()
    qcases: list[list[str]] = [[] for _ in range(N_UNITS)]
    ccases: list[list[str]] = [[] for _ in range(N_UNITS)]
    for idx, (fmt, r, o) in enumerate(QUANT_JOBS):
        t = _type(fmt, r, o)
        qcases[unit[fmt]].append(
            f"    case {idx}: quant<{t.width}, {t.integer}, {str(t.signed).lower()}, {t.to_hls()}, {_wide(fmt, r)}>"
            f"(x, code, back, flag, n); return true;")
    for idx, ((src, dst), r, o) in enumerate(CAST_JOBS):
        s, t = _type(src), _type(dst, r, o)
        ccases[unit[dst]].append(
            f"    case {idx}: conv<{s.width}, {str(s.signed).lower()}, {s.to_hls()}, {t.width}, {t.integer}, "
            f"{str(t.signed).lower()}, {t.to_hls()}, {_wide(dst, r)}>(x, code, back, flag, n); return true;")
    sources = []
    for u in range(N_UNITS):
        sources.append('#include "harness.h"\n' + "\n".join([
            f"bool qdispatch_{u}(int id, const double* x, int64_t* code, double* back, uint8_t* flag, size_t n) {{",
            "  switch (id) {", *qcases[u], "  }", "  return false;", "}",
            f"bool cdispatch_{u}(int id, const int64_t* x, int64_t* code, double* back, uint8_t* flag, size_t n) {{",
            "  switch (id) {", *ccases[u], "  }", "  return false;", "}", ""]))
    decls = []
    for kind, arg in (("q", "const double*"), ("c", "const int64_t*")):
        for u in range(N_UNITS):
            decls.append(f"bool {kind}dispatch_{u}(int, {arg}, int64_t*, double*, uint8_t*, size_t);")
        calls = " || ".join(f"{kind}dispatch_{u}(id, x, code, back, flag, n)" for u in range(N_UNITS))
        decls.append(f"static bool {kind}dispatch(int id, {arg} x, int64_t* code, double* back, uint8_t* flag, "
                     f"size_t n) {{ return {calls}; }}")
    includes = "#include <cstdint>\n#include <cstdio>\n#include <cstdlib>\n#include <vector>\n"
    main = includes + "\n".join(decls) + HARNESS_MAIN
    return sources + [main]


def _ap_types_dir() -> Path | None:
    """hls4ml's vendored ap_types headers, found without importing hls4ml (slow, pulls in ML frameworks)."""
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or spec.origin is None:
        return None
    d = Path(spec.origin).parent / "templates" / "vivado" / "ap_types"
    return d if (d / "ap_fixed_base.h").is_file() else None


# -Og: building the harness is dominated by template instantiation, and -Og compiles about as fast as -O0 while
# running ~8x faster (-O0, -Og and -O1 binaries give identical outputs).
# -DNDEBUG: ap_fixed's fixed-to-fixed assignment reads bit (F2 - F - 1) of the source even when that bit does not
# exist (every source bit is discarded, ap_fixed_base.h line 680; the value is then unused, line 682), which trips
# ap_private's "Attempting to read bit beyond MSB" assertion in builds without NDEBUG such as hls4ml's C
# simulation. The pair ((64, 0), (5, 8)) in ODD_PAIRS exercises exactly that case.
CXXFLAGS = ["-std=c++11", "-Og", "-DNDEBUG", "-w"]


def _compile(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(cmd)}):\n{res.stderr[-4000:]}")


@pytest.fixture(scope="session")
def harness(tmp_path_factory) -> Path:
    """The compiled reference harness (once per session, in pytest's tmp dir)."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found on PATH: cannot compile the ap_fixed reference harness")
    include = _ap_types_dir()
    if include is None:
        pytest.skip("hls4ml (with its vendored ap_types headers) is not installed: no ap_fixed reference")
    build = tmp_path_factory.mktemp("ap_fixed_harness")
    flags = [*CXXFLAGS, "-I", str(include), "-I", str(build)]
    (build / "harness.h").write_text(HARNESS_HEADER)
    units = []
    for i, text in enumerate(_harness_sources()):
        path = build / f"unit{i}.cpp"
        path.write_text(text)
        units.append(path)

    def compile_unit(path: Path) -> str:
        _compile([gxx, *flags, "-c", str(path), "-o", str(path.with_suffix(".o"))], f"compiling {path.name}")
        return str(path.with_suffix(".o"))

    with ThreadPoolExecutor(max_workers=max(1, min(len(units), os.cpu_count() or 1))) as pool:
        objects = list(pool.map(compile_unit, units))
    exe = build / "harness"
    _compile([gxx, *objects, "-o", str(exe)], "linking the harness")
    return exe


# ---- inputs ---------------------------------------------------------------------------------------------

def _quant_inputs(fmt, rng: np.random.Generator, n: int) -> np.ndarray:
    t = _type(fmt)
    F = t.frac
    lsb = 2.0 ** -F
    code_lo = -(1 << (t.width - 1)) if t.signed else 0
    hi_v, lo_v = float(np.ldexp(float(t.max_code), -F)), float(np.ldexp(float(code_lo), -F))
    span = max(hi_v - lo_v, lsb)
    special = []
    for edge in (hi_v, lo_v, 0.0, -lsb, lsb, hi_v + lsb, lo_v - lsb):
        for j in np.arange(-8, 9):
            special.append(edge + j * lsb / 4)  # quarter-LSB steps: exact ties and non-ties at every edge
        for direction in (np.inf, -np.inf):
            special.append(np.nextafter(edge + lsb / 2, direction))
            special.append(np.nextafter(edge - lsb / 2, direction))
    special += [k * 5e-324 for k in range(-9, 10)]  # subnormals: x * 2**F underflows for F < 0
    special += [0.0, -0.0, np.inf, -np.inf, 1e300, -1e300, 1e30, -1e30, 5e-324, -5e-324, 2.2e-308, -2.2e-308,
                1e-300, -1e-300, hi_v * 2, lo_v * 2, span * 1e6, -span * 1e6, 2.0 ** 62, -(2.0 ** 63), 2.0 ** 64]
    special = np.array(special, dtype=np.float64)
    m = (n - special.size) // 5
    # codes over 1.5x the range, with random sub-LSB fractions of 10 bits
    codes = rng.integers(-(1 << 52), 1 << 52, size=m) if t.width > 50 else \
        rng.integers(code_lo - (1 << t.width) // 4 - 2, t.max_code + (1 << t.width) // 4 + 3, size=m)
    block1 = np.ldexp(codes.astype(np.float64) * 1024 + rng.integers(0, 1024, size=m), -F - 10)
    # exact ties (2k+1) * lsb/2 and their float neighbours
    k = rng.integers(-(1 << 51), 1 << 51, size=m) if t.width > 50 else \
        rng.integers(code_lo - 4, t.max_code + 4, size=m)
    ties = np.ldexp((2 * k + 1).astype(np.float64), -F - 1)
    block2 = np.concatenate([ties[: m // 2], np.nextafter(ties[m // 2: 3 * m // 4], np.inf),
                             np.nextafter(ties[3 * m // 4:], -np.inf)])
    # log-uniform magnitudes from far below the LSB to far beyond the range
    block3 = rng.choice([-1.0, 1.0], size=m) * np.exp2(rng.uniform(-F - 12, t.integer + 12, size=m))
    # far beyond the range, up to 1e300
    block4 = rng.choice([-1.0, 1.0], size=m) * 10.0 ** rng.uniform(np.log10(span) + 1, 300, size=m)
    # uniform reals over 3x the range (float64 random bits below the LSB)
    block5 = rng.uniform(lo_v - span, hi_v + span, size=n - special.size - 4 * m)
    x = np.concatenate([special, block1, block2, block3, block4, block5])
    assert x.size == n and not np.isnan(x).any()
    return x


def _cast_inputs(src_fmt, dst_fmt, rng: np.random.Generator, n: int) -> np.ndarray:
    s, t = _type(src_fmt), _type(dst_fmt)
    lo, hi = (-(1 << (s.width - 1)) if s.signed else 0), s.max_code
    d = t.frac - s.frac
    dst_lo = -(1 << (t.width - 1)) if t.signed else 0
    cands = [lo, hi, 0, 1, -1, lo + 1, hi - 1]
    for limit in (t.max_code + 1, dst_lo, -t.max_code, 0):  # source codes around each target limit
        if d < 0:
            k = -d
            base = limit << k if k < 200 else 0
            step = 1 << min(k, 200)
            for j in range(-3, 4):
                for off in (-1, 0, 1, step // 2 - 1, step // 2, step // 2 + 1):
                    cands.append(base + j * step + off)
        else:
            base = -((-limit) >> d)
            cands += [base + j for j in range(-3, 4)]
    cands = np.array([c for c in cands if lo <= c <= hi], dtype=np.int64)
    m = (n - cands.size) // 2
    uniform = rng.integers(lo, hi, size=m, dtype=np.int64, endpoint=True)
    if d < 0:  # exact ties: low -d bits equal to 100...0 (and their neighbours)
        k = -d
        if k <= 62:
            high = rng.integers(lo >> k, (hi >> k) + 1, size=n - cands.size - m, dtype=np.int64)
            tie = (high << np.int64(k)) + np.int64(1 << (k - 1)) + rng.integers(-1, 2, size=high.size)
        else:
            tie = rng.integers(lo, hi, size=n - cands.size - m, dtype=np.int64, endpoint=True)
            tie[::2] = np.where(tie[::2] < 0, np.int64(lo), np.int64(0))
        tie = np.clip(tie, lo, hi)
    else:
        tie = rng.integers(lo, hi, size=n - cands.size - m, dtype=np.int64, endpoint=True)
    x = np.concatenate([cands, uniform, tie]).astype(np.int64)
    assert x.size == n
    return x


@pytest.fixture(scope="session")
def reference(harness, tmp_path_factory):
    """Runs every job through the harness once. Returns {('q'|'c', id): (inputs, codes, to_double, flags)}."""
    work = tmp_path_factory.mktemp("ap_fixed_io")
    rng = np.random.default_rng(20240607)
    inputs = {}
    for idx, (fmt, _, _) in enumerate(QUANT_JOBS):
        inputs["q", idx] = _quant_inputs(fmt, rng, N_PER_QUANT_JOB)
    for idx, ((src, dst), _, _) in enumerate(CAST_JOBS):
        inputs["c", idx] = _cast_inputs(src, dst, rng, N_PER_CAST_JOB)
    # Split the jobs over as many harness processes as there are CPUs (the harness is single-threaded).
    n_procs = max(1, min(4, os.cpu_count() or 1))
    job_files = [work / f"jobs{p}.txt" for p in range(n_procs)]
    lines: list[list[str]] = [[] for _ in range(n_procs)]
    for j, ((kind, idx), x) in enumerate(inputs.items()):
        x.tofile(work / f"{kind}{idx}.in")
        lines[j % n_procs].append(f"{kind} {idx} {x.size} {work / f'{kind}{idx}.in'} {work / f'{kind}{idx}.out'}")
    for path, job_lines in zip(job_files, lines):
        path.write_text("\n".join(job_lines) + "\n")
    procs = [subprocess.Popen([str(harness), str(path)], stderr=subprocess.PIPE, text=True) for path in job_files]
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, f"harness failed ({proc.returncode}): {err[-2000:]}"
    out = {}
    for (kind, idx), x in inputs.items():
        raw = (work / f"{kind}{idx}.out").read_bytes()
        n = x.size
        codes = np.frombuffer(raw, np.int64, n, 0)
        back = np.frombuffer(raw, np.float64, n, 8 * n)
        flags = np.frombuffer(raw, np.uint8, n, 16 * n).astype(bool)
        out[kind, idx] = (x, codes, back, flags)
    return out


def _mismatch_report(what, t, x, got, want, limit=8) -> str:
    bad = np.flatnonzero(got != want)
    rows = [f"  input {x[i]!r}: host.fixed {got[i]}, ap_fixed {want[i]}" for i in bad[:limit]]
    return f"{what} {t}: {bad.size} of {x.size} differ\n" + "\n".join(rows)


# ---- the tests ------------------------------------------------------------------------------------------

@pytest.mark.csim
@pytest.mark.parametrize("overflow", OVERFLOW_MODES)
@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_quantize_matches_ap_fixed(reference, rounding, overflow):
    checked = 0
    for idx, (fmt, r, o) in enumerate(QUANT_JOBS):
        if (r, o) != (rounding, overflow):
            continue
        t = _type(fmt, r, o)
        x, want, want_float, flags = reference["q", idx]
        got, count = quantize_count(x, t)
        assert got.dtype == np.int64
        assert np.array_equal(got, want), _mismatch_report("quantize to", t, x, got, want)
        assert count == int(flags.sum()), f"{t}: overflow count {count}, ap_fixed says {int(flags.sum())}"
        assert np.array_equal(to_float(got, t), want_float), f"to_float differs from to_double() for {t}"
        assert np.all((got >= t.min_code) & (got <= t.max_code)) or o == "WRAP"
        checked += x.size
    assert checked >= 100_000


@pytest.mark.csim
@pytest.mark.parametrize("overflow", OVERFLOW_MODES)
@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_cast_matches_ap_fixed(reference, rounding, overflow):
    checked = 0
    for idx, ((src_fmt, dst_fmt), r, o) in enumerate(CAST_JOBS):
        if (r, o) != (rounding, overflow):
            continue
        src, dst = _type(src_fmt), _type(dst_fmt, r, o)
        x, want, want_float, flags = reference["c", idx]
        got, count = cast_count(x, src, dst)
        assert np.array_equal(got, want), _mismatch_report(f"cast from {src} to", dst, x, got, want)
        assert count == int(flags.sum()), f"{src}->{dst}: overflow count {count}, ap_fixed says {int(flags.sum())}"
        assert np.array_equal(to_float(got, dst), want_float), f"to_float differs from to_double() for {dst}"
        checked += x.size
    assert checked >= 100_000


def test_shapes_and_plain_functions():
    t = FixedType(8, 3, True, "RND_CONV", "SAT")
    x = np.linspace(-5, 5, 24).reshape(2, 3, 4)
    codes = quantize(x, t)
    assert codes.shape == (2, 3, 4) and codes.dtype == np.int64
    assert np.array_equal(codes, quantize_count(x, t)[0])
    wide = FixedType(16, 6)
    assert np.array_equal(cast(codes, t, wide), codes << 5)  # widening is exact
    assert np.array_equal(cast(cast(codes, t, wide), wide, t), codes)
    assert np.array_equal(to_float(quantize(to_float(codes, t), t), t), to_float(codes, t))
    assert quantize(np.float64(0.25), t).shape == ()


def test_bad_inputs_raise():
    t = FixedType(8, 3)
    with pytest.raises(ValueError, match="NaN"):
        quantize([1.0, np.nan], t)
    with pytest.raises(ValueError, match="2\\*\\*53"):
        quantize(np.array([1 << 60]), FixedType(64, 64))
    assert quantize(np.array([3, -4]), t).tolist() == [96, -128]
    with pytest.raises(ValueError, match="outside the source range"):
        cast(np.array([200]), t, FixedType(16, 6))
    with pytest.raises(ValueError, match="integer array"):
        cast(np.array([1.5]), t, FixedType(16, 6))
    with pytest.raises(ValueError, match="too wide"):
        quantize([1.0], FixedType(65, 10))
    with pytest.raises(ValueError, match="too wide"):
        quantize([1.0], FixedType(64, 10, signed=False))
    for bad in (dict(width=0, integer=0), dict(width=8, integer=2.5), dict(width=8, integer=2, rounding="RNDX"),
                dict(width=8, integer=2, overflow="SATURATE"), dict(width=8, integer=2, signed=1)):
        with pytest.raises(ValueError):
            FixedType(**bad)


def test_properties():
    t = FixedType(8, 3)
    assert (t.frac, t.lsb, t.min_code, t.max_code, t.min_value, t.max_value) == (5, 1 / 32, -128, 127, -4.0, 127 / 32)
    u = FixedType(8, 2, signed=False)
    assert (u.min_code, u.max_code, u.max_value) == (0, 255, 255 / 64)
    sym = FixedType(8, 3, overflow="SAT_SYM")
    assert (sym.min_code, sym.max_code) == (-127, 127)
    assert FixedType(1, 1, overflow="SAT_SYM").min_code == -1  # ap_fixed's 1-bit SAT_SYM saturates to -1
    neg = FixedType(10, -2)
    assert (neg.frac, neg.lsb) == (12, 2.0 ** -12)
    assert FixedType(5, 8).lsb == 8.0
    assert FixedType(64, 32).min_code == -(1 << 63)


@pytest.mark.parametrize("signed", [True, False])
def test_parse_to_hls_round_trip(signed):
    for r in ROUNDING_MODES:
        for o in OVERFLOW_MODES:
            for w, i in ((16, 6), (8, -3), (1, 1), (64, 70)):
                t = FixedType(w, i, signed, r, o)
                assert FixedType.parse(t.to_hls()) == t
                assert FixedType.from_dict(t.to_dict()) == t
                hls4ml_spelling = f"{'' if signed else 'u'}fixed<{w},{i},{r},{o}>"
                assert FixedType.parse(hls4ml_spelling) == t
                assert FixedType.parse(hls4ml_spelling[:-1] + ",0>") == t
    prefix = "ap_fixed" if signed else "ap_ufixed"
    assert FixedType(16, 6, signed).to_hls() == f"{prefix}<16,6>"
    assert FixedType(16, 6, signed, "RND").to_hls() == f"{prefix}<16,6,AP_RND>"
    assert FixedType(16, 6, signed, "RND", "SAT").to_hls() == f"{prefix}<16,6,AP_RND,AP_SAT>"
    assert FixedType(16, 6, signed, "TRN", "SAT").to_hls() == f"{prefix}<16,6,AP_TRN,AP_SAT>"
    assert FixedType.parse(f" {prefix}< 16 , 6 , AP_RND_CONV , AP_SAT_SYM > ") == \
        FixedType(16, 6, signed, "RND_CONV", "SAT_SYM")
    assert FixedType.parse("ap_int<8>" if signed else "ap_uint<8>") == FixedType(8, 8, signed)
    for bad in ("fixed<16>", "ap_fixed<16,6,AP_RND,AP_SAT,2>", "ap_fixed<a,b>", "float", "ap_fixed<16,6,AP_FOO>"):
        with pytest.raises(ValueError):
            FixedType.parse(bad)


def test_parse_reads_hls4ml_precision_strings():
    types = pytest.importorskip("hls4ml.model.types")
    for r in ROUNDING_MODES:
        for o in OVERFLOW_MODES:
            for signed in (True, False):
                p = types.FixedPrecisionType(12, 4, signed, types.RoundingMode[r], types.SaturationMode[o])
                assert FixedType.parse(str(p)) == FixedType(12, 4, signed, r, o), str(p)
