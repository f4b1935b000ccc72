"""SimDevice register semantics (HLS control, AXI DMA PG021, reset GPIO) and the engine's launch sequence
as seen on the bus."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaformer.host import protocol as P
from fpgaformer.host.device import DeviceError
from fpgaformer.host.engine import Engine
from fpgaformer.host.sim_device import SimDevice


@pytest.fixture()
def sim(char_build):
    dev = SimDevice()
    dev.load(char_build("w16a16"))
    return dev


def test_dma_starts_halted_and_runs_after_rs(sim):
    assert sim.read("dma", P.MM2S_DMASR) & P.DMASR_HALTED
    sim.write("dma", P.MM2S_DMACR, P.DMACR_RS)
    assert not sim.read("dma", P.MM2S_DMASR) & P.DMASR_HALTED


def test_dma_decode_error_on_unmapped_address(sim):
    sim.dma_start()
    sim.write("dma", P.MM2S_SA, 0x0000_1000)  # below the simulated DDR
    sim.write("dma", P.MM2S_SA_MSB, 0)
    sim.write("dma", P.MM2S_LENGTH, 64)
    status = sim.read("dma", P.MM2S_DMASR)
    assert status & P.DMASR_DEC_ERR and status & P.DMASR_HALTED


def test_dma_reset_returns_to_halted(sim):
    sim.dma_start()
    sim.write("dma", P.S2MM_DMACR, P.DMACR_RESET)
    assert sim.read("dma", P.MM2S_DMASR) & P.DMASR_HALTED
    assert sim.read("dma", P.S2MM_DMASR) & P.DMASR_HALTED
    assert not sim.read("dma", P.S2MM_DMACR) & P.DMACR_RESET


def test_isr_toggles_on_write_and_idle_when_not_started(sim):
    ctrl = sim.contract.reg("CTRL")
    assert sim.read("kernel", ctrl) & P.AP_IDLE
    isr = sim.contract.reg("IP_ISR")
    sim.write("kernel", isr, 1)
    assert sim.read("kernel", isr) == 1
    sim.write("kernel", isr, 1)
    assert sim.read("kernel", isr) == 0


def _launch_log(engine, sim):
    sim.log = []
    engine.prefill([1, 2, 3])
    log, sim.log = sim.log, None
    return log


def test_launch_order_pointer_halves_and_clear_on_read_done(char_build):
    sim = SimDevice()
    engine = Engine.open(char_build("w16a16"), sim, timeout=5)
    c = sim.contract
    log = _launch_log(engine, sim)
    writes = [(role, off, val) for op, role, off, val in log if op == "write"]
    idx = {key: i for i, key in enumerate((r, o) for r, o, _ in writes)}
    # both halves of both 64-bit pointers are written (high word included)
    for name in ("weights", "kv_cache"):
        assert ("kernel", c.reg(f"{name}_1")) in idx and ("kernel", c.reg(f"{name}_2")) in idx
    high = [v for r, o, v in writes if (r, o) == ("kernel", c.reg("weights_2"))][0]
    assert high == engine.weights.device_address >> 32
    # arguments, then arm S2MM, then MM2S, then ap_start
    assert idx[("kernel", c.reg("position"))] < idx[("dma", P.S2MM_LENGTH)] < idx[("dma", P.MM2S_LENGTH)] \
        < idx[("kernel", c.reg("CTRL"))]
    # ap_done was seen exactly once (clear on read), by the single CTRL poller
    ctrl_reads = [v for op, r, o, v in log if op == "read" and (r, o) == ("kernel", c.reg("CTRL"))]
    assert sum(1 for v in ctrl_reads if v & P.AP_DONE) == 1
    assert sim.read("kernel", c.reg("CTRL")) & P.AP_DONE == 0


def test_kv_cache_stays_on_the_device(char_build):
    sim = SimDevice()
    engine = Engine.open(char_build("w16a16"), sim, timeout=5)
    engine.prefill([1, 2, 3, 4])
    before = dict(sim.stats)
    for token in (5, 6, 7):
        engine.step(token)
    moved = sim.stats["mm2s_bytes"] - before["mm2s_bytes"]
    synced = sim.stats["sync_to_device_bytes"] - before["sync_to_device_bytes"]
    assert moved == 3 * engine.contract.in_record(1).nbytes  # only the token ids go down
    assert synced == 3 * engine.inbuf.nbytes                   # never the weights or the KV cache
    kv = sim.memory.view(engine.kv.device_address, engine.contract.kv_bytes)
    assert np.any(kv != 0)  # the kernel wrote its cache into device memory


def test_strict_coherence_gives_the_same_tokens(char_build):
    from fpgaformer.host.generate import Generator

    out = {}
    for mode in ("shared", "strict"):
        engine = Engine.open(char_build("w16a16"), SimDevice(coherence=mode), timeout=5)
        out[mode] = Generator(engine).generate([3, 4, 5], 8)
    assert out["shared"] == out["strict"]


def test_kernel_status_error_is_reported_and_the_device_recovers(char_build):
    sim = SimDevice()
    engine = Engine.open(char_build("w16a16"), sim, timeout=5)
    engine.position = engine.context - 1  # two tokens at the last position: out of range for the kernel
    with pytest.raises(DeviceError, match="position/context out of range"):
        engine._decode_launch(np.array([1, 2]), False)
    assert engine.position is None  # the interrupted sequence must be restarted
    with pytest.raises(DeviceError, match="interrupted"):
        engine.step(1)
    assert isinstance(engine.prefill([1, 2]), np.ndarray)
