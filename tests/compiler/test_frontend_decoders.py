"""GPT-2-style and LLaMA-style decoders (random init): causal attention recognised, IR == onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaformer.compiler.compare import compare
from fpgaformer.compiler.frontend import import_static

SEQ = 16


def _gpt2():
    import transformers

    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=64)
    return transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation="eager")


def _llama():
    import transformers

    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=128, vocab_size=256,
                                   max_position_embeddings=64)
    return transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="eager")


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_decoder_imports_with_causal_attention(family, exporter, export_dir):
    torch = pytest.importorskip("torch")
    from fpgaformer.compiler.hf_export import export

    torch.manual_seed(0)
    model = (_gpt2 if family == "gpt2" else _llama)().eval()
    path = export(model, export_dir / f"{family}_{exporter}.onnx", SEQ, exporter, output="logits")
    graph, onnx_model = import_static(path, seq_len=SEQ)

    assert graph.meta["kind"] == "decoder"
    masks = [l for l in graph.layers if l.op == "PaddingMask"]
    assert masks and all(m.attrs["causal"] for m in masks)
    assert sorted(graph.blocks()) == [0, 1]
    roles = {l.role for l in graph.layers}
    assert {"attn_softmax", "o_proj", "ffn_act", "ffn_down", "lm_head", "final_norm", "residual"} <= roles
    if family == "llama":
        ops = {l.op for l in graph.layers}
        assert {"RMSNorm", "RoPE", "SiLU"} <= ops and "ffn_gate" in roles
        assert graph.meta["n_kv_heads"] == 2 and graph.meta["n_heads"] == 4
    else:
        assert "qkv_proj" in roles

    rng = np.random.default_rng(1)
    mask = np.ones((1, SEQ), np.int64)
    mask[0, :3] = 0  # left padding, as used for batched generation
    feeds = {"input_ids": rng.integers(0, 256, (1, SEQ)), "attention_mask": mask}
    diffs = {d.name: d for d in compare(graph, onnx_model, feeds)}
    assert diffs[graph.meta["onnx_outputs"]["logits"]].max_abs_err <= 1e-4
