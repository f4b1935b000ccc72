"""Loaders validate what they read, once: a damaged or edited BUILD is a clear error (ArtifactError, ContractError,
a ValueError the CLI turns into one paragraph), never a traceback from deeper code. The end-to-end rule (every
command, exit status, no traceback) is tests/test_fuzz_corruption.py; these are the loaders' own checks, fast."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fpgaformer.host.artifact import ArtifactError, load_artifact, save_artifact, weights_checksum
from fpgaformer.host.fixed import FixedType, FixedTypeError
from fpgaformer.host.graph import Graph, GraphError, Layer, Tensor


def small_graph(quant: bool = True) -> Graph:
    w = (np.arange(12, dtype=np.float32).reshape(4, 3) - 6) / 8
    fixed = FixedType(16, 4, True, "RND", "SAT").to_dict()
    attrs = {"quant": {"weight_type": FixedType(8, 1, True, "RND_CONV", "SAT").to_dict(),
                       "weight_col_shift": [0, 0, 0]}} if quant else {}
    layers = [Layer("lin", "Linear", ["x"], ["y"], attrs=attrs,
                    params={"weight": w, "bias": np.ones(3, np.float32)}, block=0, role="ffn_up")]
    tensors = {"x": Tensor("x", (1, 2, 4), fixed=fixed if quant else None),
               "y": Tensor("y", (1, 2, 3), fixed=fixed if quant else None)}
    return Graph(["x"], ["y"], tensors, layers, meta={"kind": "encoder", "seq_len": 2})


@pytest.fixture
def build(tmp_path) -> Path:
    save_artifact(tmp_path / "b", small_graph())
    return tmp_path / "b"


def edit_manifest(build: Path, edit) -> None:
    path = build / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def write_weights(build: Path, weights: dict, resign: bool = True) -> None:
    with open(build / "weights.npz", "wb") as fh:
        np.savez(fh, **weights)
    if resign:
        edit_manifest(build, lambda m: m.__setitem__("weights_sha256", weights_checksum(weights)))


def weights_of(build: Path) -> dict:
    with np.load(build / "weights.npz") as z:
        return {k: z[k] for k in z.files}


def refused(build: Path, *words: str) -> str:
    with pytest.raises(ArtifactError) as info:
        load_artifact(build)
    text = str(info.value)
    for word in words:
        assert word in text, text
    assert "ecompile" in text, text  # says what to do
    return text


def test_valid_build_loads(build):
    graph, manifest = load_artifact(build)
    assert graph.layers[0].params["weight"].shape == (4, 3) and manifest["version"] == 1
    assert graph.layers[0].params["weight"].flags.writeable


# ---- E: fixed-point types read from files
@pytest.mark.parametrize("bad", [{"width": "16", "integer": 4}, {"width": 0, "integer": 4},
                                 {"width": -3, "integer": 4}, {"width": 4096, "integer": 4},
                                 {"width": 16, "integer": 4, "rounding": "RND_BOGUS"},
                                 {"width": 16, "integer": 4, "overflow": "CLAMP"}, {"width": 16, "integer": 10 ** 9},
                                 {"width": 16, "integer": 4, "signed": "yes"}, {"width": 16}, [16, 4], None])
def test_fixed_type_from_dict_refuses_with_a_catchable_error(bad):
    with pytest.raises(FixedTypeError):
        FixedType.from_dict(bad)
    assert issubclass(FixedTypeError, ValueError)


def test_fixed_width_in_manifest_is_an_artifact_error(build):
    edit_manifest(build, lambda m: m["graph"]["tensors"][0]["fixed"].__setitem__("width", 4096))
    refused(build, "tensor 'x'", "width")


# ---- B, C: the manifest file itself
@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"[1, 2]", b"null", b"{\"format\": "])
def test_manifest_not_an_object_or_not_text(build, content):
    (build / "manifest.json").write_bytes(content)
    with pytest.raises(ArtifactError, match="manifest.json"):
        load_artifact(build)


@pytest.mark.parametrize("key", ["weights_sha256", "graph"])
def test_manifest_key_missing(build, key):
    edit_manifest(build, lambda m: m.pop(key))
    refused(build, key)


# ---- A: weights.npz
def test_weights_not_a_zip(build):
    np.save(build / "w.npy", np.arange(10.0))
    (build / "w.npy").replace(build / "weights.npz")
    refused(build, "weights.npz")


def test_weights_bad_crc(build):
    data = bytearray((build / "weights.npz").read_bytes())
    at = data.index(b"\x93NUMPY") + 128 + 4  # inside the first array's data (after its 128-byte header)
    data[at] ^= 0xFF
    (build / "weights.npz").write_bytes(bytes(data))
    refused(build, "weights.npz")


def test_weights_pickle_is_never_loaded(build, tmp_path):
    marker = tmp_path / "UNPICKLED"

    class Unpickled:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    weights = weights_of(build)
    weights["lin/bias"] = np.array([Unpickled(), 1.0], dtype=object)
    with open(build / "weights.npz", "wb") as fh:
        np.savez(fh, **weights)
    refused(build, "lin/bias")
    assert not marker.exists()


def test_weights_zip_bomb_is_refused_before_decompressing(build):
    """A member that unpacks to far more than its declared parameter is refused from the zip directory alone."""
    huge = np.zeros(1 << 27, np.float32)  # 512 MiB of zeros deflate to about half a MiB
    buf = io.BytesIO()
    np.lib.format.write_array(buf, huge)
    weights = weights_of(build)
    with zipfile.ZipFile(build / "weights.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("lin/weight.npy", buf.getvalue())
        for key in ("lin/bias",):
            b = io.BytesIO()
            np.lib.format.write_array(b, weights[key])
            zf.writestr(f"{key}.npy", b.getvalue())
    del huge, buf
    import tracemalloc

    tracemalloc.start()
    text = refused(build, "lin/weight", "unpacks to")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20, (peak, text)


def test_weights_member_not_declared(build):
    weights = weights_of(build)
    weights["lin/extra"] = np.zeros(3, np.float32)
    write_weights(build, weights)
    refused(build, "lin/extra")


@pytest.mark.parametrize("edit", [
    lambda a: a.T.copy(), lambda a: a[None], lambda a: a[:0], lambda a: a.astype(np.float64),
    lambda a: a.astype(np.int8), lambda a: a.astype(np.complex64), lambda a: a.astype(str)],
    ids=["transposed", "extra axis", "empty", "float64", "int8", "complex", "strings"])
def test_weights_against_their_declaration(build, edit):
    weights = weights_of(build)
    weights["lin/weight"] = edit(weights["lin/weight"])
    write_weights(build, weights)
    refused(build, "lin/weight")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_weights_not_finite(build, value):
    weights = weights_of(build)
    weights["lin/weight"][1, 2] = value
    write_weights(build, weights)
    refused(build, "lin/weight")


def test_weights_far_outside_their_type(build):
    weights = weights_of(build)
    weights["lin/weight"] = weights["lin/weight"] * np.float32(1e30)
    write_weights(build, weights)
    refused(build, "lin/weight", "outside its type")


def test_float_graph_without_types_still_loads(tmp_path):
    save_artifact(tmp_path / "b", small_graph(quant=False))
    assert load_artifact(tmp_path / "b")[0].layers[0].op == "Linear"


# ---- D, F: the graph's structure
@pytest.mark.parametrize("edit, words", [
    (lambda g: g.pop("inputs"), ["graph.inputs"]),
    (lambda g: g.pop("tensors"), ["graph.tensors"]),
    (lambda g: g.__setitem__("inputs", "x"), ["graph.inputs"]),
    (lambda g: g.__setitem__("layers", {"x": 1}), ["graph.layers"]),
    (lambda g: g["layers"][0].pop("op"), ["lin", "op"]),
    (lambda g: g["layers"][0].__setitem__("op", "FrobnicateOp"), ["FrobnicateOp"]),
    (lambda g: g["layers"][0].__setitem__("inputs", ["no/such/tensor"]), ["no/such/tensor"]),
    (lambda g: g["tensors"][0].pop("shape"), ["tensor 'x'"]),
    (lambda g: g["tensors"][0].__setitem__("shape", "1,2,4"), ["tensor 'x'"]),
    (lambda g: g["tensors"][0].__setitem__("shape", [1, -1, 4]), ["tensor 'x'"]),
    (lambda g: g["tensors"][1].__setitem__("shape", [1, 2 ** 40]), ["tensor 'y'", "elements"]),
    (lambda g: g["layers"][0]["params"]["weight"].__setitem__("shape", [2 ** 40]), ["lin/weight"]),
    (lambda g: g["layers"][0]["params"]["weight"].__setitem__("dtype", "object"), ["lin/weight"]),
    (lambda g: g["layers"][0]["attrs"]["quant"]["weight_type"].__setitem__("width", 0), ["weight_type"]),
    (lambda g: g["meta"].__setitem__("seq_len", 8.5), ["meta.seq_len"]),
    (lambda g: g["meta"].__setitem__("seq_len", 2 ** 40), ["meta.seq_len"]),
    (lambda g: g["meta"].__setitem__("n_heads", "two"), ["meta.n_heads"]),
    (lambda g: g["meta"].__setitem__("n_heads", 0), ["meta.n_heads"]),
    (lambda g: g["meta"].__setitem__("kind", "transmogrifier"), ["meta.kind"]),
    (lambda g: g["meta"].__setitem__("precision", "w8a16"), ["meta.precision"]),
    (lambda g: g.__setitem__("meta", [1]), ["meta"]),
], ids=lambda x: "" if callable(x) else x[0])
def test_graph_structure(build, edit, words):
    edit_manifest(build, lambda m: edit(m["graph"]))
    refused(build, *words)


def test_graph_is_a_list(build):
    edit_manifest(build, lambda m: m.__setitem__("graph", [m["graph"]]))
    refused(build, "graph")


def test_meta_seq_len_is_optional(build):
    edit_manifest(build, lambda m: m["graph"]["meta"].pop("seq_len"))
    assert "seq_len" not in load_artifact(build)[0].meta


def test_validate_raises_graph_error_a_value_error():
    g = small_graph()
    g.layers[0].op = "Nope"
    with pytest.raises(GraphError, match="unknown op"):
        g.validate()
    assert issubclass(GraphError, ValueError)  # compiler.partition catches ValueError


# ---- H: the overlay contract
@pytest.fixture
def contract_build(build):
    from fpgaformer.host.protocol import make_contract

    graph, manifest = load_artifact(build)
    make_contract(graph, manifest).save(build)
    return build


def edit_contract(build: Path, edit) -> None:
    path = build / "fpgaformer.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.pop("inputs"), ["inputs"]),
    (lambda d: d.pop("ips"), ["ips"]),
    (lambda d: d["ips"].pop("dma"), ["ips.dma"]),
    (lambda d: d["weights"].pop("entries"), ["weights.entries"]),
    (lambda d: d.__setitem__("inputs", {"x": 1}), ["inputs"]),
    (lambda d: d.__setitem__("design_id", "0xdead"), ["design_id"]),
    (lambda d: d.__setitem__("kind", "transmogrifier"), ["kind"]),
    (lambda d: d["stream"].__setitem__("beat_bytes", 0), ["beat_bytes"]),
    (lambda d: d["ips"]["dma"].__setitem__("length_width", 0), ["length_width"]),
    (lambda d: d["weights"]["entries"][0].__setitem__("offset", 2 ** 40), ["offset"]),
    (lambda d: d["weights"]["entries"][0].__setitem__("shape", [2 ** 40]), ["weights.entries[0]"]),
    (lambda d: d["weights"].__setitem__("bytes", -1), ["weights.bytes"]),
    (lambda d: d["inputs"][0].__setitem__("lane", 0), ["lane"]),
    (lambda d: d["outputs"][0]["fixed"].__setitem__("width", 0), ["outputs[0]"]),
    (lambda d: d["outputs"][0].__setitem__("shape", [1, 2 ** 40]), ["outputs[0]"]),
    (lambda d: d["latency"].__setitem__("cycles_per_token", "fast"), ["cycles_per_token"]),
    (lambda d: d["ips"]["kernel"]["registers"]["CTRL"].__setitem__("offset", 4), ["CTRL"]),
], ids=lambda x: "" if callable(x) else x[0])
def test_contract_is_checked_on_load(contract_build, edit, words):
    from fpgaformer.host.protocol import Contract, ContractError

    assert Contract.load(contract_build).kind == "encoder"
    edit_contract(contract_build, edit)
    with pytest.raises(ContractError) as info:
        Contract.load(contract_build)
    for word in words + ["rebuild the overlay"]:
        assert word in str(info.value), str(info.value)


# ---- F: BackendError is a user error of the CLI
def test_backend_error_exits_2_without_traceback(monkeypatch, capsys):
    import argparse

    from fpgaformer.compiler import cli
    from fpgaformer.compiler.backend.hls4ml import BackendError

    def boom(args):
        raise BackendError("layer 'x': cannot be lowered")

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=boom)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: layer 'x'") and "Traceback" not in err


# ---- I: a damaged source.onnx
def test_damaged_source_model_is_a_user_error(tmp_path):
    pytest.importorskip("onnx")
    from fpgaformer.compiler.errors import UserError
    from fpgaformer.compiler.verify import load_source

    path = tmp_path / "source.onnx"
    path.write_bytes(b"\x08\x07\x12\xff\xff\xff\xff\x0f garbage")
    with pytest.raises(UserError, match="source.onnx is damaged"):
        load_source(path)


# ---- K: kernels.json and the C-simulation worker
@pytest.mark.parametrize("entry", [
    "block0", {"name": "k", "path": "k", "project": "k", "inputs": [{"tensor": "x", "cpp": "x", "shape": [1, 2 ** 40],
                                                                     "fixed": None}], "outputs": []},
    {"name": "k", "path": "k", "project": "k", "inputs": [{"tensor": "x", "cpp": "x", "shape": [1, 8],
                                                           "fixed": {"width": 0, "integer": 1}}], "outputs": []},
    {"name": "k", "path": "k", "project": "k", "inputs": "x", "outputs": []},
    {"path": "k", "project": "k", "inputs": [], "outputs": []},
])
def test_kernel_index_entries_are_checked(tmp_path, entry):
    pytest.importorskip("hls4ml")
    from fpgaformer.compiler.backend.hls4ml import read_projects

    (tmp_path / "hls").mkdir()
    (tmp_path / "hls" / "kernels.json").write_text(json.dumps({"kernels": [entry]}))
    with pytest.raises(ValueError):
        read_projects(tmp_path)


@pytest.mark.parametrize("index", [[1], {"kernels": "block0"}, {}])
def test_kernel_index_structure(tmp_path, index):
    from fpgaformer.compiler.backend.hls4ml import read_projects

    (tmp_path / "hls").mkdir()
    (tmp_path / "hls" / "kernels.json").write_text(json.dumps(index))
    with pytest.raises(ValueError):
        read_projects(tmp_path)


def test_csim_worker_reports_a_bad_spec_in_one_line(tmp_path, capsys):
    from fpgaformer.compiler.backend import csim_worker

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"lib": str(tmp_path / "missing.so"), "function": "f", "inputs": [], "outputs": [],
                                "in": "x", "out": "y"}))
    assert csim_worker.run([str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("C simulation worker: ") and "Traceback" not in err
