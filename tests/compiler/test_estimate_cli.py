"""`fpgaformer estimate` end to end on BUILD directories: tables, JSON, plot, calibration, exit codes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fpgaformer.compiler import estimate_cli, synthetic
from fpgaformer.compiler.fit import choose_hardware
from fpgaformer.host.artifact import save_artifact

FIXTURE = Path(__file__).parents[1] / "fixtures" / "csynth.xml"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    path = tmp_path_factory.mktemp("builds") / "encoder"
    save_artifact(path, synthetic.encoder(2, 64, 4, 256, 500, 16, params="random"))
    return path


@pytest.fixture(scope="module")
def decoder_build(tmp_path_factory):
    path = tmp_path_factory.mktemp("builds") / "decoder"
    save_artifact(path, synthetic.decoder(2, 64, 4, 256, 500, 16, context=64, params="random"))
    return path


def test_table_output(build, capsys):
    assert estimate_cli.main([str(build), "--board", "kv260"]) == 0
    out = capsys.readouterr().out
    for text in ("ESTIMATE", "per layer", "block0_q_proj", "resources (estimate)", "throughput vs bounds",
                 "sequences/s", "compute bound", "of it", "not synthesis results"):
        assert text in out, text


def test_json_output_and_plot(decoder_build, tmp_path, capsys):
    png = tmp_path / "roof.png"
    assert estimate_cli.main([str(decoder_build), "--board", "u280", "--json", "--plot", str(png)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["estimate"] is True and r["kind"] == "decoder" and r["fits"] is True
    assert r["board"]["name"] == "u280" and r["precision"] == "w8a16"
    d = r["design"]
    assert d["unit"] == "tokens/s" and d["throughput"] > 0
    assert 0 < d["fraction_of_bound"] <= 1
    assert d["tighter_bound"] == min(x for x in (d["compute_bound"], d["memory_bound"]) if x is not None)
    assert set(r["modes"]) == {"on_chip", "streamed"}
    assert any(l["op"] == "Linear" and "reuse_factor" in l for l in r["layers"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_settings_stored_in_build_are_used_and_reports_are_compared(tmp_path, capsys):
    g = synthetic.encoder(2, 64, 4, 256, 500, 16, params="random")
    choose_hardware(g, "kv260", "w8a8")
    path = tmp_path / "compiled"
    save_artifact(path, g)
    report = path / "hls" / "block0" / "solution1" / "syn" / "report"
    report.mkdir(parents=True)
    shutil.copy(FIXTURE, report / "csynth.xml")
    assert estimate_cli.main([str(path), "--board", "kv260", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["settings_from"] == "BUILD" and r["precision"] == "w8a8"
    (row,) = r["calibration"]
    assert row["kernel"] == "block0" and row["report"]["dsp"] == 388 and row["estimate"]["dsp"] > 0
    assert estimate_cli.main([str(path), "--board", "kv260"]) == 0
    assert "calibration: estimate vs synthesis report" in capsys.readouterr().out


def test_does_not_fit_exits_1_with_reason(tmp_path, capsys):
    path = tmp_path / "big"
    save_artifact(path, synthetic.encoder(2, 256, 4, 1024, 500, 128, params="zeros"))
    assert estimate_cli.main([str(path), "--board", "pynq-z2", "--mode", "on_chip"]) == 1
    out = capsys.readouterr().out
    assert "does not fit" in out and "would fit" in out


def test_unknown_board_exits_2_and_lists_boards(build, capsys):
    assert estimate_cli.main([str(build), "--board", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown board 'nope'" in err and "kv260" in err and "u280" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--precision", "w3a3"], "unknown precision"),
    (["--budget", "1.5"], "--budget"),
])
def test_bad_options_exit_2(build, capsys, argv, message):
    assert estimate_cli.main([str(build), "--board", "kv260", *argv]) == 2
    assert message in capsys.readouterr().err


def test_not_a_model_exits_2(tmp_path, capsys):
    (tmp_path / "model.txt").write_text("hello")
    assert estimate_cli.main([str(tmp_path / "model.txt"), "--board", "kv260"]) == 2
    assert "neither an .onnx file nor a BUILD" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert estimate_cli.main([str(empty), "--board", "kv260"]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_registered_on_the_main_cli(build, capsys):
    cli = pytest.importorskip("fpgaformer.compiler.cli")
    assert cli.main(["estimate", str(build), "--board", "zcu104", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["board"]["name"] == "zcu104"


def test_onnx_model_goes_through_the_front_end(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("fpgaformer.compiler.frontend")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.random((16, 32), dtype=np.float32), "W"),
               numpy_helper.from_array(rng.random(32, dtype=np.float32), "B")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc/MatMul"),
             helper.make_node("Add", ["h", "B"], ["y"], name="fc/Add")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq", 32])], weights)
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert estimate_cli.main([str(path), "--board", "kv260", "--seq-len", "8", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    # one Linear 16 -> 32 over 8 rows: 4,096 MACs per sequence
    assert r["bounds"]["macs_per_item"] == 8 * 16 * 32 and r["seq_len"] == 8
