"""Helpers shared by the command-line tests (importable from every test folder: pytest puts ``tests/`` on the
path for its conftest): the smallest model compile accepts, the CLI run in process, and the check of a refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from fpgaformer.compiler.cli import main


def linear_model(path: Path, weight=None, name: str = "proj") -> Path:
    """x (1, 3, 4) float -> MatMul(W) -> y: one Linear layer named ``name``; W the identity unless given."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])
    w = np.eye(4) if weight is None else weight
    init = onnx.numpy_helper.from_array(np.asarray(w, np.float32), "W")
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name=name)],
                                                "tiny", [x], [y], [init]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def run_cli(capsys, *argv):
    """``fpgaformer ARGV`` in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code, err, *words):
    """A user error: exit 2, one ``error:`` paragraph naming ``words``, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: "), err
    for w in words:
        assert w in err, err
