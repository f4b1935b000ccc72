"""Per-tensor comparison of the IR float executor with onnxruntime (the front-end check).

Every IR tensor that has an ONNX tensor of the same name is fetched from onnxruntime (the static model with
those tensors exposed as outputs) and compared: max abs error, and the ONNX reference's max abs value.

Non-finite values are never dropped silently. Where the reference holds NaN/inf inside the graph (an additive
mask of -inf), ours must hold the same value there (same sign of inf, NaN for NaN) and the error is taken over
the finite rest; any other pattern is an error of inf. A graph *output* whose reference holds any NaN/inf is an
error of inf: a non-finite reference confirms nothing (``nonfinite`` counts those values).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..host import reference
from ..host.graph import Graph


@dataclass
class TensorDiff:
    name: str
    layer: str
    op: str
    max_abs_err: float
    ref_max_abs: float
    nonfinite: int = 0  # NaN/inf values in the onnxruntime reference


class OrtProbe:
    """An onnxruntime session of ``model`` with the named tensors exposed as outputs (built once)."""

    def __init__(self, model: onnx.ModelProto, names: list[str]):
        import onnxruntime as ort

        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        existing = {o.name for o in probe.graph.output}
        produced = {o for n in probe.graph.node for o in n.output}
        self.names = [n for n in dict.fromkeys(names) if n in produced or n in existing]
        for name in self.names:
            if name not in existing:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(probe.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.names, {k: v for k, v in feeds.items() if k in self.inputs})
        return dict(zip(self.names, values))


def compare(graph: Graph, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[TensorDiff]:
    """Run both on one input set (batch 1); one TensorDiff per IR layer output known to ONNX, graph order."""
    ours = reference.run(graph, feeds, dtype=np.float64)
    names = [out for layer in graph.layers for out in layer.outputs]
    theirs = OrtProbe(model, names).run(feeds)
    outputs = set(graph.outputs)
    diffs = []
    for layer in graph.layers:
        for out in layer.outputs:
            if out not in theirs:
                continue
            want = np.asarray(theirs[out], dtype=np.float64)
            got = np.asarray(ours[out], dtype=np.float64)
            finite = np.isfinite(want)
            nonfinite = int(want.size - np.count_nonzero(finite))
            if got.shape != want.shape or (nonfinite and out in outputs) or not np.isfinite(got[finite]).all() \
                    or not np.array_equal(got[~finite], want[~finite], equal_nan=True):
                err = float("inf")
            else:
                err = float(np.max(np.abs(got[finite] - want[finite]), initial=0.0))
            diffs.append(TensorDiff(out, layer.name, layer.op, err,
                                    float(np.max(np.abs(np.where(finite, want, 0.0)), initial=0.0)), nonfinite))
    return diffs
