"""The hardware plan: per layer, the hardware the design gives it. One plan, four views.

Where it comes from, in order:
  1. ``fit`` (``compile --board``) or, without a board, `default_plan`: each compute layer gets ``layer.hw``
     (``reuse_factor``, ``strategy``, ``weights``, ``row_chunk``, ``kernel``; row layers ``lanes``);
  2. ``--overrides`` pins a layer's ``reuse_factor`` / ``strategy`` / ``weights`` (`pin_hardware`): pins are
     applied after the fit and win over it, and ``estimate BUILD`` (without ``--refit``) costs the pinned plan.
Who reads it: the estimator (``estimate.estimate_graph``: per stage from ``layer.hw``), the HLS writer
(``backend/hls4ml.py``: ``reuse_factor`` and ``strategy`` of every kernel), the overlay contract (weight image
and KV layout) and the emulator (which computes what the kernels compute whatever their parallelism).

A MAC layer's hardware (Linear x·W, MatMul a·b), per row = one query position:

    row_macs    = K·N (Linear), H·k·n (MatMul over every head of one row)
    multipliers = ceil(row_macs / RF)                  the kernel's n_mult (overlays/hls/ff_linear.h)
    cycles/row  = ceil(row_macs / multipliers)         depth of the banked weight array (Resource strategy)
    banks       = multipliers                          one weight word of multipliers·w_bits per cycle

`plan_of` is that table as data; ``compile`` writes it to ``BUILD/plan.json``.
"""

from __future__ import annotations

import math

from ..host.graph import Graph
from .errors import UserError

PLAN_FILE = "plan.json"
DEFAULT_MULTIPLIERS = 32  # per MAC layer when no board is given: a design any board can hold for small models
HW_KEYS = {"reuse_factor", "strategy", "weights"}
STRATEGIES = {"latency": "Latency", "resource": "Resource"}
PLACEMENTS = ("on_chip", "streamed")


def mac_layers(graph: Graph) -> dict[str, int]:
    """{layer name: row_macs} of every MAC layer, as the estimator counts them (estimate.graph_works)."""
    from .estimate import graph_works

    return {w.layer: int(w.row_macs) for w in graph_works(graph) if w.kind == "mac"}


def default_plan(graph: Graph) -> None:
    """The plan without a board: every MAC layer on at most `DEFAULT_MULTIPLIERS` multipliers (the smallest
    reuse factor that gets there), weights on chip, hls4ml's Latency strategy for layers of at most
    ``estimate.LATENCY_MAX_WEIGHTS`` weights and Resource otherwise. Layers that already have settings keep them."""
    from .estimate import LATENCY_MAX_WEIGHTS

    for name, row_macs in mac_layers(graph).items():
        layer = graph.layer(name)
        if "reuse_factor" in layer.hw:
            continue
        rf = max(1, math.ceil(row_macs / DEFAULT_MULTIPLIERS))
        weights = int(layer.params["weight"].size) if layer.op == "Linear" else 0
        strategy = "Latency" if layer.op == "Linear" and weights <= LATENCY_MAX_WEIGHTS and rf == 1 else "Resource"
        layer.hw.update(reuse_factor=rf, strategy=strategy, weights="on_chip", row_chunk=0, kernel="block")
    graph.meta["hardware"] = {"board": None, "mode": "on_chip", "kernel": "block",
                              "reason": f"default plan (no --board): at most {DEFAULT_MULTIPLIERS} multipliers "
                                        "per layer, weights on chip"}


def check_overrides(graph: Graph, overrides: dict) -> None:
    """Refuse unknown layers, keys and values in ``--overrides`` (one sentence naming each)."""
    from .precision import OVERRIDE_KEYS

    problems = []
    names = {l.name for l in graph.layers}
    macs = mac_layers(graph)
    for name, entry in overrides.items():
        if name not in names:
            problems.append(f"no layer is named {name!r}")
            continue
        unknown = set(entry) - HW_KEYS - set(OVERRIDE_KEYS)
        if unknown:
            problems.append(f"{name!r}: unknown keys {sorted(unknown)} (known: "
                            f"{sorted(HW_KEYS | set(OVERRIDE_KEYS))})")
        if HW_KEYS & set(entry) and name not in macs:
            problems.append(f"{name!r} is a {graph.layer(name).op} layer: reuse_factor / strategy / weights apply "
                            "to Linear and MatMul layers only")
        for key in OVERRIDE_KEYS:  # widths of 2..32 bits: products and exact accumulators stay in 64-bit codes
            bits = entry.get(key)
            if key in entry and (isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32):
                problems.append(f"{name!r}: {key} must be an integer from 2 to 32 (bits; the presets use 8 and "
                                f"16), got {bits!r}")
        rf = entry.get("reuse_factor")
        if rf is not None and (isinstance(rf, bool) or not isinstance(rf, int) or rf < 1):
            problems.append(f"{name!r}: reuse_factor must be a positive integer, got {rf!r}")
        st = entry.get("strategy")
        if st is not None and str(st).lower() not in STRATEGIES:
            problems.append(f"{name!r}: strategy must be 'latency' or 'resource', got {st!r}")
        w = entry.get("weights")
        if w is not None and w not in PLACEMENTS:
            problems.append(f"{name!r}: weights must be 'on_chip' or 'streamed', got {w!r}")
        if w == "streamed" and graph.layer(name).op != "Linear":
            problems.append(f"{name!r}: only Linear weights can be streamed")
    if problems:
        raise UserError("--overrides: " + "; ".join(problems) + ".")


def pin_hardware(graph: Graph, overrides: dict | None) -> list[str]:
    """Apply the hardware keys of ``overrides`` to ``layer.hw`` (they win over the fit); returns the pinned
    layer names. Call `check_overrides` first."""
    pinned = []
    for name, entry in (overrides or {}).items():
        keys = HW_KEYS & set(entry)
        if not keys:
            continue
        hw = graph.layer(name).hw
        if "reuse_factor" in entry:
            hw["reuse_factor"] = int(entry["reuse_factor"])
        if "strategy" in entry:
            hw["strategy"] = STRATEGIES[str(entry["strategy"]).lower()]
        if "weights" in entry:
            hw["weights"] = entry["weights"]
        hw.setdefault("row_chunk", 0)
        hw.setdefault("kernel", "block")
        hw["pinned"] = sorted(keys)
        pinned.append(name)
    return pinned


def plan_of(graph: Graph) -> dict:
    """The plan as data (``BUILD/plan.json``): the design's choices and one entry per MAC layer."""
    layers = []
    for name, row_macs in mac_layers(graph).items():
        layer = graph.layer(name)
        hw = layer.hw
        rf = min(max(1, int(hw.get("reuse_factor", 1))), row_macs)
        mult = math.ceil(row_macs / rf)
        entry = {"layer": name, "op": layer.op, "block": layer.block, "engine": layer.op.lower(),
                 "row_macs": row_macs, "reuse_factor": int(hw.get("reuse_factor", 1)), "multipliers": mult,
                 "cycles_per_row": math.ceil(row_macs / mult), "weight_banks": mult,
                 "strategy": hw.get("strategy", "Resource"), "weights": hw.get("weights", "on_chip"),
                 "row_chunk": int(hw.get("row_chunk", 0)), "pinned": hw.get("pinned", [])}
        if layer.op == "MatMul":
            entry["weights"] = None
            entry["operand_b"] = "kv_cache (gmem1)" if layer.role in ("attn_scores", "attn_context") and \
                graph.meta.get("kind") == "decoder" else "on chip"
        layers.append(entry)
    return {"format": "fpgaformer-plan", "version": 1, "design": dict(graph.meta.get("hardware") or {}),
            "layers": layers}
