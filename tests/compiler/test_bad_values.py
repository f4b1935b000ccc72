"""Bad values get one sentence and exit 2, never a silent wrong result: a NaN/inf reference is a failed
verification, empty or NaN calibration sets and NaN tolerances are refused, every number of every command is
checked once at the command line's edge, --overrides bit widths are checked, and names from model files are
printed literally (no rich markup, no terminal escape sequences)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpgaformer.compiler.cli import main

from cli_helpers import assert_refused, linear_model, run_cli

LAYER = "proj"


@pytest.fixture(scope="module")
def linear_build(tmp_path_factory):
    """(model path, BUILD) of the one-layer model compiled at w8a16."""
    folder = tmp_path_factory.mktemp("bad_values_linear")
    path = linear_model(folder / "model.onnx")
    assert main(["compile", str(path), "-o", str(folder / "build")]) == 0
    return path, folder / "build"


# ------------------------------------------------------------------------------- 1. verify and NaN/inf
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_verify_fails_when_the_onnxruntime_reference_is_not_finite(tmp_path, capsys, bad):
    """The reference output all NaN (or inf) was dropped before comparing: "within tolerance", exit 0."""
    build = tmp_path / "build"
    assert run_cli(capsys, "compile", linear_model(tmp_path / "m.onnx"), "-o", build)[0] == 0
    assert run_cli(capsys, "verify", build, "--tolerance", "0.5")[0] == 0  # the design is fine against a finite model
    linear_model(build / "source.onnx", np.full((4, 4), bad))  # same names, a reference of NaN/inf
    code, out, err = run_cli(capsys, "verify", build, "--tolerance", "0.5")
    assert code == 1, out + err
    assert "within tolerance" not in out and "NaN/inf" in out and "'y'" in out
    code, out, _ = run_cli(capsys, "verify", build, "--tolerance", "0.5", "--json")
    report = json.loads(out)
    assert report["ok"] is False and any("reference of output 'y'" in p for p in report["problems"])


def test_verify_fails_when_the_emulator_output_is_not_finite(linear_build, monkeypatch):
    from fpgaformer.compiler import verify

    real = verify.Emulator.run_float

    def nan_outputs(self, feeds):
        values = real(self, feeds)
        return {k: np.full(np.shape(v), np.nan) if k in self.graph.outputs else v for k, v in values.items()}

    monkeypatch.setattr(verify.Emulator, "run_float", nan_outputs)
    report = verify.verify_build(linear_build[1], tolerance=0.5)
    assert report["ok"] is False
    assert any("emulator's output 'y'" in p for p in report["problems"]), report["problems"]


def test_frontend_compare_does_not_pass_a_nan_output(tmp_path):
    """IR float executor and onnxruntime both NaN on the output: compare() reported an error of 0."""
    from fpgaformer.compiler.compare import compare
    from fpgaformer.compiler.frontend import import_static

    graph, static = import_static(linear_model(tmp_path / "nan.onnx", np.full((4, 4), np.nan)), None)
    diffs = {d.name: d for d in compare(graph, static, {"x": np.ones((1, 3, 4), np.float32)})}
    assert diffs["y"].max_abs_err == float("inf") and diffs["y"].nonfinite == 12


# ---------------------------------------------------------------------------------------- 4. calibration
def test_empty_calibration_set_is_refused(tmp_path, capsys, linear_build):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 3, 4), np.float32))
    code, _, err = run_cli(capsys, "compile", linear_build[0], "-o", tmp_path / "build", "--calib",
                           tmp_path / "empty.npz")
    assert_refused(code, err, "no samples")
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_calibration_set_is_refused(tmp_path, capsys, linear_build, bad):
    """An all-NaN set calibrated every range to 0: exit 0 and a design with 80x the error."""
    np.savez(tmp_path / "nan.npz", x=np.full((4, 1, 3, 4), bad, np.float32))
    code, _, err = run_cli(capsys, "compile", linear_build[0], "-o", tmp_path / "build", "--calib",
                           tmp_path / "nan.npz")
    assert_refused(code, err, "'x'", "NaN/inf")
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("kind", [complex, str])
def test_calibration_arrays_of_the_wrong_kind_are_refused(tmp_path, capsys, linear_build, kind):
    np.savez(tmp_path / "odd.npz", x=np.ones((2, 1, 3, 4)).astype(kind))
    code, _, err = run_cli(capsys, "compile", linear_build[0], "-o", tmp_path / "build", "--calib",
                           tmp_path / "odd.npz")
    assert_refused(code, err, "'x'", "real numbers")


def test_calibrate_api_refuses_an_empty_set(linear_build):
    from fpgaformer.compiler.errors import UserError
    from fpgaformer.compiler.frontend import import_static
    from fpgaformer.compiler.passes.calibrate import calibrate

    graph, static = import_static(linear_build[0], None)
    with pytest.raises(UserError, match="no samples"):
        calibrate(graph, {"x": np.zeros((0, 1, 3, 4), np.float32)}, static)


@pytest.mark.parametrize("tolerance", ["nan", "inf", "0", "-0.1"])
def test_auto_precision_refuses_a_tolerance_that_is_not_a_positive_number(tmp_path, capsys, linear_build, tolerance):
    """--tolerance nan gave the cheapest design ("error 0.0386 <= nan"), exit 0."""
    code, _, err = run_cli(capsys, "compile", linear_build[0], "-o", tmp_path / "build", "--precision", "auto",
                           "--tolerance", tolerance)
    assert_refused(code, err, "--tolerance must be a finite number > 0")
    assert not (tmp_path / "build").exists()


# --------------------------------------------------------------------------------------------- 5. numbers
BAD_NUMBERS = [
    ("verify", ["--tolerance", "nan"]), ("verify", ["--tolerance", "0"]), ("verify", ["--csim", "-n", "0"]),
    ("estimate", ["--board", "kv260", "--clock", "nan"]), ("estimate", ["--board", "kv260", "--clock", "inf"]),
    ("estimate", ["--board", "kv260", "--clock", "0"]), ("estimate", ["--board", "kv260", "--budget", "nan"]),
    ("estimate", ["--board", "kv260", "--budget", "inf"]), ("estimate", ["--board", "kv260", "--seq-len", "0"]),
    ("build", ["--board", "kv260", "--scripts-only", "--clock", "nan"]),
    ("build", ["--board", "kv260", "--scripts-only", "--clock", "inf"]),
    ("build", ["--board", "kv260", "--scripts-only", "--clock", "-1"]),
    ("build", ["--board", "kv260", "--scripts-only", "--dma-length-bits", "0"]),
    ("build", ["--board", "kv260", "--scripts-only", "--jobs", "0"]),
]


@pytest.mark.parametrize("command,options", BAD_NUMBERS, ids=[f"{c} {' '.join(o)}" for c, o in BAD_NUMBERS])
def test_bad_numbers_are_refused_at_the_command_line(linear_build, capsys, command, options):
    flag = next(o for o in options[::-1] if o.startswith("-") and o != "--scripts-only")
    code, _, err = run_cli(capsys, command, linear_build[1], *options)
    assert_refused(code, err, "must be")
    assert flag in err or (flag == "-n" and "--count" in err), err


@pytest.mark.parametrize("options", [["--seq-len", "0"], ["--seq-len", "-4"], ["--context", "0"]])
def test_bad_lengths_are_refused_by_inspect_and_compile(tmp_path, capsys, linear_build, options):
    for argv in (["inspect", linear_build[0]], ["compile", linear_build[0], "-o", tmp_path / "build"]):
        code, _, err = run_cli(capsys, *argv, *options)
        assert_refused(code, err, options[0], "must be an integer >= 1")


# -------------------------------------------------------------------------------- 6. --overrides widths
@pytest.mark.parametrize("key", ["weight_bits", "act_bits"])
@pytest.mark.parametrize("value", [0, -8, "8", 7.5, 1000, None, True])
def test_override_bit_widths_outside_the_supported_range_are_refused(tmp_path, capsys, linear_build, key, value):
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({LAYER: {key: value}}))
    code, _, err = run_cli(capsys, "compile", linear_build[0], "-o", tmp_path / "build", "--overrides", overrides)
    assert_refused(code, err, "--overrides", f"{key} must be an integer from 2 to 32", repr(value))
    assert not (tmp_path / "build").exists()


def test_override_bit_widths_in_range_compile(tmp_path, capsys, linear_build):
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({LAYER: {"weight_bits": 4, "act_bits": 12}}))
    code, _, err = run_cli(capsys, "compile", linear_build[0], "-o", tmp_path / "build", "--overrides", overrides)
    assert code == 0, err


# ------------------------------------------------------------------------------- 7. names on the terminal
NASTY = "[bold]p[/]\x1b[31mRED\x1b[0m"


def test_markup_and_escape_sequences_in_names_are_printed_literally(tmp_path, capsys, monkeypatch):
    """A node named with rich markup (``[/]``) crashed inspect, verify and estimate; an ANSI sequence in a node
    name reached the terminal raw. Both are now printed as text."""
    monkeypatch.setenv("COLUMNS", "250")  # no folding of the long name in the tables
    folder = tmp_path / "odd[/]folder"
    model = linear_model(folder / "m.onnx", name=NASTY)
    build = folder / "build"
    outputs = []
    for argv, ok in ((["inspect", model, "--layers"], 0), (["compile", model, "-o", build], 0),
                     (["verify", build, "--tolerance", "0.5"], 0), (["estimate", build, "--board", "kv260"], 0)):
        code, out, err = run_cli(capsys, *argv)
        assert code == ok and "Traceback" not in err, (argv, out, err)
        assert "\x1b" not in out + err, argv
        outputs.append((argv[0], out))
    for command, out in outputs:
        if command != "compile":
            assert "[bold]p[/]\\x1b[31mRED\\x1b[0m" in out, (command, out)


def test_shown_escapes_markup_and_control_characters():
    from rich.console import Console

    from fpgaformer.compiler.validate import shown

    console = Console(width=200, force_terminal=False, color_system=None)
    with console.capture() as cap:
        console.print(shown("a[/]b\x1b[2Jc\u202ed\ne"))
    assert cap.get().rstrip("\n") == "a[/]b\\x1b[2Jc\\u202ed\\ne"
