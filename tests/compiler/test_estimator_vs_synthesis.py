"""The estimator against published csynth results of single hls4ml Dense layers (tests/data/
hls4ml_synthesis_points.json, an independent reference: real Vivado/Vitis HLS reports; sources in
tests/data/README.md), and a closed-form check of the per-layer entry point."""

import json
import statistics
from pathlib import Path

import pytest

from fpgaformer.compiler.estimate_layer import dsp_type_of_part, estimate_dense

DATA = Path(__file__).resolve().parents[1] / "data" / "hls4ml_synthesis_points.json"
POINTS = json.loads(DATA.read_text())["points"]
RESOURCE = [p for p in POINTS if p["strategy"] == "Resource"]


def rel(est: float, rep: float) -> float:
    return abs(est - rep) / max(rep, 1)


def estimate(p: dict) -> dict:
    return estimate_dense(p["n_in"], p["n_out"], p["reuse_factor"], p["strategy"], w_bits=p["weight_bits"],
                          a_bits=p["input_bits"], acc_bits=p.get("accum_bits"), n_zeros=p.get("n_zeros", 0),
                          part=p["part"])


def test_data_has_sources_licences_and_enough_resource_points():
    assert len(RESOURCE) >= 30
    for p in POINTS:
        assert p["source_repo"] and len(p["commit"]) == 40 and p["path"] and p["tool"] and p["part"] and p["licence"]
        assert p["source_repo"] != "jdweitz/wa-hls4ml"   # CC-BY-NC: cited, never copied


@pytest.mark.parametrize("key, field, goal", [("dsp", "DSP", 0.10), ("bram18", "BRAM_18K", 0.25),
                                              ("latency", "latency_max", 0.20)])
def test_resource_strategy_median_error_meets_goal(key, field, goal):
    errors = [rel(estimate(p)[key], p[field]) for p in RESOURCE]
    assert statistics.median(errors) <= goal


def test_dense_layer_closed_form():
    # 128 x 256 at RF 32, Resource, 16 x 16 bit on an UltraScale+ part: n_mult = 128*256/32 = 1024, one DSP each;
    # weights: one ROM 1024 x 16 = 16,384 bits wide, 32 deep -> BRAM18 in 512 x 36: ceil(16384/36) = 456;
    # II = RF = 32; latency = RF + RESOURCE_TAIL (2) = 34. (csynth, uw-acme quickdraw: 1024 DSP, 455 BRAM18, 34.)
    e = estimate_dense(128, 256, 32, "Resource", w_bits=16, a_bits=16, part="xcu250-figd2104-2L-e")
    assert (e["dsp"], e["bram18"], e["ii"], e["latency"], e["multipliers"]) == (1024, 456, 32, 34, 1024)
    # Latency strategy, 8 x 8 bit constants, K = 10, N = 5, 3 zero weights, RF 1: 47 nonzero products, all
    # shift-adds in LUTs (0 DSP), no BRAM; depth 1 + ceil(log2(10) / 2) = 3; LUT = 47 * acc(16) + 400 + Latency
    # weight ROM 47 * 8 * ceil(1 / 64) + bias ROM ceil(5 * 8 / 64) = 1.
    e = estimate_dense(10, 5, 1, "Latency", w_bits=8, a_bits=8, acc_bits=16, n_zeros=3, part="xc7z020clg400-1")
    assert (e["dsp"], e["bram18"], e["latency"], e["multipliers"]) == (0, 0, 3, 47)
    assert e["lut"] == 47 * 16 + 400 + 47 * 8 + 1


def test_part_families():
    assert dsp_type_of_part("xc7z020clg400-1") == "DSP48E1"
    assert dsp_type_of_part("xcku035-fbva676-2-e") == "DSP48E2"
    assert dsp_type_of_part("xcvu13p-flga2577-2-e") == "DSP48E2"
    assert dsp_type_of_part("xcvc1902-vsva2197-2MP-e-S") == "DSP58"
