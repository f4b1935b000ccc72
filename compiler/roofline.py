"""Roofline bounds of a model on a board, and the roofline plot (matplotlib, imported lazily, Agg backend).

Bounds (anchors note section 6; physical limits, no efficiency factor):
  compute bound  items/s = N_DSP · f / Σ_layers MACs_l · c_l
                 c_l = DSPs per product for the layer's operand widths (``Board.dsp_cost_per_product``:
                 1/2 for int8 x int8 on DSP48E2, 1 for wider or on DSP48E1). With one width everywhere this is
                 the familiar N_DSP · MAC_per_DSP · f / MACs_per_item.
  memory bound   items/s = BW(f) / bytes_per_item,  BW(f) = min(BW_peak, AXI ports · port_bits/8 · f)
                 bytes_per_item = weights kept off chip (read once per item) + the KV cache read per decoded
                 token (2 · n_layers · L · d_kv · a_bits/8). Infinite when nothing is read off chip.
  MACs per item: encoder Σ rows · row_macs over Linear and MatMul layers (S rows); decoder per token
  Σ in·out over Linear layers + 2 · n_layers · L · d for attention.
The fraction of the tighter bound a design reaches = estimate / min(compute bound, memory bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..host.graph import Graph
from .boards import Board
from .estimate import DesignEstimate, Precision, Work, graph_works, resolve_clock


@dataclass
class Bounds:
    """Roofline bounds in items/s (sequences or tokens) with the figures they come from."""

    compute: float
    memory: float
    macs_per_item: float
    bytes_per_item: float
    peak_macs_per_s: float       # the board's MAC/s at this model's mix of widths
    bandwidth_gbs: float         # BW(f), no efficiency factor

    @property
    def tighter(self) -> float:
        return min(self.compute, self.memory)

    @property
    def limit(self) -> str:
        return "compute" if self.compute <= self.memory else "memory"

    def to_json(self) -> dict:
        return {"compute_bound": self.compute, "memory_bound": _finite(self.memory),
                "tighter_bound": self.tighter, "limited_by": self.limit, "macs_per_item": self.macs_per_item,
                "offchip_bytes_per_item": self.bytes_per_item, "peak_macs_per_s": self.peak_macs_per_s,
                "bandwidth_gbs": self.bandwidth_gbs}


def _finite(x: float):
    return None if math.isinf(x) else x


def macs_and_dsp_time(works: list[Work], board: Board, prec: Precision) -> tuple[float, float]:
    """(MACs per item, DSP-cycles per item = Σ MACs_l · DSPs per product)."""
    macs = dsp_cycles = 0.0
    for w in works:
        if w.kind != "mac":
            continue
        b = prec.w_bits if w.op == "Linear" else prec.a_bits
        macs += w.macs
        dsp_cycles += w.macs * board.dsp_cost_per_product(prec.a_bits, b)
    return macs, dsp_cycles


def model_offchip_bytes(works: list[Work], prec: Precision) -> float:
    """Bytes per item when every weight (and, decoding, the KV cache) lives off chip, each read once."""
    total = 0.0
    for w in works:
        if w.kind == "mac" and w.op == "Linear":
            total += w.weights * prec.w_bits / 8
        elif w.kind == "mac" and w.decode:
            total += w.operand_b * prec.a_bits / 8
    return total


def bounds(graph: Graph, board: Board, precision: str | Precision | None = None,
           clock_mhz: float | None = None, offchip_bytes: float | None = None) -> Bounds:
    """Roofline bounds of ``graph`` on ``board``; ``offchip_bytes`` per item defaults to everything
    streamed (pass ``design.streamed_bytes`` for a design that keeps some weights on chip)."""
    prec = precision if isinstance(precision, Precision) else Precision.of(precision)
    works = graph_works(graph)
    return bounds_of(works, board, prec, resolve_clock(board, clock_mhz), offchip_bytes)


def bounds_of(works: list[Work], board: Board, prec: Precision, clock_mhz: float,
              offchip_bytes: float | None = None) -> Bounds:
    f = clock_mhz * 1e6
    macs, dsp_cycles = macs_and_dsp_time(works, board, prec)
    compute = board.dsp * f / dsp_cycles if dsp_cycles else math.inf
    nbytes = model_offchip_bytes(works, prec) if offchip_bytes is None else offchip_bytes
    bw = board.bandwidth_gbs(clock_mhz)
    memory = bw * 1e9 / nbytes if nbytes > 0 else math.inf
    peak = board.dsp * f * (macs / dsp_cycles) if dsp_cycles else 0.0
    return Bounds(compute, memory, macs, nbytes, peak, bw)


def design_bounds(graph: Graph, design: DesignEstimate) -> Bounds:
    """Bounds for the design's own placement of weights (streamed bytes read once per item)."""
    return bounds_of(graph_works(graph), design.board, design.precision, design.clock_mhz, design.streamed_bytes)


# ------------------------------------------------------------------------------------------------- plot
def plot(path: str, design: DesignEstimate, bnds: Bounds, title: str = "") -> str:
    """Roofline (MAC/s against MACs per off-chip byte, log-log) with the design's estimated point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak, bw = bnds.peak_macs_per_s, bnds.bandwidth_gbs * 1e9
    eff_bw = design.bandwidth_gbs * 1e9
    ridge = peak / bw
    # the design's point sits at its actual traffic (row-chunk re-reads included)
    traffic = design.offchip_bytes
    intensity = bnds.macs_per_item / traffic if traffic > 0 else math.inf
    x_hi = max(ridge * 100, intensity * 4 if math.isfinite(intensity) else 0)
    x_lo = min(ridge / 100, intensity / 4 if math.isfinite(intensity) else math.inf)
    xs = [10 ** (i / 50) for i in range(int(math.floor(math.log10(x_lo) * 50)), int(math.log10(x_hi) * 50) + 1)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.loglog(xs, [min(peak, bw * x) for x in xs], "k-", label=f"roof: {peak / 1e9:,.0f} GMAC/s, "
              f"{bnds.bandwidth_gbs:,.1f} GB/s")
    ax.loglog(xs, [min(peak, eff_bw * x) for x in xs], "k:", lw=1,
              label=f"bandwidth x efficiency {design.board.bandwidth_efficiency:.2f}")
    achieved = design.items_per_s * bnds.macs_per_item
    x_point = intensity if math.isfinite(intensity) else x_hi / 2
    ax.loglog([x_point], [achieved], "o", color="tab:red", ms=8,
              label=f"design (estimate): {design.items_per_s:,.1f} {design.unit}")
    if not math.isfinite(intensity):
        ax.annotate("weights on chip (no off-chip reads)", (x_point, achieved), textcoords="offset points",
                    xytext=(-150, -18), fontsize=8)
    ax.set_xlabel("arithmetic intensity (MAC per off-chip byte)")
    ax.set_ylabel("MAC/s")
    frac = design.items_per_s / bnds.tighter if bnds.tighter else 0
    ax.set_title(title or f"{design.board.title}, {design.precision.name}, {design.clock_mhz:.0f} MHz: "
                 f"{frac:.0%} of the {bnds.limit} bound (estimate)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
