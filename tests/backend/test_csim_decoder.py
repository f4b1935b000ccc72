"""Decoder step kernel (tiny LLaMA-style block: RMSNorm, RoPE, GQA, SwiGLU; context 16) == its emulator
reference, every output bit, and that reference == host/decoder.py's incremental decoding (tier 1).

A causal-LM export (plain, or carrying past_key_values: tests/compiler/test_past_key_values.py) becomes a step kernel: inputs the residual row, the 0/1 mask of
the context, the position p and the K / V caches of the full context; outputs the row leaving the block and
the new K / V rows. Cache rows >= p and mask entries > p are filled with junk: the kernel must ignore them.
"""

from __future__ import annotations

import numpy as np
import pytest

from fpgaformer.compiler.backend import csim
from fpgaformer.compiler.backend.hls4ml import write_project
from fpgaformer.compiler.backend.verify import values_of
from fpgaformer.compiler.partition import POSITION, decoder_step_partition, emulate_step
from fpgaformer.host.decoder import IncrementalDecoder
from fpgaformer.host.fixed import FixedType

pytestmark = pytest.mark.csim

PRESETS = ("w8a16", "w16a16")
SEQUENCES = 2  # x context 16 = 32 steps


def decode_records(q, part, dec, rng):
    """Per step: (block input row, cached rows, mask, position, reference outputs); checks the chain of
    emulate_step (+ host layers) against IncrementalDecoder.step's logits, bit for bit."""
    first = next(i for i, l in enumerate(q.layers) if l.block == part.block)
    pre = [l for l in q.layers[:first] if l.block is None and l.op != "PaddingMask"]
    post = [l for l in q.layers[first:] if l.block is None]
    records = []
    for seq in range(SEQUENCES):
        ids = rng.integers(0, 64, part.context)
        mask = np.ones(part.context, np.int64)
        mask[: 2 * seq] = 0  # left padding in the second sequence
        state, caches = dec.new_state(), {}
        for p in range(part.context):
            logits = dec.step(state, ids[p:p + 1], mask[p:p + 1])
            env = {"input_ids": ids[p:p + 1].reshape(1, 1), "attention_mask": mask[:p + 1].reshape(1, p + 1)}
            for layer in pre:
                env[layer.output] = dec.emulator._run_layer(dec._layer_for_step(layer, 1, p + 1, p), env)[0]
            x = env[part.graph.inputs[0]]
            outs = emulate_step(part, dec, x, caches, mask[:p + 1], p)
            env.update(outs)
            for layer in post:
                env[layer.output] = dec.emulator._run_layer(dec._layer_for_step(layer, 1, p + 1, p), env)[0]
            assert np.array_equal(env[q.outputs[0]], logits), f"reference chain != IncrementalDecoder at step {p}"
            records.append((x, dict(caches), mask[:p + 1].copy(), p, outs))
            for t, axis in part.cache_points.items():
                caches[t] = outs[t] if t not in caches else np.concatenate([caches[t], outs[t]], axis=axis)
    return records


def kernel_inputs(project, part, records, rng):
    inputs = {i.tensor: [] for i in project.inputs}
    for x, caches, mask, p, _ in records:
        for port in project.inputs:
            t = part.graph.tensors[port.tensor]
            if port.tensor == POSITION:
                v = np.array([p], np.float64)
            elif port.tensor.endswith("::cache"):
                name, ft = port.tensor[: -len("::cache")], FixedType.from_dict(t.fixed)
                full = rng.integers(ft.min_code, ft.max_code + 1, t.shape)  # junk beyond row p
                if p:
                    index = [slice(None)] * len(t.shape)
                    index[part.cache_points[name]] = slice(0, p)
                    full[tuple(index)] = caches[name]
                v = values_of(full, t.fixed)
            elif t.fixed is None:  # attention mask of the context: junk after p
                v = rng.integers(0, 2, t.shape).astype(np.float64)
                v.reshape(-1)[: p + 1] = mask
            else:
                v = values_of(x, t.fixed)
            inputs[port.tensor].append(v)
    return {k: np.stack(v) for k, v in inputs.items()}


@pytest.mark.parametrize("model,preset", [("tiny_llama", p) for p in PRESETS] + [("tiny_llama_past", "w8a16")])
def test_decoder_step_csim_is_bit_identical(model, preset, models, tmp_path):
    """tiny_llama_past: the same model exported with past_key_values; its cache I/O is folded away and it
    compiles to the same step kernel."""
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    q = models.quantized(model, preset)
    dec = IncrementalDecoder(q)
    part = decoder_step_partition(q, 0, dec)
    assert {"RMSNorm", "RoPE", "SiLU", "KVWrite"} <= {l.op for l in part.graph.layers}
    rng = np.random.default_rng(3)
    records = decode_records(q, part, dec, rng)
    assert len(records) >= 32
    project = write_project(part, tmp_path / "hls")
    assert [p.tensor for p in project.outputs][1:] == list(part.cache_points)
    compiled = csim.compile_kernel(project)
    got = csim.run_kernel(project, compiled.lib, kernel_inputs(project, part, records, rng))
    for port in project.outputs:
        want = np.stack([r[4][port.tensor] for r in records])
        cmp = csim.compare_codes(port.tensor, csim.to_codes(got[port.tensor], port.fixed), want)
        assert cmp.identical, cmp
