"""onnxruntime's fused attention (com.microsoft Attention and MultiHeadAttention) lowered into IR ops.

onnxruntime.transformers' optimizer replaces a whole self-attention by one node. Its math, for one sequence
of S queries, L keys and N heads:

    Attention:           q, k, v = x W[:, :Dq] + b[:Dq],  x W[:, Dq:Dq+Dk] + b[Dq:Dq+Dk],  x W[:, Dq+Dk:] + b[Dq+Dk:]
                         (W packed (Din, Dq+Dk+Dv); Dq = Dk = Dv = W.shape[1] / 3 unless qkv_hidden_sizes)
    MultiHeadAttention:  q, k, v = query + b[:Dq],  key + b[Dq:Dq+Dk],  value + b[Dq+Dk:]   (projected inputs)

    Q = heads(q) (N, S, Hq)    K = heads(k) (N, L, Hk)    V = heads(v) (N, L, Hv)      heads: reshape + transpose
    P = softmax(scale * Q K^T + mask [+ attention_bias])      scale = the attribute, else 1 / sqrt(Hq)
    out = merge(P V) (S, N * Hv)
    mask[q, k] = mask_filter_value (default -10000) where key k is padding, or k > q when unidirectional

The lowering writes exactly that with IR ops: Linear per projection (the packed weight split by columns, so the
IR has q_proj/k_proj/v_proj as an unfused export does) or Add of the packed bias, Reshape, Transpose, MatMul,
Mul(scale), Add(PaddingMask), Softmax, MatMul, Transpose, Reshape.

The mask input (``mask_index`` / ``key_padding_mask``) comes in two forms the rule accepts:
  * raw, (batch, L) of 0/1: PaddingMask reads it directly;
  * lengths, (batch,): the count of ones of a raw mask, made by EmbedLayerNormalization (its mask input) or by
    ReduceSum over the raw mask's last axis (``mask_length`` below). onnxruntime masks keys k >= length,
    which is the raw mask exactly when padding is on the right -- the only padding the length form can
    express, and what the optimizer assumes when it writes it. The IR reads the raw mask itself (the model's
    own meaning), so it equals onnxruntime for right-padded inputs.
Every lowering is checked numerically before it is accepted: the node alone is run by onnxruntime on random
input with a right-padded mask and compared with the IR layers' float definition (host.reference).
Past/present state, rotary inside the op, packed 5-D MultiHeadAttention inputs and a variable attention_bias are
left unplaced (reported).
"""

from __future__ import annotations

import numpy as np
import onnx

from ....host.graph import Layer
from ....host.reference import padding_mask
from ..engine import Match, rule
from ..regions import agrees, evaluate_ort, run_layers, sample_input
from ..view import OnnxView

ATTENTION_OPS = {"Attention", "MultiHeadAttention"}
DEFAULT_MASK_FILTER = -10000.0


def mask_input(node: onnx.NodeProto) -> str:
    """The name of a fused attention node's key-padding mask input ('' when absent)."""
    index = 3 if node.op_type == "Attention" else 4
    return node.input[index] if len(node.input) > index else ""


def only_attention_masks(view: OnnxView, name: str) -> bool:
    """True when ``name`` is used, and used only as the mask input of fused attention nodes."""
    users = view.users(name)
    return bool(users) and name not in view.outputs and all(
        u.op_type in ATTENTION_OPS and u.domain == "com.microsoft" and mask_input(u) == name for u in users)


def _sums_last_axis(view: OnnxView, node: onnx.NodeProto) -> bool:
    """ReduceSum(m, axes=[-1], keepdims=0) over an integer (batch, L) mask."""
    src = node.input[0]
    if len(view.shape.get(src, ())) != 2 or view.dtype.get(src, np.dtype("f4")).kind not in "iu":
        return False
    attrs = view.attrs(node)
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        if not view.is_const(node.input[1]):
            return False
        axes = view.const[node.input[1]].reshape(-1).tolist()
    return attrs.get("keepdims", 1) == 0 and axes is not None and [a % 2 for a in axes] == [1]


def raw_key_mask(view: OnnxView, name: str) -> str | None:
    """The raw (batch, L) 0/1 mask that a fused attention's mask input stands for, or None if unknown."""
    shape = view.shape.get(name)
    if shape is None:
        return None
    if len(shape) == 2:
        return name
    if len(shape) != 1:
        return None
    producer = view.producer.get(name)
    if producer is None:
        return None
    if producer.op_type == "EmbedLayerNormalization" and len(producer.output) > 1 and producer.output[1] == name \
            and len(producer.input) > 7 and producer.input[7]:
        return producer.input[7]
    if producer.op_type == "ReduceSum" and _sums_last_axis(view, producer):
        return producer.input[0]
    return None


@rule("mask_length", seeds={"ReduceSum"})
def mask_length(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    """lengths = ReduceSum(mask, last axis), read only by fused attention: they read the raw mask instead.

    The alias is what lets the engine accept the node: no IR layer reads ``lengths`` (the attention rule
    builds its PaddingMask from the raw mask, see the module docstring).
    """
    if not _sums_last_axis(view, node) or not only_attention_masks(view, node.output[0]):
        return None
    return Match([node], aliases={node.output[0]: node.input[0]})


def _attention_bias(view: OnnxView, name: str, shape: tuple[int, ...]) -> np.ndarray | None | bool:
    """The constant additive bias on the scores (None when absent, False when not a usable constant)."""
    if not name:
        return None
    if not view.is_const(name):
        return False
    value = view.const[name].astype(np.float32)
    try:
        np.broadcast_shapes(value.shape, shape)
    except ValueError:
        return False
    return value


@rule("contrib_attention", seeds=ATTENTION_OPS)
def contrib_attention(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    if node.domain != "com.microsoft":
        return None
    a = view.attrs(node)
    if a.get("do_rotary", 0) or a.get("past_present_share_buffer", 0):
        return None
    if any(o and (view.users(o) or o in view.outputs) for o in node.output[1:]):
        return None  # present / qk outputs in use: a KV-cache graph
    ins = list(node.input) + [""] * 10
    n_heads = int(a["num_heads"])
    out = node.output[0]
    layers: list[Layer] = []
    new: dict[str, tuple[tuple[int, ...], str]] = {}

    def tensor(name: str, shape) -> str:
        new[name] = (tuple(int(d) for d in shape), "float32")
        return name

    if node.op_type == "Attention":
        x, w, b, _, past, bias_input = ins[:6]
        if past or ins[6] or view.is_const(x) or not view.is_const(w) or (b and not view.is_const(b)):
            return None
        weight = view.const[w].astype(np.float32)
        sizes = [int(s) for s in (a.get("qkv_hidden_sizes") or [weight.shape[1] // 3] * 3)]
        if sum(sizes) != weight.shape[1]:
            return None
        bias = view.const[b].astype(np.float32).reshape(-1) if b else None
        sources, start = [], 0
        for role, size in zip("qkv", sizes):
            params = {"weight": np.ascontiguousarray(weight[:, start:start + size])}
            if bias is not None:
                params["bias"] = bias[start:start + size]
            name = tensor(f"{out}::{role}", (*view.shape[x][:-1], size))
            layers.append(Layer(f"{node.name}::{role}_proj", "Linear", [x], [name], params=params))
            sources.append(name)
            start += size
        batch, seq = view.shape[x][:2]
        kv_len = seq
        variable_inputs = [x]
    else:
        q, k, v, b, _, bias_input, past_k, past_v = ins[:8]
        if not (k and v) or past_k or past_v or ins[8] or ins[9]:
            return None
        if any(len(view.shape.get(t, ())) != 3 or view.is_const(t) for t in (q, k, v)):
            return None  # packed (5-D) or past-state forms
        sizes = [view.shape[t][-1] for t in (q, k, v)]
        sources = [q, k, v]
        if b:
            if not view.is_const(b):
                return None
            bias = view.const[b].astype(np.float32).reshape(-1)
            if bias.size != sum(sizes):
                return None
            sources, start = [], 0
            for role, src, size in zip("qkv", (q, k, v), sizes):
                name = tensor(f"{out}::{role}", view.shape[src])
                layers.append(Layer(f"{node.name}::{role}_bias", "Add", [src], [name],
                                    params={"const": bias[start:start + size]}))
                sources.append(name)
                start += size
        batch, seq = view.shape[q][:2]
        kv_len = view.shape[k][1]
        variable_inputs = list(dict.fromkeys([q, k, v]))

    if any(s % n_heads for s in sizes) or sizes[0] != sizes[1]:
        return None
    hq, hv = sizes[0] // n_heads, sizes[2] // n_heads

    def heads(src: str, role: str, length: int, head: int, perm: list[int]) -> str:
        split = (batch, length, n_heads, head)
        r = tensor(f"{out}::{role}_heads", split)
        layers.append(Layer(f"{node.name}::{role}_split", "Reshape", [src], [r], attrs={"shape": list(split)}))
        t = tensor(f"{out}::{role}_t", [split[p] for p in perm])
        layers.append(Layer(f"{node.name}::{role}_transpose", "Transpose", [r], [t], attrs={"perm": perm}))
        return t

    q_h = heads(sources[0], "q", seq, hq, [0, 2, 1, 3])      # (batch, heads, S, Hq)
    k_t = heads(sources[1], "k", kv_len, hq, [0, 2, 3, 1])   # (batch, heads, Hq, L)
    v_h = heads(sources[2], "v", kv_len, hv, [0, 2, 1, 3])   # (batch, heads, L, Hv)
    scores_shape = (batch, n_heads, seq, kv_len)
    scores = tensor(f"{out}::scores", scores_shape)
    layers.append(Layer(f"{node.name}::scores", "MatMul", [q_h, k_t], [scores]))
    scale = float(a.get("scale", 0.0)) or 1.0 / float(np.sqrt(hq))
    logits = tensor(f"{out}::scaled", scores_shape)
    layers.append(Layer(f"{node.name}::scale", "Mul", [scores], [logits], params={"const": np.float32(scale)}))

    extra = _attention_bias(view, bias_input, scores_shape)
    if extra is False:
        return None
    if extra is not None:
        biased = tensor(f"{out}::biased", scores_shape)
        layers.append(Layer(f"{node.name}::attention_bias", "Add", [logits], [biased], params={"const": extra}))
        logits = biased

    mask_name = mask_input(node)
    raw = raw_key_mask(view, mask_name) if mask_name else None
    if mask_name and raw is None:
        return None
    causal = bool(a.get("unidirectional", 0))
    neg = float(a.get("mask_filter_value", DEFAULT_MASK_FILTER))
    additive = None
    if raw is not None:
        additive = tensor(f"{out}::mask", (1, 1, seq, kv_len))
        layers.append(Layer(f"{node.name}::mask", "PaddingMask", [raw], [additive], role="attn_mask",
                            attrs={"causal": causal, "neg": neg, "q_len": seq, "shape": [1, 1, seq, kv_len]}))
    elif causal:
        additive = tensor(f"{out}::mask", (1, 1, seq, kv_len))
        value = padding_mask(np.ones((1, kv_len), np.int64), True, neg, seq)
        layers.append(Layer(f"{node.name}::mask", "Constant", [], [additive], role="attn_mask",
                            params={"value": value}))
    if additive is not None:
        masked = tensor(f"{out}::masked", scores_shape)
        layers.append(Layer(f"{node.name}::mask_add", "Add", [logits, additive], [masked]))
        logits = masked
    probs = tensor(f"{out}::probs", scores_shape)
    layers.append(Layer(f"{node.name}::softmax", "Softmax", [logits], [probs]))
    context = tensor(f"{out}::context", (batch, n_heads, seq, hv))
    layers.append(Layer(f"{node.name}::context", "MatMul", [probs, v_h], [context]))
    merged = tensor(f"{out}::merged", (batch, seq, n_heads, hv))
    layers.append(Layer(f"{node.name}::merge", "Transpose", [context], [merged], attrs={"perm": [0, 2, 1, 3]}))
    layers.append(Layer(node.name, "Reshape", [merged], [out], attrs={"shape": list(view.shape[out])}))

    if not _agrees_with_onnxruntime(view, node, layers, variable_inputs, mask_name, raw, kv_len, out):
        return None
    return Match([node], layers, new_tensors=new)


def _agrees_with_onnxruntime(view, node, layers, variable_inputs, mask_name, raw, kv_len, out) -> bool:
    feeds_node, feeds_ir = {}, {}
    for i, name in enumerate(variable_inputs):
        sample = sample_input(view.shape[name], 1.0, seed=i)
        feeds_node[name] = feeds_ir[name] = sample
    if mask_name:
        keep = np.ones((1, kv_len), np.int64)
        keep[0, kv_len - max(1, kv_len // 4):] = 0  # right padding
        feeds_ir[raw] = keep.astype(view.dtype.get(raw, np.dtype(np.int64)))
        form = keep if len(view.shape[mask_name]) == 2 else keep.sum(-1)
        feeds_node[mask_name] = form.astype(view.dtype.get(mask_name, np.dtype(np.int32)))
    try:
        got = evaluate_ort(view, [node], feeds_node, out)
    except Exception:
        return False
    return agrees(got, run_layers(layers, feeds_ir, out))


RULES = [mask_length, contrib_attention]
