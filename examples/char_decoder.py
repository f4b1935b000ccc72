"""Text generation end to end with a small character-level decoder trained here, on text that ships with Python.

    train (torch, about a minute on CPU) -> export ONNX (logits, seq_len = context) + tokenizer.json ->
    fpgaformer compile --precision -> fpgaformer build --board -> fpgaformer generate --emulate

The training text is the Zen of Python (the ``this`` module); the model learns it well enough that its
logits are sharp, which is what a token-agreement test needs (random-init logits are too flat). Greedy generation through the emulated overlay is compared with onnxruntime
greedy generation (full recompute each step).

Run:  python examples/char_decoder.py [--out build/char] [--seconds 60] [--precision w16a16]
"""

from __future__ import annotations

import argparse
import codecs
import sys
import time
from pathlib import Path

import numpy as np

CONTEXT = 64
PROMPTS = ["Beautiful is ", "Explicit is", "Simple is better", "Flat is ", "Errors should ",
           "In the face of ", "Now is better ", "If the implementation ", "Namespaces are ", "Readability"]


def training_text() -> str:
    """The Zen of Python, from the source of the ``this`` module (read, not imported: importing prints it)."""
    import importlib.util
    import re

    source = Path(importlib.util.find_spec("this").origin).read_text()
    encoded = re.search(r's = """(.*?)"""', source, re.S).group(1)
    return codecs.decode(encoded, "rot13")


def vocabulary(text: str) -> list[str]:
    return sorted(set(text))


def make_model(vocab_size: int, context: int = CONTEXT):
    import transformers

    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=vocab_size, n_positions=context,
                                  bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                                  attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation="eager")


def train(seconds: float = 60.0, seed: int = 0, context: int = CONTEXT, max_steps: int = 800, log=print):
    """Train for about ``seconds`` on CPU (or ``max_steps``); returns (model, vocab, final loss)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(8, torch.get_num_threads())))
    text = training_text()
    vocab = vocabulary(text)
    index = {ch: i for i, ch in enumerate(vocab)}
    data = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    model = make_model(len(vocab), context).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    start, step, loss_value = time.perf_counter(), 0, float("nan")
    while time.perf_counter() - start < seconds and step < max_steps:
        for group in opt.param_groups:  # linear warm-up over 20 steps
            group["lr"] = 1e-2 * min(1.0, (step + 1) / 20)
        at = torch.randint(0, data.numel() - context - 1, (16,), generator=gen)
        x = torch.stack([data[i:i + context] for i in at])
        out = model(input_ids=x, labels=x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        step += 1
        loss_value = float(out.loss.detach())
        if step % 100 == 0:
            log(f"step {step}: loss {loss_value:.3f} ({time.perf_counter() - start:.0f} s)")
    log(f"trained {step} steps in {time.perf_counter() - start:.0f} s, loss {loss_value:.3f}")
    return model.eval(), vocab, loss_value


def write_tokenizer(vocab: list[str], path: Path) -> Path:
    """A character-level tokenizer.json (tokenizers package): one token per character, decoded by fusing."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({ch: i for i, ch in enumerate(vocab)}, unk_token=vocab[0]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.save(str(path))
    return Path(path)


def export_model(model, vocab: list[str], folder: Path, context: int = CONTEXT, with_past: bool = False) -> Path:
    """model.onnx (input_ids, attention_mask -> logits at seq_len = context) + tokenizer.json in ``folder``;
    ``with_past``: the export carries the KV cache (past_key_values in, present out, dynamic lengths)."""
    from fpgaformer.compiler.hf_export import export, export_with_past

    folder.mkdir(parents=True, exist_ok=True)
    write_tokenizer(vocab, folder / "tokenizer.json")
    if with_past:
        return export_with_past(model, folder / "model.onnx")
    return export(model, folder / "model.onnx", context, "torchscript", output="logits")


def encode(vocab: list[str], text: str) -> list[int]:
    index = {ch: i for i, ch in enumerate(vocab)}
    return [index[ch] for ch in text if ch in index]


def ort_greedy(onnx_path: Path, prompt: list[int], new_tokens: int, context: int = CONTEXT) -> list[int]:
    """Reference: onnxruntime greedy generation, recomputing the full (padded) sequence every step."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ids = list(prompt)
    out = []
    for _ in range(new_tokens):
        if len(ids) > context:
            break
        n = len(ids)
        x = np.zeros((1, context), np.int64)
        x[0, :n] = ids
        mask = np.zeros((1, context), np.int64)
        mask[0, :n] = 1
        logits = sess.run(None, {"input_ids": x, "attention_mask": mask})[0]
        token = int(np.argmax(logits[0, n - 1]))
        out.append(token)
        ids.append(token)
        if len(ids) >= context:
            break
    return out


def ort_greedy_with_past(onnx_path: Path, prompt: list[int], new_tokens: int) -> list[int]:
    """Reference for a with-past export: onnxruntime greedy generation with the model's own KV cache (the
    prompt in one call, then one token per call, present fed back as past)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    caches = [i for i in sess.get_inputs() if i.name.startswith("past")]
    past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in caches}
    ids, out = list(prompt), []
    step = np.asarray(ids, np.int64)
    for _ in range(new_tokens):
        result = sess.run(None, {"input_ids": step[None], "attention_mask": np.ones((1, len(ids)), np.int64),
                                 **past})
        past = dict(zip([i.name for i in caches], result[1:]))
        token = int(np.argmax(result[0][0, -1]))
        out.append(token)
        ids.append(token)
        step = np.array([token], np.int64)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/char"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--precision", default="w16a16")
    parser.add_argument("--board", default="kv260")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args(argv)

    from fpgaformer.compiler.cli import main as cli

    model, vocab, _ = train(args.seconds)
    onnx_path = export_model(model, vocab, args.out.parent / f"{args.out.name}-model")
    print(f"exported {onnx_path} and tokenizer.json")
    if cli(["compile", str(onnx_path), "--seq-len", str(CONTEXT), "--precision", args.precision,
            "-o", str(args.out)]) != 0:
        return 1
    if cli(["build", str(args.out), "--board", args.board]) != 0:
        return 1
    if cli(["generate", str(args.out), "--emulate", "--prompt", PROMPTS[0], "--max-new-tokens",
            str(args.new_tokens), "--greedy"]) != 0:
        return 1

    from fpgaformer.host.artifact import load_artifact
    from fpgaformer.host.engine import Engine
    from fpgaformer.host.generate import Generator, Sampling
    from fpgaformer.host.sim_device import SimDevice

    engine = Engine.open(args.out, SimDevice())
    gen = Generator(engine, Sampling(greedy=True))
    agree = total = 0
    for prompt in PROMPTS:
        ids = encode(vocab, prompt)
        got = gen.generate(ids, args.new_tokens)
        want = ort_greedy(onnx_path, ids, args.new_tokens)
        same = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        agree += same
        total += len(want)
        print(f"{prompt!r}: {same}/{len(want)} tokens agree -> {''.join(vocab[t] for t in got)!r}")
    print(f"agreement with onnxruntime greedy at {args.precision}: {agree}/{total} tokens "
          f"(prefix agreement per prompt)")
    _ = load_artifact
    return 0 if agree == total or args.precision != "w16a16" else 1


if __name__ == "__main__":
    sys.exit(main())
