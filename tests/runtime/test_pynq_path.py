"""The real pynq package (Overlay, allocate, DMA, DefaultIP/MMIO) drives the simulated overlay through pynq's
Device seam and gives the same tokens as SimDevice. pynq 4.0 pins numpy<2, so this runs in its own
environment: set FPGAFORMER_PYNQ_PYTHON to its python (made by .ci/pynq_env.sh)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from fpgaformer.host.engine import Engine
from fpgaformer.host.generate import Generator
from fpgaformer.host.sim_device import SimDevice

PYNQ_PYTHON = os.environ.get("FPGAFORMER_PYNQ_PYTHON")
pytestmark = pytest.mark.skipif(not PYNQ_PYTHON, reason="FPGAFORMER_PYNQ_PYTHON is not set (the pynq==4.0.0 "
                                                        "environment made by .ci/pynq_env.sh)")

PROMPTS = [[10, 28, 24], [5, 6, 7, 8], [1], [20, 21, 22, 23, 24, 25]]

SCRIPT = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import numpy, pynq
from fpgaformer.host.device import DeviceTimeout
from fpgaformer.host.engine import Engine
from fpgaformer.host.generate import Generator
from fpgaformer.host.pynq_device import PynqDevice
from fpgaformer.host.sim_device import SimDevice
build, prompts = sys.argv[1], json.loads(sys.argv[2])
dev = PynqDevice(sim=SimDevice())
engine = Engine.open(build, dev, timeout=0.5)
drivers = {k: type(v).__module__ + "." + type(v).__name__ for k, v in dev.ips.items()}
tokens = [Generator(engine).generate(p, 12) for p in prompts]
dev.sim.faults.add("stall_mm2s")
t0 = time.monotonic()
try:
    engine.prefill(prompts[0]); timed_out = False
except DeviceTimeout:
    timed_out = True
elapsed = time.monotonic() - t0
dev.sim.faults.clear()
after = Generator(engine).generate(prompts[0], 12)
print(json.dumps({"pynq": pynq.__version__, "numpy": numpy.__version__, "drivers": drivers, "tokens": tokens,
                  "buffer": type(engine.inbuf.pb).__module__ + "." + type(engine.inbuf.pb).__name__,
                  "timed_out": timed_out, "elapsed": elapsed, "after": after}))
"""


def test_real_pynq_code_path_gives_the_same_tokens(char_build):
    build = char_build("w16a16")
    proc = subprocess.run([PYNQ_PYTHON, "-c", SCRIPT, str(build), json.dumps(PROMPTS)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["drivers"] == {"kernel": "pynq.overlay.DefaultIP", "dma": "pynq.lib.dma.DMA",
                                 "reset": "pynq.lib.axigpio.AxiGPIO"}
    assert result["buffer"] == "pynq.buffer.PynqBuffer"
    engine = Engine.open(build, SimDevice())
    want = [Generator(engine).generate(p, 12) for p in PROMPTS]
    assert result["tokens"] == want
    assert result["timed_out"] and result["elapsed"] < 2.0 and result["after"] == want[0]
