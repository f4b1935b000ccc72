"""The emulator's fast path (host.fused kernels, exact GEMM engines, threaded row blocks) against its int64
reference kernels.

Each test builds a one-layer quantized graph and runs it with ``Emulator(fast=False)`` (the reference) and with
the fast path on several threads and tiny row blocks (so that every block boundary and the thread pool are
exercised), on adversarial codes: both ends of every type range, zero, negative values, rounding ties, and
outputs narrow enough to saturate or wrap. Codes and overflow counts must agree exactly; each test also checks
that the fast path was taken (a silent fallback to the reference would prove nothing).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fpgaformer.host import emulator as E
from fpgaformer.host.emulator import Emulator
from fpgaformer.host.fixed import FixedType
from fpgaformer.host.graph import Graph, Layer, Tensor

MODES = list(itertools.product(["TRN", "RND"], ["SAT", "WRAP"]))


@pytest.fixture(autouse=True)
def tiny_blocks(monkeypatch):
    """Blocks of a few rows: many blocks per layer, spread over the worker threads."""
    for name in ("LINEAR_BLOCK", "MATMUL_BLOCK", "BLOCK"):
        monkeypatch.setattr(E, name, 97)
    monkeypatch.setattr(E, "MIN_BLOCK", 16)
    monkeypatch.setattr(E, "FAST_MIN", 0)  # small test tensors take the fast path too


def tensor(name, shape, t: FixedType | None, dtype="float32"):
    return Tensor(name, tuple(shape), dtype, None if t is None else t.to_dict())


def graph(op, inputs, out_t, out_shape, params=None, attrs=None, quant=None):
    tensors = {n: tensor(n, s, t, "bool" if t is None else "float32") for n, s, t in inputs}
    tensors["y"] = tensor("y", out_shape, out_t)
    a = dict(attrs or {})
    a["quant"] = quant or {}
    layer = Layer("layer", op, [n for n, _, _ in inputs], ["y"], a, params or {})
    return Graph([n for n, _, _ in inputs], ["y"], tensors, [layer])


def edge_codes(t: FixedType, shape, rng, extra=()):
    """Random codes over t's whole range with both ends, zero, +-1 and ``extra`` planted at the front."""
    lo, hi = t.min_code, t.max_code
    codes = rng.integers(lo, hi + 1, size=int(np.prod(shape)), dtype=np.int64)
    special = [c for c in (lo, hi, 0, 1, -1, lo + 1, hi - 1, *extra) if lo <= c <= hi]
    codes[:len(special)] = special
    return codes.reshape(shape)


def check_same(g, feeds, op):
    ref = Emulator(g, fast=False)
    fast = Emulator(g, threads=3)
    calls = []
    run_fast = fast._run_fast
    fast._run_fast = lambda layer, env: calls.append(r := run_fast(layer, env)) or r
    want, got = ref.run(feeds)["y"], fast.run(feeds)["y"]
    assert calls and calls[0] is not None, f"{op}: the fast path was not taken"
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    assert fast.overflows == ref.overflows
    return ref.overflows


@pytest.mark.parametrize("rounding,overflow", MODES)
@pytest.mark.parametrize("signed_out", [True, False])
@pytest.mark.parametrize("engine", ["u8", "f64"])
def test_linear(rounding, overflow, signed_out, engine, monkeypatch):
    """int8 weights x int16 activations: the u8 GEMM (host.u8gemm) or, with it disabled, the float64 product."""
    if engine == "f64":
        monkeypatch.setattr(E.u8gemm, "eligible", lambda *a: False)
    rng = np.random.default_rng(0)
    tx = FixedType(16, 6, True, "RND", "SAT")
    k, n = 40, 24
    w = rng.uniform(-1.3, 1.3, (k, n))  # beyond the weight range: quantized to both extreme codes
    shifts = rng.integers(0, 4, n)
    quant = {"weight_type": FixedType(8, 1, True, "RND_CONV", "SAT").to_dict(), "weight_col_shift": shifts.tolist(),
             "bias_type": FixedType(20, 4, True, "RND_CONV", "WRAP").to_dict()}
    total = 0
    for width, integer in [(16, 9), (8, 4), (12, 14), (6, 2), (24, 20)]:  # drop bits, add bits, overflow a lot
        ty = FixedType(width, integer, signed_out, rounding, overflow)
        g = graph("Linear", [("x", (3, 37, k), tx)], ty, (3, 37, n),
                  {"weight": w, "bias": rng.uniform(-6, 6, n)}, quant=quant)
        x = edge_codes(tx, (3, 37, k), rng)
        x[0, 0] = tx.max_code
        x[0, 1] = tx.min_code
        total += sum(check_same(g, {"x": x}, "Linear").values())
        used_u8 = Emulator(g)
        used_u8.run_batch({"x": x[None]})
        assert (used_u8._prepared["layer"].get("u8_gemm") is not None) == (engine == "u8")
    assert total > 0  # some outputs overflowed: the saturate/wrap branches ran


def test_u8_gemm_extremes():
    """256 Y_h + Y_l == x @ w in int64 at the range ends and a long K (partial sums far beyond int16)."""
    from fpgaformer.host.u8gemm import U8Gemm, eligible

    rng = np.random.default_rng(5)
    k = 4096
    w = rng.integers(-128, 128, (k, 16))
    w[:, 0], w[:, 1] = -128, 127
    assert eligible(w, -(1 << 15), (1 << 15) - 1) and not eligible(w * 2, 0, 10) and not eligible(w, 0, 1 << 15)
    gemm = U8Gemm(w)
    assert gemm.ok
    x = rng.integers(-(1 << 15), 1 << 15, (9, k))
    x[0], x[1], x[2] = -(1 << 15), (1 << 15) - 1, -1
    y_h, y_l = gemm.halves(x)
    np.testing.assert_array_equal(256 * y_h.astype(np.int64) + y_l, x @ w)


@pytest.mark.parametrize("rounding,overflow", MODES)
@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul(rounding, overflow, transpose_b):
    rng = np.random.default_rng(1)
    ta, tb = FixedType(16, 6, True, "RND", "SAT"), FixedType(16, 1, False, "TRN", "SAT")
    a_shape, b_shape = (2, 3, 9, 16), ((2, 3, 11, 16) if transpose_b else (2, 3, 16, 11))
    total = 0
    for width, integer in [(16, 11), (10, 4), (20, 30)]:
        ty = FixedType(width, integer, True, rounding, overflow)
        g = graph("MatMul", [("a", a_shape, ta), ("b", b_shape, tb)], ty, (2, 3, 9, 11),
                  attrs={"transpose_b": transpose_b})
        total += sum(check_same(g, {"a": edge_codes(ta, a_shape, rng), "b": edge_codes(tb, b_shape, rng)},
                                "MatMul").values())
    assert total > 0


@pytest.mark.parametrize("rounding,overflow", MODES)
@pytest.mark.parametrize("op", ["Add", "Mul"])
@pytest.mark.parametrize("const", [False, True])
def test_add_mul(rounding, overflow, op, const):
    rng = np.random.default_rng(2)
    tx, tb = FixedType(16, 5, True, "RND", "SAT"), FixedType(12, 2, True, "RND", "WRAP")
    shape, b_shape = (4, 7, 33), (7, 33)  # b broadcast over the leading axis
    total = 0
    for width, integer in [(16, 6), (8, 2), (16, 3), (18, 12)]:
        ty = FixedType(width, integer, True, rounding, overflow)
        if const:
            g = graph(op, [("x", shape, tx)], ty, shape, {"const": rng.uniform(-3, 3, b_shape)},
                      quant={"const_type": tb.to_dict()})
            feeds = {"x": edge_codes(tx, shape, rng, extra=(3, -3, 5, -5))}
        else:
            g = graph(op, [("x", shape, tx), ("b", b_shape, tb)], ty, shape)
            feeds = {"x": edge_codes(tx, shape, rng, extra=(3, -3)), "b": edge_codes(tb, b_shape, rng)}
        total += sum(check_same(g, feeds, op).values())
    assert total > 0


@pytest.mark.parametrize("masked", [False, True])
def test_softmax(masked):
    rng = np.random.default_rng(3)
    tx, ty = FixedType(16, 8, True, "RND", "SAT"), FixedType(16, 1, False, "TRN", "SAT")
    shape = (2, 3, 10, 12)
    x = edge_codes(tx, shape, rng)
    x[0, 0, 0] = tx.max_code  # one row of equal maxima, one spanning the whole range (table clamped)
    x[0, 0, 1, :6], x[0, 0, 1, 6:] = tx.min_code, tx.max_code
    x[0, 1] = rng.integers(-40, 40, (10, 12))  # small differences: ties in the table index
    inputs, feeds = [("x", shape, tx)], {"x": x}
    if masked:
        keep = rng.random((2, 1, 10, 12)) < 0.6
        keep[0, 0, 2] = False  # a fully masked row
        keep[1, 0, 3] = True
        inputs.append(("keep", keep.shape, None))
        feeds["keep"] = keep
    g = graph("Softmax", inputs, ty, shape, quant={"exp_k": 6, "exp_size": 1024, "exp_bits": 16, "recip_bits": 8})
    check_same(g, feeds, "Softmax")


@pytest.mark.parametrize("op", ["GELU", "SiLU"])
def test_unary_table(op):
    rng = np.random.default_rng(4)
    tx, ty = FixedType(16, 6, True, "RND", "SAT"), FixedType(16, 6, True, "RND", "SAT")
    shape = (3, 5, 41)
    ov = 0
    for t_in in [FixedType(14, 6, True, "RND", "SAT"), FixedType(10, 3, True, "RND", "SAT"),
                 FixedType(12, 4, True, "TRN", "SAT")]:  # t_in narrower in range too: inputs saturate
        g = graph(op, [("x", shape, tx)], ty, shape, quant={"in_type": t_in.to_dict()})
        ov += sum(check_same(g, {"x": edge_codes(tx, shape, rng, extra=(2, -2, 6, -6))}, op).values())
    assert ov > 0


@pytest.mark.parametrize("rounding,overflow", MODES)
def test_layernorm(rounding, overflow):
    rng = np.random.default_rng(5)
    tx = FixedType(16, 7, True, "RND", "SAT")
    n, shape = 48, (3, 9, 48)
    for width, integer in [(16, 5), (8, 2)]:
        ty = FixedType(width, integer, True, rounding, overflow)
        quant = {"table_bits": 12, "p_bits": 20, "z_frac": 12, "pre_shift": 0, "eps_q": 5,
                 "gamma_type": FixedType(16, 2, True, "RND_CONV", "SAT").to_dict(),
                 "beta_type": FixedType(24, 2, True, "RND_CONV", "WRAP").to_dict()}
        g = graph("LayerNorm", [("x", shape, tx)], ty, shape,
                  {"gamma": rng.uniform(-2, 2, n), "beta": rng.uniform(-1, 1, n)}, quant=quant)
        x = edge_codes(tx, shape, rng)
        x[0, 0] = 7  # a constant row: zero variance
        check_same(g, {"x": x}, "LayerNorm")


def test_run_batch_equals_runs_fast_and_reference():
    """run_batch (threaded blocks) == N calls of run, == the reference path, for a Linear -> Softmax chain."""
    rng = np.random.default_rng(6)
    tx, th = FixedType(16, 6, True, "RND", "SAT"), FixedType(16, 8, True, "RND", "SAT")
    ty = FixedType(16, 1, False, "TRN", "SAT")
    w = rng.uniform(-1, 1, (24, 24))
    lin = Layer("lin", "Linear", ["x"], ["h"], {"quant": {"weight_type": FixedType(8, 1, True, "RND_CONV", "SAT")
                                                          .to_dict()}}, {"weight": w})
    sm = Layer("sm", "Softmax", ["h"], ["y"], {"quant": {"exp_k": 6, "exp_size": 512, "exp_bits": 16,
                                                         "recip_bits": 8}})
    g = Graph(["x"], ["y"], {"x": tensor("x", (1, 10, 24), tx), "h": tensor("h", (1, 10, 24), th),
                             "y": tensor("y", (1, 10, 24), ty)}, [lin, sm])
    xs = edge_codes(tx, (5, 1, 10, 24), rng)
    fast, ref = Emulator(g, threads=2), Emulator(g, fast=False)
    batch = fast.run_batch({"x": xs})
    only_y = Emulator(g, threads=2).run_batch({"x": xs}, keep=["y"])
    assert set(only_y) == {"y"}
    for i in range(len(xs)):
        one, want = fast.run({"x": xs[i]}), ref.run({"x": xs[i]})
        for name in ("h", "y"):
            np.testing.assert_array_equal(batch[name][i], one[name])
            np.testing.assert_array_equal(one[name], want[name])
        np.testing.assert_array_equal(only_y["y"][i], want["y"])


def test_reused_buffers_never_touch_returned_tensors():
    """With keep=, dropped tensors' memory is reused by later runs: earlier results must stay as they were,
    and every run must equal a fresh emulator's."""
    rng = np.random.default_rng(8)
    tx, th = FixedType(16, 6, True, "RND", "SAT"), FixedType(16, 8, True, "RND", "SAT")
    w = rng.uniform(-1, 1, (24, 24))
    quant = {"quant": {"weight_type": FixedType(8, 1, True, "RND_CONV", "SAT").to_dict()}}
    layers = [Layer("a", "Linear", ["x"], ["h1"], quant, {"weight": w}),
              Layer("b", "Linear", ["h1"], ["h2"], quant, {"weight": w.T}),
              Layer("c", "Add", ["h1", "h2"], ["y"], {"quant": {}}),
              Layer("d", "Reshape", ["h2"], ["r"], {"shape": [1, 240]})]
    g = Graph(["x"], ["y", "r"], {"x": tensor("x", (1, 10, 24), tx), "h1": tensor("h1", (1, 10, 24), th),
                                  "h2": tensor("h2", (1, 10, 24), th), "y": tensor("y", (1, 10, 24), th),
                                  "r": tensor("r", (1, 240), th)}, layers)
    emu = Emulator(g, threads=2)
    kept = []
    for _ in range(4):
        xs = edge_codes(tx, (6, 1, 10, 24), rng)
        got = emu.run_batch({"x": xs}, keep=["y", "r"])
        want = Emulator(g, threads=2).run_batch({"x": xs}, keep=["y", "r"])
        for name in ("y", "r"):
            np.testing.assert_array_equal(got[name], want[name])
        kept.append(({k: v for k, v in got.items()}, {k: v.copy() for k, v in got.items()}))
    assert any(emu._free.values())  # memory was recycled
    for held, copies in kept:
        for name in held:
            np.testing.assert_array_equal(held[name], copies[name])


def test_empty_rows():
    """Zero rows (a decoder's empty cache slice): the same empty result as the reference."""
    tx = FixedType(16, 6, True, "RND", "SAT")
    g = graph("Linear", [("x", (0, 8), tx)], tx, (0, 4), {"weight": np.ones((8, 4)) / 4},
              quant={"weight_type": FixedType(8, 1, True, "RND_CONV", "SAT").to_dict()})
    x = np.zeros((0, 8), np.int64)
    np.testing.assert_array_equal(Emulator(g, threads=2).run({"x": x})["y"], Emulator(g, fast=False).run({"x": x})["y"])
