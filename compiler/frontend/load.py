"""Load an ONNX export and make it static: fixed dims, inferred shapes, folded constants.

Steps: read the file (with external data) -> check the opset -> fix every symbolic input dim (the first dim is
the batch, fixed to 1; the others become ``--seq-len``, or ``--context`` for inputs whose name says
past/cache) -> measure every tensor's shape by one onnxruntime run on placeholder inputs -> replace Shape and
Size nodes by those constants -> onnxscript's optimizer (constant folding, dead-code removal) -> value_info of
every tensor from ONNX shape inference, completed by the measured shapes.

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


def _is_cache_input(name: str) -> bool:
    lowered = name.lower()
    return "past" in lowered or "cache" in lowered


def fix_dims(model: onnx.ModelProto, seq_len: int | None, context: int | None) -> dict[str, int]:
    """Replace symbolic input dims in place. Returns the mapping symbol -> value used.

    Batch (axis 0) is 1. Other symbolic dims take ``context`` on cache inputs (``past`` / ``cache`` in the
    name; the past length is ``context - seq_len``) and ``seq_len`` elsewhere.
    """
    chosen: dict[str, int] = {}
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            symbol = dim.dim_param or f"{inp.name}[{axis}]"
            if axis == 0:
                value = 1
            elif _is_cache_input(inp.name):
                if context is None or seq_len is None:
                    raise UserError(f"input {inp.name!r} has a dynamic dim {symbol!r} (axis {axis}); pass "
                                    "--context N (maximum KV length) and --seq-len N to fix it.")
                value = context - seq_len
            else:
                if seq_len is None:
                    raise UserError(f"input {inp.name!r} has a dynamic dim {symbol!r} (axis {axis}); pass "
                                    "--seq-len N to fix it (and --context N for decoders with a KV cache).")
                value = seq_len
            if value <= 0:
                raise UserError(f"dim {symbol!r} of input {inp.name!r} would be {value}; choose --context "
                                "larger than --seq-len.")
            dim.Clear()
            dim.dim_value = value
            chosen[symbol] = value
    return chosen


def make_static(model: onnx.ModelProto, seq_len: int | None = None, context: int | None = None) -> onnx.ModelProto:
    """Fix dims, infer shapes and fold constants; returns a new, fully static model."""
    opset = opset_of(model)
    if opset < MIN_OPSET:
        raise UserError(f"the model uses opset {opset}; fpgaformer reads opsets {MIN_OPSET}-{MAX_OPSET}. "
                        f"Export again with opset_version={MIN_OPSET} or newer.")
    fix_dims(model, seq_len, context)
    del model.graph.value_info[:]
    for out in model.graph.output:  # outputs may keep symbolic dims; inference fills them in
        out.type.tensor_type.ClearField("shape")
    try:
        measured = measure_shapes(model)
    except Exception as e:
        raise UserError(f"onnxruntime cannot run the model with the fixed dims ({type(e).__name__}: "
                        f"{str(e)[:300]}). Check --seq-len/--context against the model's limits (e.g. its "
                        "maximum positions), and that onnxruntime supports every op in it.") from None
    fold_shape_nodes(model, measured)
    model = fold_constants(model)
    fold_remaining_constants(model)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    complete_value_info(model, measured)
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


def fold_remaining_constants(model: onnx.ModelProto) -> None:
    """Evaluate (onnx.reference) every node whose inputs are all constants and that the optimizer left."""
    from onnx.reference import ReferenceEvaluator

    constants = {i.name: i for i in model.graph.initializer}
    opset = [imp for imp in model.opset_import]
    keep = []
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and node.input and all(not i or i in constants for i in node.input):
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
    """Inputs of the right shapes: token ids 0, masks 1, floats 0."""
    feeds = {}
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        tt = inp.type.tensor_type
        shape = [d.dim_value for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        fill = 1 if "mask" in inp.name.lower() else 0
        feeds[inp.name] = np.full(shape, fill, dtype=dtype)
    return feeds


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
