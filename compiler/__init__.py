"""fpgaformer compiler: ONNX transformer exports -> layer graph -> quantized graph -> HLS projects."""
