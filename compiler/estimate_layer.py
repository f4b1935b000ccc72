"""Estimate ONE hls4ml Dense layer with the design estimator's own cost code (`estimate.stage_cost` and
`estimate.allocate` on a synthetic one-layer `Stage`): no second model. Used to compare the estimator with
published csynth results of single hls4ml layers (benchmarks/bench_estimator_vs_synthesis.py,
tests/compiler/test_estimator_vs_synthesis.py). Every figure is an ESTIMATE.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from functools import lru_cache

from .boards import Board, load_board
from .estimate import Precision, allocate, dense_stage, stage_cost

# Part-name prefix -> DSP type. 7-series (xc7...) has DSP48E1; UltraScale/UltraScale+ (xcku, xcvu, xczu, xcu2xx,
# xck26, ...) DSP48E2; Versal (xcv[cmp]...) DSP58.
_DSP_BY_PART = ((r"^xc7", "DSP48E1"), (r"^xcv[cmpeh]\d", "DSP58"), (r"^x", "DSP48E2"))


def dsp_type_of_part(part: str) -> str:
    """DSP slice type of a Xilinx part name (``xc7z020clg400-1`` -> DSP48E1, ``xcu250-...`` -> DSP48E2)."""
    p = part.strip().lower()
    for pattern, dsp in _DSP_BY_PART:
        if re.match(pattern, p):
            return dsp
    return "DSP48E2"


@lru_cache(maxsize=8)
def _board_for(dsp_type: str) -> Board:
    """A board whose only figure that matters here is its DSP type (resources are not budgeted: one layer)."""
    return replace(load_board("kv260"), dsp_type=dsp_type, uram=0)


def estimate_dense(n_in: int, n_out: int, reuse_factor: int = 1, strategy: str = "Resource", w_bits: int = 16,
                   a_bits: int = 16, acc_bits: int | None = None, n_zeros: int = 0, part: str = "xcu250",
                   bias: bool = True) -> dict:
    """DSP, BRAM18, LUT, FF, II and latency (cycles) of one hls4ml Dense layer (io_parallel, one input row)
    as the design estimator costs it. ``part`` picks the DSP type (see `dsp_type_of_part`); ``acc_bits`` is
    the accumulator width (hls4ml ``accum_t``; default: the estimator's full-precision width)."""
    board = _board_for(dsp_type_of_part(part))
    prec = Precision("layer", int(w_bits), int(a_bits))
    if acc_bits is not None and "acc_bits" in Precision.__dataclass_fields__:
        prec = replace(prec, acc_bits=int(acc_bits))
    stage = dense_stage(n_in, n_out, reuse_factor, strategy, n_zeros=n_zeros, bias=bias)
    cost = stage_cost(stage, board, prec)
    places = allocate([(a, 1) for a in cost.arrays], board, budget=math.inf)
    bram18 = cost.bram18 + sum(2 * p.bram36 for p in places)
    return {"dsp": cost.dsp, "bram18": bram18, "lut": cost.lut + sum(p.lut for p in places),
            "ff": cost.ff + sum(p.ff for p in places), "ii": cost.ii, "latency": cost.latency,
            "multipliers": cost.parallel}
