"""Shared, session-cached models and compiled kernels for the backend tests (C simulation is slow: each kernel
is written and compiled once per session)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fpgaformer.compiler.passes.calibrate import synthetic_samples

SAMPLES = 32  # inputs per kernel and preset (the tests assert this count)


def tiny_bert():
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=16, num_attention_heads=2, intermediate_size=32, num_hidden_layers=1,
                                  vocab_size=100, max_position_embeddings=16, hidden_act="gelu")
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


def tiny_llama():
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, vocab_size=64, max_position_embeddings=32)
    return transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="eager").eval()


class Models:
    """Exports, imports and quantizes on first use; everything is kept for the session."""

    def __init__(self, root, minilm_loader):
        self.root = root
        self._minilm = minilm_loader
        self.cache: dict = {}

    def onnx(self, name: str):
        key = ("onnx", name)
        if key not in self.cache:
            from fpgaformer.compiler.frontend import import_static
            from fpgaformer.compiler.hf_export import export

            if name == "tiny_encoder":
                path = export(tiny_bert(), self.root / "tiny_encoder.onnx", 8, "torchscript")
                seq = 8
            elif name == "minilm":
                path = export(self._minilm()[0], self.root / "minilm16.onnx", 16, "torchscript")
                seq = 16
            elif name == "tiny_llama":
                path = export(tiny_llama(), self.root / "tiny_llama.onnx", 16, "torchscript", output="logits")
                seq = 16
            elif name == "tiny_llama_past":  # the same model exported with past_key_values / present
                from fpgaformer.compiler.hf_export import export_with_past

                path = export_with_past(tiny_llama(), self.root / "tiny_llama_past.onnx")
                seq = 16
            else:
                raise KeyError(name)
            graph, static = import_static(path, seq_len=seq)
            self.cache[key] = (graph, static, path)
        return self.cache[key]

    def quantized(self, name: str, preset: str):
        key = ("q", name, preset)
        if key not in self.cache:
            from fpgaformer.compiler.quantize import quantize

            graph, static, _ = self.onnx(name)
            self.cache[key] = quantize(graph, preset, synthetic_samples(graph, 16, seed=0), static)
        return self.cache[key]

    def samples(self, name: str, n: int = SAMPLES):
        graph, _, _ = self.onnx(name)
        return synthetic_samples(graph, n, seed=7)


@pytest.fixture(scope="session")
def models(tmp_path_factory, request):
    def load_minilm():
        from fpgaformer.compiler.hf_export import load_minilm as load

        return load()

    pytest.importorskip("torch")
    return Models(tmp_path_factory.mktemp("backend_models"), load_minilm)


@pytest.fixture(scope="session")
def kernels(tmp_path_factory, models):
    """kernels(model, preset) -> (quantized graph, partition, KernelProject, compiled lib) of block 0."""
    from fpgaformer.compiler.backend import csim
    from fpgaformer.compiler.backend.hls4ml import write_project
    from fpgaformer.compiler.partition import partition

    root = tmp_path_factory.mktemp("backend_kernels")
    made: dict = {}

    def get(name: str, preset: str):
        if shutil.which("g++") is None:
            pytest.skip("g++ is not installed")
        pytest.importorskip("hls4ml")
        key = (name, preset)
        if key not in made:
            q = models.quantized(name, preset)
            part = partition(q)[0]
            project = write_project(part, root / f"{name}_{preset}" / "hls")
            made[key] = (q, part, project, csim.compile_kernel(project))
        return made[key]

    return get

