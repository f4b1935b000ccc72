"""all-MiniLM-L6-v2, real weights: fixed-point emulation keeps the sentence embeddings (64 real sentences)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fpgaformer.compiler.compare import OrtProbe
from fpgaformer.compiler.frontend import import_static
from fpgaformer.compiler.passes.calibrate import calibrate
from fpgaformer.compiler.passes.fuse_masks import fuse_masks
from fpgaformer.compiler.quantize import quantize
from fpgaformer.host.emulator import Emulator

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parents[1] / "data"
FLOORS = {"w16a16": 0.9995, "w8a16": 0.995}


def encode(tokenizer, lines):
    enc = tokenizer(lines, padding="max_length", max_length=128, truncation=True, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64)[:, None],
            "attention_mask": enc["attention_mask"].astype(np.int64)[:, None]}


def pooled(hidden, mask):
    keep = mask.reshape(-1).astype(bool)
    return hidden.reshape(-1, hidden.shape[-1])[keep].mean(0)


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def setup(minilm, minilm_onnx):
    tokenizer = minilm[1]
    graph, model = import_static(minilm_onnx("torchscript"), seq_len=128)
    calib = encode(tokenizer, (DATA / "calibration.txt").read_text().splitlines())
    sentences = (DATA / "sentences.txt").read_text().splitlines()
    assert len(sentences) == 64
    evals = encode(tokenizer, sentences)
    probe = OrtProbe(model, [graph.outputs[0]])
    reference = [pooled(probe.run({k: v[i] for k, v in evals.items()})[graph.outputs[0]],
                        evals["attention_mask"][i]) for i in range(64)]
    ranges = calibrate(fuse_masks(graph.copy()), calib, model)
    return graph, model, calib, evals, reference, ranges


def emulated_cosines(graph, preset, setup_data):
    _, model, calib, evals, reference, ranges = setup_data
    q = quantize(graph, preset, calib, model, ranges=ranges)
    emu = Emulator(q)
    out = []
    for i in range(64):
        feeds = {k: v[i] for k, v in evals.items()}
        out.append(cosine(pooled(emu.outputs(feeds)[q.outputs[0]], evals["attention_mask"][i]), reference[i]))
    return np.array(out), emu


@pytest.mark.parametrize("preset", ["w16a16", "w8a16"])
def test_sentence_embeddings_keep_their_direction(preset, setup):
    cos, emu = emulated_cosines(setup[0], preset, setup)
    print(f"{preset}: min cosine {cos.min():.6f}, mean {cos.mean():.6f} over 64 sentences")
    assert cos.min() >= FLOORS[preset]
