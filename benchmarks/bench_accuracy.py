"""Sentence-embedding accuracy of all-MiniLM-L6-v2 in fixed point, side by side with onnxruntime int8.

For w16a16, w8a16 (default) and w8a8 emulation, and onnxruntime's quantize_dynamic (int8 weights), prints
the min and mean cosine similarity of mean-pooled embeddings to onnxruntime float over the 64 sentences of
tests/data/sentences.txt (calibration: tests/data/calibration.txt). One JSON line per configuration.
Run: python benchmarks/bench_accuracy.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> int:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from fpgaformer.compiler.compare import OrtProbe
    from fpgaformer.compiler.frontend import import_static
    from fpgaformer.compiler.hf_export import export, load_minilm
    from fpgaformer.compiler.passes.calibrate import calibrate
    from fpgaformer.compiler.passes.fuse_masks import fuse_masks
    from fpgaformer.compiler.quantize import quantize
    from fpgaformer.host.emulator import Emulator

    model, tokenizer = load_minilm()

    def encode(lines):
        enc = tokenizer(lines, padding="max_length", max_length=128, truncation=True, return_tensors="np")
        return {k: enc[k].astype(np.int64)[:, None] for k in ("input_ids", "attention_mask")}

    def pooled(h, m):
        keep = m.reshape(-1).astype(bool)
        return h.reshape(-1, h.shape[-1])[keep].mean(0)

    calib = encode((DATA / "calibration.txt").read_text().splitlines())
    evals = encode((DATA / "sentences.txt").read_text().splitlines())
    n = evals["input_ids"].shape[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = export(model, Path(tmp) / "minilm.onnx", 128, "torchscript")
        graph, static = import_static(path, seq_len=128)
        out = graph.outputs[0]
        ref_probe = OrtProbe(static, [out])
        refs = [pooled(ref_probe.run({k: v[i] for k, v in evals.items()})[out], evals["attention_mask"][i])
                for i in range(n)]

        def report(name, embeddings):
            cos = np.array([e @ r / np.linalg.norm(e) / np.linalg.norm(r) for e, r in zip(embeddings, refs)])
            print(json.dumps({"figure": "embedding_cosine", "config": name, "sentences": n,
                              "min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}))

        ranges = calibrate(fuse_masks(graph.copy()), calib, static)
        for preset in ("w16a16", "w8a16", "w8a8"):
            emu = Emulator(quantize(graph, preset, calib, static, ranges=ranges))
            report(f"fpgaformer {preset}", [pooled(emu.outputs({k: v[i] for k, v in evals.items()})[out],
                                                   evals["attention_mask"][i]) for i in range(n)])
        src, dst = Path(tmp) / "static.onnx", Path(tmp) / "int8.onnx"
        onnx.save(static, str(src))
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        probe = OrtProbe(onnx.load(str(dst)), [out])
        report("onnxruntime quantize_dynamic int8",
               [pooled(probe.run({k: v[i] for k, v in evals.items()})[out], evals["attention_mask"][i])
                for i in range(n)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
