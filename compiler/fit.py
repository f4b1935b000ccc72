"""Automatic fit: reuse factors, strategies, lanes and weight placement that maximise estimated throughput
within a utilisation budget (default 80 % of every resource), or a clear "does not fit" with what would.

Search (all on the estimator's model, see ``estimate``):
1. Candidate architectures, one per hardware mode of DESIGN.md:
   * ``on_chip``  — one kernel per block, every weight (and a decoder's KV cache) on chip, hls4ml reuse
     factors (``valid_reuse_factors``), Latency strategy for Linear layers of <= 4,096 weights, else Resource.
   * ``streamed`` — one block kernel reused for every block (a kernel per block if blocks differ), weights
     (and KV cache) read from DDR/HBM; for encoders every row chunk C in S, S/2, S/4, ... >= 8 is tried
     (smaller C: smaller input buffers, more weight re-reads).
2. For a candidate, one target sets every stage to its cheapest setting that meets it:
   encoders (pipelined) — a cycle target T per item: each stage's uses·interval <= T, i.e.
   RF = floor(T / (uses·rows)) and lanes = ceil(L / floor(T / (uses·lines)));
   decoders (sequential) — the size E of the shared matrix-vector engine: RF = ceil(row_macs / E), but a
   stage that streams its weights or KV cache takes no fewer cycles than its fetch (so the engine is never
   larger than the memory can feed unless on-chip weights use it); row-wise stages get the fewest lanes that
   keep their time within 5 % of the matrix products' (``ROW_SHARE``).
   Resources grow with parallelism, so a binary search finds the most parallel target within budget; a
   second search takes the least parallel one within 1 % of its speed, to spend no more than it needs.
3. In the streamed mode, while the design is bandwidth-bound, stages are moved back on chip (largest off-chip
   traffic first) as long as the design still fits and gets faster: "which weights stay on chip". An on-chip
   layer helps a decoder only when the engine can run it faster than the memory would feed it.
4. The fastest fitting candidate wins. If none fits, the reason lists each resource over budget for the
   least demanding setting of each mode, and the suggestions say which smaller precision, which bigger board
   or which mode would fit (each checked by running this search).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..host.graph import Graph
from .boards import Board, known_boards, load_board
from .estimate import (LATENCY_MAX_WEIGHTS, MAC_DEPTH, ROW_OPS, DesignEstimate, Precision, Stage, Work,
                       build_stages, effective_bandwidth, estimate_stages, graph_works, identical_blocks,
                       is_decoder, resolve_clock, valid_reuse_factors)
from .precision import PRESETS
from .roofline import Bounds, bounds_of

MODES = ("on_chip", "streamed")
MIN_CHUNK = 8


@dataclass
class ModeResult:
    """Best design of one hardware mode, or why that mode does not fit."""

    mode: str
    design: DesignEstimate | None        # the fastest fitting design, None if nothing fits
    attempt: DesignEstimate | None       # the least demanding setting tried (for the reason)
    reason: str = ""


@dataclass
class FitResult:
    board: Board
    precision: Precision
    clock_mhz: float
    budget: float
    kind: str
    design: DesignEstimate | None
    modes: dict[str, ModeResult]
    bounds: Bounds | None = None          # bounds for the chosen design's weight placement
    model_bounds: Bounds | None = None    # bounds with every weight off chip
    reason: str = ""
    suggestions: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.design is not None

    @property
    def fraction(self) -> float:
        """Estimated throughput / the tighter bound of the chosen design."""
        if not self.design or not self.bounds or not self.bounds.tighter:
            return 0.0
        return self.design.items_per_s / self.bounds.tighter


# ----------------------------------------------------------------------------------------- configuration
def _log2(k: int) -> int:
    return math.ceil(math.log2(max(k, 2)))


ROW_SHARE = 0.05   # decoders: row-wise stages together may take this fraction of the matrix-product time


def _configure(stages: list[Stage], x: int, decode: bool, mem_cycles: list[float], hls_rf: bool) -> bool:
    """Set every stage to its cheapest setting for the target ``x``. False if some stage cannot meet it.

    Encoders (pipelined): x = T cycles per item; each stage gets uses·interval <= T.
    Decoders (sequential): x = E multipliers of the shared engine; a stage streaming its weights (or KV
    cache) takes no more than keep up with its fetch; row-wise stages get the fewest lanes that keep their
    time (beyond their pipeline depth) within ROW_SHARE of the matrix products' time, shared in proportion to
    their work."""
    if decode:
        return _configure_decode(stages, x, mem_cycles)
    for st in stages:
        w, s = st.work, st.settings
        if w.kind == "mac":
            rf = (x // st.uses) // w.rows
            if rf < 1:
                return False
            rf = min(rf, w.row_macs)
            if hls_rf and w.op == "Linear" and s.weights == "on_chip":
                valid = valid_reuse_factors(w.k, w.row_macs // w.k)
                rf = max(v for v in valid if v <= rf)
            s.reuse_factor = rf
            _strategy(st)
        elif w.kind == "row":
            ii = (x // st.uses) // w.lines
            if ii < 1:
                return False
            s.lanes = max(1, math.ceil(w.line_len / ii))
            if s.lanes > w.line_len:
                return False
    return True


def _strategy(st: Stage) -> None:
    w, s = st.work, st.settings
    if w.op == "MatMul":
        s.strategy = "Latency"
    else:
        small = w.weights * st.weight_sets <= LATENCY_MAX_WEIGHTS
        s.strategy = "Latency" if s.weights == "on_chip" and small else "Resource"


def _configure_decode(stages: list[Stage], engine: int, mem_cycles: list[float]) -> bool:
    mac_cycles = 0.0
    for st, mem in zip(stages, mem_cycles):
        w, s = st.work, st.settings
        if w.kind != "mac":
            continue
        rf = math.ceil(w.row_macs / engine)
        if mem:
            rf = max(rf, int(mem) - _log2(w.k) - MAC_DEPTH)
        s.reuse_factor = max(1, min(rf, w.row_macs))
        _strategy(st)
        mac_cycles += max(s.reuse_factor + _log2(w.k) + MAC_DEPTH, mem) * st.executions
    rows = [st for st in stages if st.work.kind == "row"]
    total_work = sum(st.work.lines * st.work.line_len * st.executions for st in rows) or 1
    for st in rows:
        w, s = st.work, st.settings
        _, passes, depth_op, _ = ROW_OPS[w.op]
        cap = ROW_SHARE * mac_cycles * (w.lines * w.line_len * st.executions / total_work) / st.executions
        ii = int(cap // (w.lines - 1 + passes))  # pipeline depth comes on top
        s.lanes = w.line_len if ii < 1 else max(1, min(w.line_len, math.ceil(w.line_len / ii)))
    return True


def _least_parallel(stages: list[Stage], decode: bool) -> int:
    """The target at which every stage takes its least parallel setting (RF = row_macs, one lane)."""
    if decode:
        return 1
    hi = 1
    for st in stages:
        w = st.work
        if w.kind == "mac":
            hi = max(hi, st.uses * w.rows * w.row_macs)
        elif w.kind == "row":
            hi = max(hi, st.uses * w.lines * w.line_len)
    return hi


def _most_parallel(stages: list[Stage], decode: bool) -> int:
    """The target beyond which no stage gets more parallel."""
    if decode:
        return max([st.work.row_macs for st in stages if st.work.kind == "mac"]
                   + [st.work.line_len for st in stages if st.work.kind == "row"] + [1])
    return 1


# ---------------------------------------------------------------------------------------------- searching
@dataclass
class _Arch:
    mode: str
    kernel: str
    chunk: int = 0
    on_chip: frozenset = frozenset()      # stage indices kept on chip in the streamed mode


class _Search:
    def __init__(self, graph: Graph, works: list[Work], board: Board, prec: Precision, clock: float,
                 budget: float):
        self.graph, self.works, self.board, self.prec = graph, works, board, prec
        self.clock, self.budget = clock, budget
        self.decode = is_decoder(graph)
        self.kind = "decoder" if self.decode else "encoder"
        self.bw_per_cycle = effective_bandwidth(board, clock) / (clock * 1e6)

    def stages(self, arch: _Arch) -> list[Stage]:
        stages = build_stages(self.graph, self.works, arch.kernel)
        for i, st in enumerate(stages):
            w = st.work
            holds = w.kind == "mac" and (w.op == "Linear" or w.decode)
            st.settings.weights = "on_chip" if (arch.mode == "on_chip" or i in arch.on_chip or not holds) \
                else "streamed"
            st.settings.row_chunk = arch.chunk if arch.mode == "streamed" and not self.decode else 0
            if self.decode and w.kind == "mac":
                st.settings.engine = "gemv"  # decode runs layers one after another: one shared MAC array
        return stages

    def _mem_cycles(self, stages: list[Stage]) -> list[float]:
        out = []
        for st in stages:
            w = st.work
            if st.settings.weights != "streamed" or w.kind != "mac":
                out.append(0.0)
                continue
            b = self.prec.w_bits if w.op == "Linear" else self.prec.a_bits
            n = w.weights if w.op == "Linear" else w.operand_b
            out.append(n * b / 8 / self.bw_per_cycle)
        return out

    def evaluate(self, arch: _Arch, stages: list[Stage], T: int) -> DesignEstimate | None:
        if not _configure(stages, T, self.decode, self._mem_cycles(stages), arch.mode == "on_chip"):
            return None
        return estimate_stages(stages, self.kind, arch.kernel, self.board, self.prec, self.clock, self.budget)

    def run(self, arch: _Arch) -> tuple[DesignEstimate | None, DesignEstimate | None]:
        """(best fitting design, least demanding attempt). Targets are ordered from least to most parallel
        (decoders: P up; encoders: T down); resources grow along that order, so binary searches apply."""
        stages = self.stages(arch)
        least, most = _least_parallel(stages, self.decode), _most_parallel(stages, self.decode)
        # position 0 = least parallel, n = most parallel
        n = abs(most - least)
        target = (lambda i: least + i) if self.decode else (lambda i: least - i)
        attempt = self.evaluate(arch, stages, target(0))
        if attempt is None or not attempt.fits:
            return None, attempt

        def fits(i):
            d = self.evaluate(arch, stages, target(i))
            return d is not None and d.fits, d

        lo, hi = 0, n  # largest i that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(mid)[0]:
                lo = mid
            else:
                hi = mid - 1
        best = self.evaluate(arch, stages, target(lo))
        goal = 0.99 * best.items_per_s
        top, low = lo, 0  # least parallel i within 1 % of the best speed
        while low < top:
            mid = (low + top) // 2
            ok, d = fits(mid)
            if ok and d.items_per_s >= goal:
                top = mid
            else:
                low = mid + 1
        return self.evaluate(arch, stages, target(top)), attempt


def _chunks(works: list[Work]) -> list[int]:
    rows = max((w.rows for w in works if w.kind == "mac" and w.op == "Linear"), default=1)
    out, c = [0], rows // 2
    while c >= MIN_CHUNK:
        out.append(c)
        c //= 2
    return out


def _best_mode(search: _Search, mode: str) -> ModeResult:
    graph, works = search.graph, search.works
    kernel = "block" if mode == "on_chip" or not identical_blocks(graph) else "shared"
    archs = [_Arch(mode, kernel, c) for c in (_chunks(works) if mode == "streamed" and not search.decode else [0])]
    best = attempt = None
    best_arch = None
    for arch in archs:
        d, a = search.run(arch)
        if d is not None and (best is None or d.items_per_s > best.items_per_s * 1.001):
            best, best_arch = d, arch
        if attempt is None or (a is not None and _overshoot(a) < _overshoot(attempt)):
            attempt = a
    if best is not None and mode == "streamed":
        best = _keep_on_chip(search, best_arch, best)
    reason = "" if best is not None else _reason(attempt, mode)
    return ModeResult(mode, best, attempt, reason)


def _keep_on_chip(search: _Search, arch: _Arch, best: DesignEstimate) -> DesignEstimate:
    """Greedily move streamed stages on chip while bandwidth-bound, the design fits and it gets faster."""
    order = sorted((i for i, e in enumerate(best.stages) if e.stage.settings.weights == "streamed"),
                   key=lambda i: -best.stages[i].cost.weight_bytes * best.stages[i].stage.executions)
    for i in order:
        if best.memory_s < 0.5 * best.compute_s and not search.decode:
            break
        trial = _Arch(arch.mode, arch.kernel, arch.chunk, arch.on_chip | {i})
        d, _ = search.run(trial)
        if d is not None and d.items_per_s > best.items_per_s * 1.005:
            best, arch = d, trial
    return best


def _overshoot(d: DesignEstimate | None) -> float:
    if d is None:
        return math.inf
    over = d.over_budget()
    return max(over.values()) if over else 0.0


NAMES = {"dsp": "DSP", "bram36": "BRAM36", "uram": "URAM", "lut": "LUT", "ff": "FF"}


def _reason(attempt: DesignEstimate | None, mode: str) -> str:
    if attempt is None:
        return f"{mode}: no setting meets the stage timing (a stage needs more rows than cycles)."
    avail = attempt.board.resources()
    parts = []
    for res, util in attempt.over_budget().items():
        if res == "memory":
            parts.append(f"{attempt.offchip_storage / 1e6:,.0f} MB of weights/KV cache in "
                         f"{attempt.board.memory_gb:g} GB of {attempt.board.memory_type}")
        else:
            parts.append(f"{NAMES[res]} {attempt.totals[res]:,.0f} of {avail[res]:,} ({util:.0%})")
    mem = attempt.breakdown()
    what = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(mem.items(), key=lambda kv: -kv[1]) if v >= 1)
    text = (f"{mode}: even at the least parallel setting the design needs " + "; ".join(parts)
            + f" (budget {attempt.budget:.0%})")
    if what and any(r in attempt.over_budget() for r in ("bram36", "uram")):
        text += f"; on-chip memory in BRAM36-equivalents: {what}"
    return text + "."


# ------------------------------------------------------------------------------------------------- public
def choose_hardware(graph: Graph, board: Board | str, precision: str | None = None, budget: float = 0.8,
                    clock_mhz: float | None = None, modes: tuple[str, ...] = MODES, suggest: bool = True,
                    apply: bool = True) -> FitResult:
    """Fit ``graph`` to ``board``: the fastest design within ``budget`` of every resource. With ``apply``
    the choices are written to each layer's ``hw`` (reuse_factor, strategy, weights, lanes, row_chunk,
    kernel) and ``graph.meta["hardware"]``, which ``fpgaformer compile`` uses for the kernels it emits."""
    board = load_board(board) if isinstance(board, str) else board
    prec = Precision.of(precision)
    clock = resolve_clock(board, clock_mhz)
    works = graph_works(graph)
    search = _Search(graph, works, board, prec, clock, budget)
    results = {m: _best_mode(search, m) for m in modes}
    fitting = [r.design for r in results.values() if r.design is not None]
    best = max(fitting, key=lambda d: d.items_per_s) if fitting else None
    model_b = bounds_of(works, board, prec, clock)
    res = FitResult(board, prec, clock, budget, search.kind, best, results, model_bounds=model_b)
    if best is not None:
        res.bounds = bounds_of(works, board, prec, clock, best.streamed_bytes)
        if apply:
            write_settings(graph, best)
    else:
        res.reason = " ".join(r.reason for r in results.values())
        if suggest:
            res.suggestions = _suggestions(graph, board, prec, budget, clock_mhz, modes, results)
    return res


def write_settings(graph: Graph, design: DesignEstimate) -> None:
    for e in design.stages:
        for name in e.stage.members:
            layer = graph.layer(name)
            hw = e.stage.settings.to_hw(e.stage.work, design.kernel)
            if hw:
                layer.hw.update(hw)
    graph.meta["hardware"] = {"board": design.board.name, "precision": design.precision.name,
                              "clock_mhz": design.clock_mhz, "mode": design.mode, "kernel": design.kernel,
                              "budget": design.budget}


def _suggestions(graph, board, prec, budget, clock_mhz, modes, results) -> list[str]:
    out = []
    unit = "tokens/s" if is_decoder(graph) else "sequences/s"
    for name, (w, a) in sorted(PRESETS.items(), key=lambda kv: -sum(kv[1])):
        if w + a < prec.w_bits + prec.a_bits:
            r = choose_hardware(graph, board, name, budget, clock_mhz, modes, suggest=False, apply=False)
            if r.fits:
                out.append(f"a smaller precision: --precision {name} fits ({r.design.items_per_s:,.1f} {unit}, "
                           f"estimate)")
                break
    bigger = []
    for other in known_boards():
        if other == board.name:
            continue
        ob = load_board(other)
        if ob.dsp <= board.dsp and ob.sram_bits() <= board.sram_bits():
            continue
        r = choose_hardware(graph, ob, prec.name, budget, None, modes, suggest=False, apply=False)
        if r.fits:
            bigger.append(f"{other} ({r.design.items_per_s:,.1f} {unit})")
    if bigger:
        out.append("a bigger board: " + ", ".join(bigger))
    if "streamed" not in modes:
        out.append("weight streaming from DDR/HBM (--mode streamed), which keeps only tiles of the weights on chip")
    if not is_decoder(graph):
        attempts = [r.attempt for r in results.values() if r.attempt is not None]
        if attempts and any(a.breakdown().get("buffer", 0) > 0.25 * budget * (a.board.bram36 + 8 * a.board.uram)
                            for a in attempts):
            out.append("a shorter --seq-len (activation buffers grow with the sequence length)")
    return out
