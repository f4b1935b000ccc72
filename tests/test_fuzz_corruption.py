"""Fuzz test: corrupted BUILDs and input files through every command ("hostile and unlucky input").

The rule: for corrupted input, fpgaformer never prints a Python traceback and never exits 0. It exits 2 (a user
error: one paragraph saying what is wrong), or 1 where the command's verdict is "fail" (``verify`` outside its
tolerance, ``estimate`` "nothing fits"), and leaves no partial output that looks complete.

One tiny BERT encoder BUILD and one tiny LLaMA decoder BUILD are compiled and built (kv260) once per module.
Deterministic corruptions (numpy RNG seeded per case) are applied to a fresh copy of the BUILD (or of a valid
inputs.npz) for every (corruption, command) job, and the job's command runs as a subprocess:

* byte level, on every file of the BUILD that a command reads: truncated to 0 bytes / to half, random bytes
  flipped, replaced by random bytes, deleted;
* JSON files (manifest.json, fpgaformer.json, hls/kernels.json, hls/graph/manifest.json): a key removed, a value
  of the wrong type, a fixed-point width of 0, an unknown op name, huge dims (``[1, 2**40]``), ...;
* weights.npz: a pickle-bearing npz (object array whose unpickling would create a marker file), a non-zip
  file, an array missing / of the wrong dtype / shape / holding NaN (each also "re-signed": the manifest's
  weights_sha256 recomputed, so the checksum passes and the deeper checks are what is tested);
* inputs / calib .npz: truncated, not a zip, wrong dtype (float, complex, strings, objects), wrong shape
  (transposed, extra axis, two sequences joined, 1-D), a missing / unknown input name, empty arrays, NaN,
  ids outside the vocabulary, different sample counts per input.

Which command reads which BUILD file was measured with a Python audit hook on ``open`` (see READS):
plan.json is read by no command (it is written for people), so its corruptions only check "no traceback";
hls/kernels.json and hls/graph/* are read by ``verify --csim`` only (g++: ~10 s per kernel that gets that
far, so only a few of those run); fpgaformer.json is read by run/generate and rewritten by build.

Checked per job: no "Traceback" in stdout/stderr; exit status in the command's allowed set (never 0, never a
signal, no timeout); exit 2 says something on stderr; no file left behind by a failing command (``run -o``
output, ``compile -o`` BUILD, temporary files inside the BUILD); a pickle in an npz is never unpickled.
Children run with RLIMIT_AS = 8 GiB so that a huge-dims corruption raises MemoryError instead of exhausting the
machine. Every failing job is listed at once at the end (corruption, command, exit code, last output lines).

Size: 297 corruption cases (162 distinct corruptions, most applied to both the encoder and the decoder BUILD)
x their relevant commands (9 distinct command lines) = 838 CLI runs in all. The default run is a deterministic
sample of about 210 of them (every uncorrupted baseline, one run per distinct corruption, then random others up
to BUDGET worker-seconds), NWORKERS at a time: about 5 minutes on 2 cores including the fixture's export,
compile and build. ``FPGAFORMER_FUZZ_ALL=1`` runs all 838 (about 15 minutes on 2 cores);
``FPGAFORMER_FUZZ_SEED=n`` draws another sample; ``FPGAFORMER_FUZZ_REPORT=path.json`` writes every run's
result. The test prints the counts that ran ("N corruption cases x M commands = K CLI runs").
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "fpgaformer.compiler.cli"]
TIMEOUT = 120  # seconds per CLI run
MEMORY_LIMIT = 8 << 30  # RLIMIT_AS of every child
NWORKERS = max(1, min(4, os.cpu_count() or 1))
ENC_SEQ, DEC_SEQ = 8, 16
ENC_VOCAB, DEC_VOCAB = 100, 64
DEC_TOLERANCE = "0.05"  # the tiny random LLaMA's w8a16 error is ~0.008 > the default 0.0039: verify passes at 0.05
BUDGET = 520.0  # worker-seconds of CLI runs in the default sample (~5 min on 2 cores with the fixture)

# BUILD file -> commands that read it (measured with sys.addaudithook "open" events on a valid BUILD)
READS = {
    "manifest.json": ("verify", "run", "estimate", "build"),
    "weights.npz": ("verify", "run", "estimate", "build"),
    "source.onnx": ("verify",),
    "fpgaformer.json": ("run",),  # build rewrites it; verify/estimate do not open it
    "plan.json": (),  # written by compile for people; no command reads it
    "hls/kernels.json": ("csim",),
    "hls/graph/manifest.json": ("csim",),
    "hls/graph/weights.npz": ("csim",),
}


# ------------------------------------------------------------------------------------------------ fixture
def _tiny_bert():
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=1,
                                  vocab_size=ENC_VOCAB, max_position_embeddings=16)
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


def _tiny_llama():
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, vocab_size=DEC_VOCAB, max_position_embeddings=32)
    return transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="eager").eval()


def _limit_memory():  # runs in the child before exec
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass


def _cli(args, cwd=None, timeout=TIMEOUT):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          preexec_fn=_limit_memory if os.name == "posix" else None)


def _valid_inputs(vocab: int, seq: int, n: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(n, 1, seq)).astype(np.int64)
    mask = np.ones((n, 1, seq), np.int64)
    mask[1, 0, seq // 2:] = 0  # one padded sequence
    return {"input_ids": ids, "attention_mask": mask}


@dataclass
class Fixture:
    root: Path
    onnx: dict[str, Path]
    build: dict[str, Path]
    inputs: dict[str, Path]  # valid inputs.npz (also used as calib.npz)


@pytest.fixture(scope="module")
def fuzz_builds(tmp_path_factory) -> Fixture:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from fpgaformer.compiler.hf_export import export

    root = tmp_path_factory.mktemp("fuzz")
    onnx = {"enc": export(_tiny_bert(), root / "enc.onnx", ENC_SEQ, "torchscript"),
            "dec": export(_tiny_llama(), root / "dec.onnx", DEC_SEQ, "torchscript", output="logits")}
    build, inputs = {}, {}
    for kind, seq, vocab in (("enc", ENC_SEQ, ENC_VOCAB), ("dec", DEC_SEQ, DEC_VOCAB)):
        build[kind] = root / f"{kind.upper()}_BUILD"
        for args in (["compile", onnx[kind], "-o", build[kind], "--seq-len", seq],
                     ["build", build[kind], "--board", "kv260"]):
            proc = _cli(args, timeout=600)
            assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
        inputs[kind] = root / f"{kind}_inputs.npz"
        np.savez(inputs[kind], **_valid_inputs(vocab, seq))
    return Fixture(root, onnx, build, inputs)


# ------------------------------------------------------------------------------------------------ commands
@dataclass(frozen=True)
class Command:
    name: str
    allowed: frozenset  # exit codes accepted for corrupted input
    argv: Callable  # (fixture, kind, target path, workdir) -> args


def _build_cmds(kind: str) -> dict[str, Command]:
    tol = ["--tolerance", DEC_TOLERANCE] if kind == "dec" else []
    run = (Command("run --emulate -o", frozenset({2}),
                   lambda f, k, b, w: ["run", b, "--emulate", "-o", w / "out.npz"]) if kind == "enc" else
           Command("generate --emulate", frozenset({2}),
                   lambda f, k, b, w: ["generate", b, "--emulate", "--ids", "1,2,3", "--max-new-tokens", "2"]))
    return {
        "verify": Command("verify", frozenset({1, 2}), lambda f, k, b, w: ["verify", b, *tol]),
        "run": run,
        "estimate": Command("estimate --board kv260", frozenset({1, 2}),
                            lambda f, k, b, w: ["estimate", b, "--board", "kv260"]),
        "build": Command("build --board kv260 --scripts-only", frozenset({2}),
                         lambda f, k, b, w: ["build", b, "--board", "kv260", "--scripts-only"]),
        "csim": Command("verify --csim -n 1", frozenset({1, 2}), lambda f, k, b, w: ["verify", b, "--csim", "-n", 1]),
    }


def _input_cmds(kind: str) -> dict[str, Command]:
    seq = ENC_SEQ if kind == "enc" else DEC_SEQ
    tol = ["--tolerance", DEC_TOLERANCE] if kind == "dec" else []
    cmds = {
        "verify": Command("verify --inputs", frozenset({1, 2}),
                          lambda f, k, p, w: ["verify", f.build[k], "--inputs", p, *tol]),
        "compile": Command("compile --calib", frozenset({2}),
                           lambda f, k, p, w: ["compile", f.onnx[k], "--calib", p, "-o", w / "NEW_BUILD",
                                               "--seq-len", seq]),
    }
    if kind == "enc":
        cmds["run"] = Command("run --emulate --inputs -o", frozenset({2}),
                              lambda f, k, p, w: ["run", f.build[k], "--emulate", "--inputs", p, "-o",
                                                  w / "out.npz"])
    return cmds


# ------------------------------------------------------------------------------------------------ corruptions
@dataclass
class Case:
    name: str
    kind: str  # "enc" | "dec"
    target: str  # a BUILD-relative path, or "inputs"
    apply: Callable  # (path of the copied file or BUILD, rng, fixture) -> None
    commands: tuple  # names in _build_cmds / _input_cmds
    expect: str = "fail"  # "fail": the rule above; "any": only "no traceback" (a file no command reads);
    #                       "ok": the uncorrupted baseline, which must exit 0 (proves the command lines work)
    marker: bool = False  # the corruption plants a pickle that creates <workdir>/UNPICKLED when loaded


# byte level ---------------------------------------------------------------------------------------------
def _truncate0(p, rng, fx):
    p.write_bytes(b"")


def _truncate_half(p, rng, fx):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _flip(p, rng, fx):
    data = bytearray(p.read_bytes())
    for i in rng.choice(len(data), size=min(16, len(data)), replace=False):
        data[i] ^= int(rng.integers(1, 256))
    p.write_bytes(bytes(data))


def _random(p, rng, fx):
    p.write_bytes(rng.integers(0, 256, size=max(64, p.stat().st_size), dtype=np.uint8).tobytes())


def _delete(p, rng, fx):
    p.unlink()


BYTE_LEVEL = {"truncated to 0 bytes": _truncate0, "truncated to half": _truncate_half,
              "16 bytes flipped": _flip, "replaced by random bytes": _random, "deleted": _delete}


# JSON -----------------------------------------------------------------------------------------------------
class Whole:
    """Returned by a JSON edit: the file's new top-level value (else the edited data is written back)."""

    def __init__(self, value):
        self.value = value


def _json(edit):
    def apply(p, rng, fx):
        data = json.loads(p.read_text())
        out = edit(data, rng)
        p.write_text(json.dumps(out.value if isinstance(out, Whole) else data, indent=1))
    return apply


def _pick(items, rng, pred=lambda x: True):
    choices = [x for x in items if pred(x)]
    return choices[int(rng.integers(len(choices)))]


def _fixed_tensor(g, rng):
    return _pick(g["tensors"], rng, lambda t: t.get("fixed"))


def _quant_layer(g, rng):
    return _pick(g["layers"], rng, lambda l: isinstance(l.get("attrs", {}).get("quant"), dict)
                 and "weight_type" in l["attrs"]["quant"])


def _param_layer(g, rng):
    return _pick(g["layers"], rng, lambda l: l.get("params"))


MANIFEST_EDITS = {  # data is the whole manifest (BUILD/manifest.json or BUILD/hls/graph/manifest.json)
    "key 'graph' removed": lambda d, r: d.pop("graph"),
    "key 'weights_sha256' removed": lambda d, r: d.pop("weights_sha256"),
    "graph.inputs removed": lambda d, r: d["graph"].pop("inputs"),
    "graph.tensors removed": lambda d, r: d["graph"].pop("tensors"),
    "a layer's 'op' removed": lambda d, r: _pick(d["graph"]["layers"], r).pop("op"),
    "a tensor's 'shape' removed": lambda d, r: _pick(d["graph"]["tensors"], r).pop("shape"),
    "meta.seq_len removed": lambda d, r: d["graph"]["meta"].pop("seq_len"),
    "whole file is a JSON list": lambda d, r: Whole([d]),
    "whole file is null": lambda d, r: Whole(None),
    "graph is a list": lambda d, r: d.__setitem__("graph", [d["graph"]]),
    "graph.inputs is a string": lambda d, r: d["graph"].__setitem__("inputs", "input_ids"),
    "graph.layers is a dict": lambda d, r: d["graph"].__setitem__("layers", {"x": 1}),
    "a tensor's shape is a string": lambda d, r: _pick(d["graph"]["tensors"], r).__setitem__("shape", "1,8"),
    "a fixed width is a string": lambda d, r: _fixed_tensor(d["graph"], r)["fixed"].__setitem__("width", "16"),
    "meta.seq_len is a float": lambda d, r: d["graph"]["meta"].__setitem__("seq_len", 8.5),
    "meta.n_heads is a string": lambda d, r: d["graph"]["meta"].__setitem__("n_heads", "two"),
    "a tensor's fixed width 0": lambda d, r: _fixed_tensor(d["graph"], r)["fixed"].__setitem__("width", 0),
    "a tensor's fixed width -3": lambda d, r: _fixed_tensor(d["graph"], r)["fixed"].__setitem__("width", -3),
    "a tensor's fixed width 4096": lambda d, r: _fixed_tensor(d["graph"], r)["fixed"].__setitem__("width", 4096),
    "a layer's weight_type width 0": lambda d, r: _quant_layer(d["graph"], r)["attrs"]["quant"]["weight_type"]
                                                  .__setitem__("width", 0),
    "a fixed rounding mode unknown": lambda d, r: _fixed_tensor(d["graph"], r)["fixed"]
                                                  .__setitem__("rounding", "RND_BOGUS"),
    "unknown op name": lambda d, r: _pick(d["graph"]["layers"], r).__setitem__("op", "FrobnicateOp"),
    "a layer input names no tensor": lambda d, r: _pick(d["graph"]["layers"], r, lambda l: l["inputs"])
                                                  .__setitem__("inputs", ["no/such/tensor"]),
    "a tensor shape [1, 2**40]": lambda d, r: _pick(d["graph"]["tensors"], r).__setitem__("shape", [1, 2 ** 40]),
    "the input shape [1, 2**40]": lambda d, r: next(t for t in d["graph"]["tensors"]
                                                  if t["name"] == d["graph"]["inputs"][0])
                                                  .__setitem__("shape", [1, 2 ** 40]),
    "a tensor shape with -1": lambda d, r: _pick(d["graph"]["tensors"], r).__setitem__("shape", [1, -1, 16]),
    "a param shape [2**40]": lambda d, r: next(iter(_param_layer(d["graph"], r)["params"].values()))
                                         .__setitem__("shape", [2 ** 40]),
    "meta.seq_len 2**40": lambda d, r: d["graph"]["meta"].__setitem__("seq_len", 2 ** 40),
    "meta.n_heads 0": lambda d, r: d["graph"]["meta"].__setitem__("n_heads", 0),
    "meta.kind unknown": lambda d, r: d["graph"]["meta"].__setitem__("kind", "transmogrifier"),
    "version 99": lambda d, r: d.__setitem__("version", 99),
}


# Manifest edits of a field no command needs (decision G: validated for type and range when present, and its
# absence checked for "no traceback" only). meta.seq_len is optional in the IR: graphs built in code carry only
# meta.kind (tests/host/test_artifact.py round-trips one), no BUILD command computes with it (estimate only
# echoes it in its report; every length it uses comes from the tensor shapes), so a BUILD without it still runs,
# verifies, estimates and builds correctly.
UNUSED_WHEN_REMOVED = {"meta.seq_len removed"}


CONTRACT_EDITS = {  # BUILD/fpgaformer.json (the overlay contract)
    "key 'inputs' removed": lambda d, r: d.pop("inputs"),
    "key 'ips' removed": lambda d, r: d.pop("ips"),
    "ips.dma removed": lambda d, r: d["ips"].pop("dma"),
    "weights.entries removed": lambda d, r: d["weights"].pop("entries"),
    "protocol_version 99": lambda d, r: d.__setitem__("protocol_version", 99),
    "protocol_version a string": lambda d, r: d.__setitem__("protocol_version", "1"),
    "design_id a string": lambda d, r: d.__setitem__("design_id", "0xdead"),
    "inputs is a dict": lambda d, r: d.__setitem__("inputs", {"input_ids": 1}),
    "an input shape [1, 2**40]": lambda d, r: _pick(d["inputs"], r).__setitem__("shape", [1, 2 ** 40]),
    "an output shape [1, 2**40]": lambda d, r: d["outputs"][0].__setitem__("shape", [1, 2 ** 40]),
    "an output fixed width 0": lambda d, r: d["outputs"][0]["fixed"].__setitem__("width", 0),
    "an input lane 0": lambda d, r: _pick(d["inputs"], r).__setitem__("lane", 0),
    "stream.beat_bytes 0": lambda d, r: d["stream"].__setitem__("beat_bytes", 0),
    "dma length_width 0": lambda d, r: d["ips"]["dma"].__setitem__("length_width", 0),
    "a weight entry offset 2**40": lambda d, r: _pick(d["weights"]["entries"], r).__setitem__("offset", 2 ** 40),
    "a weight entry shape [2**40]": lambda d, r: _pick(d["weights"]["entries"], r).__setitem__("shape", [2 ** 40]),
    "a weight entry key unknown": lambda d, r: _pick(d["weights"]["entries"], r).__setitem__("key", "no/such/key"),
    "weights.bytes -1": lambda d, r: d["weights"].__setitem__("bytes", -1),
    "kind unknown": lambda d, r: d.__setitem__("kind", "transmogrifier"),
    "latency.cycles_per_token a string": lambda d, r: d["latency"].__setitem__("cycles_per_token", "fast"),
}

KERNELS_EDITS = {  # BUILD/hls/kernels.json (verify --csim)
    "key 'kernels' removed": lambda d, r: d.pop("kernels"),
    "kernels is a string": lambda d, r: d.__setitem__("kernels", "block0"),
    "a kernel path escapes the BUILD": lambda d, r: d["kernels"][0].__setitem__("path", "../../../../etc"),
    "a kernel's files is a dict of ints": lambda d, r: d["kernels"][0].__setitem__("files", {"x": 1}),
    "a kernel input shape [1, 2**40]": lambda d, r: d["kernels"][0]["inputs"][0].__setitem__("shape", [1, 2 ** 40]),
    "a kernel input fixed width 0": lambda d, r: _pick(d["kernels"][0]["inputs"], r, lambda t: t.get("fixed"))
                                                 ["fixed"].__setitem__("width", 0),
}

PLAN_EDITS = {  # BUILD/plan.json: read by no command (expect only "no traceback")
    "key 'layers' removed": lambda d, r: d.pop("layers"),
    "a layer's reuse_factor 0": lambda d, r: _pick(d["layers"], r).__setitem__("reuse_factor", 0),
}


# weights.npz ----------------------------------------------------------------------------------------------
class _Unpickled:
    """Unpickling it opens (creates) the marker file: proof that a loader unpickled data from the BUILD."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _weights_edit(edit, resign: bool, weights_file: str = "weights.npz", manifest_file: str = "manifest.json"):
    """Rewrite BUILD/weights.npz with edit(dict of arrays, rng, build dir); with resign, store the new checksum
    in the manifest (so that the checksum check passes and the loader's other checks are what is tested)."""
    def apply(build, rng, fx):
        path = build / weights_file
        with np.load(path) as z:
            weights = {k: z[k] for k in z.files}
        edit(weights, rng, build)
        with open(path, "wb") as fh:
            np.savez(fh, **weights)
        if resign:
            from fpgaformer.host.artifact import weights_checksum

            mpath = build / manifest_file
            manifest = json.loads(mpath.read_text())
            try:
                manifest["weights_sha256"] = weights_checksum(weights)
            except Exception:  # an array the checksum cannot hash (objects): leave the manifest as it is
                pass
            mpath.write_text(json.dumps(manifest, indent=1))
    return apply


def _key(w, rng, pred=lambda a: True):
    return _pick(sorted(w), rng, lambda k: pred(w[k]))


def _w_pickle(w, rng, build):
    k = _key(w, rng)
    w[k] = np.array([_Unpickled(build.parent / "UNPICKLED"), 1.0], dtype=object)


def _w_missing(w, rng, build):
    del w[_key(w, rng)]


def _w_dtype(dtype):
    def edit(w, rng, build):
        k = _key(w, rng, lambda a: a.size > 1)
        w[k] = w[k].astype(dtype)
    return edit


def _w_strings(w, rng, build):
    k = _key(w, rng, lambda a: a.size > 1)
    w[k] = w[k].astype(str)


def _w_transposed(w, rng, build):
    k = _key(w, rng, lambda a: a.ndim == 2 and a.shape[0] != a.shape[1])
    w[k] = np.ascontiguousarray(w[k].T)


def _w_extra_axis(w, rng, build):
    k = _key(w, rng, lambda a: a.size > 1)
    w[k] = w[k][None]


def _w_empty(w, rng, build):
    k = _key(w, rng, lambda a: a.size > 1)
    w[k] = w[k][:0]


def _w_nan(w, rng, build):
    k = _key(w, rng, lambda a: a.size > 1 and a.dtype.kind == "f")
    a = w[k].copy()
    a.flat[int(rng.integers(a.size))] = np.nan
    a.flat[int(rng.integers(a.size))] = np.inf
    w[k] = a


def _w_huge(w, rng, build):
    k = _key(w, rng, lambda a: a.size > 1 and a.dtype.kind == "f")
    w[k] = (w[k] * 1e30).astype(w[k].dtype)


WEIGHT_EDITS = {
    "an array missing": _w_missing,
    "an array float64": _w_dtype(np.float64),
    "an array int8": _w_dtype(np.int8),
    "an array complex64": _w_dtype(np.complex64),
    "an array of strings": _w_strings,
    "an array transposed": _w_transposed,
    "an array with an extra axis": _w_extra_axis,
    "an array empty": _w_empty,
    "an array holding NaN/inf": _w_nan,
    "an array scaled by 1e30": _w_huge,
}


def _weights_not_zip(build, rng, fx):
    np.save(build / "weights.npz.npy", np.arange(10.0))  # a valid .npy where an .npz is expected
    os.replace(build / "weights.npz.npy", build / "weights.npz")


def _weights_text(build, rng, fx):
    (build / "weights.npz").write_text("these are not the weights you are looking for\n")


def _weights_is_dir(build, rng, fx):
    (build / "weights.npz").unlink()
    (build / "weights.npz").mkdir()


def _manifest_is_dir(build, rng, fx):
    (build / "manifest.json").unlink()
    (build / "manifest.json").mkdir()


# inputs / calib .npz --------------------------------------------------------------------------------------
def _inputs_edit(edit):
    def apply(p, rng, fx):
        with np.load(p) as z:
            feeds = {k: z[k] for k in z.files}
        edit(feeds, rng, p)
        with open(p, "wb") as fh:
            np.savez(fh, **feeds)
    return apply


def _i_set(fn):
    def edit(feeds, rng, p):
        fn(feeds, rng)
    return edit


def _i_pickle(feeds, rng, p):
    feeds["input_ids"] = np.array([_Unpickled(p.parent / "UNPICKLED"), 1], dtype=object)


def _i_nan(feeds, rng):
    a = feeds["input_ids"].astype(np.float64)
    a[0, 0, 1] = np.nan
    feeds["input_ids"] = a


INPUT_EDITS = {
    "input_ids float (whole values)": lambda f, r: f.__setitem__("input_ids", f["input_ids"].astype(np.float32)),
    "input_ids float (fractions)": lambda f, r: f.__setitem__("input_ids", f["input_ids"] + 0.5),
    "input_ids complex": lambda f, r: f.__setitem__("input_ids", f["input_ids"].astype(np.complex64)),
    "input_ids strings": lambda f, r: f.__setitem__("input_ids", f["input_ids"].astype(str)),
    "attention_mask strings": lambda f, r: f.__setitem__("attention_mask", np.full(f["attention_mask"].shape, "x")),
    "input_ids NaN": _i_nan,
    "input_ids transposed": lambda f, r: f.__setitem__("input_ids", np.ascontiguousarray(f["input_ids"].T)),
    "input_ids extra axis": lambda f, r: f.__setitem__("input_ids", f["input_ids"][:, None]),
    "two sequences joined": lambda f, r: f.update({k: np.concatenate([v, v], axis=-1) for k, v in f.items()}),
    "input_ids 1-D": lambda f, r: f.__setitem__("input_ids", f["input_ids"].reshape(-1)),
    "input_ids 0-d": lambda f, r: f.__setitem__("input_ids", np.array(5)),
    "attention_mask missing": lambda f, r: f.pop("attention_mask"),
    "every input renamed": lambda f, r: [f.__setitem__(k.upper(), f.pop(k)) for k in list(f)],
    "an unknown extra input": lambda f, r: f.__setitem__("token_type_ids", np.zeros_like(f["input_ids"])),
    "empty arrays (N = 0)": lambda f, r: f.update({k: v[:0] for k, v in f.items()}),
    "sample counts differ": lambda f, r: f.__setitem__("attention_mask", f["attention_mask"][:-1]),
    "input_ids >= vocab": lambda f, r: f["input_ids"].__setitem__((0, 0, 0), 10 ** 6),
    "input_ids negative": lambda f, r: f["input_ids"].__setitem__((0, 0, 0), -1),
    "input_ids 2**62": lambda f, r: f["input_ids"].__setitem__((0, 0, 0), 2 ** 62),
    "input_ids uint64 max": lambda f, r: f.__setitem__("input_ids", np.full(f["input_ids"].shape, 2 ** 64 - 1,
                                                                           np.uint64)),
    "attention_mask float NaN": lambda f, r: f.__setitem__("attention_mask", np.full(f["attention_mask"].shape,
                                                                                    np.nan)),
}


def _inputs_not_zip(p, rng, fx):
    np.save(str(p) + ".npy", np.arange(10))
    os.replace(str(p) + ".npy", p)


def _inputs_is_dir(p, rng, fx):
    p.unlink()
    p.mkdir()


# all cases --------------------------------------------------------------------------------------------------
def _untouched(p, rng, fx):
    pass


def all_cases() -> list[Case]:
    cases: list[Case] = [
        Case("enc: uncorrupted BUILD", "enc", ".", _untouched, ("verify", "run", "estimate", "build", "csim"),
             expect="ok"),
        Case("dec: uncorrupted BUILD", "dec", ".", _untouched, ("verify", "run", "estimate", "build"), expect="ok"),
        Case("enc: uncorrupted inputs.npz", "enc", "inputs", _untouched, tuple(_input_cmds("enc")), expect="ok"),
        Case("dec: uncorrupted inputs.npz", "dec", "inputs", _untouched, tuple(_input_cmds("dec")), expect="ok"),
    ]
    for kind in ("enc", "dec"):
        # byte level, every file a command reads (and plan.json, read by none)
        for rel, readers in READS.items():
            if kind == "dec" and readers == ("csim",):
                continue  # csim costs ~10 s per kernel; the encoder's kernels are enough
            for label, fn in BYTE_LEVEL.items():
                # documented fallbacks: without fpgaformer.json, run/generate --emulate emulate a generic board
                # (with a note); without hls/kernels.json, verify --csim writes the kernel projects again
                fallback = label == "deleted" and rel in ("fpgaformer.json", "hls/kernels.json")
                cases.append(Case(f"{kind}: {rel} {label}", kind, rel, fn, readers or ("verify", "run", "estimate",
                                                                                       "build"),
                                  expect="fail" if readers and not fallback else "any"))
        cases.append(Case(f"{kind}: manifest.json is a directory", kind, ".", _manifest_is_dir,
                          READS["manifest.json"]))
        cases.append(Case(f"{kind}: weights.npz is a directory", kind, ".", _weights_is_dir, READS["weights.npz"]))
        # JSON structure
        for label, edit in MANIFEST_EDITS.items():
            cases.append(Case(f"{kind}: manifest.json {label}", kind, "manifest.json", _json(edit),
                              READS["manifest.json"], expect="any" if label in UNUSED_WHEN_REMOVED else "fail"))
        for label, edit in CONTRACT_EDITS.items():
            cases.append(Case(f"{kind}: fpgaformer.json {label}", kind, "fpgaformer.json", _json(edit), ("run",)))
        for label, edit in PLAN_EDITS.items():
            cases.append(Case(f"{kind}: plan.json {label}", kind, "plan.json", _json(edit),
                              ("verify", "run", "estimate", "build"), expect="any"))
        # weights.npz
        cases.append(Case(f"{kind}: weights.npz with a pickled object array", kind, ".",
                          _weights_edit(_w_pickle, resign=False), READS["weights.npz"], marker=True))
        cases.append(Case(f"{kind}: weights.npz with a pickled object array (re-signed)", kind, ".",
                          _weights_edit(_w_pickle, resign=True), READS["weights.npz"], marker=True))
        cases.append(Case(f"{kind}: weights.npz is a .npy (not a zip)", kind, ".", _weights_not_zip,
                          READS["weights.npz"]))
        cases.append(Case(f"{kind}: weights.npz is text", kind, ".", _weights_text, READS["weights.npz"]))
        for label, edit in WEIGHT_EDITS.items():
            for resign in (False, True):
                cases.append(Case(f"{kind}: weights.npz {label}{' (re-signed)' if resign else ''}", kind, ".",
                                  _weights_edit(edit, resign), READS["weights.npz"]))
    # verify --csim: the encoder's hls/kernels.json and hls/graph/
    for label, edit in KERNELS_EDITS.items():
        cases.append(Case(f"enc: hls/kernels.json {label}", "enc", "hls/kernels.json", _json(edit), ("csim",)))
    for label in ("unknown op name", "a tensor's fixed width 0", "a tensor shape [1, 2**40]", "graph.inputs removed"):
        cases.append(Case(f"enc: hls/graph/manifest.json {label}", "enc", "hls/graph/manifest.json",
                          _json(MANIFEST_EDITS[label]), ("csim",)))
    for label in ("an array missing", "an array transposed"):
        cases.append(Case(f"enc: hls/graph/weights.npz {label} (re-signed)", "enc", ".",
                          _weights_edit(WEIGHT_EDITS[label], True, "hls/graph/weights.npz",
                                        "hls/graph/manifest.json"), ("csim",)))
    # inputs / calib files
    for kind in ("enc", "dec"):
        cmds = tuple(_input_cmds(kind))
        for label, fn in (("truncated to half", _truncate_half), ("truncated to 0 bytes", _truncate0),
                          ("16 bytes flipped", _flip), ("replaced by random bytes", _random),
                          ("is a .npy (not a zip)", _inputs_not_zip), ("is a directory", _inputs_is_dir),
                          ("deleted", _delete)):
            cases.append(Case(f"{kind}: inputs.npz {label}", kind, "inputs", fn, cmds))
        cases.append(Case(f"{kind}: inputs.npz with a pickled object array", kind, "inputs",
                          _inputs_edit(_i_pickle), cmds, marker=True))
        for label, edit in INPUT_EDITS.items():
            cases.append(Case(f"{kind}: inputs.npz {label}", kind, "inputs", _inputs_edit(_i_set(edit)), cmds))
    return cases


# ------------------------------------------------------------------------------------------------ jobs
@dataclass
class Job:
    case: Case
    command: str
    seed: int
    result: dict = field(default_factory=dict)


def all_jobs() -> list[Job]:
    jobs = []
    for case in all_cases():
        seed = zlib.crc32(case.name.encode())
        for command in case.commands:
            jobs.append(Job(case, command, seed))
    return jobs


# measured worker-seconds per run on 2 busy cores (csim: the few jobs that reach g++ take ~25 s)
COST = {"verify": 3.3, "run": 1.0, "generate": 1.2, "estimate": 1.1, "build": 1.5, "csim": 5.5, "compile": 3.8}


def _label(job: Job) -> str:
    return job.case.name.split(": ", 1)[1]  # the corruption without "enc: " / "dec: "


def sample_jobs(jobs: list[Job], budget: float) -> list[Job]:
    """A deterministic sample: every baseline job, one job per corruption (label, encoder or decoder, chosen
    by the case's seed), then random other jobs until the estimated cost reaches ``budget`` worker-seconds."""
    if os.environ.get("FPGAFORMER_FUZZ_ALL"):
        return jobs
    rng = np.random.default_rng(int(os.environ.get("FPGAFORMER_FUZZ_SEED", "20240601")))
    keep = {i for i, job in enumerate(jobs) if job.case.expect == "ok"}
    by_label: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        by_label.setdefault(_label(job), []).append(i)
    keep |= {idx[jobs[idx[0]].seed % len(idx)] for idx in by_label.values()}
    spent = sum(COST.get(jobs[i].command, 2.0) for i in keep)
    for i in rng.permutation(len(jobs)).tolist():
        if spent >= budget:
            break
        if i not in keep and jobs[i].command != "csim":
            keep.add(i)
            spent += COST.get(jobs[i].command, 2.0)
    return [jobs[i] for i in sorted(keep)]


def _tree(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            out.add(os.path.normpath(os.path.join(rel, name)))
    return out


def _tail(text: str, n: int = 6) -> str:
    """The last n lines that say something (a traceback's ^~~ marker lines are left out)."""
    lines = [l for l in text.strip().splitlines() if l.strip() and l.strip(" ^~")]
    return "\n".join(lines[-n:])


def run_job(job: Job, fx: Fixture, workroot: Path, index: int) -> Job:
    case = job.case
    work = workroot / f"job{index:04d}"
    work.mkdir()
    rng = np.random.default_rng(job.seed)
    t0 = time.perf_counter()
    try:
        if case.target == "inputs":
            target = work / "inputs.npz"
            shutil.copyfile(fx.inputs[case.kind], target)
            case.apply(target, rng, fx)
            cmd = _input_cmds(case.kind)[job.command]
        else:
            target = work / "BUILD"
            shutil.copytree(fx.build[case.kind], target, symlinks=True)
            case.apply(target if case.target == "." else target / case.target, rng, fx)
            cmd = _build_cmds(case.kind)[job.command]
        before = _tree(work)
        args = cmd.argv(fx, case.kind, target, work)
    except Exception as e:  # a corruption that cannot apply to this BUILD is a bug of this test
        job.result = {"setup_error": f"{type(e).__name__}: {e}"}
        return job
    try:
        proc = _cli(args, cwd=work)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = "timeout"
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    problems = []
    if "Traceback" in out or "Traceback" in err:
        problems.append("traceback")
    if rc == "timeout":
        problems.append(f"timeout after {TIMEOUT} s")
    elif case.expect == "ok":
        if rc != 0:
            problems.append(f"exit {rc} on the UNCORRUPTED baseline (the test's command line is wrong?)")
    elif case.expect == "fail":
        if rc == 0:
            problems.append("exit 0 on corrupted input")
        elif rc not in cmd.allowed:
            problems.append(f"exit {rc} (allowed: {sorted(cmd.allowed)})")
    elif rc not in (0, 1, 2):
        problems.append(f"exit {rc}")
    if rc == 2 and not err.strip():
        problems.append("exit 2 with nothing on stderr")
    if rc != 0:
        left = sorted(p for p in _tree(work) - before  # (csim's compiled kernel library is a cache)
                      if p != "UNPICKLED" and not (p.startswith("BUILD/hls/") and p.endswith(".so")))
        if left:
            problems.append(f"left behind after failing: {left[:6]}")
    if (work / "UNPICKLED").exists():
        problems.append("UNPICKLED: a pickle from the corrupted file was loaded")
    job.result = {"case": case.name, "command": cmd.name, "argv": [str(a) for a in args], "rc": rc,
                  "problems": problems, "stdout_tail": _tail(out), "stderr_tail": _tail(err),
                  "seconds": round(time.perf_counter() - t0, 2)}
    if not problems:
        shutil.rmtree(work, ignore_errors=True)
    return job


def _summary(jobs: list[Job], n_all: int, wall: float) -> str:
    cases = {j.case.name for j in jobs}
    commands = sorted({j.result.get("command", j.command) for j in jobs})
    return (f"{len(cases)} corruption cases x {len(commands)} distinct commands = {len(jobs)} CLI runs "
            f"(of {n_all} possible; FPGAFORMER_FUZZ_ALL=1 runs all) in {wall:.0f} s with {NWORKERS} workers")


def test_corrupted_builds_and_inputs_never_traceback_nor_exit_0(fuzz_builds, tmp_path):
    everything = all_jobs()
    jobs = sample_jobs(everything, BUDGET)
    t0 = time.perf_counter()
    # the costly csim jobs first, so that they overlap with the many short ones
    order = sorted(range(len(jobs)), key=lambda i: jobs[i].command != "csim")
    with ThreadPoolExecutor(NWORKERS) as pool:
        list(pool.map(lambda i: run_job(jobs[i], fuzz_builds, tmp_path, i), order))
    wall = time.perf_counter() - t0
    summary = _summary(jobs, len(everything), wall)
    print(summary)

    report_path = os.environ.get("FPGAFORMER_FUZZ_REPORT")
    if report_path:
        Path(report_path).write_text(json.dumps([j.result for j in jobs], indent=1))

    setup = [f"{j.case.name} / {j.command}: {j.result['setup_error']}" for j in jobs if "setup_error" in j.result]
    assert not setup, "corruptions that could not be applied (a bug of this test):\n" + "\n".join(setup)

    failures = sorted((j.result for j in jobs if j.result["problems"]), key=lambda r: (r["case"], r["command"]))
    if failures:
        lines = [f"{len(failures)} of {len(jobs)} runs broke the corrupted-input rule ({summary}):"]
        for r in failures:
            lines.append(f"\n- {r['case']}  |  fpgaformer {r['command']}  |  exit {r['rc']}  |  "
                         f"{'; '.join(r['problems'])}")
            tail = r["stderr_tail"] or r["stdout_tail"]
            lines.extend("    " + l for l in tail.splitlines())
        pytest.fail("\n".join(lines), pytrace=False)
