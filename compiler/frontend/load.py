"""Load an ONNX export and make it static: fixed dims, inferred shapes, folded constants.

Steps: read the file (with external data) -> check the opset -> fix every symbolic input dim (the first dim is
the batch, fixed to 1; the others become ``--seq-len``) -> measure every tensor's shape by one onnxruntime run
on placeholder inputs -> fold a carried KV cache away (below) -> replace Shape and Size nodes by those
constants -> onnxscript's optimizer (constant folding, dead-code removal) -> value_info of every tensor from
ONNX shape inference, completed by the measured shapes.

Exports that carry a KV cache (float inputs of rank >= 3 concatenated with the new keys and values and
returned as outputs -- ``past_key_values.*`` in, ``present.*`` out -- found by that structure, not by name) are compiled at past length 0 over the whole context: the cache
inputs become empty constants, every ``Concat(past, new)`` becomes ``new``, and the present outputs are
dropped. What remains is exactly the plain causal-LM export, which the compiler already turns into an
incremental decoder with its own cache on the device (host/decoder.py): the cache is the same tensor
(K or V after the concatenation), kept by fpgaformer instead of by the caller.

Once the input dims are fixed, every shape in a transformer graph is static, so a measured shape is the
shape: exporters that compute shapes at run time (Shape -> Gather -> Concat -> Reshape) fold completely.

Every failure a user can cause becomes a `UserError` that says what is wrong and what to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper

from ..errors import UserError

MIN_OPSET, MAX_OPSET = 13, 21
# Constants up to this many elements are folded (attention masks of seq 512: 262,144 elements).
FOLD_LIMIT = 1 << 22
# No constant the front end computes (folds, or materialises while measuring shapes) may exceed this many bytes,
# or twice the model's own parameter bytes if that is more: a 10 KB file must not make a 8 GB tensor.
CONSTANT_BYTES = 1 << 28
_RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def constant_limit(model: onnx.ModelProto) -> int:
    params = 0
    for t in model.graph.initializer:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize if t.data_type else 4
        params += int(np.prod(t.dims, dtype=np.int64)) * itemsize
    return max(CONSTANT_BYTES, 2 * params)


def _too_big(node: onnx.NodeProto, tensor: str, shape, elem: int, limit: int) -> UserError:
    size = _bytes(shape, elem)
    return UserError(f"node {node.name or node.op_type!r} ({node.op_type}) computes a constant {tensor!r} of shape "
                     f"{list(shape)}, {size / 2**20:,.0f} MiB, more than fpgaformer will fold "
                     f"({limit / 2**20:,.0f} MiB, or twice the model's parameters); the model is malformed or "
                     "makes huge constants at run time. Export it again, with such tensors built from the inputs "
                     "or removed.")


def _bytes(shape, elem: int) -> float:
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).itemsize if elem else 4
    return float(np.prod([max(int(d), 0) for d in shape], dtype=np.float64)) * itemsize


def check_constant_sizes(model: onnx.ModelProto) -> None:
    """Refuse, before anything runs, a model in which a tensor computed from constants alone (so folded, and
    materialised by the shape measurement) would exceed ``constant_limit``: shapes from ONNX shape inference with
    data propagation, so ``ConstantOfShape([20000, 20000])`` is caught from its 16-byte input."""
    limit = constant_limit(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # inference is a best effort here; fold_remaining_constants checks again
        return
    shapes = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = info.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[info.name] = ([d.dim_value for d in tt.shape.dim], tt.elem_type)
    constant = {i.name for i in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input} - constant
    for node in model.graph.node:
        if node.op_type in _RANDOM_OPS or any(i in graph_inputs for i in node.input if i):
            continue
        if not all(i in constant for i in node.input if i):
            continue
        for out in node.output:
            if not out:
                continue
            constant.add(out)
            if out in shapes and _bytes(*shapes[out]) > limit:
                raise _too_big(node, out, *shapes[out], limit)


def read_model(path: str | Path) -> onnx.ModelProto:
    """Parse ``path`` and its external data; raise UserError for missing, truncated or non-ONNX files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file. Pass the path of an .onnx file exported from your model.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError or RuntimeError depending on the backend
        raise UserError(f"{path} is not a readable ONNX model ({type(e).__name__}: {str(e)[:200]}). The file is "
                        "truncated or not ONNX; export it again (torch.onnx.export) and check the copy.") from None
    if not model.graph.node:
        raise UserError(f"{path} parsed as ONNX but has no nodes: the file is truncated or not an ONNX model. "
                        "Export it again.")
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as e:  # FileNotFoundError, OSError or onnx's ValidationError, by onnx version
        missing = getattr(e, "filename", None) or str(e)[:300]
        raise UserError(f"{path} keeps its weights in an external data file that cannot be read ({missing}). "
                        "Put the .onnx file and its data file (e.g. model.onnx.data) in the same folder.") from None
    return model


def opset_of(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise UserError("the model imports no default-domain opset; it is not a standard ONNX export.")


# contrib attention ops and the input slots that hold a past key / value
_PAST_SLOTS = {"Attention": (4,), "MultiHeadAttention": (6, 7), "GroupQueryAttention": (3, 4),
               "DecoderMaskedMultiHeadAttention": (5, 6)}


def _live_inputs(node: onnx.NodeProto, constants: set[str]) -> list[str]:
    return [i for i in node.input if i and i not in constants]


def _constants(model: onnx.ModelProto) -> set[str]:
    out = {i.name for i in model.graph.initializer}
    out.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    return out


def _appends_to(model: onnx.ModelProto, name: str, constants: set[str], hops: int = 8) -> bool:
    """Whether ``name`` is a KV cache by what the graph does with it: through one-input nodes it reaches a
    Concat whose result (through one-input nodes) is a graph output -- the present cache -- or the past slot of
    a contrib attention op."""
    outputs = {o.name for o in model.graph.output}
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for k, i in enumerate(node.input):
            if i:
                users.setdefault(i, []).append((node, k))

    def reaches_output(tensor: str) -> bool:
        frontier = [tensor]
        for _ in range(hops):
            if any(t in outputs for t in frontier):
                return True
            frontier = [o for t in frontier for n, _ in users.get(t, ())
                        if len(_live_inputs(n, constants)) == 1 for o in n.output if o]
        return any(t in outputs for t in frontier)

    frontier = [name]
    for _ in range(hops):
        following = []
        for t in frontier:
            for node, slot in users.get(t, ()):
                if node.op_type in _PAST_SLOTS and node.domain == "com.microsoft" and slot in _PAST_SLOTS[node.op_type]:
                    return True
                if node.op_type == "Concat" and len(_live_inputs(node, constants)) >= 2 and reaches_output(node.output[0]):
                    return True
                if len(_live_inputs(node, constants)) == 1:
                    following.extend(o for o in node.output if o)
        frontier = following
        if not frontier:
            break
    return False


def cache_inputs(model: onnx.ModelProto) -> list[str]:
    """The KV-cache inputs, by structure (not by name): float inputs of rank >= 3 that the graph appends new
    keys/values to and returns (``Concat(past, new)`` -> present output), or that feed the past slot of a
    contrib attention op. Empty for plain exports."""
    constants = _constants(model)
    return [i.name for i in model.graph.input if i.name not in constants
            and len(i.type.tensor_type.shape.dim) >= 3
            and onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type).kind == "f"
            and _appends_to(model, i.name, constants)]


def fix_dims(model: onnx.ModelProto, seq_len: int | None, context: int | None = None) -> dict[str, int]:
    """Replace symbolic input dims in place. Returns the mapping symbol -> value used.

    Batch (axis 0) is 1. KV-cache inputs get past length 0 (their other symbolic dims); every other symbolic
    dim is the sequence length: ``seq_len``, or ``context`` for a model that carries a cache (it is compiled
    over the whole context, see the module doc).
    """
    chosen: dict[str, int] = {}
    caches = set(cache_inputs(model))
    length = (context or seq_len) if caches else seq_len
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        if inp.name in caches and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:]):
            raise UserError(f"KV-cache input {inp.name!r} has a fixed shape {[d.dim_param or d.dim_value for d in dims]}; "
                            "export it with a dynamic past length (dynamic_axes / dynamic_shapes) so fpgaformer "
                            "can compile it over the whole context.")
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            symbol = dim.dim_param or f"{inp.name}[{axis}]"
            if axis == 0:
                value = 1
            elif inp.name in caches:
                value = 0
            else:
                if length is None:
                    raise UserError(f"input {inp.name!r} has a dynamic dim {symbol!r} (axis {axis}); pass "
                                    "--seq-len N to fix it (the context length for decoders).")
                value = length
            if value < 0 or (value == 0 and inp.name not in caches):
                raise UserError(f"dim {symbol!r} of input {inp.name!r} would be {value}; pass a positive "
                                "--seq-len.")
            dim.Clear()
            dim.dim_value = value
            chosen[symbol] = value
    return chosen


def strip_cache(model: onnx.ModelProto, caches: list[str]) -> list[str]:
    """Turn a carried KV cache into nothing: cache inputs -> empty initializers, ``Concat`` inputs that are
    empty constants dropped (a one-input Concat becomes Identity), present outputs removed. Returns the names
    of the outputs removed. Call after the cache dims are fixed to 0 (``fix_dims``)."""
    if not caches:
        return []
    inputs = {i.name: i for i in model.graph.input}
    for name in caches:
        tt = inputs[name].type.tensor_type
        shape = [d.dim_value for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(shape, dtype), name))
        model.graph.input.remove(inputs[name])
    # a present output is the Concat that appends new rows to a cache (directly or through one-input nodes)
    producer = {o: n for n in model.graph.node for o in n.output}
    empty = set(caches)

    def from_cache(tensor: str) -> bool:
        for _ in range(8):
            if tensor in empty:
                return True
            node = producer.get(tensor)
            if node is None or len([i for i in node.input if i]) != 1:
                return False
            tensor = node.input[0]
        return False

    removed = []
    for out in list(model.graph.output):
        node = producer.get(out.name)
        if node is not None and node.op_type in _PAST_SLOTS and out.name in list(node.output)[1:] and any(
                i in empty for i in node.input):  # present key/value of a contrib attention op
            model.graph.output.remove(out)
            removed.append(out.name)
            continue
        # a present output: the Concat that appends to a cache, possibly after one-input nodes
        for _ in range(8):
            if node is None or node.op_type == "Concat" or len([i for i in node.input if i]) != 1:
                break
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "Concat" and any(from_cache(i) for i in node.input):
            model.graph.output.remove(out)
            removed.append(out.name)
    if not model.graph.output:
        raise UserError("every output of the model is a KV cache output; export the logits too.")
    return removed


def drop_empty_concat_inputs(model: onnx.ModelProto) -> None:
    """Concat ignores zero-size inputs: drop those that are constants; a Concat left with one input becomes
    Identity (folded away by the optimizer)."""
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Concat":
            continue
        kept = [i for i in node.input if sizes.get(i, 1) != 0]
        if len(kept) == len(node.input) or not kept:
            continue
        del node.input[:]
        node.input.extend(kept)
        if len(kept) == 1:
            node.op_type = "Identity"
            del node.attribute[:]


def make_static(model: onnx.ModelProto, seq_len: int | None = None, context: int | None = None) -> onnx.ModelProto:
    """Fix dims, infer shapes and fold constants; returns a new, fully static model."""
    opset = opset_of(model)
    if opset < MIN_OPSET:
        raise UserError(f"the model uses opset {opset}; fpgaformer reads opsets {MIN_OPSET}-{MAX_OPSET}. "
                        f"Export again with opset_version={MIN_OPSET} or newer.")
    caches = cache_inputs(model)
    fix_dims(model, seq_len, context)
    check_constant_sizes(model)
    del model.graph.value_info[:]
    for out in model.graph.output:  # outputs may keep symbolic dims; inference fills them in
        out.type.tensor_type.ClearField("shape")
    try:
        measured = measure_shapes(model)
    except Exception as e:
        raise UserError(f"onnxruntime cannot run the model with the fixed dims ({type(e).__name__}: "
                        f"{str(e)[:300]}). Check --seq-len/--context against the model's limits (e.g. its "
                        "maximum positions), and that onnxruntime supports every op in it.") from None
    removed = strip_cache(model, caches)
    fold_shape_nodes(model, measured)
    model = fold_constants(model)
    drop_empty_concat_inputs(model)  # Concat(past, new) with past folded to an empty constant
    fold_remaining_constants(model, measured, constant_limit(model))
    model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    complete_value_info(model, measured)
    if caches:  # recorded for inspect and the manifest
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                            "fpgaformer.kv_cache_inputs": ",".join(caches),
                                            "fpgaformer.kv_cache_outputs": ",".join(removed)})
    return model


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxscript's constant folding and dead-node removal (not its rewrite rules, which cost seconds)."""
    import logging

    import onnx_ir as ir
    import onnx_ir.passes.common as common
    import onnxscript.optimizer

    logging.getLogger("onnxscript").setLevel(logging.ERROR)
    ir_model = ir.serde.deserialize_model(model)
    common.InlinePass()(ir_model)
    for _ in range(3):
        result = onnxscript.optimizer.fold_constants(ir_model, input_size_limit=FOLD_LIMIT,
                                                     output_size_limit=FOLD_LIMIT)
        common.RemoveUnusedNodesPass()(ir_model)
        if not result.modified:
            break
    common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(ir_model)
    return ir.serde.serialize_model(ir_model)


def fold_remaining_constants(model: onnx.ModelProto, measured: dict | None = None, limit: int | None = None) -> None:
    """Evaluate (onnx.reference) every node whose inputs are all constants and that the optimizer left; refuse
    one whose (measured) output exceeds ``limit`` bytes."""
    from onnx.reference import ReferenceEvaluator

    constants = {i.name: i for i in model.graph.initializer}
    opset = [imp for imp in model.opset_import]
    keep = []
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and node.input and all(not i or i in constants for i in node.input):
            for out in node.output:
                if limit is not None and measured and out in measured and _bytes(*measured[out]) > limit:
                    raise _too_big(node, out, *measured[out], limit)
            inputs = [onnx.helper.make_tensor_value_info(i, constants[i].data_type, None) for i in node.input if i]
            outputs = [onnx.helper.make_tensor_value_info(o, 0, None) for o in node.output]
            single = onnx.helper.make_model(onnx.helper.make_graph([node], "fold", inputs, outputs),
                                            opset_imports=opset)
            feeds = {i: onnx.numpy_helper.to_array(constants[i]) for i in node.input if i}
            try:
                values = ReferenceEvaluator(single).run(None, feeds)
            except Exception:
                try:
                    values = _run_ort(single, feeds)
                except Exception:  # leave it; a rule or the unsupported list will report it
                    keep.append(node)
                    continue
            for name, value in zip(node.output, values):
                tensor = onnx.numpy_helper.from_array(np.asarray(value), name)
                model.graph.initializer.append(tensor)
                constants[name] = tensor
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _run_ort(model: onnx.ModelProto, feeds: dict) -> list:
    import onnxruntime as ort

    model = onnx.shape_inference.infer_shapes(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def placeholder_feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Inputs of the right shapes: integers used as indices (token ids, positions) 0, other integers and
    booleans (0/1 masks) 1, floats 0 -- by how the graph uses each input, not by its name."""
    feeds = {}
    initializers = {i.name for i in model.graph.initializer}
    indices = _index_inputs(model)
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        tt = inp.type.tensor_type
        shape = [d.dim_value for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        fill = 0 if np.dtype(dtype).kind == "f" or inp.name in indices else 1
        feeds[inp.name] = np.full(shape, fill, dtype=dtype)
    return feeds


def _index_inputs(model: onnx.ModelProto, hops: int = 4) -> set[str]:
    """Graph inputs that reach the indices of a Gather (an embedding lookup) through one-input nodes."""
    constants = _constants(model)
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for k, i in enumerate(node.input):
            if i:
                users.setdefault(i, []).append((node, k))
    found = set()
    for inp in model.graph.input:
        frontier = [inp.name]
        for _ in range(hops):
            following = []
            for t in frontier:
                for node, slot in users.get(t, ()):
                    if (node.op_type in ("Gather", "GatherElements", "GatherND") and slot == 1) or \
                            node.op_type == "EmbedLayerNormalization" and slot in (0, 1, 8):
                        found.add(inp.name)
                    elif len(_live_inputs(node, constants)) == 1:
                        following.extend(o for o in node.output if o)
            frontier = following
    return found


def measure_shapes(model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...], int]]:
    """Run onnxruntime once with every node output exposed; return name -> (shape, onnx elem type)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for out in node.output:
            if out and out not in known:
                probe.graph.output.append(onnx.ValueInfoProto(name=out))
                known.add(out)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, placeholder_feeds(model))
    return {n: (tuple(v.shape), onnx.helper.np_dtype_to_tensor_dtype(v.dtype)) for n, v in zip(names, values)}


def fold_shape_nodes(model: onnx.ModelProto, measured: dict) -> None:
    """Replace Shape(x) and Size(x) by constants computed from x's measured shape."""
    keep = []
    for node in model.graph.node:
        if node.op_type in ("Shape", "Size") and node.input[0] in measured:
            shape = measured[node.input[0]][0]
            if node.op_type == "Size":
                value = np.array(int(np.prod(shape)), dtype=np.int64)
            else:
                attrs = {a.name: a.i for a in node.attribute}
                start, end = attrs.get("start", 0), attrs.get("end", len(shape))
                value = np.array(shape[start:end] if "end" in attrs else shape[start:], dtype=np.int64)
            model.graph.initializer.append(onnx.numpy_helper.from_array(value, node.output[0]))
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def complete_value_info(model: onnx.ModelProto, measured: dict) -> None:
    """Give every node output a static shape: inferred where ONNX could, measured where it could not."""
    typed = {v.name: v for v in model.graph.value_info}
    for v in model.graph.output:
        typed.setdefault(v.name, v)
    for node in model.graph.node:
        for out in node.output:
            if not out or out not in measured:
                continue
            shape, elem = measured[out]
            info = typed.get(out)
            if info is None:
                info = model.graph.value_info.add()
                info.name = out
            tt = info.type.tensor_type
            tt.elem_type = elem
            tt.ClearField("shape")
            for d in shape:
                tt.shape.dim.add().dim_value = d


def load_static(path: str | Path, seq_len: int | None = None, context: int | None = None) -> onnx.ModelProto:
    return make_static(read_model(path), seq_len, context)
