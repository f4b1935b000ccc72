"""Fault injection: stalled DMA / hung kernel -> a timeout within the configured time, device usable after;
Ctrl-C during a launch leaves the device reusable; a mismatched artifact is refused before anything is sent."""

from __future__ import annotations

import _thread
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fpgaformer.host import protocol as P
from fpgaformer.host.artifact import load_artifact
from fpgaformer.host.device import DeviceTimeout
from fpgaformer.host.engine import Engine
from fpgaformer.host.sim_device import SimDevice

TIMEOUT = 0.3


def _engine(build, **kw):
    return Engine.open(build, SimDevice(**kw), timeout=TIMEOUT)


def _reference_logits(build, ids):
    engine = _engine(build)
    return engine.prefill(ids)


@pytest.mark.parametrize("fault,what", [("stall_mm2s", "MM2S"), ("stall_s2mm", "S2MM"), ("kernel_hang", "S2MM")])
def test_stall_times_out_within_the_deadline_and_the_next_run_works(char_build, fault, what):
    build = char_build("w16a16")
    want = _reference_logits(build, [5, 6, 7])
    engine = _engine(build)
    engine.device.faults.add(fault)
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout) as err:
        engine.prefill([5, 6, 7])
    elapsed = time.monotonic() - t0
    assert TIMEOUT <= elapsed < TIMEOUT + 1.0
    assert what in str(err.value) and "reset" in str(err.value)
    engine.device.faults.clear()
    np.testing.assert_array_equal(engine.prefill([5, 6, 7]), want)


def test_ctrl_c_during_a_launch_leaves_the_device_reusable(char_build):
    build = char_build("w16a16")
    want = _reference_logits(build, [9, 10])
    engine = Engine.open(build, SimDevice(faults={"stall_mm2s"}), timeout=30)
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        engine.prefill([9, 10])
    timer.join()
    assert time.monotonic() - t0 < 5
    engine.device.faults.clear()
    np.testing.assert_array_equal(engine.prefill([9, 10]), want)


def test_mismatched_artifact_is_refused_before_anything_is_sent(char_build):
    overlay_of_a, artifact_b = char_build("w16a16"), char_build("w8a16")
    sim = SimDevice()
    sim.load(overlay_of_a)  # the overlay built from A
    graph_b, manifest_b = load_artifact(artifact_b)
    writes_before = sim.stats["register_writes"]
    with pytest.raises(P.ContractError) as err:
        Engine(sim, graph_b, manifest_b)
    message = str(err.value)
    assert "does not match the loaded overlay" in message and "graph" in message  # other types / settings
    assert "Nothing was sent" in message
    assert sim.stats["register_writes"] == writes_before and sim.stats["mm2s_bytes"] == 0


def test_other_weights_are_refused(char_build):
    from fpgaformer.host.artifact import weights_checksum

    sim = SimDevice()
    sim.load(char_build("w16a16"))
    graph, manifest = load_artifact(char_build("w16a16"))
    layer = next(l for l in graph.layers if l.op == "Linear")
    layer.params["weight"] = layer.params["weight"] * 1.01  # a retrained model with the same structure
    manifest = dict(manifest, weights_sha256=weights_checksum(graph.weights()))
    with pytest.raises(P.ContractError, match="weights checksum"):
        Engine(sim, graph, manifest)


def test_cli_refuses_a_foreign_contract(char_build, tmp_path):
    build = tmp_path / "b"
    shutil.copytree(char_build("w8a16"), build)
    shutil.copy(char_build("w16a16") / P.CONTRACT_FILE, build / P.CONTRACT_FILE)
    proc = subprocess.run([sys.executable, "-m", "fpgaformer.compiler.cli", "generate", str(build), "--emulate",
                           "--ids", "1,2", "--max-new-tokens", "2"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "does not match the loaded overlay" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bitstream_with_another_design_id_is_refused(char_build):
    sim = SimDevice()
    engine = Engine.open(char_build("w16a16"), sim, timeout=5)
    # the engine holds a contract whose design id differs from the one the (simulated) bitstream reports
    engine.contract = P.Contract(dict(sim.contract.data, design_id=sim.contract.design_id ^ 1))
    with pytest.raises(P.ContractError, match="design id"):
        engine.prefill([1])
