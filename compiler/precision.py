"""Precision presets: bit widths of weights and activations for the quantization passes and estimator.

``wXaY`` means weights of X bits and activations of Y bits (fixed point, integer bits chosen per tensor from
calibrated ranges). ``auto`` searches per-layer widths against an accuracy tolerance.
"""

from __future__ import annotations

from .errors import UserError

PRESETS: dict[str, tuple[int, int]] = {"w16a16": (16, 16), "w8a16": (8, 16), "w8a8": (8, 8)}
DEFAULT_PRESET = "w8a16"
SEARCHED = "auto"


OVERRIDE_KEYS = ("weight_bits", "act_bits")  # per-layer precision keys of --overrides

def preset_bits(name: str) -> tuple[int, int]:
    """(weight_bits, activation_bits) of a preset; ``auto`` reports the widest candidate it may choose."""
    if name == SEARCHED:
        return PRESETS["w16a16"]
    if name not in PRESETS:
        valid = ", ".join([*PRESETS, SEARCHED])
        raise UserError(f"unknown precision {name!r}; valid presets are: {valid}.")
    return PRESETS[name]


def preset_of(meta) -> str | None:
    """The preset name a compiled graph records (``meta["precision"]``: a name, or its bit widths)."""
    if isinstance(meta, str):
        return meta
    if isinstance(meta, dict):
        bits = (meta.get("weight_bits"), meta.get("act_bits"))
        return next((name for name, wa in PRESETS.items() if tuple(wa) == bits), None)
    return None
