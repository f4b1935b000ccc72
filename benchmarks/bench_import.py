"""Import time (ONNX -> IR) of all-MiniLM-L6-v2 at seq 128, per exporter. Prints one JSON line per figure.

Floor: under 5 s on a 2-core machine. Module import time (onnx, onnxruntime, onnx_ir) is excluded by a
warm-up import of a tiny model; export time is not part of the figure.
Run: python benchmarks/bench_import.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    from fpgaformer.compiler.frontend import import_onnx
    from fpgaformer.compiler.hf_export import export, load_minilm

    model, _ = load_minilm()
    floor_s = 5.0
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for exporter in ("torchscript", "dynamo", "ort-optimized"):
            path = export(model, Path(tmp) / f"minilm_{exporter}.onnx", 128, exporter)
            import_onnx(path, seq_len=128)  # warm-up: module imports, first-call costs
            times = []
            for _ in range(3):
                start = time.perf_counter()
                graph = import_onnx(path, seq_len=128)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            ok &= median < floor_s
            print(json.dumps({"figure": "import_seconds", "model": "all-MiniLM-L6-v2", "seq_len": 128,
                              "exporter": exporter, "median_s": round(median, 3), "min_s": round(min(times), 3),
                              "layers": len(graph.layers), "floor_s": floor_s, "within_floor": median < floor_s}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
