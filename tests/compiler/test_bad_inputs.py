"""Bad input gets one clear message, a non-zero exit, no traceback, and nothing half-written in BUILD."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cli_helpers import run_cli


def tiny_model(path, dynamic=False, op="Relu", external=False):
    """x (1, seq, 4) -> MatMul(W) -> <op> -> y; with a dynamic seq dim when asked."""
    seq = "seq" if dynamic else 3
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, 4])
    w = onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"),
             helper.make_node(op, ["h"], ["y"], name="odd_op")]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def assert_clean_failure(code, err, *words):
    assert code != 0
    assert "Traceback" not in err
    assert err.startswith("error: ")
    for w in words:
        assert w in err, err


def test_truncated_file(tmp_path, capsys):
    good = tiny_model(tmp_path / "good.onnx")
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    code, _, err = run_cli(capsys, "compile", bad, "-o", tmp_path / "build")
    assert_clean_failure(code, err, "truncated")
    assert not (tmp_path / "build").exists()


def test_not_onnx(tmp_path, capsys):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is a text file, not a model\n" * 20)
    code, _, err = run_cli(capsys, "inspect", bad)
    assert_clean_failure(code, err, "not", "ONNX")


def test_missing_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "inspect", tmp_path / "nowhere.onnx")
    assert_clean_failure(code, err, "no such file")


def test_unsupported_op_lists_every_node(tmp_path, capsys):
    path = tiny_model(tmp_path / "odd.onnx", op="Acosh")
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "build")
    assert_clean_failure(code, err, "odd_op (Acosh)")
    assert not (tmp_path / "build").exists()
    code, out, _ = run_cli(capsys, "inspect", path, "--json")
    assert code == 1
    import json

    report = json.loads(out)
    assert report["unsupported"] == [{"name": "odd_op", "op_type": "Acosh", "domain": ""}]
    assert [l["op"] for l in report["layers"]] == ["Linear"]


def test_dynamic_dim_not_fixed(tmp_path, capsys):
    path = tiny_model(tmp_path / "dyn.onnx", dynamic=True, op="Relu")
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "build")
    assert_clean_failure(code, err, "--seq-len", "'seq'")
    assert not (tmp_path / "build").exists()


def test_missing_external_data(tmp_path, capsys):
    path = tiny_model(tmp_path / "ext.onnx", external=True)
    (tmp_path / "ext.onnx.data").unlink()
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "build")
    assert_clean_failure(code, err, "external data")
    assert not (tmp_path / "build").exists()


def test_failed_compile_keeps_previous_build(tmp_path, capsys):
    good = tiny_model(tmp_path / "good.onnx", op="Erf")
    bad = tiny_model(tmp_path / "bad.onnx", op="Acosh")
    build = tmp_path / "build"
    # Erf alone is not a supported layer either, so first make a valid build from a plain Linear model
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])
    w = onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    linear = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="p")],
                                                 "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(linear, str(tmp_path / "linear.onnx"))
    assert run_cli(capsys, "compile", tmp_path / "linear.onnx", "-o", build)[0] == 0
    def snapshot():
        return {str(p.relative_to(build)): p.read_bytes() for p in sorted(build.rglob("*")) if p.is_file()}

    before = snapshot()
    assert "manifest.json" in before
    for model in (good, bad):
        code, _, err = run_cli(capsys, "compile", model, "-o", build)
        assert_clean_failure(code, err, "no fpgaformer rule")
    assert snapshot() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".build")] == []


def test_cli_exit_code_in_a_subprocess(tmp_path):
    """The installed console script exits non-zero without a traceback."""
    import subprocess
    import sys

    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    proc = subprocess.run([sys.executable, "-m", "fpgaformer.compiler.cli", "inspect", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "error:" in proc.stderr
