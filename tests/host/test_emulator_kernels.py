"""Emulator kernels against independent references: host.fixed (ap_fixed-exact) and closed-form float math."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fpgaformer.host import reference
from fpgaformer.host.emulator import exact_cast, norm_kernel, rsqrt_table, softmax_kernel
from fpgaformer.host.fixed import FixedType, cast_count


@pytest.mark.parametrize("rounding,overflow,signed", itertools.product(["TRN", "RND"], ["SAT", "WRAP"], [True, False]))
def test_fast_cast_equals_fixed_cast(rounding, overflow, signed):
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2 ** 40), 2 ** 40, 200_000)
    acc[:8] = [0, 1, -1, 2 ** 39, -(2 ** 39), 2 ** 11, -(2 ** 11), 2 ** 11 + 2 ** 10]  # ties and limits
    for frac, t in [(20, FixedType(16, 6, signed, rounding, overflow)), (12, FixedType(8, 1, signed, rounding, overflow)),
                    (9, FixedType(18, 9, signed, rounding, overflow)), (5, FixedType(16, 11, signed, rounding, overflow))]:
        got, n_got = exact_cast(acc, frac, t)
        want, n_want = cast_count(acc, FixedType(64, 64 - frac, True, "TRN", "WRAP"), t)
        np.testing.assert_array_equal(got, want)
        assert n_got == n_want


def test_masked_softmax_gives_masked_keys_zero_and_matches_float():
    rng = np.random.default_rng(1)
    fx = 10
    x = rng.integers(-8 << fx, 8 << fx, (4, 8, 16))
    keep = np.ones((1, 1, 16), bool)
    keep[..., 12:] = False
    q = {"exp_k": 6, "exp_size": 1024, "exp_bits": 16, "recip_bits": 8}
    y = softmax_kernel(x, fx, keep, q, 15, 2 ** 16 - 1)
    assert np.all(y[..., 12:] == 0)
    want = reference.softmax(np.where(keep, x / 2.0 ** fx, -np.inf), -1)
    # exp table step 2**-6 (index = floor of d): each probability is within its relative table error
    # (1 - exp(-2**-6) < 2**-6, doubled for the normalising sum) plus a few output LSBs
    assert np.all(np.abs(y / 2.0 ** 15 - want) <= want * 2 ** -5 + 2 ** -12)


@pytest.mark.parametrize("std", [0.05, 1.0, 8.0, 60.0])
def test_layernorm_covers_every_variance(std):
    """hls4ml's 1/sqrt table saturates at var >= 1; ours normalises the variance first."""
    rng = np.random.default_rng(2)
    n, fx = 384, 8
    xf = rng.standard_normal((16, n)) * std + 0.5
    x = np.round(xf * 2 ** fx).astype(np.int64)
    q = {"table_bits": 12, "p_bits": 20, "z_frac": 12, "pre_shift": 0,
         "eps_q": int(round(1e-12 * n ** 3 * 2.0 ** (2 * fx)))}
    gamma = np.full(n, 1 << 14, np.int64)  # 1.0 at 14 fractional bits
    y, frac = norm_kernel(x, fx, q, gamma, 14, None, 0, rsqrt_table(12, 20, n), center=True)
    xq = x / 2.0 ** fx
    want = (xq - xq.mean(-1, keepdims=True)) / xq.std(-1, keepdims=True)
    assert np.max(np.abs(y / 2.0 ** frac - want)) < 3e-3
