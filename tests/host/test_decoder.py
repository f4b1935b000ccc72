"""Incremental decoding with a KV cache equals the full-sequence emulator, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaformer.compiler.frontend import import_static
from fpgaformer.compiler.quantize import quantize
from fpgaformer.host.decoder import IncrementalDecoder, token_axes
from fpgaformer.host.emulator import Emulator

CONTEXT = 16


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def quantized_decoder(request, tmp_path_factory, tiny_causal_lm):
    torch = pytest.importorskip("torch")
    from fpgaformer.compiler.hf_export import export

    torch.manual_seed(0)
    path = export(tiny_causal_lm(request.param), tmp_path_factory.mktemp("dec") / "m.onnx", CONTEXT,
                  "torchscript", output="logits")
    graph, model = import_static(path, seq_len=CONTEXT)
    return quantize(graph, "w16a16", model=model)


def test_token_axes_follow_heads_split(quantized_decoder):
    axes = token_axes(quantized_decoder)
    for layer in quantized_decoder.layers:
        if layer.role == "attn_scores":
            assert list(axes[layer.output].values()).count("k") == 1
            assert list(axes[layer.output].values()).count("q") == 1
        if layer.role == "attn_softmax":
            assert axes[layer.output][len(quantized_decoder.tensors[layer.output].shape) - 1] == "k"


@pytest.mark.parametrize("chunks", [[5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [16], [3, 7, 6]])
def test_steps_equal_full_sequence_rows(quantized_decoder, chunks):
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 128, CONTEXT)
    full = Emulator(quantized_decoder).run({"input_ids": ids[None], "attention_mask": np.ones((1, CONTEXT), np.int64)})
    want = full[quantized_decoder.outputs[0]][0]

    decoder = IncrementalDecoder(quantized_decoder)
    state = decoder.new_state()
    rows, at = [], 0
    for size in chunks:
        rows.append(decoder.step(state, ids[at:at + size])[0])
        at += size
    got = np.concatenate(rows, axis=0)
    np.testing.assert_array_equal(got, want)
    assert state.length == CONTEXT


def test_context_overflow_is_refused(quantized_decoder):
    decoder = IncrementalDecoder(quantized_decoder)
    state = decoder.new_state()
    decoder.step(state, np.zeros(CONTEXT, np.int64))
    with pytest.raises(ValueError, match="context full"):
        decoder.step(state, np.zeros(1, np.int64))
