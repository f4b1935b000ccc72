"""PynqDevice: the Device interface as a thin adapter over pynq (imported lazily, inside methods).

Works with PYNQ 2.7, 3.0/3.0.1 (PYNQ-Z2, ZCU104, KV260 images), 3.1 and 4.0: it uses only API common to all
of them: ``pynq.Overlay(bitfile, download=...)``, ``Overlay.ip_dict``, ``ol.<ip>`` drivers (``DefaultIP``
``read``/``write``, ``pynq.lib.dma.DMA`` channels ``transfer``/``idle``/``error``/``wait``/``start``),
``pynq.allocate(shape, dtype, cacheable=...)`` and ``PynqBuffer.flush``/``invalidate``/``device_address``.

What it adds over plain pynq: deadlines (pynq's ``DMA.wait`` spins forever on a missing TLAST; here the
channel's status is polled until a wall-clock deadline and only then ``wait`` is called to finish the
transfer), a check of the .hwh against the contract at load (names, VLNVs, addresses, register offsets),
and recovery (DMA reset + the kernel's reset GPIO). Buffers are never rebound: the engine copies into them.

With ``sim=`` (a `SimDevice`) the same adapter runs against the simulated overlay through pynq's Device seam
(host/pynq_sim.py): the CI path for this file.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import protocol as P
from .device import Buffer, Device, DeviceError, DeviceTimeout, Transfer


class PynqBuffer(Buffer):
    def __init__(self, pynq_buffer):
        self.pb = pynq_buffer  # a pynq.buffer.PynqBuffer (uint8); never replaced
        self.array = pynq_buffer
        self.device_address = int(pynq_buffer.device_address)

    def sync_to_device(self) -> None:
        self.pb.flush()

    def sync_from_device(self) -> None:
        self.pb.invalidate()

    def free(self) -> None:
        self.pb.freebuffer()


class PynqDevice(Device):
    """A board's PL through pynq (or the simulated overlay through pynq, with ``sim=``)."""

    def __init__(self, download: bool = True, sim=None):
        self.download = download
        self.sim = sim
        self.overlay = None
        self._pdev = None

    def load(self, build_dir, contract: P.Contract | None = None) -> P.Contract:
        import pynq

        build_dir = Path(build_dir)
        contract = contract or P.Contract.load(build_dir)
        if self.sim is not None:
            from .pynq_sim import make_pynq_sim_device, staged_overlay

            if self.sim.contract is None:
                self.sim.load(build_dir, contract=contract)
            self._pdev = make_pynq_sim_device(self.sim)
            bitfile = staged_overlay(build_dir, contract)
        else:
            bitfile = build_dir / P.BITSTREAM
            if not bitfile.is_file() or not bitfile.with_suffix(".hwh").is_file():
                raise P.ContractError(f"{build_dir} has no PYNQ overlay ({P.BITSTREAM} + {P.HWH}); run the vendor "
                                      f"build printed by `fpgaformer build {build_dir} --board NAME`, or use "
                                      "--emulate")
        self.overlay = pynq.Overlay(str(bitfile), download=self.download, device=self._pdev)
        contract.check_ip_dict(dict(self.overlay.ip_dict))
        self.contract = contract
        self.ips = {role: getattr(self.overlay, contract.ip(role)["name"]) for role in ("kernel", "dma", "reset")}
        self.channels = {"send": self.ips["dma"].sendchannel, "recv": self.ips["dma"].recvchannel}
        return contract

    def modelled_seconds(self):
        return self.sim.modelled_seconds() if self.sim is not None else None

    # ---- registers: DefaultIP.read/write (MMIO underneath)
    def read(self, role: str, offset: int) -> int:
        return int(self.ips[role].read(offset))

    def write(self, role: str, offset: int, value: int) -> None:
        self.ips[role].write(offset, int(value) & 0xFFFF_FFFF)

    # ---- memory: pynq.allocate
    def alloc(self, nbytes: int, cacheable: bool = False) -> PynqBuffer:
        import pynq

        kwargs = {"cacheable": 1 if cacheable else 0}
        if self._pdev is not None:
            kwargs["target"] = self._pdev
        return PynqBuffer(pynq.allocate((max(int(nbytes), 1),), dtype=np.uint8, **kwargs))

    # ---- DMA: pynq's driver, with deadlines
    def dma_start(self) -> None:
        for ch in self.channels.values():
            ch.start()

    def dma_transfer(self, channel: str, buf: PynqBuffer, nbytes: int, offset: int = 0) -> Transfer:
        try:
            self.channels[channel].transfer(buf.pb, start=offset, nbytes=nbytes)
        except (RuntimeError, ValueError) as e:
            raise DeviceError(f"DMA {channel}: {e}") from None
        return Transfer(channel, nbytes)

    def dma_wait(self, transfer: Transfer, deadline: float) -> int:
        ch = self.channels[transfer.channel]
        while not (ch.idle or ch.error):
            if time.monotonic() > deadline:
                raise DeviceTimeout(self._timeout_message(
                    f"DMA {self.contract.ip('dma')['name']} "
                    f"{'MM2S (send)' if transfer.channel == 'send' else 'S2MM (receive)'}", transfer))
            if self.poll_sleep:
                time.sleep(self.poll_sleep)
        try:
            ch.wait()  # returns at once now; raises on DMA errors, invalidates the receive buffer
        except RuntimeError as e:
            raise DeviceError(f"DMA {transfer.channel}: {e} ({self.dma_status(transfer.channel):#x})") from None
        ch._clear_interrupt() if hasattr(ch, "_clear_interrupt") else None
        return int(ch.transferred) if transfer.channel == "recv" else transfer.nbytes

    def dma_reset(self) -> None:
        dma = self.ips["dma"]
        dma.write(P.MM2S_DMACR, P.DMACR_RESET)
        for _ in range(1000):
            if not dma.read(P.MM2S_DMACR) & P.DMACR_RESET:
                break

    def close(self) -> None:
        if self.overlay is not None and hasattr(self.overlay, "free"):
            try:
                self.overlay.free()
            except Exception:  # freeing is best effort (no dtbo on most designs)
                pass
