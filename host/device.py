"""The Device interface the engine runs on: load, allocate, sync, DMA send/receive with deadlines, registers,
wait, reset (numpy only).

Two implementations: `PynqDevice` (host/pynq_device.py, a thin adapter over pynq on a board, or over the
simulated overlay through pynq's Device seam) and `SimDevice` (host/sim_device.py, a register-accurate model of
the overlay). The engine calls only what is here, so register order, pointer halves, sync placement, packing
and timeouts are the same code in every mode.

Invariants every Device keeps:
  * registers are addressed by IP role ("kernel", "dma", "reset") and byte offset; 64-bit values are written as
    two 32-bit words, low word first;
  * `Buffer.array` is a uint8 view the host may write; `sync_to_device` after host writes and
    `sync_from_device` before host reads are always called (they cost nothing where memory is coherent);
  * every wait has a wall-clock deadline and raises `DeviceTimeout` naming the IP and its status bits;
  * `reset()` brings the DMA channels and the kernel back to idle (the device is usable afterwards).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import protocol as P


class DeviceError(Exception):
    """The device reported an error (DMA decode/slave/internal error, kernel status) or is unusable."""


class DeviceTimeout(DeviceError):
    """A DMA transfer or the kernel did not finish before its deadline."""


class Buffer:
    """Device memory the host can see: ``array`` (uint8), ``device_address``, explicit syncs."""

    array: np.ndarray
    device_address: int

    def sync_to_device(self) -> None:
        raise NotImplementedError

    def sync_from_device(self) -> None:
        raise NotImplementedError

    def free(self) -> None:
        raise NotImplementedError


def describe_ctrl(value: int) -> str:
    bits = [name for bit, name in ((P.AP_START, "ap_start"), (P.AP_DONE, "ap_done"), (P.AP_IDLE, "ap_idle"),
                                   (P.AP_READY, "ap_ready")) if value & bit]
    return f"CTRL={value:#04x} ({', '.join(bits) or 'busy'})"


def describe_dmasr(value: int) -> str:
    bits = [name for bit, name in ((P.DMASR_HALTED, "halted"), (P.DMASR_IDLE, "idle"),
                                   (P.DMASR_INT_ERR, "DMAIntErr"), (P.DMASR_SLV_ERR, "DMASlvErr"),
                                   (P.DMASR_DEC_ERR, "DMADecErr"), (P.DMASR_IOC, "IOC")) if value & bit]
    return f"DMASR={value:#010x} ({', '.join(bits) or 'running, not idle'})"


@dataclass
class Transfer:
    """An armed DMA transfer: channel 'send' (MM2S) or 'recv' (S2MM), bytes requested."""

    channel: str
    nbytes: int


class Device:
    """Base class: register-level DMA driving and deadline waits shared by every Device.

    Subclasses provide `load`, `read`, `write`, `alloc` and may override the DMA methods (PynqDevice uses
    pynq's own DMA driver)."""

    contract: P.Contract
    poll_sleep = 0.0  # seconds between polls (0: spin; the simulated device advances its clock per poll)

    # ---- to implement
    def load(self, build_dir) -> P.Contract:
        raise NotImplementedError

    def read(self, role: str, offset: int) -> int:
        raise NotImplementedError

    def write(self, role: str, offset: int, value: int) -> None:
        raise NotImplementedError

    def alloc(self, nbytes: int, cacheable: bool = False) -> Buffer:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def modelled_seconds(self) -> float | None:
        """Device time by the latency model (simulation), None on hardware."""
        return None

    # ---- registers
    def write64(self, role: str, offset: int, value: int) -> None:
        self.write(role, offset, value & 0xFFFF_FFFF)
        self.write(role, offset + 4, (value >> 32) & 0xFFFF_FFFF)

    # ---- DMA (PG021 simple mode, register level)
    _CH = {"send": (P.MM2S_DMACR, P.MM2S_DMASR, P.MM2S_SA, P.MM2S_LENGTH),
           "recv": (P.S2MM_DMACR, P.S2MM_DMASR, P.S2MM_DA, P.S2MM_LENGTH)}

    def dma_start(self) -> None:
        """Run both channels (RS=1) and wait until they leave the halted state."""
        for ch in ("send", "recv"):
            cr, sr, _, _ = self._CH[ch]
            self.write("dma", cr, P.DMACR_RS)
            for _ in range(1000):
                if not self.read("dma", sr) & P.DMASR_HALTED:
                    break
            else:
                raise DeviceError(f"DMA {ch} channel stays halted ({describe_dmasr(self.read('dma', sr))})")

    def dma_transfer(self, channel: str, buf: Buffer, nbytes: int, offset: int = 0) -> Transfer:
        cr, sr, addr, length = self._CH[channel]
        status = self.read("dma", sr)
        if status & P.DMASR_HALTED:
            raise DeviceError(f"DMA {channel} channel is halted ({describe_dmasr(status)}); reset the device")
        if nbytes > self.contract.max_transfer:
            raise DeviceError(f"DMA transfer of {nbytes} bytes exceeds the overlay's length register "
                              f"({self.contract.max_transfer} bytes)")
        self.write64("dma", addr, buf.device_address + offset)
        self.write("dma", length, nbytes)
        return Transfer(channel, nbytes)

    def dma_status(self, channel: str) -> int:
        return self.read("dma", self._CH[channel][1])

    def dma_wait(self, transfer: Transfer, deadline: float) -> int:
        """Wait until the channel is idle; returns bytes moved (S2MM: as received). Raises on error/deadline."""
        cr, sr, _, length = self._CH[transfer.channel]
        while True:
            status = self.read("dma", sr)
            if status & P.DMASR_ERRORS:
                raise DeviceError(f"DMA {transfer.channel} ({'MM2S' if transfer.channel == 'send' else 'S2MM'}) "
                                  f"error: {describe_dmasr(status)}")
            if status & P.DMASR_IDLE:
                self.write("dma", sr, P.DMASR_IOC)  # clear the completion interrupt (write 1 to clear)
                return self.read("dma", length) if transfer.channel == "recv" else transfer.nbytes
            if time.monotonic() > deadline:
                raise DeviceTimeout(self._timeout_message(f"DMA {self.contract.ip('dma')['name']} "
                                                          f"{'MM2S (send)' if transfer.channel == 'send' else 'S2MM (receive)'}",
                                                          transfer))
            if self.poll_sleep:
                time.sleep(self.poll_sleep)

    def dma_reset(self) -> None:
        for ch in ("send", "recv"):
            cr = self._CH[ch][0]
            self.write("dma", cr, P.DMACR_RESET)
            for _ in range(1000):
                if not self.read("dma", cr) & P.DMACR_RESET:
                    break

    # ---- kernel
    def kernel_start(self) -> None:
        self.write("kernel", P.Contract.reg(self.contract, "CTRL"), P.AP_START)

    def wait_done(self, deadline: float) -> None:
        """Poll CTRL until ap_done (clear on read: this is the only reader of CTRL while running)."""
        ctrl = self.contract.reg("CTRL")
        while True:
            value = self.read("kernel", ctrl)
            if value & P.AP_DONE:
                return
            if time.monotonic() > deadline:
                raise DeviceTimeout(self._timeout_message(f"kernel {self.contract.ip('kernel')['name']}", None,
                                                          ctrl_value=value))
            if self.poll_sleep:
                time.sleep(self.poll_sleep)

    def reset(self) -> None:
        """Bring the overlay back to idle: reset both DMA channels, pulse the kernel's reset GPIO, restart."""
        self.dma_reset()
        self.write("reset", P.GPIO_TRI, 0)
        self.write("reset", P.GPIO_DATA, 0)
        self.write("reset", P.GPIO_DATA, 1)
        self.dma_start()

    def _timeout_message(self, what: str, transfer: Transfer | None, ctrl_value: int | None = None) -> str:
        try:
            mm2s, s2mm = self.dma_status("send"), self.dma_status("recv")
            dma = f"MM2S {describe_dmasr(mm2s)}, S2MM {describe_dmasr(s2mm)}"
        except Exception:  # the status read itself failing must not hide the timeout
            dma = "DMA status unreadable"
        ctrl = f"; kernel {describe_ctrl(ctrl_value)}" if ctrl_value is not None else ""
        moved = f" ({transfer.nbytes} bytes armed)" if transfer is not None else ""
        return (f"{what} did not finish before its deadline{moved}: {dma}{ctrl}. The device has been reset "
                "and can be used again; a missing TLAST, a wrong length or a stalled kernel cause this.")
