"""Bad quantization input: clear messages naming what is wrong and what to do."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fpgaformer.compiler.cli import main
from fpgaformer.compiler.errors import UserError
from fpgaformer.compiler.precision import preset_bits


def linear_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])
    w = onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32) * 0.5, "W")
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="p")],
                                                "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(UserError) as e:
        preset_bits("w4a4")
    for name in ("w16a16", "w8a16", "w8a8", "auto"):
        assert name in str(e.value)


def test_unknown_preset_on_the_command_line(tmp_path, capsys):
    code = main(["compile", str(linear_model(tmp_path / "m.onnx")), "-o", str(tmp_path / "b"), "--precision", "w3"])
    err = capsys.readouterr().err
    assert code == 2 and "w8a16" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def _compile_with_calib(tmp_path, capsys, **arrays) -> tuple[int, str]:
    """compile the small model with a calibration file holding ``arrays``: (exit code, stderr)."""
    np.savez(tmp_path / "c.npz", **arrays)
    code = main(["compile", str(linear_model(tmp_path / "m.onnx")), "-o", str(tmp_path / "b"),
                 "--calib", str(tmp_path / "c.npz")])
    return code, capsys.readouterr().err


def test_calibration_names_must_match(tmp_path, capsys):
    code, err = _compile_with_calib(tmp_path, capsys, input=np.zeros((2, 1, 3, 4), np.float32))
    assert code == 2 and "'x'" in err and "input" in err and "missing" in err
    assert not (tmp_path / "b").exists()


def test_calibration_shapes_must_match(tmp_path, capsys):
    code, err = _compile_with_calib(tmp_path, capsys, x=np.zeros((2, 1, 5, 4), np.float32))
    assert code == 2 and "(2, 1, 5, 4)" in err and "(N, 1, 3, 4)" in err


def test_compile_then_verify_small_model(tmp_path, capsys):
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((8, 1, 3, 4)).astype(np.float32))
    m = linear_model(tmp_path / "m.onnx")
    assert main(["compile", str(m), "-o", str(tmp_path / "b"), "--precision", "w16a16",
                 "--calib", str(tmp_path / "c.npz")]) == 0
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "b"), "--inputs", str(tmp_path / "c.npz"), "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["layers"][-1]["rel_rms"] < 1e-3
