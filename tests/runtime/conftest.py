"""Session fixtures for the runtime tests: a trained character-level decoder and MiniLM, compiled to BUILDs
with overlays (made once per session; nothing is downloaded)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = 64
TRAIN_STEPS = 400       # a fixed number of steps: the same model on every machine, however loaded
TRAIN_SECONDS = 150.0   # a safety cap only (about 45 s on an unloaded 2-core machine)
MINILM_SEQ = 32


def _char_module():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import char_decoder
    finally:
        sys.path.pop(0)
    return char_decoder


def compile_build(onnx_path: Path, out: Path, seq_len: int, precision: str, board: str = "kv260",
                  length_bits: int = 26) -> Path:
    """compile (quantized) + build (overlay contract and sources) through the compiler's own functions."""
    from fpgaformer.compiler.build_cli import build_overlay
    from fpgaformer.compiler.cli import compile_model

    compile_model(onnx_path, out, seq_len=seq_len, precision=precision, log=lambda *a: None)
    tokenizer = onnx_path.parent / "tokenizer.json"
    if tokenizer.is_file() and not (out / "tokenizer.json").is_file():
        shutil.copy(tokenizer, out / "tokenizer.json")
    build_overlay(out, board, length_width=length_bits, log=lambda *a: None)
    return out


@pytest.fixture(scope="session")
def builder():
    """compile_build, for test modules that make their own models."""
    return compile_build


@pytest.fixture(scope="session")
def char_trained():
    """(module, torch model, vocab, loss): the example's decoder trained for 400 steps."""
    pytest.importorskip("torch")
    cd = _char_module()
    model, vocab, loss = cd.train(TRAIN_SECONDS, max_steps=TRAIN_STEPS, log=lambda *a: None)
    return cd, model, vocab, loss


@pytest.fixture(scope="session")
def char_model(char_trained, tmp_path_factory):
    """(module, vocab, onnx path, loss): the trained decoder exported at seq_len 64 (no KV cache in the export)."""
    cd, model, vocab, loss = char_trained
    path = cd.export_model(model, vocab, tmp_path_factory.mktemp("char_model"))
    return cd, vocab, path, loss


@pytest.fixture(scope="session")
def char_with_past(char_trained, tmp_path_factory):
    """(module, vocab, onnx path, BUILD): the same decoder exported *with* past_key_values / present, compiled
    over the context at w16a16 and built."""
    cd, model, vocab, _ = char_trained
    folder = tmp_path_factory.mktemp("char_with_past")
    path = cd.export_model(model, vocab, folder / "model", with_past=True)
    return cd, vocab, path, compile_build(path, folder / "build", CONTEXT, "w16a16")


@pytest.fixture(scope="session")
def char_build(char_model, tmp_path_factory):
    """precision -> BUILD of the trained decoder (w16a16 and the default w8a16), with its overlay."""
    made = {}

    def get(precision: str = "w16a16") -> Path:
        if precision not in made:
            out = tmp_path_factory.mktemp(f"char_{precision}") / "build"
            made[precision] = compile_build(char_model[2], out, CONTEXT, precision)
        return made[precision]

    return get


@pytest.fixture(scope="session")
def minilm_build(minilm, tmp_path_factory):
    """MiniLM compiled at w8a16 for seq_len 32, overlay with a 15-bit DMA length register (32 KB transfers)."""
    from fpgaformer.compiler.hf_export import export

    folder = tmp_path_factory.mktemp("minilm_rt")
    path = export(minilm[0], folder / "minilm.onnx", MINILM_SEQ, "torchscript")
    return compile_build(path, folder / "build", MINILM_SEQ, "w8a16", length_bits=15)
