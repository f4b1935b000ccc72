"""The whole generated overlay C-simulated behind the runtime (CsimDevice) versus the emulated overlay
(SimDevice), on all-MiniLM-L6-v2 (real weights) with tokenized sentences. Prints one JSON line per figure:
g++ build time of the overlay library, seconds per sequence through each device (median of the runs, after a
warm-up launch), their ratio, and whether the outputs are identical bit for bit.

Run: python benchmarks/bench_overlay_csim.py [--seq-len 16] [--count 4] [--runs 3] [--out DIR]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

SENTENCES = Path(__file__).resolve().parents[1] / "tests" / "data" / "sentences.txt"


def main(argv: list[str] | None = None) -> int:
    from fpgaformer.compiler.backend.overlay import compile_overlay
    from fpgaformer.compiler.build_cli import build_overlay
    from fpgaformer.compiler.cli import compile_model
    from fpgaformer.compiler.hf_export import export, load_minilm
    from fpgaformer.host.csim_device import CsimDevice
    from fpgaformer.host.engine import Engine
    from fpgaformer.host.sim_device import SimDevice

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--count", type=int, default=4, help="sequences per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--precision", default="w8a16")
    ap.add_argument("--out", type=Path, default=None, help="keep the BUILD here (default: a temporary folder)")
    args = ap.parse_args(argv)

    root = args.out or Path(tempfile.mkdtemp(prefix="ff-bench-overlay-"))
    root.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_minilm()
    onnx_path = export(model, root / "minilm.onnx", args.seq_len, "torchscript")
    build = root / "build"
    compile_model(onnx_path, build, seq_len=args.seq_len, precision=args.precision, log=lambda *a: None)
    build_overlay(build, "kv260", log=lambda *a: None)
    t0 = time.perf_counter()
    lib = compile_overlay(build)
    print(json.dumps({"figure": "overlay_gxx_build_s", "seconds": round(time.perf_counter() - t0, 1),
                      "kernels": len(list((build / "overlay" / "hls" / "kernels").iterdir()))}))

    sentences = [s for s in SENTENCES.read_text().splitlines() if s.strip()][:args.count]
    enc = tokenizer(sentences, padding="max_length", max_length=args.seq_len, truncation=True, return_tensors="np")
    feeds = {"input_ids": enc["input_ids"].astype(np.int64)[:, None, :],
             "attention_mask": enc["attention_mask"].astype(np.int64)[:, None, :]}
    engines = {"emulated": Engine.open(build, SimDevice(), batch=args.count),
               "csim": Engine.open(build, CsimDevice(lib), batch=args.count)}
    outputs, seconds = {}, {}
    for name, engine in engines.items():
        engine.encode({k: v[:1] for k, v in feeds.items()})  # warm-up: weights loaded, tables built
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            outputs[name] = engine.encode(feeds, codes=True)
            times.append((time.perf_counter() - t0) / args.count)
        seconds[name] = statistics.median(times)
        print(json.dumps({"figure": "seconds_per_sequence", "device": name, "seq_len": args.seq_len,
                          "median_s": round(seconds[name], 5), "runs_s": [round(t, 5) for t in times]}))
    identical = all(np.array_equal(outputs["csim"][k], outputs["emulated"][k]) for k in outputs["emulated"])
    print(json.dumps({"figure": "csim_over_emulated", "ratio": round(seconds["csim"] / seconds["emulated"], 1),
                      "bit_identical": identical}))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
