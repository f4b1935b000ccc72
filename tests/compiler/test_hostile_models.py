"""Hostile or unlucky models and inputs: names that clash, inputs whose names mislead, constants that would
take gigabytes, sample files that would take hours, and Ctrl-C during C simulation. Each gets a correct result
or one clear sentence (exit 2), never a silent wrong answer, a traceback, a blown memory or a leftover g++."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fpgaformer.compiler.cli import main

from cli_helpers import assert_refused, run_cli
from fpgaformer.compiler.frontend import import_onnx

OPSETS = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]


def save(path: Path, nodes, inputs, outputs, inits=()) -> Path:
    model = helper.make_model(helper.make_graph(nodes, "hostile", inputs, outputs, list(inits)), opset_imports=OPSETS)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def fvi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def const(name, value):
    return onnx.numpy_helper.from_array(np.asarray(value, np.float32), name)


def linear_model(path: Path) -> Path:
    """x (1, 3, 4) -> MatMul(W) -> y."""
    return save(path, [helper.make_node("MatMul", ["x", "W"], ["y"], name="proj")], [fvi("x", [1, 3, 4])],
                [fvi("y", [1, 3, 4])], [const("W", np.eye(4) * 0.5)])


# ------------------------------------------------------------------------------- 1. unique layer names
def test_derived_layer_name_never_takes_a_real_node_name(tmp_path, capsys):
    """BiasGelu 'G' derives a layer 'G::bias'; a real Add named 'G::bias' shared its weights entry (cosine 0.63)."""
    rng = np.random.default_rng(0)
    path = save(tmp_path / "m.onnx",
                [helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"),
                 helper.make_node("BiasGelu", ["h", "B"], ["g"], name="G", domain="com.microsoft"),
                 helper.make_node("Add", ["g", "C"], ["y"], name="G::bias")],
                [fvi("x", [1, 3, 4])], [fvi("y", [1, 3, 4])],
                [const("W", rng.standard_normal((4, 4))), const("B", [0.5, -0.5, 1.0, -1.0]),
                 const("C", [3.0, -3.0, 2.0, -2.0])])
    graph = import_onnx(path)
    names = [layer.name for layer in graph.layers]
    assert len(names) == len(set(names)), names
    real = [l for l in graph.layers if l.name == "G::bias"]
    assert len(real) == 1 and np.allclose(real[0].params["const"], [3.0, -3.0, 2.0, -2.0])
    # the BiasGelu bias (a derived layer, folded into the projection by cleanup) keeps its own values
    bias = [l.params.get("bias", l.params.get("const")) for l in graph.layers if l.name != "G::bias"
            and ("bias" in l.params or "const" in l.params)]
    assert len(bias) == 1 and np.allclose(bias[0], [0.5, -0.5, 1.0, -1.0])
    # the float IR computes what onnxruntime computes (the shared entry made it compute something else)
    import onnxruntime as ort

    from fpgaformer.host import reference
    x = rng.standard_normal((1, 3, 4)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.allclose(reference.run(graph, {"x": x})["y"], want, atol=1e-5)
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "build")
    assert code == 0, err
    import json
    manifest = json.loads((tmp_path / "build" / "manifest.json").read_text())
    names = [l["name"] for l in manifest["graph"]["layers"]]
    assert len(names) == len(set(names)), names
    with np.load(tmp_path / "build" / "weights.npz") as w:
        assert np.allclose(w["G::bias/const"], [3.0, -3.0, 2.0, -2.0])
        assert np.allclose(w["proj/bias"], [0.5, -0.5, 1.0, -1.0])


def test_auto_names_of_unnamed_nodes_never_collide_with_real_names(tmp_path):
    """An unnamed node was named 'Add_0', the name of a real node: a traceback."""
    path = save(tmp_path / "m.onnx",
                [helper.make_node("Add", ["x", "C"], ["a"]),  # unnamed: would be Add_0
                 helper.make_node("Add", ["a", "D"], ["b"], name="Add_0"),
                 helper.make_node("Mul", ["b", "E"], ["y"])],  # unnamed: would be Mul_2
                [fvi("x", [1, 3, 4])], [fvi("y", [1, 3, 4])],
                [const("C", [1.0] * 4), const("D", [2.0] * 4), const("E", [3.0] * 4)])
    graph = import_onnx(path)
    names = [layer.name for layer in graph.layers]
    assert len(names) == 3 and len(set(names)) == 3, names
    assert [l.op for l in graph.layers] == ["Add", "Add", "Mul"]
    assert [float(l.params["const"].reshape(-1)[0]) for l in graph.layers] == [1.0, 2.0, 3.0]


# ------------------------------------------------------------------------------- 2. names that mislead
def test_float_input_named_like_a_mask_is_a_plain_additive_input(tmp_path, capsys):
    """A float input 'attention_mask_bias' added to the activations was taken for a 0/1 attention mask."""
    path = save(tmp_path / "m.onnx",
                [helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"),
                 helper.make_node("Add", ["h", "attention_mask_bias"], ["y"], name="add_bias")],
                [fvi("x", [1, 3, 4]), fvi("attention_mask_bias", [1, 4])], [fvi("y", [1, 3, 4])],
                [const("W", np.eye(4) * 0.5)])
    graph = import_onnx(path)
    assert "attention_mask_bias" in graph.inputs
    assert graph.tensors["attention_mask_bias"].dtype == "float32"
    assert not any(l.op == "PaddingMask" or l.role == "attn_mask" for l in graph.layers)
    from fpgaformer.compiler.passes.calibrate import synthetic_samples
    samples = synthetic_samples(graph, 4)
    assert samples["attention_mask_bias"].dtype == np.float32  # not a 0/1 int mask
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "build")
    assert code == 0, err
    code, out, err = run_cli(capsys, "verify", tmp_path / "build", "--tolerance", "0.05")
    assert code == 0, out + err


def test_rank3_input_named_like_a_cache_is_not_a_kv_cache(tmp_path):
    """A rank-3 float input 'kv_cache_scale' (fixed shape) was taken for a KV cache and refused."""
    path = save(tmp_path / "m.onnx",
                [helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"),
                 helper.make_node("Mul", ["h", "kv_cache_scale"], ["y"], name="scale")],
                [fvi("x", [1, 3, 4]), fvi("kv_cache_scale", [1, 3, 4])], [fvi("y", [1, 3, 4])],
                [const("W", np.eye(4))])
    graph = import_onnx(path)
    assert "kv_cache_scale" in graph.inputs and "folded_kv_cache" not in graph.meta


# ------------------------------------------------------------------------------- 3. huge constants
def test_huge_constant_of_shape_is_refused_fast_and_small(tmp_path):
    """A 10 KB model with ConstantOfShape([20000, 20000]) took 8 GB in inspect."""
    path = save(tmp_path / "m.onnx",
                [helper.make_node("ConstantOfShape", ["S"], ["big"], name="huge_fill",
                                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
                 helper.make_node("ReduceSum", ["big"], ["s"], name="sum_all", keepdims=0),
                 helper.make_node("Add", ["x", "s"], ["y"], name="add")],
                [fvi("x", [1, 3, 4])], [fvi("y", [1, 3, 4])],
                [onnx.numpy_helper.from_array(np.array([20000, 20000], np.int64), "S")])
    assert path.stat().st_size < 10_000
    script = textwrap.dedent(f"""
        import sys
        from fpgaformer.compiler.cli import main
        code = main(["inspect", {str(path)!r}])
        # this process's own peak (VmHWM of its memory map; getrusage's ru_maxrss would include the RSS of the
        # parent that forked it, which exec does not reset)
        hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]
        print("MAXRSS", hwm, file=sys.stderr)
        sys.exit(code)
    """)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: "), done.stderr
    assert "huge_fill" in done.stderr and "MiB" in done.stderr, done.stderr
    maxrss_kib = int(done.stderr.split("MAXRSS")[1].split()[0])
    assert maxrss_kib < 1_000_000, f"{maxrss_kib} KiB"
    assert elapsed < 120, elapsed


# ------------------------------------------------------------------------------- 4. huge sample files
@pytest.fixture(scope="module")
def linear_build(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_linear")
    path = linear_model(folder / "model.onnx")
    assert main(["compile", str(path), "-o", str(folder / "build")]) == 0
    return path, folder / "build"


def test_verify_uses_at_most_64_samples_and_says_so(linear_build, tmp_path, capsys):
    _, build = linear_build
    inputs = tmp_path / "many.npz"
    np.savez(inputs, x=np.random.default_rng(0).standard_normal((500, 1, 3, 4)).astype(np.float32))
    code, out, err = run_cli(capsys, "verify", build, "--inputs", inputs, "--tolerance", "0.05")
    assert code == 0, out + err
    assert "first 64 of the 500 samples" in err, err


def test_sample_file_that_would_decompress_to_gigabytes_is_refused_before_reading(linear_build, tmp_path, capsys):
    """An .npz member whose .npy header claims 4.8 GB (the data need not be there): refused from the header."""
    _, build = linear_build
    inputs = tmp_path / "bomb.npz"
    header = {"descr": "<f4", "fortran_order": False, "shape": (100_000_000, 1, 3, 4)}
    with zipfile.ZipFile(inputs, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.write(b"\0" * 4096)
    code, _, err = run_cli(capsys, "verify", build, "--inputs", inputs)
    assert_refused(code, err, "bomb.npz", "MiB")


# ------------------------------------------------------------------------------- 5. Ctrl-C during csim
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its (new) parent is dead
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _fake_project(tmp_path: Path) -> types.SimpleNamespace:
    """A kernel project whose build_lib.sh starts a long-running stand-in for g++ and records its pid."""
    folder = tmp_path / "proj"
    (folder / "firmware").mkdir(parents=True)
    (folder / "firmware" / "k.cpp").write_text("// kernel\n")
    (folder / "build_lib.sh").write_text(f"#!/bin/bash\nsleep 300 &\necho $! > {folder / 'child.pid'}\nwait\n")
    return types.SimpleNamespace(name="k", path=folder, project="k")


def _wait_pid(folder: Path) -> int:
    for _ in range(200):
        f = folder / "child.pid"
        if f.is_file() and f.read_text().strip():
            return int(f.read_text())
        time.sleep(0.05)
    raise AssertionError("build_lib.sh did not start")


def test_ctrl_c_during_csim_compile_leaves_no_compiler_running(tmp_path):
    from fpgaformer.compiler.backend.csim import compile_kernel

    project = _fake_project(tmp_path)

    def interrupt():
        _wait_pid(project.path)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends (to the foreground group: fpgaformer)

    threading.Thread(target=interrupt, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        compile_kernel(project, timeout=120, reuse=False)
    assert time.monotonic() - start < 30  # the interrupt stopped the compile, not its timeout
    pid = _wait_pid(project.path)
    for _ in range(50):
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid), "the compiler's child survived Ctrl-C"


def test_csim_compile_timeout_kills_the_whole_compiler_group(tmp_path):
    from fpgaformer.compiler.backend.csim import CompileError, compile_kernel

    project = _fake_project(tmp_path)
    with pytest.raises(CompileError, match="still running"):
        compile_kernel(project, timeout=2, reuse=False)
    pid = _wait_pid(project.path)
    time.sleep(0.2)
    assert not _alive(pid)


def test_verify_csim_interrupt_message_says_what_was_written(tmp_path, capsys, monkeypatch):
    """It said 'nothing was written' after g++ had written compiled libraries into BUILD."""
    from fpgaformer.compiler import verify_cli

    build = tmp_path / "build"
    (build / "hls" / "k" / "firmware").mkdir(parents=True)

    def compile_then_interrupt(args):
        (build / "hls" / "k" / "firmware" / "k-123.so").write_bytes(b"\0")
        raise KeyboardInterrupt

    monkeypatch.setattr(verify_cli, "run_csim", compile_then_interrupt)
    code = verify_cli.run(types.SimpleNamespace(build=build, csim=True, json=False))
    err = capsys.readouterr().err
    assert code == 130
    assert "nothing was written" not in err and "1 compiled kernel library" in err and "k-123.so" in err, err

    monkeypatch.setattr(verify_cli, "run_csim", lambda args: (_ for _ in ()).throw(KeyboardInterrupt()))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert verify_cli.run(types.SimpleNamespace(build=empty, csim=True, json=False)) == 130
    assert "wrote nothing" in capsys.readouterr().err
