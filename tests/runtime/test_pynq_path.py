"""The real pynq package (Overlay, allocate, DMA, DefaultIP/MMIO) drives the simulated overlay through pynq's
Device seam and gives the same tokens as SimDevice, once per pynq line: 4.0.0 and 3.1.2 (the last with PYNQ-Z1/Z2
images). pynq pins numpy<2, so each runs in its own environment made by .ci/pynq_env.sh: set
FPGAFORMER_PYNQ_PYTHON (4.0.0) and FPGAFORMER_PYNQ31_PYTHON (3.1.2) to their pythons."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from fpgaformer.host.engine import Engine
from fpgaformer.host.generate import Generator
from fpgaformer.host.sim_device import SimDevice

PYNQ_ENVS = {"4.0.0": "FPGAFORMER_PYNQ_PYTHON", "3.1.2": "FPGAFORMER_PYNQ31_PYTHON"}  # version -> variable


def _pynq_env(version: str, variable: str):
    reason = (f"{variable} is not set (the pynq=={version} environment: "
              f"bash .ci/pynq_env.sh VENV_DIR {version})")
    return pytest.param(version, variable, id=f"pynq{version}",
                        marks=pytest.mark.skipif(not os.environ.get(variable), reason=reason))

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


@pytest.mark.parametrize("version, variable", [_pynq_env(v, name) for v, name in PYNQ_ENVS.items()])
def test_real_pynq_code_path_gives_the_same_tokens(char_build, version, variable):
    build = char_build("w16a16")
    proc = subprocess.run([os.environ[variable], "-c", SCRIPT, str(build), json.dumps(PROMPTS)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["pynq"] == version, f"{variable} runs pynq {result['pynq']}, not {version}"
    assert result["drivers"] == {"kernel": "pynq.overlay.DefaultIP", "dma": "pynq.lib.dma.DMA",
                                 "reset": "pynq.lib.axigpio.AxiGPIO"}
    assert result["buffer"] == "pynq.buffer.PynqBuffer"
    engine = Engine.open(build, SimDevice())
    want = [Generator(engine).generate(p, 12) for p in PROMPTS]
    assert result["tokens"] == want
    assert result["timed_out"] and result["elapsed"] < 2.0 and result["after"] == want[0]
