"""One-pass integer epilogues and element-wise kernels, compiled with numba: the emulator's fast path.

Each kernel runs the *same int64 arithmetic* as the emulator's reference kernels (host.emulator), element by
element in one compiled loop instead of a chain of numpy passes over the whole tensor: the exact accumulator
of a matrix product is shifted, biased and cast in the pass that reads it, so each tensor crosses memory once.
The cast is the reference's cast (``exact_cast``): dropping k > 0 fractional bits with TRN (``v >> k``) or
RND (``(v + 2**(k-1)) >> k``), or adding -k bits (``v << -k``), then SAT (clip) or WRAP (the low W bits) on
overflow, each counted.

The kernels release the GIL (``nogil``): the emulator runs them on its worker threads, one row block each.
``available()`` is False where numba is not installed; the emulator then runs its reference kernels. The
kernels themselves live in host.fused_jit, imported on first use (``jit()``).
tests/host/test_emulator_fast.py compares every kernel with the reference on adversarial values.
"""

from __future__ import annotations

import importlib.util


def available() -> bool:
    """numba is installed (numpy-only environments, e.g. a board's image, run the reference kernels)."""
    return importlib.util.find_spec("numba") is not None


def jit():
    """The compiled kernels (host.fused_jit), imported on first use: importing numba costs about 0.4 s, which
    a process that only meets small tensors never pays."""
    from . import fused_jit

    return fused_jit


def cast_ok(t) -> bool:
    """Types whose cast the fused kernels implement (the others keep host.fixed's reference cast)."""
    return t.rounding in ("TRN", "RND") and t.overflow in ("SAT", "WRAP") and t.width <= 52


def cast_args(k: int, t) -> tuple:
    """(k, half, lo, hi, saturate, width, signed): ``_cast`` of values at F(t) + k fractional bits into t;
    half = 2**(k-1) for RND when bits are dropped (k > 0), else 0."""
    half = (1 << (k - 1)) if (t.rounding == "RND" and k > 0) else 0
    return k, half, t.min_code, t.max_code, t.overflow == "SAT", t.width, bool(t.signed)
