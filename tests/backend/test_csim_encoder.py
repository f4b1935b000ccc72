"""Emulator == hls4ml C simulation, every output bit, on encoder blocks (tier 1: needs g++ and hls4ml).

Kernels: block 0 of a tiny BERT (seq 8, d_model 16, 2 heads, FFN 32, GELU) and block 0 of the real
all-MiniLM-L6-v2 at seq 16, at w8a16 and w16a16, each on 32 inputs drawn like calibration samples and pushed
through the whole-graph emulator (so the block sees the inputs it sees in the model). Independent reference for
accuracy: onnxruntime on the float model, at the block's output tensor.
"""

from __future__ import annotations

import numpy as np
import pytest

from fpgaformer.compiler.backend import csim
from fpgaformer.compiler.backend.verify import kernel_feeds, values_of as code_values, verify_kernel
from fpgaformer.compiler.compare import OrtProbe

PRESETS = ("w8a16", "w16a16")
SAMPLES = 32

pytestmark = pytest.mark.csim

ENCODERS = ("tiny_encoder", "minilm")


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", ENCODERS)
def test_block_csim_is_bit_identical_and_as_accurate_as_the_emulator(name, preset, models, kernels):
    q, part, project, compiled = kernels(name, preset)
    samples = models.samples(name)
    envs = kernel_feeds(q, samples)
    result = verify_kernel(project, part.graph, envs)
    assert result.error is None, result.error
    assert result.samples == SAMPLES
    assert result.identical, result.outputs
    assert sum(o["elements"] for o in result.outputs) == SAMPLES * sum(int(np.prod(o.shape)) for o in project.outputs)

    # C simulation vs onnxruntime (float model) at the block output: the same error as the emulator's
    _, static, _ = models.onnx(name)
    out = project.outputs[0]
    probe = OrtProbe(static, [out.tensor])
    inputs = {p.tensor: np.stack([code_values(e[p.tensor], p.fixed) for e in envs]) for p in project.inputs}
    got = csim.run_kernel(project, compiled.lib, inputs)[out.tensor]
    csim_err, emu_err, scale = 0.0, 0.0, 0.0
    for i, env in enumerate(envs):
        ref = probe.run({k: v[i] for k, v in samples.items()})[out.tensor].astype(np.float64)
        keep = samples["attention_mask"][i].reshape(-1).astype(bool)  # padded rows are not compared
        rows = lambda a: np.asarray(a).reshape(ref.shape)[..., keep, :]  # noqa: E731
        csim_err = max(csim_err, float(np.max(np.abs(rows(got[i]) - rows(ref)))))
        emu_err = max(emu_err, float(np.max(np.abs(rows(code_values(env[out.tensor], out.fixed)) - rows(ref)))))
        scale = max(scale, float(np.max(np.abs(rows(ref)))))
    assert csim_err == emu_err
    assert emu_err <= 0.05 * scale, (emu_err, scale)
    print(f"{name} {preset}: C-sim vs onnxruntime max abs err {csim_err:.4g} (output range {scale:.3g}), "
          f"emulator {emu_err:.4g}; g++ {compiled.seconds:.1f} s, C-sim {result.csim_s:.2f} s, "
          f"emulator {result.emulator_s:.3f} s for {SAMPLES} inputs")
