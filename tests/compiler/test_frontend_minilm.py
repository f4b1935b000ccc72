"""all-MiniLM-L6-v2 (real weights) through every exporter: 6 blocks recognised, IR == onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaformer.compiler.compare import compare
from fpgaformer.compiler.frontend import import_static

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo", "ort-optimized"])
def test_minilm_imports_and_matches_onnxruntime(exporter, minilm_onnx, minilm_feeds):
    assert minilm_feeds["attention_mask"].min() == 0, "the input must include padding"
    graph, model = import_static(minilm_onnx(exporter), seq_len=128)

    blocks = graph.blocks()
    assert sorted(blocks) == list(range(6))
    for index, layers in blocks.items():
        roles = [l.role for l in layers]
        ops = {l.op for l in layers}
        assert {"q_proj", "k_proj", "v_proj", "o_proj", "attn_scores", "attn_softmax", "attn_context",
                "ffn_up", "ffn_act", "ffn_down", "norm1", "norm2"} <= set(roles), (index, roles)
        assert roles.count("residual") == 2, (index, roles)
        assert "LayerNorm" in ops and "GELU" in ops
        assert next(l for l in layers if l.role == "ffn_act").attrs["approximate"] == "none"
    assert any(l.op == "PaddingMask" for l in graph.layers)
    meta = graph.meta
    assert (meta["kind"], meta["n_layers"], meta["d_model"], meta["n_heads"], meta["d_ffn"]) == \
        ("encoder", 6, 384, 12, 1536)

    diffs = compare(graph, model, minilm_feeds)
    by_name = {d.name: d for d in diffs}
    out = graph.meta["onnx_outputs"]["last_hidden_state"]
    assert by_name[out].max_abs_err <= 1e-4
    # every IR tensor with an ONNX twin agrees (relative to its magnitude)
    worst = max(diffs, key=lambda d: d.max_abs_err / max(1.0, d.ref_max_abs))
    assert worst.max_abs_err <= 1e-5 * max(1.0, worst.ref_max_abs) * 10, worst
    # the fused onnxruntime graph shares fewer tensors with the IR (Attention/SkipLayerNorm are single nodes)
    assert len(diffs) >= (20 if exporter == "ort-optimized" else 100)


def test_minilm_output_matches_sentence_transformers_pooling(minilm_onnx, minilm_feeds, minilm):
    """The IR's last_hidden_state, mean-pooled, is the model's real sentence embedding (torch reference)."""
    import torch

    from fpgaformer.host.reference import run

    graph, _ = import_static(minilm_onnx("torchscript"), seq_len=128)
    hidden = run(graph, minilm_feeds)[graph.outputs[0]][0]
    mask = minilm_feeds["attention_mask"][0].astype(bool)
    ours = hidden[mask].mean(0)
    with torch.no_grad():
        ref = minilm[0](input_ids=torch.tensor(minilm_feeds["input_ids"]),
                        attention_mask=torch.tensor(minilm_feeds["attention_mask"])).last_hidden_state[0]
    theirs = ref.numpy()[mask].mean(0)
    assert np.max(np.abs(ours - theirs)) < 1e-4
