"""The whole generated overlay (fpgaformer_top -> ff_model -> hls4ml kernels), compiled with g++ and driven through
the runtime's register and DMA model (CsimDevice), equals the emulated overlay (SimDevice) bit for bit: encoder
outputs code for code, decoder generation token for token (greedy: argmax on the device; sampling: from the
device's logits), with the KV cache living in device memory (gmem1)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fpgaformer.host import protocol as P
from fpgaformer.host.engine import Engine
from fpgaformer.host.generate import Generator, Sampling
from fpgaformer.host.sim_device import SimDevice

pytestmark = pytest.mark.csim
NEW_TOKENS = 32


@pytest.fixture(autouse=True)
def _needs_gxx():
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    pytest.importorskip("hls4ml")


def _csim_engine(build: Path, **kw) -> Engine:
    from fpgaformer.compiler.backend.overlay import compile_overlay
    from fpgaformer.host.csim_device import CsimDevice

    return Engine.open(build, CsimDevice(compile_overlay(build)), **kw)


def _export(model, folder: Path, seq: int, **kw) -> Path:
    from fpgaformer.compiler.hf_export import export

    folder.mkdir(parents=True, exist_ok=True)
    return export(model, folder / "model.onnx", seq, "torchscript", **kw)


@pytest.fixture(scope="module")
def tiny_encoder_build(tmp_path_factory, builder):
    pytest.importorskip("torch")
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=2,
                                  vocab_size=100, max_position_embeddings=16)
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    folder = tmp_path_factory.mktemp("tiny_encoder_overlay")
    return builder(_export(model, folder, 8), folder / "build", 8, "w8a16")


LLAMA_CONTEXT = 40


@pytest.fixture(scope="module")
def tiny_llama_builds(tmp_path_factory, builder):
    """preset -> BUILD of a 2-layer LLaMA (GQA, RoPE, SwiGLU, RMSNorm) over a context of 40."""
    pytest.importorskip("torch")
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, vocab_size=64, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="eager").eval()
    folder = tmp_path_factory.mktemp("tiny_llama_overlay")
    path = _export(model, folder, LLAMA_CONTEXT, output="logits")
    made = {}

    def get(preset):
        if preset not in made:
            made[preset] = builder(path, folder / preset, LLAMA_CONTEXT, preset)
        return made[preset]

    return get


def _same_generation(build: Path, prompts: list[list[int]], greedy_tokens: int, sampled_tokens: int):
    emu, csim = Engine.open(build, SimDevice()), _csim_engine(build)
    for prompt in prompts:
        want = Generator(emu, Sampling(greedy=True)).generate(prompt, greedy_tokens)
        got = Generator(csim, Sampling(greedy=True)).generate(prompt, greedy_tokens)
        assert got == want, (prompt, got, want)
        assert len(got) == greedy_tokens
    # the logits path: the same logits codes give the same samples
    sampling = dict(temperature=1.5, top_k=8, seed=11)
    want = Generator(emu, Sampling(**sampling)).generate(prompts[0], sampled_tokens)
    got = Generator(csim, Sampling(**sampling)).generate(prompts[0], sampled_tokens)
    assert got == want
    emu.start_sequence()
    csim.start_sequence()
    a, b = emu.prefill(prompts[0]), csim.prefill(prompts[0])
    assert np.array_equal(a, b)


def test_encoder_overlay_csim_equals_emulator_bit_for_bit(tiny_encoder_build):
    build = tiny_encoder_build
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 100, (6, 1, 8))
    mask = np.ones((6, 1, 8), np.int64)
    mask[1, :, 5:] = 0
    mask[4, :, 2:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    want = Engine.open(build, SimDevice(), batch=4).encode(feeds, codes=True)
    csim = _csim_engine(build, batch=4)
    got = csim.encode(feeds, codes=True)
    assert want.keys() == got.keys()
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    assert csim.device.stats["launches"] == 2  # two DMA launches of up to 4 sequences


def test_encoder_overlay_reports_a_short_packet_like_the_emulated_one(tiny_encoder_build):
    """The generated ff_model checks TLAST itself: a packet one beat short is status 1 (stream), the same
    verdict the emulated overlay gives; the next launch works."""
    from fpgaformer.compiler.backend.overlay import compile_overlay
    from fpgaformer.host.csim_device import CsimDevice

    build = tiny_encoder_build
    contract = P.Contract.load(build)
    rec = contract.in_record()
    statuses = []
    feeds = {"input_ids": np.ones((1, 1, 8), np.int64), "attention_mask": np.ones((1, 1, 8), np.int64)}
    for device in (SimDevice(), CsimDevice(compile_overlay(build))):
        Engine.open(build, device).encode(feeds)  # the runtime wrote the weight image and its address
        short = np.zeros(rec.nbytes - contract.beat, np.uint8)
        records, status, _ = device._compute(P.MODE_ENCODE, 1, False, rec, short, rec.nbytes)
        statuses.append((status, len(records)))
        records, status, _ = device._compute(P.MODE_ENCODE, 1, False, rec, np.zeros(rec.nbytes, np.uint8), rec.nbytes)
        statuses.append((status, len(records)))
    assert statuses[:2] == statuses[2:] == [(P.STATUS_STREAM, 1), (P.STATUS_OK, 1)]


@pytest.mark.parametrize("preset", ["w8a16", "w16a16"])
def test_tiny_llama_overlay_generates_like_the_emulated_one(tiny_llama_builds, preset):
    _same_generation(tiny_llama_builds(preset), [[1, 2, 3], [7], [40, 41, 42, 43, 44]], NEW_TOKENS, 8)


@pytest.mark.parametrize("preset", ["w8a16", "w16a16"])
def test_char_decoder_overlay_generates_like_the_emulated_one(char_model, char_build, preset):
    """GPT-2 shape: learned absolute positions (read at row `position` on the device), LayerNorm, tied head."""
    cd, vocab, _, _ = char_model
    prompts = [cd.encode(vocab, p) for p in cd.PROMPTS[:2]]
    _same_generation(char_build(preset), prompts, NEW_TOKENS, 8)


def test_decoder_overlay_refuses_positions_outside_the_context(tiny_llama_builds):
    from fpgaformer.compiler.backend.overlay import compile_overlay
    from fpgaformer.host.csim_device import CsimDevice

    build = tiny_llama_builds("w8a16")
    contract = P.Contract.load(build)
    device = CsimDevice(compile_overlay(build))
    Engine.open(build, device).prefill([1])  # the runtime wrote the weight image, the KV cache address
    rec = contract.in_record(2)
    device.kernel.regs[device.kregs["position"]] = LLAMA_CONTEXT - 1  # two tokens from the last position
    records, status, _ = device._compute(P.MODE_DECODE, 2, False, rec, rec.pack({"input_ids": [1, 2]}), rec.nbytes)
    assert status == P.STATUS_RANGE and len(records) == 1


def test_every_source_the_overlay_includes_is_written(tiny_llama_builds):
    """Every quoted #include of the generated overlay resolves to a file that exists (in the overlay, a kernel
    project or fpgaformer's own headers): nothing includes a file nothing writes."""
    from fpgaformer.compiler.backend.overlay import HLS_DIR, KERNELS
    from fpgaformer.compiler.backend.overlay_check import synthesis_syntax
    from fpgaformer.compiler.backend.hls4ml import OVERLAY_DIR

    build = tiny_llama_builds("w8a16")
    hls = build / HLS_DIR
    top = (hls / "fpgaformer_top.cpp").read_text()
    assert '#include "ff_model.h"' in top and "depth=FF_WEIGHT_WORDS" in top and "depth=FF_KV_WORDS" in top
    vendor = {"ap_int.h", "ap_fixed.h", "hls_stream.h", "ap_axi_sdata.h", "hls_math.h"}
    for source in [hls / n for n in ("fpgaformer_top.cpp", "ff_model.cpp", "ff_model.h")] + \
            sorted((hls / KERNELS).glob("*/firmware/*.cpp")):
        roots = [source.parent, OVERLAY_DIR, source.parent / "ap_types"]
        for name in re.findall(r'#include\s+"([^"]+)"', source.read_text()):
            if name in vendor and (source.parent / "ap_types").exists() is False and source.parent == hls:
                continue  # the vendor's own headers (ap_axi_sdata.h: overlays/hls/csim for g++)
            assert any((r / name).is_file() for r in roots) or name in vendor, (source, name)
    assert synthesis_syntax(build) == []


MINILM_CSIM_SEQ = 16


@pytest.fixture(scope="module")
def minilm16_build(minilm, tmp_path_factory, builder):
    from fpgaformer.compiler.hf_export import export

    folder = tmp_path_factory.mktemp("minilm_overlay")
    path = export(minilm[0], folder / "minilm.onnx", MINILM_CSIM_SEQ, "torchscript")
    return builder(path, folder / "build", MINILM_CSIM_SEQ, "w8a16")


def test_minilm_overlay_csim_equals_emulator_on_real_sentences(minilm, minilm16_build):
    """all-MiniLM-L6-v2 (real weights, six blocks; embedding table read from gmem0), two tokenized sentences."""
    sentences = ["The overlay streams tokens to the board.", "A quantized transformer runs on an FPGA."]
    enc = minilm[1](sentences, padding="max_length", max_length=MINILM_CSIM_SEQ, truncation=True, return_tensors="np")
    feeds = {"input_ids": enc["input_ids"].astype(np.int64)[:, None, :],
             "attention_mask": enc["attention_mask"].astype(np.int64)[:, None, :]}
    want = Engine.open(minilm16_build, SimDevice()).encode(feeds, codes=True)
    got = _csim_engine(minilm16_build).encode(feeds, codes=True)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
