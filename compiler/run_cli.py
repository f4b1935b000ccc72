"""``fpgaformer run`` (encoders: batches of sequences) and ``fpgaformer generate`` (decoders: streamed tokens).

Both open the BUILD's artifact on a Device: ``--board`` = PynqDevice on the board's PL, ``--emulate`` = the
register-accurate SimDevice of the same overlay (``--via-pynq`` drives it through the real pynq package).
The engine code is the same in every mode. Device errors and artifact/overlay mismatches are user errors
(one paragraph, exit 2).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from . import validate
from .errors import UserError


# ------------------------------------------------------------------------------------------------ devices
def open_engine(build: Path, emulate: bool, via_pynq: bool = False, timeout: float = 10.0, batch: int = 8,
                coherence: str = "shared", csim: bool = False, log=print):
    """The Engine of ``build`` on the chosen device (the contract is generated in memory when an emulated
    BUILD has not been through `fpgaformer build`)."""
    from ..host.artifact import load_artifact
    from ..host.device import DeviceError
    from ..host.engine import Engine
    from ..host.protocol import CONTRACT_FILE, Contract, ContractError, make_contract

    build = Path(build)
    graph, manifest = load_artifact(build)
    try:
        if (build / CONTRACT_FILE).is_file():
            contract = Contract.load(build)
        elif emulate and not csim:
            contract = make_contract(graph, manifest)
            log(f"note: {build} has no {CONTRACT_FILE} (run `fpgaformer build {build} --board NAME`); emulating "
                "the overlay for a generic Zynq UltraScale+ board")
        else:
            raise ContractError(f"{build} has no overlay: run `fpgaformer build {build} --board NAME` and the "
                                "vendor tools it prints, or use --emulate")
        if csim:
            from ..host.csim_device import CsimDevice

            if not (build / CONTRACT_FILE).is_file():
                raise ContractError(f"{build} has no overlay to C-simulate: run `fpgaformer build {build} "
                                    "--board NAME` first")
            device = CsimDevice(_overlay_library(build, log), graph, coherence=coherence)
            device.load(build, contract=contract, graph=graph)
            if via_pynq:
                from ..host.pynq_device import PynqDevice

                device = PynqDevice(sim=device)
                device.load(build, contract=contract)
        elif emulate:
            from ..host.sim_device import SimDevice

            sim = SimDevice(graph, coherence=coherence)
            sim.load(build, contract=contract, graph=graph)
            if via_pynq:
                from ..host.pynq_device import PynqDevice

                device = PynqDevice(sim=sim)
                device.load(build, contract=contract)
            else:
                device = sim
        else:
            from ..host.pynq_device import PynqDevice

            try:
                import pynq  # noqa: F401
            except ImportError:
                raise UserError("--board needs the pynq package (on the board's image, or "
                                "`pip install fpgaformer[board]`); use --emulate without a board") from None
            device = PynqDevice()
            device.load(build, contract=contract)
        return Engine(device, graph, manifest, timeout=timeout, batch=batch)
    except (ContractError, DeviceError) as e:
        raise UserError(str(e)) from None


def _overlay_library(build: Path, log) -> Path:
    """The BUILD's generated overlay compiled for C simulation (g++; reused while its sources are unchanged)."""
    try:
        from .backend.overlay import compile_overlay
        from .backend.csim import CompileError
        from .backend.hls4ml import BackendError
    except ImportError as e:
        raise UserError(f"C simulation is not available ({e}); install fpgaformer[hls] and g++") from None
    try:
        return compile_overlay(build, progress=lambda m: print(f"C simulation: {m}", file=sys.stderr))
    except (BackendError, CompileError) as e:
        raise UserError(f"the overlay of {build} cannot be C-simulated: {e}") from None


def _device_errors():
    from ..host.device import DeviceError
    from ..host.protocol import ContractError

    return (DeviceError, ContractError)


def print_stats(stats, unit: str, file=None) -> None:
    file = file or sys.stderr  # looked up per call: a default bound at import time outlives a replaced stderr
    s = stats.to_json()
    stages = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in s["stages_s"].items())
    rate = f"{stats.tokens_per_s():.1f} tokens/s, " if stats.new_tokens else ""
    dev = f"; modelled device time {s['device_s'] * 1e3:.3f} ms" if s["device_s"] is not None else ""
    print(f"{s['items']} {unit} in {s['wall_s']:.3f} s ({rate}{s['launches']} launches); host: {stages}{dev}",
          file=file)


# ---------------------------------------------------------------------------------------------------- run
def synthetic_inputs(graph, n: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vocab = int(graph.meta.get("vocab") or 1000)
    masks = {l.inputs[0] for l in graph.layers if l.op == "PaddingMask" and l.inputs}  # by meaning, not name
    out = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        if name in masks and t.dtype != "float32":
            out[name] = np.ones((n, *t.shape), np.int64)
        elif t.dtype == "int64":
            out[name] = rng.integers(0, min(vocab, 30000), size=(n, *t.shape))
        else:
            out[name] = rng.standard_normal((n, *t.shape)).astype(np.float32)
    return out


def _check_device_args(args) -> None:
    """The numbers every runtime command takes (validated once, before a device is opened)."""
    validate.positive(args.timeout, "--timeout", "seconds a launch may take")


def cmd_run(args) -> int:
    _check_device_args(args)
    validate.count(args.batch, "--batch", what="sequences per launch")
    validate.count(args.count, "--count", what="synthetic sequences")
    if args.output is not None and not args.output.parent.is_dir():
        raise UserError(f"-o {args.output}: the folder {args.output.parent} does not exist; create it or write "
                        "the outputs elsewhere.")
    if args.output is not None and args.output.suffix != ".npz":
        raise UserError(f"-o {args.output}: the outputs are written as .npz; give a file name ending in .npz.")
    engine = open_engine(args.build, args.emulate, args.via_pynq, args.timeout, args.batch, args.coherence,
                         args.csim)
    if engine.kind != "encoder":
        raise UserError(f"{args.build} is a decoder; use `fpgaformer generate`")
    if args.inputs is not None:
        try:
            with np.load(args.inputs, allow_pickle=False) as z:
                feeds = {k: z[k] for k in z.files}
        except Exception as e:
            raise UserError(f"cannot read {args.inputs} ({type(e).__name__}: {e}); give an .npz with one array "
                            f"(N, ...) per model input: {', '.join(engine.graph.inputs)}") from None
    else:
        feeds = synthetic_inputs(engine.graph, args.count)
        print(f"no --inputs: running {args.count} synthetic sequences", file=sys.stderr)
    progress = None
    if args.progress:
        def progress(done, total):
            print(f"\r{done}/{total} sequences", end="" if done < total else "\n", file=sys.stderr, flush=True)
    try:
        codes = engine.encode(feeds, codes=True, progress=progress)
    except ValueError as e:
        source = args.inputs if args.inputs is not None else "synthetic inputs"
        raise UserError(f"{source}: {e}.") from None
    except _device_errors() as e:
        raise UserError(str(e)) from None
    from ..host.fixed import to_float

    outputs = {}
    for f in engine.out_rec.fields:
        outputs[f.name] = to_float(codes[f.name], f.fixed) if f.fixed is not None else codes[f.name]
        outputs[f"{f.name}.codes"] = codes[f.name]
    if args.output is not None:  # written whole, then renamed: a partial file never looks complete
        tmp = args.output.with_name(f".{args.output.name}.partial.npz")
        np.savez(tmp, **outputs)
        os.replace(tmp, args.output)
        print(f"wrote {args.output}: " + ", ".join(f"{k} {v.shape}" for k, v in outputs.items()))
    print_stats(engine.stats, "sequences")
    if args.json:
        print(json.dumps(engine.stats.to_json()))
    return 0


# ----------------------------------------------------------------------------------------------- generate
def find_tokenizer(build: Path, explicit: Path | None):
    path = explicit or Path(build) / "tokenizer.json"
    if not Path(path).is_file():
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise UserError("--prompt needs the tokenizers package (pip install tokenizers)") from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises a bare Exception for any unreadable file
        raise UserError(f"{path} is not a tokenizer file the tokenizers library can read ({e}); give the "
                        "tokenizer.json saved with the model (`tokenizer.save(...)` / `save_pretrained`).") from None


def cmd_generate(args) -> int:
    from ..host.generate import Generator, Sampling

    _check_device_args(args)
    validate.count(args.max_new_tokens, "--max-new-tokens", minimum=0, what="0 generates nothing")
    validate.count(args.top_k, "--top-k", minimum=0, what="0: no top-k filter")
    validate.number(args.top_p, "--top-p", low=0, low_open=True, high=1)
    validate.positive(args.temperature, "--temperature", "use --greedy for argmax")
    validate.count(args.seed, "--seed", minimum=0)
    stop = validate.id_list(args.stop_ids, "--stop-ids")
    tokenizer = find_tokenizer(args.build, args.tokenizer)
    if args.prompt is not None:
        if tokenizer is None:
            raise UserError(f"--prompt needs a tokenizer.json in {args.build} (compile copies the one beside the "
                            "model) or --tokenizer PATH; or give token ids with --ids")
        ids = tokenizer.encode(args.prompt, add_special_tokens=False).ids
    else:
        ids = validate.id_list(args.ids, "--ids")
    try:
        sampling = Sampling(greedy=args.greedy or not (args.top_k or args.top_p < 1 or args.temperature != 1.0
                                                        or args.sample),
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    except ValueError as e:
        raise UserError(str(e)) from None
    engine = open_engine(args.build, args.emulate, args.via_pynq, args.timeout, coherence=args.coherence,
                         csim=args.csim)
    if engine.kind != "decoder":
        raise UserError(f"{args.build} is an encoder; use `fpgaformer run`")
    for flag, values in (("--ids" if args.prompt is None else "--prompt", ids), ("--stop-ids", stop)):
        try:
            engine.token_ids(values)  # ids outside the vocabulary would alias others in the 32-bit lanes
        except ValueError as e:
            raise UserError(f"{flag}: {e}; give token ids of this model's vocabulary.") from None
    gen = Generator(engine, sampling, stop_ids=stop)
    tokens: list[int] = []
    shown = ""
    if tokenizer is not None and not args.json:
        print(args.prompt if args.prompt is not None else tokenizer.decode(ids), end="", flush=True)
    try:
        for token in gen.stream(ids, args.max_new_tokens):
            tokens.append(token)
            if args.json:
                continue
            if tokenizer is not None:
                text = tokenizer.decode(tokens)
                print(text[len(shown):], end="", flush=True)
                shown = text
            else:
                print(token, end=" ", flush=True)
    except ValueError as e:
        raise UserError(str(e)) from None
    except _device_errors() as e:
        print(file=sys.stderr)
        raise UserError(str(e)) from None
    if not args.json:
        print()
    result = gen.last
    if args.json:
        print(json.dumps({"prompt_ids": ids, "tokens": tokens, "finish": result.finish,
                          "stats": result.stats.to_json() if result.stats else None}))
    print(f"[{len(tokens)} new tokens, finish: {result.finish}]", file=sys.stderr)
    if result.stats is not None:
        print_stats(result.stats, "tokens processed")
    return 0


# --------------------------------------------------------------------------------------------------- parsers
def _device_args(p) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--emulate", action="store_true", help="the emulated overlay (SimDevice), no board")
    where.add_argument("--board", action="store_true", help="the overlay on this board's PL (pynq)")
    where.add_argument("--csim", action="store_true",
                       help="the generated overlay (fpgaformer_top, ff_model, kernels) compiled with g++ and driven "
                            "through the same register and DMA model (needs `fpgaformer build` first)")
    p.add_argument("--via-pynq", action="store_true",
                   help="with --emulate or --csim: drive the simulated overlay through the real pynq package")
    p.add_argument("--coherence", choices=("shared", "strict"), default="shared",
                   help="emulated memory: shared (non-cacheable) or strict (cacheable / PYNQ.remote)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds a launch may take before it is reset")


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run an encoder BUILD on a batch of sequences (board or emulated overlay)")
    p.add_argument("build", type=Path)
    _device_args(p)
    p.add_argument("--inputs", type=Path, default=None, help=".npz with one (N, ...) array per model input")
    p.add_argument("-o", "--output", type=Path, default=None, help=".npz of the outputs (floats and .codes)")
    p.add_argument("--batch", type=int, default=8, help="sequences per launch (at most)")
    p.add_argument("--count", type=int, default=4, help="synthetic sequences when no --inputs is given")
    p.add_argument("--progress", action="store_true", help="show progress on stderr")
    p.add_argument("--json", action="store_true", help="print the run statistics as one JSON line")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("generate", help="generate tokens with a decoder BUILD, printing them as they come")
    p.add_argument("build", type=Path)
    _device_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ids", help="prompt token ids, comma-separated")
    src.add_argument("--prompt", help="prompt text (needs tokenizer.json in BUILD or --tokenizer)")
    p.add_argument("--tokenizer", type=Path, default=None)
    p.add_argument("--max-new-tokens", type=int, required=True)
    p.add_argument("--greedy", action="store_true", help="argmax decoding (the default without sampling options)")
    p.add_argument("--sample", action="store_true", help="sample (temperature 1, no top-k/top-p unless given)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop-ids", default="", help="comma-separated token ids that end generation")
    p.add_argument("--json", action="store_true", help="print tokens and statistics as one JSON object")
    p.set_defaults(func=cmd_generate)
