"""Find transformer blocks and the role of each layer in them; fill ``graph.meta`` with the model's dims.

A block is built around its attention softmax s_k:
  * scores = the MatMul feeding s_k (through Mul/Add by masks and scales); its first operand comes from the
    query projection, its second from the key projection; context = the MatMul consuming s_k, whose second
    operand comes from the value projection (one packed projection may serve all three: ``qkv_proj``);
  * a projection is the nearest Linear found walking back through layout layers (Reshape, Transpose, Slice,
    Expand, RoPE, Mul by a constant);
  * the block starts at its first projection, or at the norm just before it when that norm feeds nothing
    but projections (pre-norm; in a parallel block -- GPT-J, Phi, GPT-NeoX -- one norm may feed the attention
    projections and the MLP's up projection alike); it ends where the next block starts; after the last
    block, it ends at the last residual Add (and the norm right after it for post-norm models, whose every
    residual Add feeds a norm).
  * o_proj is the Linear the attention context reaches through layout layers; ffn_down the Linear the
    activation (or the gated product) reaches the same way. Both are found by following tensors, not by
    graph order, so a parallel block whose MLP the exporter wrote before its attention gets the same roles.

Roles: q_proj k_proj v_proj qkv_proj o_proj attn_scores attn_softmax attn_context attn_mask rope ffn_up
ffn_gate ffn_gate_up ffn_act ffn_mul ffn_down norm1 norm2 residual layout scale; outside blocks: embed, final_norm,
lm_head.
"""

from __future__ import annotations

from ...host.graph import Graph, Layer

LAYOUT = {"Reshape", "Transpose", "Slice", "Expand", "RoPE", "Concat"}
NORMS = {"LayerNorm", "RMSNorm"}


def _projection(graph: Graph, tensor: str, producer: dict[str, Layer]) -> Layer | None:
    seen = 0
    while tensor in producer and seen < 16:
        layer = producer[tensor]
        if layer.op == "Linear":
            return layer
        if layer.op in LAYOUT or (layer.op == "Mul" and "const" in layer.params):
            tensor = layer.inputs[0]
            seen += 1
            continue
        return None
    return None


def _through_scale_mask(tensor: str, producer: dict[str, Layer]) -> Layer | None:
    for _ in range(6):
        layer = producer.get(tensor)
        if layer is None:
            return None
        if layer.op == "MatMul":
            return layer
        if layer.op in ("Mul", "Add", "Reshape"):
            tensor = layer.inputs[0]
            continue
        return None
    return None


def _skip_layout(tensor: str, producer: dict[str, Layer]) -> Layer | None:
    """The first non-Reshape producer behind ``tensor``."""
    layer = producer.get(tensor)
    while layer is not None and layer.op == "Reshape":
        layer = producer.get(layer.inputs[0])
    return layer


def _forward_linear(tensor: str, users: dict[str, list[Layer]]) -> Layer | None:
    """The Linear that ``tensor`` reaches through a chain of single-use layout layers."""
    for _ in range(8):
        following = users.get(tensor, [])
        if len(following) != 1:
            return None
        layer = following[0]
        if layer.op == "Linear":
            return layer
        if layer.op not in LAYOUT:
            return None
        tensor = layer.output
    return None


def _is_residual(layer: Layer, graph: Graph, producer: dict[str, Layer]) -> bool:
    if layer.op != "Add" or len(layer.inputs) != 2 or "const" in layer.params:
        return False
    ops = {producer[i].op if i in producer else "input" for i in layer.inputs}
    return "PaddingMask" not in ops and graph.tensors[layer.inputs[0]].shape == graph.tensors[layer.inputs[1]].shape


def annotate_blocks(graph: Graph) -> Graph:
    producer = graph.producer()
    users = graph.consumers()
    position = {layer.name: i for i, layer in enumerate(graph.layers)}
    softmaxes = [l for l in graph.layers if l.op == "Softmax"]
    cores = []
    for s in softmaxes:
        scores = _through_scale_mask(s.inputs[0], producer)
        context = next((u for u in users.get(s.output, []) if u.op == "MatMul"), None)
        if scores is None or context is None:
            continue
        q = _projection(graph, scores.inputs[0], producer)
        k = _projection(graph, scores.inputs[1], producer)
        v = _projection(graph, context.inputs[1], producer)
        if not (q and k and v):
            continue
        cores.append((s, scores, context, q, k, v))
    if not cores:
        graph.meta.setdefault("kind", "unknown")
        return graph

    def start_of(core) -> int:
        projections = {core[3].name, core[4].name, core[5].name}
        first = min(position[n] for n in projections)
        norm = _skip_layout(graph.layer(min(projections, key=position.get)).inputs[0], producer)
        if norm is not None and norm.op in NORMS and all(
                u.name in projections or u.op in LAYOUT or u.op == "Linear" for u in users.get(norm.output, [])):
            return position[norm.name]
        return first

    starts = [start_of(c) for c in cores]
    residuals = [i for i, l in enumerate(graph.layers) if _is_residual(l, graph, producer)]
    # post-norm: the residual stream passes through a norm after every Add (the Add feeds only norms)
    post_norm = bool(residuals) and all(
        all(u.op in NORMS for u in users.get(graph.layers[i].output, [])) for i in residuals)
    last = max([i for i in residuals if i > position[cores[-1][2].name]], default=position[cores[-1][2].name])
    if post_norm:
        follow = [u for u in users.get(graph.layers[last].output, []) if u.op in NORMS]
        last = max([last] + [position[u.name] for u in follow])
    ends = starts[1:] + [last + 1]
    for k, (core, begin, end) in enumerate(zip(cores, starts, ends)):
        s, scores, context, q, k_proj, v = core
        for layer in graph.layers[begin:end]:
            if layer.op not in ("PaddingMask", "Embedding", "Constant"):
                layer.block = k
        _assign_roles(graph, graph.layers[begin:end], core, producer, users)
    _outside_roles(graph, starts[0], ends[-1])
    _fill_meta(graph, cores, post_norm)
    return graph


def _assign_roles(graph, layers, core, producer, users) -> None:
    s, scores, context, q, k, v = core
    s.role, scores.role, context.role = "attn_softmax", "attn_scores", "attn_context"
    if q is k is v:
        q.role = "qkv_proj"
    else:
        q.role, k.role, v.role = "q_proj", "k_proj", "v_proj"
    names = [l.name for l in layers]
    after_context = names.index(context.name) if context.name in names else 0
    in_block = set(names)
    o_proj = _forward_linear(context.output, users)
    if o_proj is None or o_proj.name not in in_block:
        o_proj = next((l for l in layers[after_context:] if l.op == "Linear"), None)
    if o_proj is not None:
        o_proj.role = "o_proj"
    acts = [l for l in layers if l.op in ("GELU", "SiLU")]
    for act in acts:
        act.role = "ffn_act"
        src = _projection(graph, act.inputs[0], producer)
        gate = next((u for u in users.get(act.output, []) if u.op == "Mul" and "const" not in u.params), None)
        if src is not None and src.op == "Linear":
            src.role = "ffn_gate" if gate is not None else "ffn_up"
        if gate is not None:
            gate.role = "ffn_mul"
            other = next(i for i in gate.inputs if i != act.output)
            up = _projection(graph, other, producer)
            if up is not None and up is src:
                up.role = "ffn_gate_up"  # one packed projection, sliced into gate and up (Phi-3)
            elif up is not None and up.role is None:
                up.role = "ffn_up"
        down = _forward_linear((gate or act).output, users)
        if down is not None and down.name in in_block and down.role is None:
            down.role = "ffn_down"
    for l in layers[after_context:]:
        if l.op == "Linear" and l.role is None:
            l.role = "ffn_down"
    norms = [l for l in layers if l.op in {"LayerNorm", "RMSNorm"}]
    for i, n in enumerate(norms[:2]):
        n.role = f"norm{i + 1}"
    for l in layers:
        if l.role is None:
            if _is_residual(l, graph, producer):
                l.role = "residual"
            elif l.op == "RoPE":
                l.role = "rope"
            elif l.op in LAYOUT:
                l.role = "layout"
            elif l.op == "Mul" and "const" in l.params:
                l.role = "scale"
            elif l.op == "Add" and any(i in producer and producer[i].op == "PaddingMask" for i in l.inputs):
                l.role = "attn_mask_add"


def _outside_roles(graph: Graph, first: int, end: int) -> None:
    for i, l in enumerate(graph.layers):
        if l.block is not None or l.role is not None:
            continue
        if i < first:
            l.role = "embed"
        elif l.op in NORMS:
            l.role = "final_norm"
        elif l.op == "Linear":
            l.role = "lm_head"
        elif l.op in LAYOUT:
            l.role = "layout"


def _fill_meta(graph: Graph, cores, post_norm: bool) -> None:
    s, scores, context, q, k, v = cores[0]
    scores_shape = graph.tensors[scores.output].shape  # (1, heads, q, k)
    n_heads = scores_shape[-3] if len(scores_shape) >= 3 else 1
    d_model = q.params["weight"].shape[0]
    head_dim = graph.tensors[scores.inputs[0]].shape[-1]
    if k is not q:
        kv_width = k.params["weight"].shape[1]
    else:  # packed (q | k | v), k and v of one width: GQA shows as fewer columns than 3 * heads * head_dim
        kv_width = (q.params["weight"].shape[1] - n_heads * head_dim) // 2
    causal = any(l.op == "PaddingMask" and l.attrs.get("causal") for l in graph.layers) or any(
        l.role == "attn_mask" and l.op == "Constant" for l in graph.layers)
    ffn = [l for l in graph.layers if l.block == 0 and l.role in ("ffn_up", "ffn_gate", "ffn_gate_up")]
    d_ffn = ffn[0].params["weight"].shape[1] // (2 if ffn[0].role == "ffn_gate_up" else 1) if ffn else None
    vocab = next((l.params["table"].shape[0] for l in graph.layers if l.op == "Embedding"), None)
    graph.meta.update({
        "kind": "decoder" if causal else "encoder", "n_layers": len(cores), "d_model": int(d_model),
        "n_heads": int(n_heads), "head_dim": int(head_dim),
        "n_kv_heads": int(kv_width // head_dim),
        "d_ffn": int(d_ffn) if d_ffn else None, "vocab": vocab,
        "norm_position": "post" if post_norm else "pre",
    })
