"""Quantization pipeline: float layer graph -> fixed-point layer graph the emulator and HLS kernels run.

    fuse masks -> calibrate ranges (onnxruntime on samples) -> choose types and kernel settings

``quantize(graph, preset, samples, model)`` returns a new graph; the float graph is left unchanged.
"""

from __future__ import annotations

import numpy as np

from ..host.graph import Graph
from .passes.calibrate import calibrate, synthetic_samples
from .passes.choose_types import choose_types
from .passes.fuse_masks import fuse_masks
from .precision import preset_bits


def quantize(graph: Graph, preset: str = "w8a16", samples: dict[str, np.ndarray] | None = None, model=None,
             overrides: dict | None = None, ranges: dict[str, float] | None = None) -> Graph:
    weight_bits, act_bits = preset_bits(preset)
    q = fuse_masks(graph.copy())
    if ranges is None:
        ranges = calibrate(q, samples if samples is not None else synthetic_samples(q), model)
    q = choose_types(q, ranges, weight_bits, act_bits, overrides)
    q.meta["preset"] = preset
    q.meta["calibration"] = "user" if samples is not None else "synthetic"
    return q
