"""Bad values at the runtime's edge: token ids that would alias other ids in the 32-bit lanes, inputs of the
wrong shape or kind, and bad numbers on the run/generate command lines are refused with a sentence (exit 2,
no traceback), before anything is sent; the documented forms still run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import assert_refused, run_cli

SEQ, CONTEXT = 8, 16
ENC_VOCAB, DEC_VOCAB = 100, 64


def _silent(*_args, **_kwargs):
    pass


@pytest.fixture(scope="module")
def encoder_build(tmp_path_factory):
    """A one-block BERT (vocabulary 100) compiled at w8a16 for 8 tokens; run emulated (no overlay build)."""
    pytest.importorskip("torch")
    import torch
    import transformers

    from fpgaformer.compiler.cli import compile_model
    from fpgaformer.compiler.hf_export import export

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=1,
                                  vocab_size=ENC_VOCAB, max_position_embeddings=16)
    folder = tmp_path_factory.mktemp("bad_rt_encoder")
    path = export(transformers.BertModel(cfg, add_pooling_layer=False).eval(), folder / "model.onnx", SEQ)
    compile_model(path, folder / "build", seq_len=SEQ, precision="w8a16", log=_silent)
    return folder / "build"


@pytest.fixture(scope="module")
def decoder_build(tmp_path_factory):
    """A one-layer LLaMA (vocabulary 64) compiled at w16a16 over a context of 16; run emulated."""
    pytest.importorskip("torch")
    import torch
    import transformers

    from fpgaformer.compiler.cli import compile_model
    from fpgaformer.compiler.hf_export import export

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, vocab_size=DEC_VOCAB, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="eager").eval()
    folder = tmp_path_factory.mktemp("bad_rt_decoder")
    path = export(model, folder / "model.onnx", CONTEXT, output="logits")
    compile_model(path, folder / "build", seq_len=CONTEXT, precision="w16a16", log=_silent)
    return folder / "build"


def _engine(build, **kw):
    from fpgaformer.compiler.run_cli import open_engine

    return open_engine(build, emulate=True, log=_silent, **kw)


# ------------------------------------------------------------------------------------------ token ids
@pytest.mark.parametrize("ids", [[2**32 + 1], [-1], [DEC_VOCAB], np.array([2**64 - 1], np.uint64),
                                 np.array([1.0]), [1.5], np.array([2**32 + 1], np.int64), [2**70]],
                         ids=["2**32+1", "negative", "vocab", "uint64", "float 1.0", "float 1.5", "int64 2**32+1",
                              "beyond 64 bits"])
def test_prefill_refuses_ids_that_would_alias_in_the_32_bit_lanes(decoder_build, ids):
    engine = _engine(decoder_build)
    launches = engine.stats.launches
    with pytest.raises(ValueError, match="out of range|must be integers"):
        engine.prefill(ids)
    assert engine.stats.launches == launches  # refused before anything was sent


def test_step_refuses_ids_outside_the_vocabulary_and_the_edge_id_runs(decoder_build):
    engine = _engine(decoder_build)
    engine.prefill([1, 2, 3])
    for bad in (2**32 + 1, -1, DEC_VOCAB, 2.0):
        with pytest.raises(ValueError, match="out of range|must be integers"):
            engine.step(bad)
    assert engine.step(DEC_VOCAB - 1).shape == (DEC_VOCAB,)  # the last id of the vocabulary is fine


def test_generate_cli_refuses_an_id_that_aliases_id_1(decoder_build, capsys):
    """--ids 4294967297 was run as --ids 1 (the low 32 bits), exit 0; onnxruntime refuses such an id."""
    code, out, _ = run_cli(capsys, "generate", decoder_build, "--emulate", "--ids", "1", "--max-new-tokens", "2",
                           "--json")
    assert code == 0 and len(json.loads(out.splitlines()[-1])["tokens"]) == 2
    for ids, flag in (("4294967297", "--ids"), ("3,-1", "--ids"), (str(DEC_VOCAB), "--ids")):
        code, _, err = run_cli(capsys, "generate", decoder_build, "--emulate", "--ids", ids, "--max-new-tokens", "2")
        assert_refused(code, err, flag, "out of range", f"{DEC_VOCAB} ids")
    code, _, err = run_cli(capsys, "generate", decoder_build, "--emulate", "--ids", "1", "--max-new-tokens", "2",
                           "--stop-ids", "4294967297")
    assert_refused(code, err, "--stop-ids", "out of range")


def test_encode_refuses_ids_outside_the_vocabulary(encoder_build):
    engine = _engine(encoder_build)
    ids = np.arange(SEQ, dtype=np.int64)[None, None]
    mask = np.ones((1, 1, SEQ), np.int64)
    engine.encode({"input_ids": ids, "attention_mask": mask})
    for bad in (ids + 2**32, ids - 1, ids.astype(np.uint64) + np.uint64(2**63), ids + ENC_VOCAB):
        with pytest.raises(ValueError, match="out of range"):
            engine.encode({"input_ids": bad, "attention_mask": mask})


# -------------------------------------------------------------------------------------- run --inputs
def _save(path, ids, mask):
    np.savez(path, input_ids=ids, attention_mask=mask)
    return path


def test_run_inputs_must_be_whole_sequences_not_any_multiple_of_one(encoder_build, tmp_path, capsys):
    """Two 8-token sequences given as one 16-token row, a transposed batch and an empty batch ran (exit 0)
    because encode reshaped by size; now each is refused with the shapes it accepts."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, ENC_VOCAB, (2, SEQ))
    mask = np.ones((2, SEQ), np.int64)
    for name, (i, m) in {"joined": (ids.reshape(1, 2 * SEQ), mask.reshape(1, 2 * SEQ)),
                         "transposed": (ids.T, mask.T), "empty": (ids[:0], mask[:0]),
                         "flat": (ids.reshape(-1), mask.reshape(-1))}.items():
        code, _, err = run_cli(capsys, "run", encoder_build, "--emulate", "--inputs", _save(tmp_path / f"{name}.npz",
                                                                                               i, m))
        assert_refused(code, err, "'input_ids'", f"(N, 1, {SEQ}) or (N, {SEQ})")


def test_run_inputs_of_both_documented_shapes_give_the_same_outputs(encoder_build, tmp_path, capsys):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, ENC_VOCAB, (3, SEQ))
    mask = np.ones((3, SEQ), np.int64)
    outs = []
    for name, (i, m) in {"flat": (ids, mask), "batched": (ids[:, None], mask[:, None])}.items():
        out = tmp_path / f"out_{name}.npz"
        code, _, err = run_cli(capsys, "run", encoder_build, "--emulate", "--inputs",
                               _save(tmp_path / f"{name}.npz", i, m), "-o", out)
        assert code == 0, err
        with np.load(out) as z:
            outs.append({k: z[k] for k in z.files})
    assert outs[0].keys() == outs[1].keys()
    for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k])


@pytest.mark.parametrize("kind", ["float", "complex", "string", "bool"])
def test_run_inputs_of_the_wrong_kind_are_refused_with_a_sentence(encoder_build, tmp_path, capsys, kind):
    ids = np.arange(SEQ)[None]
    cast = {"float": float, "complex": complex, "string": str, "bool": bool}[kind]
    path = _save(tmp_path / "bad.npz", ids.astype(cast), np.ones((1, SEQ), np.int64))
    code, _, err = run_cli(capsys, "run", encoder_build, "--emulate", "--inputs", path)
    assert_refused(code, err, "'input_ids'", "integers")


# ---------------------------------------------------------------------------------- max new tokens
def test_max_new_tokens_zero_generates_nothing_and_negative_is_refused(decoder_build, capsys):
    from fpgaformer.host.generate import Generator

    engine = _engine(decoder_build)
    gen = Generator(engine)
    assert gen.generate([1, 2, 3], 0) == []
    assert gen.last.finish == "length" and engine.stats.launches == 0
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.generate([1, 2, 3], -1)
    code, out, err = run_cli(capsys, "generate", decoder_build, "--emulate", "--ids", "1,2", "--max-new-tokens", "0",
                             "--json")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["tokens"] == []
    code, _, err = run_cli(capsys, "generate", decoder_build, "--emulate", "--ids", "1,2", "--max-new-tokens", "-1")
    assert_refused(code, err, "--max-new-tokens")


# ------------------------------------------------------------------------------------------ numbers
RUN_BAD = [("--timeout", "nan"), ("--timeout", "inf"), ("--timeout", "0"), ("--timeout", "-1"), ("--count", "-3"),
           ("--count", "0"), ("--batch", "0"), ("--batch", "-2")]
GENERATE_BAD = [("--timeout", "nan"), ("--timeout", "inf"), ("--timeout", "0"), ("--stop-ids", "a"),
                ("--top-k", "-1"), ("--top-p", "0"), ("--top-p", "1.5"), ("--top-p", "nan"), ("--temperature", "0"),
                ("--temperature", "-1"), ("--temperature", "nan"), ("--temperature", "inf"), ("--seed", "-1")]


@pytest.mark.parametrize("flag,value", RUN_BAD, ids=[f"{f}={v}" for f, v in RUN_BAD])
def test_run_refuses_bad_numbers(encoder_build, capsys, flag, value):
    code, _, err = run_cli(capsys, "run", encoder_build, "--emulate", flag, value)
    assert_refused(code, err, f"{flag} must be")


@pytest.mark.parametrize("flag,value", GENERATE_BAD, ids=[f"{f}={v}" for f, v in GENERATE_BAD])
def test_generate_refuses_bad_numbers(decoder_build, capsys, flag, value):
    code, _, err = run_cli(capsys, "generate", decoder_build, "--emulate", "--ids", "1", "--max-new-tokens", "2",
                           flag, value)
    assert_refused(code, err, f"{flag} must be")


def test_engine_and_sampling_refuse_bad_numbers_from_the_api(decoder_build):
    from fpgaformer.host.generate import Sampling

    for timeout in (float("nan"), float("inf"), 0, -1):
        with pytest.raises(ValueError, match="timeout"):
            _engine(decoder_build, timeout=timeout)
    for kw in ({"temperature": float("nan")}, {"temperature": float("inf")}, {"top_p": float("nan")},
               {"top_k": -1}, {"top_k": 2.5}):
        with pytest.raises(ValueError):
            Sampling(**kw)


def test_run_output_in_a_missing_folder_is_refused_before_running(tmp_path, capsys):
    """`run -o` into a folder that does not exist gave a traceback after the whole run."""
    code, _, err = run_cli(capsys, "run", tmp_path / "nowhere_build", "--emulate", "-o", tmp_path / "no" / "out.npz")
    assert_refused(code, err, "does not exist")


def test_a_file_that_is_not_a_tokenizer_is_refused(tmp_path, capsys):
    bogus = tmp_path / "tokenizer.json"
    bogus.write_text("this is not a tokenizer")
    from fpgaformer.compiler.errors import UserError
    from fpgaformer.compiler.run_cli import find_tokenizer

    with pytest.raises(UserError, match="not a tokenizer file"):
        find_tokenizer(tmp_path, bogus)
