"""The hardware plan: one table (BUILD/plan.json) that the estimator costs and the HLS writer emits; defaults
without a board, and per-layer pins from --overrides that win over the fit."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest

from fpgaformer.compiler.boards import load_board
from fpgaformer.compiler.estimate import estimate_graph
from fpgaformer.compiler.plan import DEFAULT_MULTIPLIERS
from fpgaformer.host.artifact import load_artifact

FFN_UP = "/inner/encoder/layer.0/intermediate/dense/MatMul"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("hls4ml")
    import torch
    import transformers

    from fpgaformer.compiler.hf_export import export

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=1,
                                  vocab_size=100, max_position_embeddings=16)
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    return export(model, tmp_path_factory.mktemp("plan") / "tiny.onnx", 8, "torchscript")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fpgaformer.compiler.cli", *map(str, args)], capture_output=True,
                          text=True)


def _stage_rows(build, board="kv260"):
    graph, _ = load_artifact(build)
    design = estimate_graph(graph, load_board(board), "w8a16")
    rows = {}
    for e in design.stages:
        for name in e.stage.members:
            rows[name] = e.row()
    return rows


def _kernel_reuse_factors(build) -> dict[str, int]:
    """{IR layer: reuse_factor} of every MAC kernel call in the generated block project (its config struct)."""
    fw = build / "hls" / "block0" / "firmware"
    names = json.loads((build / "hls" / "block0" / "kernel.json").read_text())["layers"]
    params = (fw / "parameters.h").read_text()
    rf_of = {m.group(1): int(m.group(2)) for m in re.finditer(
        r"struct (config\d+) \{[^}]*?static const unsigned reuse_factor = (\d+);", params, re.S)}
    out = {}
    for m in re.finditer(r"ff::(linear|matmul)<[^;]*?(config\d+)>\([^;]*\); // (\S+)", (fw / "block0.cpp").read_text()):
        out[names[m.group(3)]] = rf_of[m.group(2)]
    return out


def test_default_plan_is_written_costed_and_emitted(tiny_onnx, tmp_path):
    build = tmp_path / "b"
    proc = _cli("compile", tiny_onnx, "-o", build, "--seq-len", 8)
    assert proc.returncode == 0, proc.stderr
    assert "hardware plan: on_chip weights, block kernels (default plan" in proc.stdout + proc.stderr
    plan = json.loads((build / "plan.json").read_text())
    assert plan["design"]["mode"] == "on_chip" and len(plan["layers"]) == 8
    rows = _stage_rows(build)
    emitted = _kernel_reuse_factors(build)
    assert len(emitted) == 8
    for entry in plan["layers"]:
        assert entry["multipliers"] == math.ceil(entry["row_macs"] / entry["reuse_factor"]) <= DEFAULT_MULTIPLIERS
        assert rows[entry["layer"]]["multipliers"] == entry["multipliers"]  # the estimator costs the plan
        assert rows[entry["layer"]]["reuse_factor"] == entry["reuse_factor"]
    for entry in plan["layers"]:  # the HLS writer emits it
        assert emitted[entry["layer"]] == entry["reuse_factor"], entry["layer"]


def test_overrides_pin_the_hardware_of_a_layer(tiny_onnx, tmp_path):
    overrides = tmp_path / "ov.json"
    overrides.write_text(json.dumps({FFN_UP: {"reuse_factor": 8, "strategy": "resource", "act_bits": 16}}))
    build = tmp_path / "b"
    proc = _cli("compile", tiny_onnx, "-o", build, "--seq-len", 8, "--board", "kv260", "--overrides", overrides)
    assert proc.returncode == 0, proc.stderr
    entry = next(e for e in json.loads((build / "plan.json").read_text())["layers"] if e["layer"] == FFN_UP)
    assert (entry["reuse_factor"], entry["multipliers"], entry["strategy"]) == (8, 64, "Resource")
    assert entry["pinned"] == ["reuse_factor", "strategy"]
    est = _cli("estimate", build, "--board", "kv260", "--json")
    report = json.loads(est.stdout)
    assert report["settings_from"] == "BUILD"
    rows = [r for r in report["layers"] if r["layer"] == FFN_UP]
    assert rows and rows[0]["reuse_factor"] == 8 and rows[0]["multipliers"] == 64
    assert _kernel_reuse_factors(build)[FFN_UP] == 8


def test_bad_overrides_are_refused_with_every_problem_named(tiny_onnx, tmp_path):
    overrides = tmp_path / "ov.json"
    overrides.write_text(json.dumps({"nope": {"reuse_factor": 2},
                                     FFN_UP: {"reuse_factor": 0, "colour": 1, "weights": "floppy"},
                                     "/inner/encoder/layer.0/output/LayerNorm/LayerNormalization":
                                         {"reuse_factor": 4}}))
    proc = _cli("compile", tiny_onnx, "-o", tmp_path / "b", "--seq-len", 8, "--overrides", overrides)
    assert proc.returncode == 2
    for phrase in ("no layer is named 'nope'", "unknown keys ['colour']", "reuse_factor must be a positive integer",
                   "weights must be 'on_chip' or 'streamed'", "apply to Linear and MatMul layers only"):
        assert phrase in proc.stderr, (phrase, proc.stderr)
    assert not (tmp_path / "b").exists()
