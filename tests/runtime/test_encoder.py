"""`fpgaformer run --emulate` on MiniLM returns the emulator's direct output bit for bit, over several
launches and DMA transfers (the runtime adds no error)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from fpgaformer.host.artifact import load_artifact
from fpgaformer.host.emulator import Emulator

MINILM_SEQ = 32  # as in conftest.py

SENTENCES = ["FPGAs run transformers with fixed-point arithmetic.", "The quick brown fox jumps over the lazy dog.",
             "A sentence embedding maps text to a vector.", "Weights stream from DDR while activations stay on chip.",
             "Short one.", "PYNQ boards talk to the fabric through AXI DMA."]


def _inputs(minilm):
    enc = minilm[1](SENTENCES, padding="max_length", max_length=MINILM_SEQ, truncation=True, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64)[:, None, :],
            "attention_mask": enc["attention_mask"].astype(np.int64)[:, None, :]}


def _run(build, inputs_path, out_path, *extra):
    proc = subprocess.run([sys.executable, "-m", "fpgaformer.compiler.cli", "run", str(build), "--emulate",
                           "--inputs", str(inputs_path), "-o", str(out_path), "--batch", "4", "--json", *extra],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_run_emulate_equals_the_emulator_bit_for_bit(minilm, minilm_build, tmp_path):
    import json

    feeds = _inputs(minilm)
    np.savez(tmp_path / "in.npz", **feeds)
    proc = _run(minilm_build, tmp_path / "in.npz", tmp_path / "out.npz")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["launches"] == 2 and stats["items"] == len(SENTENCES)  # batch 4: two launches, 6 S2MM packets

    graph, _ = load_artifact(minilm_build)
    emulator = Emulator(graph)
    name = graph.outputs[0]
    with np.load(tmp_path / "out.npz") as out:
        got_codes, got = out[f"{name}.codes"], out[name]
    for i in range(len(SENTENCES)):
        direct = emulator.run({k: v[i] for k, v in feeds.items()})
        np.testing.assert_array_equal(got_codes[i], direct[name])
        np.testing.assert_array_equal(got[i], emulator.outputs({k: v[i] for k, v in feeds.items()})[name])


def test_transfers_and_strict_coherence(minilm, minilm_build, tmp_path):
    """Several S2MM transfers per launch (one per sequence, each < the 32 KB length register) in strict
    coherence mode (cacheable buffers / PYNQ.remote semantics) give the same bits."""
    from fpgaformer.host.engine import Engine
    from fpgaformer.host.sim_device import SimDevice

    feeds = _inputs(minilm)
    sim = SimDevice(coherence="strict")
    engine = Engine.open(minilm_build, sim, batch=4)
    assert engine.out_rec.nbytes <= sim.contract.max_transfer < 2 * engine.out_rec.nbytes
    codes = engine.encode(feeds, codes=True)
    assert sim.stats["launches"] == 2
    assert sim.stats["s2mm_bytes"] == len(SENTENCES) * engine.out_rec.nbytes
    graph = engine.graph
    emulator = Emulator(graph)
    for i in (0, 5):
        np.testing.assert_array_equal(codes[graph.outputs[0]][i],
                                      emulator.run({k: v[i] for k, v in feeds.items()})[graph.outputs[0]])
    emb = engine.embed(feeds["input_ids"], feeds["attention_mask"])
    assert emb.shape == (len(SENTENCES), 384) and np.allclose(np.linalg.norm(emb, axis=1), 1)
