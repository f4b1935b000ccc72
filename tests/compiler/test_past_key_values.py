"""Exports that carry their KV cache (past_key_values in, present out) compile to the incremental decoder.

Reference: onnxruntime running the with-past export step by step with *its own* cache (present fed back as
past); fpgaformer runs the compiled graph step by step with the emulator's cache (host/decoder.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fpgaformer.compiler.errors import UserError
from fpgaformer.compiler.frontend import import_static
from fpgaformer.compiler.quantize import quantize
from fpgaformer.host.decoder import IncrementalDecoder
from fpgaformer.host.fixed import to_float

CONTEXT = 16
CHUNKS = [5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]  # a prompt of 5, then 11 single-token steps


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def exports(request, tmp_path_factory, tiny_causal_lm):
    """(with-past export, plain export) of one random-init model."""
    torch = pytest.importorskip("torch")
    from fpgaformer.compiler.hf_export import export, export_with_past

    torch.manual_seed(0)
    model = tiny_causal_lm(request.param)
    folder = tmp_path_factory.mktemp(f"past_{request.param}")
    return (export_with_past(model, folder / "with_past.onnx"),
            export(model, folder / "plain.onnx", CONTEXT, "torchscript", output="logits"))


def test_cache_io_is_folded_away(exports):
    with_past, plain = exports
    graph, static = import_static(with_past, seq_len=CONTEXT)
    source = onnx.load(str(with_past))
    assert any(i.name.startswith("past_key_values") for i in source.graph.input)
    assert graph.inputs == ["input_ids", "attention_mask"] and graph.outputs == ["logits"]
    assert [i.name for i in static.graph.input] == ["input_ids", "attention_mask"]
    folded = graph.meta["folded_kv_cache"]
    assert len(folded["inputs"]) == 4 and all(o.startswith("present") for o in folded["outputs"])
    assert graph.meta["kind"] == "decoder" and sorted(graph.blocks()) == [0, 1]
    # the same compute layers, shapes and roles as the plain causal-LM export of the same weights (the
    # exporters arrange heads with different Reshape/Transpose chains)
    plain_graph, _ = import_static(plain, seq_len=CONTEXT)
    layout = {"Reshape", "Transpose", "Slice", "Concat", "Expand"}

    def signature(g):
        return [(l.op, l.role, l.block, tuple(g.tensors[l.output].shape)) for l in g.layers if l.op not in layout]

    assert signature(graph) == signature(plain_graph)


def test_steps_match_onnxruntime_with_its_own_cache(exports):
    with_past, plain = exports
    graph, static = import_static(with_past, seq_len=CONTEXT)
    quantized = quantize(graph, "w16a16", model=static)
    decoder = IncrementalDecoder(quantized)
    state = decoder.new_state()
    t_out = decoder.emulator.types[quantized.outputs[0]]

    session = ort.InferenceSession(str(with_past), providers=["CPUExecutionProvider"])
    caches = [i for i in session.get_inputs() if i.name.startswith("past")]
    past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in caches}
    ids = np.random.default_rng(2).integers(0, 128, CONTEXT)
    at, worst, scale = 0, 0.0, 0.0
    for size in CHUNKS:
        result = session.run(None, {"input_ids": ids[None, at:at + size],
                                    "attention_mask": np.ones((1, at + size), np.int64), **past})
        past = dict(zip([i.name for i in caches], result[1:]))
        mine = to_float(decoder.step(state, ids[at:at + size]), t_out)
        assert mine.shape == result[0].shape
        worst = max(worst, float(np.abs(mine - result[0]).max()))
        scale = max(scale, float(np.abs(result[0]).max()))
        at += size
    assert worst <= 2e-3 * max(scale, 1.0), (worst, scale)  # w16a16; measured ~1.7e-4 on logits ~0.4

    # and the with-past export compiles to exactly the plain export's design: same codes, step for step
    plain_graph, plain_static = import_static(plain, seq_len=CONTEXT)
    plain_decoder = IncrementalDecoder(quantize(plain_graph, "w16a16", model=plain_static))
    a, b = decoder.new_state(), plain_decoder.new_state()
    np.testing.assert_array_equal(decoder.step(a, ids[:7]), plain_decoder.step(b, ids[:7]))


def test_fixed_cache_shape_is_refused(exports, tmp_path):
    with_past, _ = exports
    model = onnx.load(str(with_past))
    for inp in model.graph.input:
        if inp.name.startswith("past"):
            dims = inp.type.tensor_type.shape.dim
            dims[2].Clear()
            dims[2].dim_value = 3
    path = tmp_path / "static_past.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UserError, match="dynamic past length"):
        import_static(path, seq_len=CONTEXT)
