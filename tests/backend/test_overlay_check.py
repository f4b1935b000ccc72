"""`fpgaformer build --check`: the generated overlay against its hardware plan and the synthesis rules, without
a vendor tool. It passes on a design the plan sizes, and fails on a deliberately oversized plan and on code
that has more multipliers than its plan."""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.csim


@pytest.fixture(scope="module")
def wide_onnx(tmp_path_factory):
    """A one-block BERT whose feed-forward matrices hold 8,192 weights each."""
    pytest.importorskip("torch")
    pytest.importorskip("hls4ml")
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    import torch
    import transformers

    from fpgaformer.compiler.hf_export import export

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=64, num_attention_heads=2, intermediate_size=128, num_hidden_layers=1,
                                  vocab_size=50, max_position_embeddings=8)
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    return export(model, tmp_path_factory.mktemp("wide") / "wide.onnx", 8, "torchscript")


def _build(onnx_path, out, overrides=None):
    from fpgaformer.compiler.build_cli import build_overlay
    from fpgaformer.compiler.cli import compile_model

    ov = None
    if overrides:
        ov = out.parent / f"{out.name}_overrides.json"
        ov.write_text(json.dumps(overrides))
    graph = compile_model(onnx_path, out, seq_len=8, precision="w8a16", overrides=ov, log=lambda *a: None)
    build_overlay(out, "kv260", log=lambda *a: None)
    return graph


def test_the_default_plan_passes_every_check(wide_onnx, tmp_path):
    from fpgaformer.compiler.backend.overlay_check import check_build

    graph = _build(wide_onnx, tmp_path / "b")
    assert check_build(tmp_path / "b", graph) == []


def test_an_oversized_plan_is_rejected(wide_onnx, tmp_path):
    """Reuse factor 1 on an 8,192-weight matrix: every weight a bank of its own, a complete partition of 8,192."""
    from fpgaformer.compiler.backend.overlay_check import check_build

    ffn = "/inner/encoder/layer.0/intermediate/dense/MatMul"
    graph = _build(wide_onnx, tmp_path / "b", {ffn: {"reuse_factor": 1, "strategy": "resource"}})
    problems = check_build(tmp_path / "b", graph, syntax=False)
    assert any("8192" in p and "complete" in p for p in problems), problems


def test_code_with_more_multipliers_than_its_plan_is_rejected(wide_onnx, tmp_path):
    from fpgaformer.compiler.backend.overlay_check import check_build

    graph = _build(wide_onnx, tmp_path / "b")
    layer = graph.layer("/inner/encoder/layer.0/output/dense/MatMul")
    layer.hw["reuse_factor"] = 4 * int(layer.hw["reuse_factor"])  # the plan now has a quarter of the multipliers
    problems = check_build(tmp_path / "b", graph, syntax=False)
    assert any("n_mult" in p and "plan" in p for p in problems), problems


def test_build_check_cli_passes_and_fails(wide_onnx, tmp_path):
    """`fpgaformer build --check`: exit 0 on the default plan, 1 (with each problem) on an oversized one."""
    import subprocess
    import sys

    from fpgaformer.compiler.cli import compile_model

    good, bad = tmp_path / "good", tmp_path / "bad"
    compile_model(wide_onnx, good, seq_len=8, precision="w8a16", log=lambda *a: None)
    ov = tmp_path / "ov.json"
    ov.write_text(json.dumps({"/inner/encoder/layer.0/intermediate/dense/MatMul": {"reuse_factor": 1}}))
    compile_model(wide_onnx, bad, seq_len=8, precision="w8a16", overrides=ov, log=lambda *a: None)
    cli = [sys.executable, "-m", "fpgaformer.compiler.cli", "build"]
    ok = subprocess.run(cli + [str(good), "--board", "kv260", "--check"], capture_output=True, text=True)
    assert ok.returncode == 0 and "check passed" in ok.stdout, ok.stdout + ok.stderr
    fail = subprocess.run(cli + [str(bad), "--board", "kv260", "--check"], capture_output=True, text=True)
    assert fail.returncode == 1 and "problem:" in fail.stdout and "8192" in fail.stdout, fail.stdout + fail.stderr
