"""Data loss and code execution through paths and names (issue 14).

* ``compile -o OUT`` replaces OUT only when it is absent, an empty folder or a BUILD fpgaformer wrote (marker
  ``.fpgaformer-build`` + manifest.json), never a link, a file, another folder or a folder holding the inputs;
  concurrent writers leave no ``.partial``/``.old`` folder and no traceback.
* ``compile`` copies a tokenizer.json beside the model only when it is a regular file (not a link).
* ``build``: config.tcl holds every value as one Tcl word (tclsh: no command runs, each variable equals the
  original text); the emulated .hwh escapes the board name (it parses as XML, the name comes back intact); no
  write follows a symbolic link planted in the BUILD.
* ``verify --csim``: refuses kernel projects whose files differ from the checksums compile recorded, before
  running anything; works with a relative BUILD path; a BUILD folder named ``evil"); system("touch pwned; ...``
  does not run that code (the weights folder reaches C++ as an escaped string literal).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cli_helpers import assert_refused, run_cli
from cli_helpers import linear_model as shared_linear_model

ROOT = Path(__file__).resolve().parents[2]
# one name that is hostile to C++ (`"` + code), the shell (`;`, `#`), Tcl (`}`, `[exec]`, `$`) and XML (`<&'`)
HOSTILE_BUILD = 'b"); system("touch pwned; true #} [exec touch tclpwned] $x <&\'>'


# ------------------------------------------------------------------------------------------------- helpers
def linear_model(path: Path) -> Path:
    """x (1, 3, 4) -> MatMul(eye) -> y: the smallest model compile accepts."""
    return shared_linear_model(path, name="p")


def compile_float(capsys, model, out):
    return run_cli(capsys, "compile", model, "-o", out, "--precision", "float")


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


# ----------------------------------------------------------------------------- 1. compile -o: what it replaces
def test_compile_does_not_replace_a_folder_it_did_not_write(tmp_path, capsys):
    model = linear_model(tmp_path / "m" / "model.onnx")
    docs = tmp_path / "my_documents"
    docs.mkdir()
    (docs / "thesis.txt").write_text("years of work")
    before = snapshot(docs)
    code, _, err = compile_float(capsys, model, docs)
    assert_refused(code, err, "did not write", str(docs))
    assert snapshot(docs) == before
    assert leftovers(tmp_path) == []


def test_compile_does_not_replace_the_models_own_folder(tmp_path, capsys, monkeypatch):
    model = linear_model(tmp_path / "m" / "model.onnx")
    (tmp_path / "m" / "model.onnx.notes").write_text("mine")
    before = snapshot(tmp_path / "m")
    code, _, err = compile_float(capsys, model, tmp_path / "m")
    assert_refused(code, err, "input of this compile")
    monkeypatch.chdir(tmp_path / "m")
    code, _, err = compile_float(capsys, "model.onnx", ".")
    assert_refused(code, err, "input of this compile")
    assert snapshot(tmp_path / "m") == before


def test_compile_does_not_replace_a_build_that_holds_its_inputs(tmp_path, capsys):
    build = tmp_path / "build"
    assert compile_float(capsys, linear_model(tmp_path / "model.onnx"), build)[0] == 0
    inside = linear_model(build / "model.onnx")  # the model now lives inside a BUILD
    code, _, err = compile_float(capsys, inside, build)
    assert_refused(code, err, "input of this compile")
    assert inside.is_file()


def test_compile_does_not_write_through_a_symlink(tmp_path, capsys):
    model = linear_model(tmp_path / "model.onnx")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    link = tmp_path / "out"
    link.symlink_to(target)
    code, _, err = compile_float(capsys, model, link)
    assert_refused(code, err, "symbolic link")
    assert link.is_symlink() and snapshot(target) == {"keep.txt": b"keep"}
    # a link to a real BUILD is refused too: the link is not a BUILD fpgaformer wrote
    assert compile_float(capsys, model, tmp_path / "real_build")[0] == 0
    link2 = tmp_path / "out2"
    link2.symlink_to(tmp_path / "real_build")
    assert_refused(*compile_float(capsys, model, link2)[::2], "symbolic link")


def test_compile_does_not_replace_an_existing_file(tmp_path, capsys):
    model = linear_model(tmp_path / "model.onnx")
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF precious")
    code, _, err = compile_float(capsys, model, report)
    assert_refused(code, err, "is a file")
    assert report.read_bytes() == b"%PDF precious"


def test_compile_replaces_its_own_build_and_fills_an_empty_folder(tmp_path, capsys):
    model = linear_model(tmp_path / "model.onnx")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert compile_float(capsys, model, empty)[0] == 0
    assert (empty / ".fpgaformer-build").is_file() and (empty / "manifest.json").is_file()
    (empty / "stale.txt").write_text("from an older compile")  # a BUILD fpgaformer wrote is replaced whole
    assert compile_float(capsys, model, empty)[0] == 0
    assert not (empty / "stale.txt").exists() and (empty / ".fpgaformer-build").is_file()
    assert leftovers(tmp_path) == []


def test_every_writer_of_a_build_follows_the_rule(tmp_path):
    """The rule lives in staged_directory: save_artifact (another caller) refuses a foreign folder too."""
    from fpgaformer.host.artifact import OutputError, save_artifact
    from fpgaformer.host.graph import Graph, Layer, Tensor

    graph = Graph(["x"], ["y"], {"x": Tensor("x", (1, 2, 4)), "y": Tensor("y", (1, 2, 4))},
                  [Layer("lin", "Linear", ["x"], ["y"], params={"weight": np.eye(4, dtype=np.float32)}, block=0)])
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a")
    with pytest.raises(OutputError, match="did not write"):
        save_artifact(docs, graph)
    assert (docs / "a.txt").read_text() == "a"


CONCURRENT_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from fpgaformer.host.artifact import save_artifact
    from fpgaformer.host.graph import Graph, Layer, Tensor
    try:
        from fpgaformer.host.artifact import OutputError  # "another fpgaformer wrote ... at the same time"
    except ImportError:
        OutputError = ()

    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    g = Graph(["x"], ["y"], {"x": Tensor("x", (1, 2, 4)), "y": Tensor("y", (1, 2, 3))},
              [Layer("lin", "Linear", ["x"], ["y"], params={"weight": w}, block=0)], meta={"kind": "encoder"})
    lost = 0
    for _ in range(int(sys.argv[2])):
        try:
            save_artifact(Path(sys.argv[1]), g)
        except OutputError as e:
            assert "at the same time" in str(e), e
            lost += 1
    print(lost)
""")


def test_concurrent_writers_leave_no_partial_or_old_folders(tmp_path):
    build = tmp_path / "b"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER, str(build), "40"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for out, err, code in results:
        assert code == 0 and "Traceback" not in err, err
    from fpgaformer.host.artifact import is_build, load_artifact

    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert is_build(build) and load_artifact(build)[0].layers[0].name == "lin"


# ------------------------------------------------------------------------------------ 2. tokenizer.json links
def test_tokenizer_symlink_beside_the_model_is_not_copied(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("private key")
    model = linear_model(tmp_path / "m" / "model.onnx")
    (tmp_path / "m" / "tokenizer.json").symlink_to(secret)
    code, out, err = compile_float(capsys, model, tmp_path / "build")
    assert code == 0, err
    assert not (tmp_path / "build" / "tokenizer.json").exists()
    assert "symbolic link" in out + err
    # a regular tokenizer.json is still copied
    (tmp_path / "m" / "tokenizer.json").unlink()
    (tmp_path / "m" / "tokenizer.json").write_text('{"model": {}}')
    assert compile_float(capsys, model, tmp_path / "build")[0] == 0
    assert (tmp_path / "build" / "tokenizer.json").read_text() == '{"model": {}}'


# ------------------------------------------------------------------ a quantized tiny BERT in a hostile folder
def tiny_bert():
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=1,
                                  vocab_size=100, max_position_embeddings=16, hidden_act="gelu")
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


@pytest.fixture(scope="module")
def hostile_build(tmp_path_factory):
    """BUILD of a quantized one-block BERT (one kernel project) in a folder named HOSTILE_BUILD."""
    pytest.importorskip("torch")
    pytest.importorskip("hls4ml")
    from fpgaformer.compiler.cli import compile_model
    from fpgaformer.compiler.hf_export import export

    root = tmp_path_factory.mktemp("hostile")
    (root / "model").mkdir()
    onnx_path = export(tiny_bert(), root / "model" / "tiny_bert.onnx", 8, "torchscript")
    build = root / HOSTILE_BUILD
    compile_model(onnx_path, build, seq_len=8, precision="w8a16", log=lambda *a: None)
    return build


def copy_build(build: Path, dest: Path) -> Path:
    shutil.copytree(build, dest, symlinks=True)
    return dest


def hostile_board(path: Path, **fields) -> Path:
    """boards/kv260.toml with some top-level string fields replaced (written as TOML basic strings)."""
    lines = []
    for line in (ROOT / "boards" / "kv260.toml").read_text().splitlines():
        key = line.split("=")[0].strip()
        lines.append(f"{key} = {json.dumps(fields[key])}" if key in fields and "=" in line else line)
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------- 3. config.tcl (tclsh)
TCL_DUMP = 'source config.tcl\nforeach v [lsort [info vars ff_*]] { puts "$v [binary encode hex ' \
           '[encoding convertto utf-8 [set $v]]]" }\n'


def tcl_values(folder: Path) -> dict[str, str]:
    done = subprocess.run(["tclsh"], input=TCL_DUMP, cwd=folder, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {k: bytes.fromhex(v).decode() for k, v in (line.split(" ") for line in done.stdout.splitlines())}


needs_tclsh = pytest.mark.skipif(shutil.which("tclsh") is None, reason="tclsh is not installed")


@needs_tclsh
def test_config_tcl_runs_no_command_from_board_file_or_build_path(hostile_build, tmp_path, capsys):
    build = copy_build(hostile_build, tmp_path / HOSTILE_BUILD)
    part = 'xck26}; exec touch tclpwned_part; set y {'
    board = hostile_board(tmp_path / "board.toml", part=part)
    code, out, err = run_cli(capsys, "build", build, "--board", board, "--scripts-only")
    assert code == 0, err
    overlay = build / "overlay"
    values = tcl_values(overlay)
    assert not list(tmp_path.rglob("tclpwned*")), "a command in a value ran in tclsh"
    assert values["ff_part"] == part
    assert values["ff_backend_dir"] == str(build / "hls")
    assert values["ff_bit_out"] == str(build / "fpgaformer.bit")
    contract = json.loads((build / "fpgaformer.json").read_text())
    assert values["ff_kernel_name"] == contract["ips"]["kernel"]["name"]
    assert len(values["ff_address_map"].split(" ")) == 12


@needs_tclsh
def test_config_tcl_words_round_trip_any_text(tmp_path):
    from fpgaformer.compiler.build_cli import _tcl_config

    nasty = ['}', '{', '[exec touch tclpwned1]', '$env(HOME)', 'a\\', '\\n', '"q"; exec touch tclpwned2',
             'line\nbreak\ttab\rcr', '\x01\x1f\x7f', 'ünï 文字 🙂', '', ' lead and trail ', '#', ';', '\\\n x']
    ips = {n: {"name": f"{n}_0", "vlnv": f"v:{n}", "base": 0xA0000000, "range": 0x10000, "length_width": 26,
               "data_width": 128} for n in ("kernel", "dma", "reset")}
    contract = SimpleNamespace(data={"clock_mhz": 250.0}, ip=lambda n: ips[n])
    for i, text in enumerate(nasty):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        board = SimpleNamespace(part=text, family=text + "x")
        (folder / "config.tcl").write_text(_tcl_config(contract, board, 8, Path("/b") / "x y[z]"), encoding="utf-8")
        values = tcl_values(folder)
        assert values["ff_part"] == text and values["ff_family"] == text + "x", (text, values)
        assert values["ff_backend_dir"] == "/b/x y[z]/hls"
    assert not list(tmp_path.rglob("tclpwned*")) and not list(Path.cwd().glob("tclpwned*"))


# ------------------------------------------------------------------------------------------ 4. hwh (XML)
def test_hwh_escapes_a_hostile_board_name(hostile_build, tmp_path, capsys):
    import xml.etree.ElementTree as ET

    from fpgaformer.host.protocol import SIM_HWH

    build = copy_build(hostile_build, tmp_path / "b")
    name = 'kv260" ARCH="x"/><EVIL/><SYSTEMINFO NAME="&amp;\'<'
    board = hostile_board(tmp_path / "board.toml", name=name)
    code, _, err = run_cli(capsys, "build", build, "--board", board, "--scripts-only")
    assert code == 0, err
    root = ET.parse(build / SIM_HWH).getroot()
    assert [e.get("DEVICE") for e in root.iter("SYSTEMINFO")] == [name]
    assert list(root.iter("EVIL")) == []


# --------------------------------------------------------------------------- 5. build and planted symlinks
@pytest.mark.parametrize("planted", [".fpgaformer.json.tmp", "overlay", "overlay/config.tcl", "overlay/sim",
                                     "overlay/hls", "overlay/hls/kernels", "overlay/hls/ff_model.cpp"])
def test_build_does_not_follow_symlinks_planted_in_the_build(hostile_build, tmp_path, capsys, planted):
    build = copy_build(hostile_build, tmp_path / "b")
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    is_dir = planted in ("overlay", "overlay/sim", "overlay/hls", "overlay/hls/kernels")
    if is_dir:
        victim.mkdir()
        (victim / "keep.txt").write_text("keep")
    else:
        victim.write_text("keep")
    link = build / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    before = snapshot(outside)
    code, _, err = run_cli(capsys, "build", build, "--board", "kv260", "--scripts-only")
    assert_refused(code, err, "symbolic link", str(link))
    assert snapshot(outside) == before


# ------------------------------------------------------------------------------- 6. verify --csim checks
def _require_gxx():
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")


def test_verify_csim_refuses_an_edited_build_script_before_running_it(hostile_build, tmp_path, capsys):
    build = copy_build(hostile_build, tmp_path / "b")
    script = next((build / "hls").glob("*/build_lib.sh"))
    marker = tmp_path / "tampered"
    script.write_text(script.read_text() + f"\ntouch {marker}\n")
    code, _, err = run_cli(capsys, "verify", build, "--csim")
    assert_refused(code, err, "build_lib.sh was changed", "nothing was run")
    assert not marker.exists()


def test_verify_csim_refuses_an_added_source_or_a_missing_checksum_index(hostile_build, tmp_path, capsys):
    build = copy_build(hostile_build, tmp_path / "b")
    project = next(p for p in (build / "hls").iterdir() if (p / "build_lib.sh").is_file())
    (project / "firmware" / "nnet_utils" / "ff_evil.h").write_text("#error planted\n")
    assert_refused(*run_cli(capsys, "verify", build, "--csim")[::2], "ff_evil.h was added")
    (project / "firmware" / "nnet_utils" / "ff_evil.h").unlink()
    index = build / "hls" / "kernels.json"
    data = json.loads(index.read_text())
    for k in data["kernels"]:
        k.pop("files")
    index.write_text(json.dumps(data))  # a BUILD from before the checksums (or an edited index)
    assert_refused(*run_cli(capsys, "verify", build, "--csim")[::2], "records no checksums")


@pytest.mark.csim
def test_verify_csim_with_a_relative_build_path(hostile_build, capsys, monkeypatch):
    _require_gxx()
    monkeypatch.chdir(hostile_build.parent)
    code, out, err = run_cli(capsys, "verify", hostile_build.name, "--csim", "-n", "2")
    assert code == 0, out + err
    assert "bit-identical" in out


# ---------------------------------------------------------------------------- 7. the BUILD path and C++
@pytest.mark.csim
def test_build_path_cannot_inject_cpp_into_the_csim_library(hostile_build, tmp_path, capsys, monkeypatch):
    """The folder name ends the WEIGHTS_DIR literal of hls4ml's script and calls system() when the C simulation
    loads its weights; with the escaped literal nothing runs and the weights are found in that folder."""
    _require_gxx()
    monkeypatch.chdir(tmp_path)  # system("touch pwned") would write here (the C simulation's working folder)
    code, out, err = run_cli(capsys, "verify", hostile_build, "--csim", "-n", "2")
    assert not (tmp_path / "pwned").exists(), "code in the BUILD path ran"
    assert code == 0, out + err
    assert "bit-identical" in out
    script = next((hostile_build / "hls").glob("*/build_lib.sh")).read_text()
    assert 'WEIGHTS_DIR="\\"${BASEDIR}' not in script
