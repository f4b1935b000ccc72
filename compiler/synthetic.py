"""Synthetic layer graphs of transformer shapes, built directly in the IR (no ONNX export).

Used by the estimator's tests and benchmarks (exporting GPT-2 small is slow) and for quick what-if studies:

* `encoder` — BERT/MiniLM (post-norm): token + position embedding, LayerNorm, Q/K/V, QK^T, masked softmax,
  P.V, o_proj, residual, LayerNorm, FFN up, GELU, FFN down, residual, LayerNorm.
* `decoder` — ``arch="gpt2"`` (pre-norm, packed qkv_proj, GELU-tanh FFN, tied LM head) or ``arch="llama"``
  (RMSNorm, RoPE, grouped-query attention via Expand, SwiGLU FFN, untied LM head).

Conventions are those of the front end: tensors carry batch 1 ((1, S, D), scores (1, H, S, S)); ``Linear``
weights are (in, out); ``layer.block`` / ``layer.role`` are set; ``graph.meta`` has kind, seq_len, context,
n_layers, d_model, n_heads, n_kv_heads, head_dim, d_ffn, vocab. The 1/sqrt(head_dim) score scale is folded
into the query projection (as the fusion passes do), so ``reference.run`` computes true attention.

``params``: ``"random"`` (normal(0, init_scale) weights and biases, norm gains 1 + noise; executable), ``"zeros"``
(weights and biases 0, gains 1) or ``"shape_only"`` (read-only ``np.broadcast_to`` views: correct shapes, no memory; for the
estimator only — GPT-2 small as float32 would be 500 MB).
"""

from __future__ import annotations

import math

import numpy as np

from ..host.graph import Graph, Layer, Tensor

PARAM_MODES = ("random", "zeros", "shape_only")


class _Builder:
    def __init__(self, params: str, seed: int, init_scale: float = 0.02):
        if params not in PARAM_MODES:
            raise ValueError(f"params must be one of {PARAM_MODES}, got {params!r}")
        self.mode, self.rng, self.init_scale = params, np.random.default_rng(seed), init_scale
        self.layers: list[Layer] = []
        self.tensors: dict[str, Tensor] = {}

    def param(self, shape, mean: float = 0.0) -> np.ndarray:
        """``mean`` + normal noise ("random"), ``mean`` everywhere ("zeros"), or a zero-copy view."""
        shape = tuple(int(s) for s in shape)
        if self.mode == "shape_only":
            return np.broadcast_to(np.float32(mean), shape)
        if self.mode == "zeros":
            return np.full(shape, mean, np.float32)
        return (mean + self.rng.standard_normal(shape) * self.init_scale).astype(np.float32)

    def tensor(self, name: str, shape, dtype: str = "float32") -> str:
        self.tensors[name] = Tensor(name, tuple(int(s) for s in shape), dtype)
        return name

    def add(self, name, op, inputs, shape, *, attrs=None, params=None, block=None, role=None, dtype="float32",
            out=None):
        out = self.tensor(out or name, shape, dtype)
        self.layers.append(Layer(name, op, list(inputs), [out], dict(attrs or {}), dict(params or {}), {},
                                 block, role))
        return out

    # ------------------------------------------------------------------------------------- building blocks
    def linear(self, name, x, d_in, d_out, rows, *, block, role, bias=True, scale=1.0, weight=None, out=None):
        params = {"weight": self.param((d_in, d_out)) if weight is None else weight}
        if bias:
            params["bias"] = self.param((d_out,))
        if scale != 1.0 and self.mode != "shape_only":  # a folded scale multiplies weight and bias
            params = {k: v * np.float32(scale) for k, v in params.items()}
        return self.add(name, "Linear", [x], (1, rows, d_out), params=params, block=block, role=role, out=out)

    def norm(self, name, x, d, rows, *, kind, block, role, eps=1e-5):
        if kind == "LayerNorm":
            params = {"gamma": self.param((d,), mean=1.0), "beta": self.param((d,))}
        else:
            params = {"gamma": self.param((d,), mean=1.0)}
        return self.add(name, kind, [x], (1, rows, d), attrs={"eps": eps}, params=params, block=block, role=role)

    def heads(self, name, x, rows, n, hd, *, block, transpose_k=False):
        """(1, S, n*hd) -> (1, n, S, hd), or (1, n, hd, S) for keys."""
        r = self.add(f"{name}_split", "Reshape", [x], (1, rows, n, hd), attrs={"shape": [1, rows, n, hd]},
                     block=block, role="layout")
        perm, shape = ([0, 2, 3, 1], (1, n, hd, rows)) if transpose_k else ([0, 2, 1, 3], (1, n, rows, hd))
        return self.add(f"{name}_heads", "Transpose", [r], shape, attrs={"perm": perm}, block=block,
                        role="layout")

    def merge_heads(self, name, x, rows, n, hd, *, block):
        t = self.add(f"{name}_merge_t", "Transpose", [x], (1, rows, n, hd), attrs={"perm": [0, 2, 1, 3]},
                     block=block, role="layout")
        return self.add(f"{name}_merge", "Reshape", [t], (1, rows, n * hd), attrs={"shape": [1, rows, n * hd]},
                        block=block, role="layout")

    def attention_core(self, p, q, k, v, mask, rows, n_heads, hd, *, block):
        """q (1,H,S,hd), k (1,H,hd,S), v (1,H,S,hd) -> context (1, S, H*hd)."""
        scores = self.add(f"{p}scores", "MatMul", [q, k], (1, n_heads, rows, rows), block=block,
                          role="attn_scores")
        probs = self.add(f"{p}probs", "Softmax", [scores, mask], (1, n_heads, rows, rows), attrs={"axis": -1},
                         block=block, role="attn_softmax")
        ctx = self.add(f"{p}context", "MatMul", [probs, v], (1, n_heads, rows, hd), block=block,
                       role="attn_context")
        return self.merge_heads(f"{p}context", ctx, rows, n_heads, hd, block=block)

    def graph(self, inputs, outputs, meta) -> Graph:
        g = Graph(list(inputs), list(outputs), self.tensors, self.layers, meta)
        g.validate()
        return g


def encoder(n_layers: int = 6, d_model: int = 384, n_heads: int = 12, d_ffn: int = 1536, vocab: int = 30522,
            seq_len: int = 128, *, max_positions: int = 512, params: str = "random", seed: int = 0,
            init_scale: float = 0.02) -> Graph:
    """BERT/MiniLM-shaped encoder (post-norm). Inputs ``input_ids`` (1, S) int64, ``attention_mask`` (1, S)
    int64; output ``last_hidden_state`` (1, S, D). MiniLM-L6: the defaults."""
    if d_model % n_heads:
        raise ValueError("d_model must be a multiple of n_heads")
    S, D, H, hd = seq_len, d_model, n_heads, d_model // n_heads
    b = _Builder(params, seed, init_scale)
    ids = b.tensor("input_ids", (1, S), "int64")
    am = b.tensor("attention_mask", (1, S), "int64")
    tok = b.add("embed_tokens", "Embedding", [ids], (1, S, D), params={"table": b.param((vocab, D))},
                role="embed")
    pos_table = b.param((max_positions, D))
    x = b.add("embed_positions", "Add", [tok], (1, S, D), params={"const": pos_table[None, :S]}, role="embed")
    x = b.norm("embed_norm", x, D, S, kind="LayerNorm", block=None, role="embed", eps=1e-12)
    mask = b.add("attention_mask_add", "PaddingMask", [am], (1, 1, S, S),
                 attrs={"causal": False, "neg": -1e4, "q_len": S}, role="attn_mask")
    for i in range(n_layers):
        p = f"block{i}_"
        q = b.linear(f"{p}q_proj", x, D, D, S, block=i, role="q_proj", scale=1 / math.sqrt(hd))
        k = b.linear(f"{p}k_proj", x, D, D, S, block=i, role="k_proj")
        v = b.linear(f"{p}v_proj", x, D, D, S, block=i, role="v_proj")
        ctx = b.attention_core(p, b.heads(f"{p}q", q, S, H, hd, block=i),
                               b.heads(f"{p}k", k, S, H, hd, block=i, transpose_k=True),
                               b.heads(f"{p}v", v, S, H, hd, block=i), mask, S, H, hd, block=i)
        o = b.linear(f"{p}o_proj", ctx, D, D, S, block=i, role="o_proj")
        r = b.add(f"{p}residual1", "Add", [x, o], (1, S, D), block=i, role="residual")
        x = b.norm(f"{p}norm1", r, D, S, kind="LayerNorm", block=i, role="norm1", eps=1e-12)
        up = b.linear(f"{p}ffn_up", x, D, d_ffn, S, block=i, role="ffn_up")
        act = b.add(f"{p}ffn_act", "GELU", [up], (1, S, d_ffn), attrs={"approximate": "none"}, block=i,
                    role="ffn_act")
        down = b.linear(f"{p}ffn_down", act, d_ffn, D, S, block=i, role="ffn_down")
        r = b.add(f"{p}residual2", "Add", [x, down], (1, S, D), block=i, role="residual")
        x = b.norm(f"{p}norm2", r, D, S, kind="LayerNorm", block=i, role="norm2", eps=1e-12)
    out = b.add("last_hidden_state", "Reshape", [x], (1, S, D), attrs={"shape": [1, S, D]}, role="layout")
    meta = {"kind": "encoder", "seq_len": S, "context": None, "n_layers": n_layers, "d_model": D,
            "n_heads": H, "n_kv_heads": H, "head_dim": hd, "d_ffn": d_ffn, "vocab": vocab,
            "norm_position": "post", "source": "synthetic.encoder"}
    return b.graph([ids, am], [out], meta)


def decoder(n_layers: int = 12, d_model: int = 768, n_heads: int = 12, d_ffn: int = 3072, vocab: int = 50257,
            seq_len: int = 128, *, context: int | None = None, arch: str = "gpt2", n_kv_heads: int | None = None,
            max_positions: int = 1024, params: str = "random", seed: int = 0, init_scale: float = 0.02) -> Graph:
    """GPT-2- or LLaMA-shaped decoder over ``seq_len`` tokens (a prefill graph, causal). Input ``input_ids``
    (1, S) int64; output ``logits`` (1, S, vocab). ``context`` (the KV length the design must hold, default
    ``seq_len``) goes to ``meta["context"]``. GPT-2 small: the defaults."""
    if arch not in ("gpt2", "llama"):
        raise ValueError("arch must be 'gpt2' or 'llama'")
    if d_model % n_heads:
        raise ValueError("d_model must be a multiple of n_heads")
    S, D, H, hd = seq_len, d_model, n_heads, d_model // n_heads
    kvh = n_kv_heads or H
    if H % kvh:
        raise ValueError("n_heads must be a multiple of n_kv_heads")
    llama = arch == "llama"
    norm_kind = "RMSNorm" if llama else "LayerNorm"
    b = _Builder(params, seed, init_scale)
    ids = b.tensor("input_ids", (1, S), "int64")
    table = b.param((vocab, D))
    x = b.add("embed_tokens", "Embedding", [ids], (1, S, D), params={"table": table}, role="embed")
    if not llama:
        x = b.add("embed_positions", "Add", [x], (1, S, D), params={"const": b.param((max_positions, D))[None, :S]},
                  role="embed")
    causal = np.triu(np.full((S, S), -1e4, np.float32), 1)[None, None] if params != "shape_only" else \
        np.broadcast_to(np.float32(0), (1, 1, S, S))
    mask = b.add("causal_mask", "Constant", [], (1, 1, S, S), params={"value": causal}, role="attn_mask")
    if llama:
        inv = 1.0 / (10000.0 ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
        ang = np.arange(S)[:, None] * inv[None, :]
        cos = np.concatenate([np.cos(ang)] * 2, axis=-1).astype(np.float32)
        sin = np.concatenate([np.sin(ang)] * 2, axis=-1).astype(np.float32)
    for i in range(n_layers):
        p = f"block{i}_"
        h = b.norm(f"{p}norm1", x, D, S, kind=norm_kind, block=i, role="norm1")
        if llama:
            q = b.linear(f"{p}q_proj", h, D, H * hd, S, block=i, role="q_proj", bias=False, scale=1 / math.sqrt(hd))
            k = b.linear(f"{p}k_proj", h, D, kvh * hd, S, block=i, role="k_proj", bias=False)
            v = b.linear(f"{p}v_proj", h, D, kvh * hd, S, block=i, role="v_proj", bias=False)
            qh = b.heads(f"{p}q", q, S, H, hd, block=i)
            kh = b.heads(f"{p}k", k, S, kvh, hd, block=i)
            rope = {"cos": cos, "sin": sin}
            qh = b.add(f"{p}q_rope", "RoPE", [qh], (1, H, S, hd), attrs={"rotary_dim": hd, "interleaved": False},
                       params=rope, block=i, role="rope")
            kh = b.add(f"{p}k_rope", "RoPE", [kh], (1, kvh, S, hd), attrs={"rotary_dim": hd, "interleaved": False},
                       params=rope, block=i, role="rope")
            kt = b.add(f"{p}k_t", "Transpose", [kh], (1, kvh, hd, S), attrs={"perm": [0, 1, 3, 2]}, block=i,
                       role="layout")
            vh = b.heads(f"{p}v", v, S, kvh, hd, block=i)
            if kvh != H:
                kt, vh = (_repeat_kv(b, f"{p}{n}", t, kvh, H // kvh, shape, block=i)
                          for n, t, shape in (("k", kt, (hd, S)), ("v", vh, (S, hd))))
            ctx = b.attention_core(p, qh, kt, vh, mask, S, H, hd, block=i)
        else:
            qkv = b.linear(f"{p}qkv_proj", h, D, 3 * D, S, block=i, role="qkv_proj")
            if b.mode != "shape_only":  # fold the score scale into the query columns
                for v in b.layers[-1].params.values():
                    v[..., :D] *= np.float32(1 / math.sqrt(hd))
            parts = [b.add(f"{p}{n}", "Slice", [qkv], (1, S, D), attrs={"axes": [2], "starts": [j * D],
                                                                          "ends": [(j + 1) * D], "steps": [1]},
                           block=i, role="layout") for j, n in enumerate("qkv")]
            ctx = b.attention_core(p, b.heads(f"{p}q", parts[0], S, H, hd, block=i),
                                   b.heads(f"{p}k", parts[1], S, H, hd, block=i, transpose_k=True),
                                   b.heads(f"{p}v", parts[2], S, H, hd, block=i), mask, S, H, hd, block=i)
        o = b.linear(f"{p}o_proj", ctx, H * hd, D, S, block=i, role="o_proj", bias=not llama)
        x = b.add(f"{p}residual1", "Add", [x, o], (1, S, D), block=i, role="residual")
        h = b.norm(f"{p}norm2", x, D, S, kind=norm_kind, block=i, role="norm2")
        if llama:
            gate = b.linear(f"{p}ffn_gate", h, D, d_ffn, S, block=i, role="ffn_gate", bias=False)
            up = b.linear(f"{p}ffn_up", h, D, d_ffn, S, block=i, role="ffn_up", bias=False)
            act = b.add(f"{p}ffn_act", "SiLU", [gate], (1, S, d_ffn), block=i, role="ffn_act")
            act = b.add(f"{p}ffn_mul", "Mul", [act, up], (1, S, d_ffn), block=i, role="ffn_mul")
        else:
            up = b.linear(f"{p}ffn_up", h, D, d_ffn, S, block=i, role="ffn_up")
            act = b.add(f"{p}ffn_act", "GELU", [up], (1, S, d_ffn), attrs={"approximate": "tanh"}, block=i,
                        role="ffn_act")
        down = b.linear(f"{p}ffn_down", act, d_ffn, D, S, block=i, role="ffn_down", bias=not llama)
        x = b.add(f"{p}residual2", "Add", [x, down], (1, S, D), block=i, role="residual")
    x = b.norm("final_norm", x, D, S, kind=norm_kind, block=None, role="final_norm")
    head = table.T if not llama else None  # GPT-2 ties the LM head to the token table
    logits = b.linear("lm_head", x, D, vocab, S, block=None, role="lm_head", bias=False, weight=head,
                      out="logits")
    meta = {"kind": "decoder", "seq_len": S, "context": int(context or S), "n_layers": n_layers, "d_model": D,
            "n_heads": H, "n_kv_heads": kvh, "head_dim": hd, "d_ffn": d_ffn, "vocab": vocab,
            "norm_position": "pre", "source": f"synthetic.decoder({arch})"}
    return b.graph([ids], [logits], meta)


def _repeat_kv(b: _Builder, name: str, t: str, kvh: int, rep: int, tail: tuple[int, int], *, block: int) -> str:
    """(1, kvh, a, c) -> (1, kvh*rep, a, c) by Reshape -> Expand -> Reshape (grouped-query attention)."""
    r = b.add(f"{name}_rep_in", "Reshape", [t], (1, kvh, 1, *tail), attrs={"shape": [1, kvh, 1, *tail]},
              block=block, role="layout")
    e = b.add(f"{name}_rep", "Expand", [r], (1, kvh, rep, *tail), attrs={"shape": [1, kvh, rep, *tail]},
              block=block, role="layout")
    return b.add(f"{name}_rep_out", "Reshape", [e], (1, kvh * rep, *tail), attrs={"shape": [1, kvh * rep, *tail]},
                 block=block, role="layout")


def minilm_l6(seq_len: int = 128, params: str = "shape_only") -> Graph:
    """all-MiniLM-L6-v2 shapes (anchors note section 5)."""
    return encoder(6, 384, 12, 1536, 30522, seq_len, params=params)


def gpt2_small(seq_len: int = 128, context: int | None = None, params: str = "shape_only") -> Graph:
    """GPT-2 small shapes (anchors note section 5); ``context`` defaults to ``seq_len``."""
    return decoder(12, 768, 12, 3072, 50257, seq_len, context=context, params=params)
