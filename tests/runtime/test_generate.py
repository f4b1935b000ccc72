"""Decoder generation on the emulated overlay against onnxruntime (full recompute each step), sampling."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fpgaformer.host.generate import Generator, Sampling, filter_logits, sample_token

NEW_TOKENS = 32


def _cli_generate(build, ids, *extra):
    proc = subprocess.run([sys.executable, "-m", "fpgaformer.compiler.cli", "generate", str(build), "--emulate",
                           "--ids", ",".join(map(str, ids)), "--max-new-tokens", str(NEW_TOKENS), "--json", *extra],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_greedy_w16a16_equals_onnxruntime_token_for_token(char_model, char_build):
    cd, vocab, onnx_path, loss = char_model
    build = char_build("w16a16")
    prompts = cd.PROMPTS[:8]
    for prompt in prompts:
        ids = cd.encode(vocab, prompt)
        want = cd.ort_greedy(onnx_path, ids, NEW_TOKENS)
        got = _cli_generate(build, ids, "--greedy")["tokens"]
        assert len(want) == NEW_TOKENS
        assert got == want, (prompt, "".join(vocab[t] for t in got), "".join(vocab[t] for t in want))


def test_with_past_export_generates_like_onnxruntime_with_its_own_cache(char_with_past):
    """An export carrying past_key_values: onnxruntime generates with the export's own cache (present fed back
    as past); the compiled overlay keeps its cache on the device. Same tokens, w16a16 greedy."""
    cd, vocab, onnx_path, build = char_with_past
    for prompt in cd.PROMPTS[:8]:
        ids = cd.encode(vocab, prompt)
        want = cd.ort_greedy_with_past(onnx_path, ids, NEW_TOKENS)
        got = _cli_generate(build, ids, "--greedy")["tokens"]
        assert got == want, (prompt, "".join(vocab[t] for t in got), "".join(vocab[t] for t in want))


def test_default_precision_agreement_is_reported(char_model, char_build, capsys):
    from fpgaformer.host.engine import Engine
    from fpgaformer.host.sim_device import SimDevice

    cd, vocab, onnx_path, loss = char_model
    engine = Engine.open(char_build("w8a16"), SimDevice())
    gen = Generator(engine, Sampling(greedy=True))
    same = total = exact = 0
    for prompt in cd.PROMPTS[:8]:
        ids = cd.encode(vocab, prompt)
        want = cd.ort_greedy(onnx_path, ids, NEW_TOKENS)
        got = gen.generate(ids, NEW_TOKENS)
        prefix = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want))
        same += prefix
        total += len(want)
        exact += got == want
    with capsys.disabled():
        print(f"\nw8a16 greedy agreement with onnxruntime: {same}/{total} tokens before the first difference, "
              f"{exact}/8 prompts identical (training loss {loss:.3f})")
    assert same > 0


def test_prompt_text_uses_the_tokenizer_beside_the_model(char_model, char_build):
    cd, vocab, onnx_path, _ = char_model
    build = char_build("w16a16")
    proc = subprocess.run([sys.executable, "-m", "fpgaformer.compiler.cli", "generate", str(build), "--emulate",
                           "--prompt", "Beautiful is ", "--max-new-tokens", "12", "--greedy"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    want = "".join(vocab[t] for t in cd.ort_greedy(onnx_path, cd.encode(vocab, "Beautiful is "), 12))
    assert proc.stdout.startswith("Beautiful is " + want)
    assert "tokens/s" in proc.stderr


def test_device_argmax_equals_host_argmax(char_build):
    from fpgaformer.host.engine import Engine
    from fpgaformer.host.sim_device import SimDevice

    engine = Engine.open(char_build("w16a16"), SimDevice())
    a = Generator(engine, device_argmax=True).generate([7, 8, 9], 16)
    b = Generator(engine, device_argmax=False).generate([7, 8, 9], 16)
    assert a == b


def test_sampling_is_reproducible_with_a_seed_and_stops(char_build):
    build = char_build("w16a16")
    a = _cli_generate(build, [3, 4, 5], "--top-k", "5", "--top-p", "0.9", "--temperature", "0.8", "--seed", "7")
    b = _cli_generate(build, [3, 4, 5], "--top-k", "5", "--top-p", "0.9", "--temperature", "0.8", "--seed", "7")
    assert a["tokens"] == b["tokens"] and len(a["tokens"]) == NEW_TOKENS
    stop = a["tokens"][3]
    c = _cli_generate(build, [3, 4, 5], "--top-k", "5", "--top-p", "0.9", "--temperature", "0.8", "--seed", "7",
                      "--stop-ids", str(stop))
    first = a["tokens"].index(stop)
    assert c["tokens"] == a["tokens"][:first] and c["finish"] == "stop"


def _reference_filter(logits, temperature, k, p):
    """Brute force: probabilities, keep top-k by value, then the smallest set by descending prob reaching p."""
    x = np.asarray(logits, float) / temperature
    kept = set(range(len(x)))
    if k:
        threshold = sorted(x, reverse=True)[k - 1]
        kept = {i for i in kept if x[i] >= threshold}
    if p < 1:
        probs = {i: np.exp(x[i]) for i in kept}
        z = sum(probs.values())
        chosen, acc = set(), 0.0
        for i in sorted(kept, key=lambda i: (-x[i], i)):
            chosen.add(i)
            acc += probs[i] / z
            if acc >= p:
                break
        kept = chosen
    return kept


@pytest.mark.parametrize("seed", range(6))
def test_top_k_top_p_filter_matches_a_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=30) * 3
    for temperature, k, p in ((1.0, 5, 1.0), (0.7, 0, 0.8), (1.3, 10, 0.5), (1.0, 0, 1.0)):
        s = Sampling(greedy=False, temperature=temperature, top_k=k, top_p=p)
        kept = set(np.flatnonzero(np.isfinite(filter_logits(logits, s))))
        assert kept == _reference_filter(logits, temperature, k, p)
        counts = np.zeros(30)
        draw = np.random.default_rng(0)
        for _ in range(200):
            counts[sample_token(logits, s, draw)] += 1
        assert set(np.flatnonzero(counts)) <= kept
