"""Synthetic IR graphs: valid, executable by the float executor, and equal to textbook forward passes of
BERT (post-norm), GPT-2 (pre-norm, tied head) and LLaMA (RMSNorm, RoPE, GQA, SwiGLU) written here in numpy
from the published model definitions, independently of the graph's layout layers."""

import math

import numpy as np
import pytest

from fpgaformer.compiler import synthetic
from fpgaformer.host import reference

P = lambda g, name, key: np.asarray(g.layer(name).params[key], np.float64)  # noqa: E731


def layer_norm(x, gamma, beta, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * gamma + beta


def rms_norm(x, gamma, eps=1e-5):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * gamma


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def gelu_erf(x):
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def attention(q, k, v, n_heads, n_kv, mask):
    """q (S, H*hd), k/v (S, KV*hd); the true 1/sqrt(hd) scale (the graph folds it into W_q)."""
    S, hd = q.shape[0], q.shape[1] // n_heads
    out = np.zeros_like(q)
    for h in range(n_heads):
        g = h // (n_heads // n_kv)
        qh, kh, vh = q[:, h * hd:(h + 1) * hd], k[:, g * hd:(g + 1) * hd], v[:, g * hd:(g + 1) * hd]
        out[:, h * hd:(h + 1) * hd] = softmax(qh @ kh.T / math.sqrt(hd) + mask) @ vh
    return out


def test_bert_encoder_matches_textbook_forward():
    L, D, H, F, V, S = 2, 32, 4, 64, 100, 8
    g = synthetic.encoder(L, D, H, F, V, S, params="random", seed=1, init_scale=0.3)
    g.validate()
    ids = np.array([[3, 14, 15, 92, 65, 35, 8, 9]])
    am = np.array([[1, 1, 1, 1, 1, 1, 0, 0]])
    got = reference.run(g, {"input_ids": ids, "attention_mask": am}, dtype=np.float64)["last_hidden_state"][0]
    hd = D // H
    x = P(g, "embed_tokens", "table")[ids[0]] + P(g, "embed_positions", "const")[0]
    x = layer_norm(x, P(g, "embed_norm", "gamma"), P(g, "embed_norm", "beta"), 1e-12)
    mask = np.where(am[0] == 1, 0.0, -1e4)[None, :]
    for i in range(L):
        n = lambda s: f"block{i}_{s}"  # noqa: E731
        lin = lambda s, h: h @ P(g, n(s), "weight") + P(g, n(s), "bias")  # noqa: E731
        q = lin("q_proj", x) * math.sqrt(hd)  # undo the folded 1/sqrt(hd): attention() applies it
        a = attention(q, lin("k_proj", x), lin("v_proj", x), H, H, mask)
        x = layer_norm(x + lin("o_proj", a), P(g, n("norm1"), "gamma"), P(g, n("norm1"), "beta"), 1e-12)
        f = lin("ffn_down", gelu_erf(lin("ffn_up", x)))
        x = layer_norm(x + f, P(g, n("norm2"), "gamma"), P(g, n("norm2"), "beta"), 1e-12)
    np.testing.assert_allclose(got, x, atol=1e-5)


def test_gpt2_decoder_matches_textbook_forward():
    L, D, H, F, V, S = 2, 32, 4, 64, 100, 8
    g = synthetic.decoder(L, D, H, F, V, S, params="random", seed=2, init_scale=0.3)
    ids = np.array([[5, 1, 4, 1, 5, 9, 2, 6]])
    got = reference.run(g, {"input_ids": ids}, dtype=np.float64)["logits"][0]
    hd = D // H
    table = P(g, "embed_tokens", "table")
    x = table[ids[0]] + P(g, "embed_positions", "const")[0]
    causal = np.triu(np.full((S, S), -1e4), 1)
    for i in range(L):
        n = lambda s: f"block{i}_{s}"  # noqa: E731
        h = layer_norm(x, P(g, n("norm1"), "gamma"), P(g, n("norm1"), "beta"), 1e-5)
        qkv = h @ P(g, n("qkv_proj"), "weight") + P(g, n("qkv_proj"), "bias")
        qkv[:, :D] *= math.sqrt(hd)  # undo the folded score scale
        a = attention(qkv[:, :D], qkv[:, D:2 * D], qkv[:, 2 * D:], H, H, causal)
        x = x + a @ P(g, n("o_proj"), "weight") + P(g, n("o_proj"), "bias")
        h = layer_norm(x, P(g, n("norm2"), "gamma"), P(g, n("norm2"), "beta"), 1e-5)
        up = gelu_tanh(h @ P(g, n("ffn_up"), "weight") + P(g, n("ffn_up"), "bias"))
        x = x + up @ P(g, n("ffn_down"), "weight") + P(g, n("ffn_down"), "bias")
    x = layer_norm(x, P(g, "final_norm", "gamma"), P(g, "final_norm", "beta"), 1e-5)
    np.testing.assert_allclose(got, x @ table.T, atol=1e-5)  # tied LM head


def test_llama_decoder_with_gqa_matches_textbook_forward():
    L, D, H, KV, F, V, S = 2, 32, 4, 2, 48, 100, 6
    g = synthetic.decoder(L, D, H, F, V, S, arch="llama", n_kv_heads=KV, params="random", seed=3, init_scale=0.3)
    ids = np.array([[7, 3, 99, 0, 12, 5]])
    got = reference.run(g, {"input_ids": ids}, dtype=np.float64)["logits"][0]
    hd = D // H
    inv = 1.0 / 10000 ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(S)[:, None] * inv[None, :]                  # (S, hd/2)
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(t, n):  # rotate_half convention, per head
        t = t.reshape(S, n, hd)
        a, b = t[..., :hd // 2], t[..., hd // 2:]
        c, s = cos[:, None], sin[:, None]
        return np.concatenate([a * c - b * s, b * c + a * s], -1).reshape(S, n * hd)

    x = P(g, "embed_tokens", "table")[ids[0]]
    causal = np.triu(np.full((S, S), -1e4), 1)
    for i in range(L):
        n = lambda s: f"block{i}_{s}"  # noqa: E731
        h = rms_norm(x, P(g, n("norm1"), "gamma"))
        q = rope(h @ P(g, n("q_proj"), "weight") * math.sqrt(hd), H)
        k = rope(h @ P(g, n("k_proj"), "weight"), KV)
        a = attention(q, k, h @ P(g, n("v_proj"), "weight"), H, KV, causal)
        x = x + a @ P(g, n("o_proj"), "weight")
        h = rms_norm(x, P(g, n("norm2"), "gamma"))
        gate = h @ P(g, n("ffn_gate"), "weight")
        ff = (gate / (1 + np.exp(-gate))) * (h @ P(g, n("ffn_up"), "weight"))
        x = x + ff @ P(g, n("ffn_down"), "weight")
    logits = rms_norm(x, P(g, "final_norm", "gamma")) @ P(g, "lm_head", "weight")
    np.testing.assert_allclose(got, logits, atol=1e-5)


def test_shape_only_graphs_cost_no_memory_and_carry_meta():
    g = synthetic.gpt2_small(seq_len=128, context=1024)
    g.validate()
    assert all(p.strides == (0,) * p.ndim for l in g.layers for p in l.params.values())  # zero-copy views
    expected = {"kind": "decoder", "seq_len": 128, "context": 1024, "n_layers": 12, "d_model": 768,
                "n_heads": 12, "n_kv_heads": 12, "head_dim": 64, "d_ffn": 3072, "vocab": 50257}
    assert {k: g.meta[k] for k in expected} == expected
    assert [l.role for l in g.blocks()[0] if l.op == "Linear"] == ["qkv_proj", "o_proj", "ffn_up", "ffn_down"]
    m = synthetic.minilm_l6()
    assert m.meta["kind"] == "encoder" and len(m.blocks()) == 6
    # 6 x (4*384^2 + 2*384*1536 weights + biases); the anchors' 22.71 M also counts token types and the pooler
    linear = sum(l.params["weight"].size for l in m.layers if l.op == "Linear")
    assert linear == 10_616_832


def test_bad_dims_are_refused():
    with pytest.raises(ValueError):
        synthetic.encoder(1, 30, 4, 64, 10, 4)
    with pytest.raises(ValueError):
        synthetic.decoder(1, 32, 4, 64, 10, 4, arch="llama", n_kv_heads=3)
