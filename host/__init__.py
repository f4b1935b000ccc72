"""fpgaformer host runtime: artifact I/O, fixed-point types, emulator, devices, engine.

This package imports with numpy alone (it runs on the board's ARM CPU). onnx, onnxruntime, hls4ml and pynq
are never imported here at module level.
"""
from .graph import Graph, Layer, Tensor

__all__ = ["Graph", "Layer", "Tensor"]
