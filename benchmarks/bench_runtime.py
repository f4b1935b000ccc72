"""Runtime benchmark: host overhead per generated token in emulation, and tokens/s of `generate --emulate`.

Trains the example's character-level decoder (examples/char_decoder.py, --seconds of CPU), compiles it at
w16a16, builds the overlay, then generates greedily on the emulated overlay. Prints one JSON line per figure:

  host_overhead_per_token_ms   (runtime wall time - emulator compute time) / generated tokens: what the
                               engine, the Device model, packing and syncing cost per token
  emulator_compute_per_token_ms  emulator (kernel model) time per generated token
  tokens_per_s                 generated tokens / wall time of `Generator.stream`, emulated
  modelled_device_tokens_per_s generated tokens / modelled device time (the latency model in fpgaformer.json)
  cli_tokens_per_s             the figure `fpgaformer generate --emulate` prints (CLI process, same model)

Run:  python benchmarks/bench_runtime.py [--seconds 30] [--new-tokens 48] [--build build/bench-char]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "bench-char")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "examples"))
    import char_decoder as cd
    from fpgaformer.compiler.build_cli import build_overlay
    from fpgaformer.compiler.cli import compile_model
    from fpgaformer.host.engine import Engine
    from fpgaformer.host.generate import Generator, Sampling
    from fpgaformer.host.sim_device import SimDevice

    quiet = lambda *a: None  # noqa: E731
    model, vocab, loss = cd.train(args.seconds, log=quiet)
    onnx_path = cd.export_model(model, vocab, args.build.parent / f"{args.build.name}-model")
    compile_model(onnx_path, args.build, seq_len=cd.CONTEXT, precision="w16a16", log=quiet)
    build_overlay(args.build, "kv260", log=quiet)

    sim = SimDevice()
    engine = Engine.open(args.build, sim)
    gen = Generator(engine, Sampling(greedy=True))
    prompt = cd.encode(vocab, cd.PROMPTS[0])
    gen.generate(prompt, 4)  # warm-up (emulator tables, first weight decode)
    compute0 = sim.stats["compute_wall_s"]
    tokens = gen.generate(prompt, args.new_tokens)
    stats = gen.last.stats
    compute = sim.stats["compute_wall_s"] - compute0
    n = len(tokens)
    figures = {
        "host_overhead_per_token_ms": (stats.wall_s - compute) / n * 1e3,
        "emulator_compute_per_token_ms": compute / n * 1e3,
        "tokens_per_s": n / stats.wall_s,
        "modelled_device_tokens_per_s": n / stats.device_s if stats.device_s else None,
    }
    for stage, seconds in stats.stages.items():
        figures[f"host_{stage}_per_token_ms"] = seconds / n * 1e3
    proc = subprocess.run([sys.executable, "-m", "fpgaformer.compiler.cli", "generate", str(args.build),
                           "--emulate", "--ids", ",".join(map(str, prompt)), "--max-new-tokens",
                           str(args.new_tokens), "--greedy"], capture_output=True, text=True)
    match = re.search(r"([0-9.]+) tokens/s", proc.stderr)
    figures["cli_tokens_per_s"] = float(match.group(1)) if match else None
    for name, value in figures.items():
        print(json.dumps({"benchmark": "runtime", "figure": name, "value": value, "new_tokens": n,
                          "model": f"char GPT-2 2x64, context {cd.CONTEXT}, w16a16", "train_loss": loss}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
