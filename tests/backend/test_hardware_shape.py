"""Hardware shape of the generated kernels: dataflow top, Resource-strategy MAC engines, the synthesis view
(FF_SYNTH) and the source checker (compiler/backend/check.py). C-simulation equality proves the arithmetic;
these prove the architecture. The tests that build a project need g++ and hls4ml (marker csim)."""

from __future__ import annotations

import copy
import math
import re
import shutil

import numpy as np
import pytest

from fpgaformer.compiler.backend.check import check_sources, compile_synthesis_config, evaluate
from fpgaformer.compiler.backend.hardware import SYNTH_GUARD, shape_top

# reuse factors per IR layer role: some divide the row's MACs, some do not, some exceed them
LINEAR_RF = {"query": 4, "key": 7, "value": 48, "attention/output": 3, "intermediate": 512, "output/dense": 1000}
MATMUL_RF = (5, 128)  # scores (128 MACs per query row: n_mult 26, 5 cycles), context (n_mult 1)


# ------------------------------------------------------------------------------------------ no g++ needed
TOP = """#include "parameters.h"

void blk(
    input_t x[128], input2_t mask[8],
    result_t y[128]
) {

    // hls-fpga-machine-learning insert IO
    #pragma HLS ARRAY_RESHAPE variable=x complete dim=0
    #pragma HLS ARRAY_RESHAPE variable=mask complete dim=0
    #pragma HLS ARRAY_PARTITION variable=y complete dim=0
    #pragma HLS INTERFACE ap_vld port=x,mask,y
    #pragma HLS PIPELINE

#ifndef __SYNTHESIS__
    static bool loaded_weights = false;
#endif
    layer3_t layer3_out[64];
    #pragma HLS ARRAY_PARTITION variable=layer3_out complete dim=0
    layer4_t layer4_out[65];
    #pragma HLS ARRAY_PARTITION variable=layer4_out complete dim=0
}
"""


def test_shape_top_makes_a_dataflow_top_and_keeps_only_small_register_arrays():
    out = shape_top(TOP, "blk")
    assert "#pragma HLS DATAFLOW" in out and "PIPELINE" not in out
    assert "variable=layer3_out" in out and "variable=mask" in out  # <= 64 elements stay partitioned
    assert "variable=layer4_out" not in out and "variable=x " not in out and "variable=y" not in out
    assert "#pragma HLS INTERFACE ap_vld port=mask" in out
    assert "#pragma HLS INTERFACE ap_memory port=x,y" in out
    assert SYNTH_GUARD in out and "#ifndef __SYNTHESIS__" not in out
    assert shape_top(out, "blk") == out  # idempotent


def test_constant_expressions_are_evaluated_like_cpp():
    env = {"CONFIG_T::n_in": 16, "CONFIG_T::n_out": 16, "CONFIG_T::reuse_factor": 7}
    rm = evaluate("CONFIG_T::n_in * CONFIG_T::n_out", env)
    rf = evaluate("CONFIG_T::reuse_factor < 1 ? 1 : (CONFIG_T::reuse_factor > 256 ? 256 : CONFIG_T::reuse_factor)",
                  env)
    assert (rm, rf) == (256, 7)
    assert evaluate("(256 + 7 - 1) / 7", env) == 37
    assert evaluate("-7 / 2", env) == -3 and evaluate("-7 % 2", env) == -1  # truncation, as in C++
    with pytest.raises(ValueError):
        evaluate("x.size()", env)


# ------------------------------------------------------------------------------------- written projects
def _row_macs(layer, graph) -> int:
    if layer.op == "Linear":
        k, n = layer.params["weight"].shape
        return int(k) * int(n)
    out = graph.tensors[layer.output].shape
    k = graph.tensors[layer.inputs[0]].shape[-1]
    return int(np.prod(out[:-2])) * int(out[-1]) * int(k)


@pytest.fixture(scope="module")
def shaped(models, tmp_path_factory):
    """Block 0 of the tiny encoder (w8a16) with reuse factors > 1 on every MAC layer, written and compiled:
    (quantized graph, partition, project, compiled, plan {IR layer name: multipliers})."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    pytest.importorskip("hls4ml")
    from fpgaformer.compiler.backend import csim
    from fpgaformer.compiler.backend.hls4ml import write_project
    from fpgaformer.compiler.partition import partition

    q = copy.deepcopy(models.quantized("tiny_encoder", "w8a16"))  # the session's graph stays untouched
    part = partition(q)[0]
    plan = {}
    matmuls = iter(MATMUL_RF)
    for layer in part.graph.layers:
        if layer.op == "Linear":
            rf = next(v for k, v in LINEAR_RF.items() if f"/{k}/" in layer.name)
        elif layer.op == "MatMul":
            rf = next(matmuls)
        else:
            continue
        layer.hw["reuse_factor"] = rf
        row_macs = _row_macs(layer, part.graph)
        plan[layer.name] = math.ceil(row_macs / max(1, min(rf, row_macs)))
    assert len(plan) == 8 and any(_row_macs(l, part.graph) % l.hw["reuse_factor"] for l in part.graph.layers
                                  if l.name in plan)
    project = write_project(part, tmp_path_factory.mktemp("hw_shape") / "hls")
    return q, part, project, csim.compile_kernel(project), plan


@pytest.mark.csim
def test_reuse_factors_keep_csim_bit_identical_to_the_emulator(shaped, models):
    from fpgaformer.compiler.backend.verify import kernel_feeds, verify_kernel

    q, part, project, _, _ = shaped
    result = verify_kernel(project, part.graph, kernel_feeds(q, models.samples("tiny_encoder")))
    assert result.error is None, result.error
    assert result.samples > 0 and result.identical, result.outputs


@pytest.mark.csim
def test_generated_kernels_have_the_planned_multipliers(shaped):
    _, _, project, _, plan = shaped
    params = (project.path / "firmware" / "parameters.h").read_text()
    assert re.search(r"static const unsigned reuse_factor = 7;", params)
    top = (project.path / "firmware" / f"{project.project}.cpp").read_text()
    assert "#pragma HLS DATAFLOW" in top and "#pragma HLS PIPELINE" not in top
    assert check_sources(project.path, plan) == []
    assert check_sources([project.path]) == []


@pytest.mark.csim
def test_synthesis_view_compiles_with_weights_from_initialisers(shaped):
    _, _, project, _, _ = shaped
    ok, log = compile_synthesis_config(project.path)
    assert ok, log
    weights = (project.path / "firmware" / "weights")
    assert all(SYNTH_GUARD in h.read_text() for h in weights.glob("*.h"))


@pytest.mark.csim
def test_synthesis_view_without_the_guards_is_refused(shaped, tmp_path):
    _, _, project, _, _ = shaped
    bad = tmp_path / "unguarded"
    shutil.copytree(project.path, bad)
    for h in (bad / "firmware" / "weights").glob("*.h"):  # hls4ml's guard: no initialiser unless __SYNTHESIS__
        h.write_text(h.read_text().replace(SYNTH_GUARD, "#ifndef __SYNTHESIS__"))
    ok, log = compile_synthesis_config(bad)
    assert not ok and "has no initialiser in the synthesis view" in log, log


@pytest.mark.csim
def test_checker_rejects_oversized_and_non_hardware_sources(shaped, tmp_path):
    _, _, project, _, plan = shaped
    # a plan with fewer multipliers than a kernel's n_mult
    name = next(n for n, m in plan.items() if m > 1)
    problems = check_sources(project.path, {**plan, name: plan[name] - 1})
    assert len(problems) == 1 and f"n_mult = {plan[name]} multipliers exceed the plan's {plan[name] - 1}" in \
        problems[0], problems

    # a hand-edited copy: a big table partitioned completely, a whole-function pipeline, m_axi without depth,
    # malloc, recursion, a loop bound read from data
    bad = tmp_path / "bad"
    shutil.copytree(project.path, bad)
    weights = {h.stem: h.read_text() for h in (bad / "firmware" / "weights").glob("*.h")}
    big, size = max(((k, int(m.group(1))) for k, t in weights.items()
                     for m in [re.search(rf"\b{k}\[(\d+)\]", t)] if m), key=lambda kv: kv[1])
    assert size > 4096
    top = bad / "firmware" / f"{project.project}.cpp"
    text = top.read_text()
    text = text.replace("#pragma HLS DATAFLOW", f"#pragma HLS PIPELINE\n    #pragma HLS ARRAY_PARTITION variable={big} "
                        "complete dim=0\n    #pragma HLS INTERFACE m_axi port=layer3_out\n"
                        "    int *scratch = (int *)malloc(64);", 1)
    text += "\nvoid again(int n) {\n    if (n > 0)\n        again(n - 1);\n}\n"
    top.write_text(text)
    softmax = bad / "firmware" / "nnet_utils" / "ff_softmax.h"
    softmax.write_text(softmax.read_text().replace("r < CONFIG_T::n_rows;", "r < unsigned(x[0]);", 1))
    problems = check_sources(bad, plan)
    text = "\n".join(problems)
    assert f"array {big} of {size} elements is partitioned completely, more than 4096" in text, text
    assert "'#pragma HLS PIPELINE' applies to the whole function" in text, text
    assert "m_axi interface of port layer3_out has no depth=" in text, text
    assert "dynamic allocation 'malloc'" in text, text
    assert "function again is recursive" in text, text
    assert "loop Rows has a bound that is not a compile-time constant" in text, text

    # the kernels hls4ml-style (no n_mult, row pipeline) are refused too
    linear = bad / "firmware" / "nnet_utils" / "ff_linear.h"
    linear.write_text(linear.read_text().replace("static const unsigned n_mult", "static const unsigned n_lanes")
                      .replace("n_mult", "n_lanes"))
    assert sum("defines no compile-time 'static const n_mult'" in p for p in check_sources(bad, plan)) == len(plan)
