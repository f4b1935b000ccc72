"""onnxruntime's EmbedLayerNormalization (com.microsoft): BERT's embeddings and their LayerNorm in one node.

    sum = word_embedding[ids] + position_embedding[position_ids] + segment_embedding[segment_ids]
    out = LayerNorm(sum; gamma, beta, epsilon)          (epsilon default 1e-12)
    position_ids = 0..S-1 when the input is absent; the segment term is absent without segment ids.

Lowering: Embedding(ids; word table), then Add of the position/segment terms -- one constant (S, D) addend
when their ids are constants (the usual case once shapes are fixed), an Embedding each otherwise -- then
LayerNorm. Output 1 (``mask_index``, the count of ones of the mask input) is only accepted when fused
attention nodes alone read it: they build their mask from the raw mask (see contrib_attention.py), so
``mask_index`` becomes an alias of the mask input. Output 2 (the sum before the norm) keeps its name when used.
The lowering is checked against onnxruntime on random ids before it is accepted.
"""

from __future__ import annotations

import numpy as np
import onnx

from ....host.graph import Layer
from ..engine import Match, rule
from ..regions import agrees, evaluate_ort, run_layers
from ..view import OnnxView
from .contrib_attention import only_attention_masks

DEFAULT_EPS = 1e-12


@rule("embed_layernorm", seeds={"EmbedLayerNormalization"})
def embed_layernorm(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    if node.domain != "com.microsoft":
        return None
    ids, segments, word, position, segment_table, gamma, beta, mask, position_ids = (list(node.input) + [""] * 9)[:9]
    if not all(view.is_const(c) for c in (word, position, gamma, beta)) or view.is_const(ids):
        return None
    if segments and not (segment_table and view.is_const(segment_table)):
        return None
    outputs = list(node.output) + ["", ""]
    out, mask_index, total = outputs[:3]
    aliases = {}
    if mask_index and (view.users(mask_index) or mask_index in view.outputs):
        if not (mask and only_attention_masks(view, mask_index)):
            return None
        aliases[mask_index] = mask
    shape = view.shape[out]  # (batch, S, D)
    seq = shape[1]
    new: dict[str, tuple[tuple[int, ...], str]] = {}
    words = f"{out}::words"
    new[words] = (shape, "float32")
    layers = [Layer(f"{node.name}::words", "Embedding", [ids], [words],
                    params={"table": view.const[word].astype(np.float32)})]
    constant = np.zeros(shape[1:], np.float32)
    variable = []
    for table, index in ((position, position_ids), (segment_table, segments)):
        if table is position and not index:
            constant += view.const[position][:seq].astype(np.float32)
        elif not index:
            continue
        elif view.is_const(index):
            constant += np.take(view.const[table], view.const[index].astype(np.int64), axis=0).reshape(
                -1, seq, shape[-1])[0].astype(np.float32)
        else:
            looked_up = f"{out}::{index}::embedded"
            new[looked_up] = (shape, "float32")
            layers.append(Layer(f"{node.name}::{index}", "Embedding", [index], [looked_up],
                                params={"table": view.const[table].astype(np.float32)}))
            variable.append(looked_up)
    current = words
    for k, term in enumerate(variable):
        summed = f"{out}::sum{k}"
        new[summed] = (shape, "float32")
        layers.append(Layer(f"{node.name}::sum{k}", "Add", [current, term], [summed]))
        current = summed
    total_used = bool(total) and bool(view.users(total) or total in view.outputs)
    summed = total if total_used else f"{out}::sum"
    if not total_used:
        new[summed] = (shape, "float32")
    layers.append(Layer(f"{node.name}::positions", "Add", [current], [summed], params={"const": constant}))
    eps = float(view.attrs(node).get("epsilon", DEFAULT_EPS))
    layers.append(Layer(node.name, "LayerNorm", [summed], [out], attrs={"eps": eps, "axis": -1},
                        params={"gamma": view.const[gamma].astype(np.float32),
                                "beta": view.const[beta].astype(np.float32)}))
    if not _agrees_with_onnxruntime(view, node, layers, out):
        return None
    return Match([node], layers, aliases=aliases, new_tensors=new)


def _agrees_with_onnxruntime(view: OnnxView, node: onnx.NodeProto, layers: list[Layer], out: str) -> bool:
    rng = np.random.default_rng(3)
    feeds = {}
    for index, table in ((0, 2), (1, 4), (8, 3)):
        name = node.input[index] if len(node.input) > index else ""
        if name and not view.is_const(name):
            rows = view.const[node.input[table]].shape[0]
            feeds[name] = rng.integers(0, rows, view.shape[name]).astype(view.dtype.get(name, np.dtype(np.int32)))
    if len(node.input) > 7 and node.input[7] and not view.is_const(node.input[7]):
        mask = node.input[7]
        feeds[mask] = np.ones(view.shape[mask], view.dtype.get(mask, np.dtype(np.int32)))
    try:
        got = evaluate_ort(view, [node], feeds, out)
    except Exception:
        return False
    return agrees(got, run_layers(layers, feeds, out))


RULES = [embed_layernorm]
