"""``--precision auto``: the cheapest per-layer widths that keep the outputs within a tolerance.

Layers are grouped by (block, part): attention, feed-forward, norms/residuals, and the layers outside blocks.
Each group is either low (w8a8) or high (w16a16). Cost of a choice = sum over layers of
weight bits x parameters + activation bits x output elements (storage, the resource that limits fit).

Search (greedy by measured benefit per cost):
  1. all groups high must meet the tolerance, else the model cannot meet it and we say so;
  2. sensitivity: error with only group g high (everything else low), for every g;
  3. raise groups in order of (error reduction / cost increase) until the outputs meet the tolerance.
The error is the relative RMS error of the graph outputs of the emulator against the float IR executor on
the calibration samples (the first few). Calibration ranges are measured once and shared by every trial.
"""

from __future__ import annotations

import numpy as np

from ..host import reference
from ..host.emulator import Emulator
from ..host.graph import Graph
from .errors import UserError
from .passes.calibrate import calibrate, synthetic_samples
from .passes.fuse_masks import fuse_masks
from .quantize import quantize
from .validate import positive

LOW, HIGH = {"weight_bits": 8, "act_bits": 8}, {"weight_bits": 16, "act_bits": 16}
TRIAL_SAMPLES = 4
ATTENTION = {"q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "attn_scores", "attn_softmax", "attn_context",
             "rope", "scale", "attn_mask_add"}
FFN = {"ffn_up", "ffn_gate", "ffn_gate_up", "ffn_act", "ffn_mul", "ffn_down"}


def group_of(layer) -> str:
    if layer.block is None:
        return "outside"
    part = "attention" if layer.role in ATTENTION else "ffn" if layer.role in FFN else "norm/residual"
    return f"block {layer.block} {part}"


def _error(q: Graph, samples: dict, references: list[dict]) -> float:
    emu = Emulator(q)
    num = den = 0.0
    for i, ref in enumerate(references):
        got = emu.run_float({k: v[i] for k, v in samples.items()})
        for name in q.outputs:
            d = np.asarray(got[name], np.float64) - ref[name]
            num += float(np.sum(d * d))
            den += float(np.sum(ref[name] ** 2))
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))


def _cost(graph: Graph, choice: dict[str, dict]) -> float:
    total = 0.0
    for layer in graph.layers:
        bits = choice.get(layer.name, LOW)
        total += bits["weight_bits"] * layer.n_params()
        total += bits["act_bits"] * int(np.prod(graph.tensors[layer.output].shape))
    return total


def search_precision(graph: Graph, model, samples: dict | None, tolerance: float | None, log=print) -> Graph:
    if tolerance is None:
        raise UserError("--precision auto needs --tolerance (the relative RMS error allowed on the outputs, "
                        "e.g. 0.01).")
    positive(tolerance, "--tolerance", "the relative RMS error allowed on the outputs, e.g. 0.01")  # nan meets all
    samples = samples if samples is not None else synthetic_samples(graph)
    ranges = calibrate(fuse_masks(graph.copy()), samples, model)
    trial = {k: v[:TRIAL_SAMPLES] for k, v in samples.items()}
    count = next(iter(trial.values())).shape[0]
    references = []
    for i in range(count):
        env = reference.run(graph, {k: v[i] for k, v in trial.items()}, dtype=np.float64)
        references.append({n: env[n] for n in graph.outputs})
    groups: dict[str, list[str]] = {}
    for layer in graph.layers:
        groups.setdefault(group_of(layer), []).append(layer.name)

    def choice_for(high: set[str]) -> dict[str, dict]:
        return {name: (HIGH if g in high else LOW) for g, names in groups.items() for name in names}

    def trial_error(high: set[str]) -> float:
        return _error(quantize(graph, "w8a8", None, None, overrides=choice_for(high), ranges=ranges), trial,
                      references)

    best = trial_error(set(groups))
    if best > tolerance:
        raise UserError(f"even w16a16 everywhere gives a relative output error of {best:.3g} > {tolerance:.3g}; "
                        "the tolerance cannot be met with these presets. Raise --tolerance or calibrate with "
                        "inputs closer to real use (--calib).")
    high: set[str] = set()
    error = trial_error(high)
    if error > tolerance:
        base_cost = _cost(graph, choice_for(high))
        gains = []
        for g in groups:
            e = trial_error({g})
            gains.append(((error - e) / max(_cost(graph, choice_for({g})) - base_cost, 1.0), g))
        for _, g in sorted(gains, reverse=True):
            high.add(g)
            error = trial_error(high)
            if error <= tolerance:
                break
    log(f"precision auto: relative output error {error:.3g} <= {tolerance:.3g} with w16a16 in "
        f"{len(high)} of {len(groups)} layer groups: " + (", ".join(sorted(high)) or "none (w8a8 everywhere)"))
    q = quantize(graph, "w8a8", samples, model, overrides=choice_for(high), ranges=ranges)
    q.meta["preset"] = "auto"
    q.meta["precision_choice"] = {g: ("w16a16" if g in high else "w8a8") for g in groups}
    q.meta["precision"] = {"weight_bits": 8, "act_bits": 8 if len(high) < len(groups) else 16}
    return q
