"""Emulator time versus onnxruntime float time: all-MiniLM-L6-v2, seq 128, batch 8, measured side by side.

onnxruntime runs the TorchScript export (dynamic batch) on the 8 sequences in one call; the emulator runs
the w8a16 (default) fixed-point graph on the same 8 sequences with ``Emulator.run_batch(feeds, keep=outputs)``
(its default worker threads, one per CPU; like onnxruntime it returns the model outputs, and intermediate
tensors are dropped once consumed). Median of 5 rounds after a warm-up, the calls interleaved in each round.
Prints one JSON line per figure and the ratio; floor: emulator within 3x. For information it also times
``run_batch(feeds)`` returning every tensor's codes (what ``verify`` needs for its per-layer report).
Run: python benchmarks/bench_emulator.py [--preset w8a16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def timed_side_by_side(fns: dict, rounds: int = 5, pause: float = 0.3) -> dict:
    """Median seconds of each function, the calls interleaved round by round (after one warm-up each), so
    that a slow spell of the machine hits every contender alike. Each call starts after a short pause:
    onnxruntime's worker threads spin-wait for a while after a run and would otherwise slow whatever runs
    next."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(pause)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="w8a16")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from fpgaformer.compiler.frontend import import_static
    from fpgaformer.compiler.hf_export import export, load_minilm
    from fpgaformer.compiler.quantize import quantize
    from fpgaformer.host.emulator import Emulator

    model, tokenizer = load_minilm()
    lines = (DATA / "sentences.txt").read_text().splitlines()[: args.batch]
    enc = tokenizer(lines, padding="max_length", max_length=128, truncation=True, return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    calib_lines = (DATA / "calibration.txt").read_text().splitlines()
    cenc = tokenizer(calib_lines, padding="max_length", max_length=128, truncation=True, return_tensors="np")
    calib = {k: cenc[k].astype(np.int64)[:, None] for k in ("input_ids", "attention_mask")}
    with tempfile.TemporaryDirectory() as tmp:
        path = export(model, Path(tmp) / "minilm.onnx", 128, "torchscript")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph, static = import_static(path, seq_len=128)
        emulator = Emulator(quantize(graph, args.preset, calib, static))
        feeds = {"input_ids": ids[:, None], "attention_mask": mask[:, None]}
        keep = emulator.graph.outputs
        t = timed_side_by_side({"ort": lambda: session.run(None, {"input_ids": ids, "attention_mask": mask}),
                                "emu": lambda: emulator.run_batch(feeds, keep=keep),
                                "emu_all": lambda: emulator.run_batch(feeds)})
        ort_s, emu_s, emu_all_s = t["ort"], t["emu"], t["emu_all"]
    ratio = emu_s / ort_s
    common = {"model": "all-MiniLM-L6-v2", "seq_len": 128, "batch": args.batch}
    print(json.dumps({"figure": "onnxruntime_float_s", **common, "seconds": round(ort_s, 4)}))
    print(json.dumps({"figure": "emulator_s", **common, "preset": args.preset, "seconds": round(emu_s, 4)}))
    print(json.dumps({"figure": "emulator_every_tensor_s", **common, "preset": args.preset,
                      "seconds": round(emu_all_s, 4), "ratio": round(emu_all_s / ort_s, 2)}))
    print(json.dumps({"figure": "emulator_over_onnxruntime", **common, "ratio": round(ratio, 2), "floor": 3.0,
                      "within_floor": ratio <= 3.0}))
    return 0 if ratio <= 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
