"""Pre-quantized models: QuantizeLinear -> DequantizeLinear pairs (QDQ, as onnxruntime.quantization writes).

A DequantizeLinear of constant integer weights folds into float weights during loading (their values are
exactly q * scale). An activation pair Q -> DQ with the same constant scale and zero point becomes one
``FakeQuant`` layer:

    y = (clip(round_half_even(x / s) + zp, qmin, qmax) - zp) * s,   (qmin, qmax) from the integer type.

The quantizer turns it into a fixed-point type when s is a power of two and zp = 0 (the int grid *is* a
fixed-point grid); otherwise it says so and keeps the grid by emulating the rounding (see choose_types).
"""

from __future__ import annotations

import numpy as np
import onnx

from ....host.graph import Layer
from ..engine import Match, rule
from ..view import OnnxView

RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255), np.dtype(np.int16): (-32768, 32767),
          np.dtype(np.uint16): (0, 65535)}


@rule("qdq", seeds={"QuantizeLinear"})
def qdq(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    dq = view.only_user(node.output[0])
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    scale, zp = node.input[1], node.input[2] if len(node.input) > 2 and node.input[2] else None
    if not view.is_const(scale) or (zp is not None and not view.is_const(zp)):
        return None
    if dq.input[1] != scale and not np.array_equal(view.const.get(dq.input[1]), view.const[scale]):
        return None
    if view.const[scale].size != 1:
        return None  # per-axis activation quantization is not produced by the exporters we read
    zero = view.const[zp] if zp is not None else np.zeros((), np.uint8)
    qmin, qmax = RANGES.get(zero.dtype, (None, None))
    if qmin is None:
        return None
    layer = Layer(dq.name, "FakeQuant", [node.input[0]], [dq.output[0]],
                  attrs={"qmin": qmin, "qmax": qmax, "qtype": str(zero.dtype)},
                  params={"scale": view.const[scale].astype(np.float64).reshape(()),
                          "zero_point": zero.astype(np.int64).reshape(())})
    return Match([node, dq], [layer])


@rule("qonnx_quant", seeds={"Quant"})
def qonnx_quant(node: onnx.NodeProto, view: OnnxView) -> Match | None:
    """QONNX ``Quant(x, scale, zero_point, bitwidth)`` (signed, narrow, rounding_mode ROUND): quantize and
    dequantize in one node, y = (clip(round(x / s + zp), qmin, qmax) - zp) * s."""
    if len(node.input) < 4 or not all(view.is_const(i) for i in node.input[1:4]):
        return None
    a = view.attrs(node)
    if a.get("rounding_mode", b"ROUND") not in (b"ROUND", "ROUND"):
        return None
    scale, zp, bits = (view.const[i] for i in node.input[1:4])
    if scale.size != 1 or zp.size != 1:
        return None
    bits = int(bits.reshape(()))
    signed, narrow = bool(a.get("signed", 1)), bool(a.get("narrow", 0))
    qmin = -(1 << (bits - 1)) + (1 if narrow else 0) if signed else 0
    qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1 - (1 if narrow else 0)
    qtype = f"{'' if signed else 'u'}int{8 if bits <= 8 else 16}"
    layer = Layer(node.name, "FakeQuant", [node.input[0]], [node.output[0]],
                  attrs={"qmin": qmin, "qmax": qmax, "qtype": qtype, "bits": bits},
                  params={"scale": scale.astype(np.float64).reshape(()),
                          "zero_point": np.asarray(np.rint(zp), np.int64).reshape(())})
    return Match([node], [layer])


RULES = [qdq, qonnx_quant]
