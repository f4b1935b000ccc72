"""SimDevice: a register-accurate model of the fpgaformer overlay (numpy only).

Everything the host sees is built from the overlay contract (`protocol.Contract`, the ``fpgaformer.json`` the
build wrote): IP base addresses, kernel register offsets, DMA length width, stream records, weight image and KV
cache layouts. Nothing here restates them.

Models:
  * DDR: allocations at physical addresses from 0x1000_0000; an access outside every allocation is a decode
    error (DMA: DMADecErr). Coherence ``shared`` (non-cacheable buffers: the host array *is* device memory) or
    ``strict`` (cacheable / PYNQ.remote: the host works on a copy; only sync_to_device / sync_from_device move
    bytes), so code that forgets a sync fails in strict mode.
  * HLS control (Vitis s_axilite): ap_start, ap_done and ap_ready clear on read, ap_idle, ISR toggle on write,
    output registers with a clear-on-read valid bit, every register cleared by the reset GPIO.
  * AXI DMA (PG021 simple mode): RS/reset in DMACR; halted/idle/errors/IOC in DMASR (IOC write-1-to-clear);
    writing LENGTH starts a transfer; MM2S sends one packet ending in TLAST; S2MM takes the next packet, stops
    at TLAST and reports the bytes received in LENGTH; a packet longer than the armed length is DMAIntErr.
  * Kernel: takes ``n_items`` input records from its input stream (one packet), computes with the emulator
    (or a C-simulation library through ``compute``), pushes one output packet per record. The weights are read
    from device memory (gmem0) at every launch; in decode mode the KV cache lives in device memory (gmem1):
    rows < position are read from there and the new rows written back, so the host never holds it.
  * Time: a cycle counter. Register accesses cost ``REG_CYCLES``; DMA moves one beat per cycle; the kernel
    takes the contract's latency model. A poll of a status whose event is scheduled advances the clock to it
    (an ideal poll loop); an event that will never come (a fault) leaves the clock alone, so the host's
    wall-clock deadline decides. Python run time never enters the modelled time.
  * Faults (``faults`` set): ``stall_mm2s`` (MM2S never finishes, the kernel never gets its input),
    ``stall_s2mm`` (S2MM never finishes), ``kernel_hang`` (the kernel never signals done).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import protocol as P
from .decoder import DecodeState, IncrementalDecoder
from .device import Buffer, Device, DeviceError
from .emulator import Emulator
from .graph import Graph

DDR_BASE = 0x1000_0000
PAGE = 4096
REG_CYCLES = 20  # one AXI-lite access from the PS, in PL cycles (about 100 ns at 200 MHz)


class SimMemory:
    """Physical memory: allocations ``base -> uint8 array``."""

    def __init__(self):
        self.regions: dict[int, np.ndarray] = {}
        self.next = DDR_BASE

    def alloc(self, nbytes: int) -> int:
        base = self.next
        size = max(PAGE, -(-nbytes // PAGE) * PAGE)
        self.regions[base] = np.zeros(size, np.uint8)
        self.next = base + size + PAGE  # a guard page between allocations
        return base

    def free(self, base: int) -> None:
        self.regions.pop(base, None)

    def view(self, addr: int, nbytes: int) -> np.ndarray:
        for base, region in self.regions.items():
            if base <= addr and addr + nbytes <= base + region.size:
                return region[addr - base: addr - base + nbytes]
        raise LookupError(f"address range {addr:#x}+{nbytes} is not mapped")

    def region(self, base: int) -> np.ndarray:
        return self.regions[base]


class SimBuffer(Buffer):
    def __init__(self, device: "SimDevice", nbytes: int, cacheable: bool):
        self.device = device
        self.nbytes = nbytes
        self.device_address = device.memory.alloc(nbytes)
        self._ddr = device.memory.view(self.device_address, nbytes)
        self.strict = cacheable or device.coherence == "strict"
        self.array = np.zeros(nbytes, np.uint8) if self.strict else self._ddr

    def sync_to_device(self) -> None:
        self.device.stats["sync_to_device_bytes"] += self.nbytes
        if self.strict:
            self._ddr[:] = self.array

    def sync_from_device(self) -> None:
        self.device.stats["sync_from_device_bytes"] += self.nbytes
        if self.strict:
            self.array[:] = self._ddr

    def free(self) -> None:
        self.device.memory.free(self.device_address)


@dataclass
class Packet:
    data: np.ndarray
    last: bool = True
    time: int = 0  # cycle from which its data is available


@dataclass
class DmaChannel:
    name: str
    cr: int = 0
    sr: int = P.DMASR_HALTED
    addr: int = 0
    length: int = 0
    busy: bool = False        # a transfer was started and has not completed
    done_at: int | None = None  # cycle of completion, None while waiting for data (or stalled)
    received: int = 0


@dataclass
class KernelState:
    regs: dict[int, int] = field(default_factory=dict)
    running: bool = False
    done: bool = False
    ready: bool = False
    done_at: int | None = None
    computed: bool = False
    gie: int = 0
    ier: int = 0
    isr: int = 0


class SimDevice(Device):
    """The overlay modelled at register level; see the module docstring."""

    def __init__(self, graph: Graph | None = None, coherence: str = "shared",
                 compute: Callable[[Graph], object] | None = None, faults: set[str] | None = None):
        if coherence not in ("shared", "strict"):
            raise ValueError("coherence must be 'shared' or 'strict'")
        self.design_graph = graph   # the design the "bitstream" implements (structure, non-weight constants)
        self.coherence = coherence
        self.compute = compute      # graph -> object with .run(feeds) (C-sim library); default: Emulator
        self.faults = set(faults or ())
        self.memory = SimMemory()
        self.cycles = 0
        self.stats = {"launches": 0, "register_reads": 0, "register_writes": 0, "sync_to_device_bytes": 0,
                      "sync_from_device_bytes": 0, "mm2s_bytes": 0, "s2mm_bytes": 0, "kernel_cycles": 0,
                      "compute_wall_s": 0.0}  # Python time spent computing (benchmarks only; never modelled time)
        self.log: list[tuple[str, str, int, int]] | None = None  # (op, role, offset, value) when recording
        self._weights_snapshot: np.ndarray | None = None
        self._runner = None
        self.contract: P.Contract | None = None

    # ----------------------------------------------------------------------------------------------- load
    def load(self, build_dir=None, contract: P.Contract | None = None, graph: Graph | None = None) -> P.Contract:
        """"Program" the overlay: the contract from BUILD (or given), the design graph from BUILD (or given)."""
        if contract is None:
            contract = P.Contract.load(Path(build_dir))
        if graph is not None:
            self.design_graph = graph
        if self.design_graph is None:
            from .artifact import load_artifact

            self.design_graph, _ = load_artifact(Path(build_dir))
        self.contract = contract
        self.bases = {role: int(contract.ip(role)["base"]) for role in ("kernel", "dma", "reset")}
        self.ranges = {role: int(contract.ip(role)["range"]) for role in ("kernel", "dma", "reset")}
        self.kregs = {name: int(r["offset"]) for name, r in contract.ip("kernel")["registers"].items()}
        self.kernel = KernelState()
        self.mm2s, self.s2mm = DmaChannel("MM2S"), DmaChannel("S2MM")
        self.in_fifo: list[Packet] = []
        self.out_fifo: list[Packet] = []
        self.gpio_data = 1
        lat = contract.data["latency"]
        self.clock_hz = float(contract.data.get("clock_mhz", 250.0)) * 1e6
        self.latency = lat
        self._runner = None
        self._weights_snapshot = None
        return contract

    def modelled_seconds(self) -> float:
        return self.cycles / self.clock_hz

    # ------------------------------------------------------------------------------------------- buffers
    def alloc(self, nbytes: int, cacheable: bool = False) -> SimBuffer:
        return SimBuffer(self, nbytes, cacheable)

    # ---------------------------------------------------------------------------------------- registers
    def read(self, role: str, offset: int) -> int:
        return self.bus_read(self.bases[role] + offset)

    def write(self, role: str, offset: int, value: int) -> None:
        self.bus_write(self.bases[role] + offset, value)

    def _decode(self, addr: int) -> tuple[str, int]:
        for role, base in self.bases.items():
            if base <= addr < base + self.ranges[role]:
                return role, addr - base
        raise DeviceError(f"AXI-lite access to unmapped address {addr:#x} (SLVERR/DECERR)")

    def bus_read(self, addr: int) -> int:
        role, offset = self._decode(addr)
        self.cycles += REG_CYCLES
        self.stats["register_reads"] += 1
        self._service()
        value = {"kernel": self._kernel_read, "dma": self._dma_read, "reset": self._gpio_read}[role](offset)
        if self.log is not None:
            self.log.append(("read", role, offset, value))
        return value & 0xFFFF_FFFF

    def bus_write(self, addr: int, value: int) -> None:
        role, offset = self._decode(addr)
        value = int(value) & 0xFFFF_FFFF
        self.cycles += REG_CYCLES
        self.stats["register_writes"] += 1
        if self.log is not None:
            self.log.append(("write", role, offset, value))
        {"kernel": self._kernel_write, "dma": self._dma_write, "reset": self._gpio_write}[role](offset, value)
        self._service()

    # ------------------------------------------------------------------------------------------ kernel
    def _kernel_read(self, offset: int) -> int:
        k = self.kernel
        if offset == self.kregs["CTRL"]:
            self._advance_to(k.done_at if k.running else None)
            self._service()
            value = (P.AP_START if k.running else 0) | (P.AP_DONE if k.done else 0) | \
                (P.AP_IDLE if not k.running else 0) | (P.AP_READY if k.ready else 0)
            k.done = k.ready = False  # clear on read
            return value
        if offset == self.kregs["GIER"]:
            return k.gie
        if offset == self.kregs["IP_IER"]:
            return k.ier
        if offset == self.kregs["IP_ISR"]:
            return k.isr
        for name in ("design_id", "status"):
            if offset == self.kregs[name]:
                return k.regs.get(offset, 0)
            if offset == self.kregs[f"{name}_ctrl"]:
                value = k.regs.get(offset, 0)
                k.regs[offset] = 0  # ap_vld clears on read
                return value
        return 0  # write-only argument registers read back as 0

    def _kernel_write(self, offset: int, value: int) -> None:
        k = self.kernel
        if offset == self.kregs["CTRL"]:
            if value & P.AP_START and not k.running:
                self._start_kernel()
            return
        if offset == self.kregs["GIER"]:
            k.gie = value & 1
        elif offset == self.kregs["IP_IER"]:
            k.ier = value & 3
        elif offset == self.kregs["IP_ISR"]:
            k.isr ^= value & 3  # toggle on write
        else:
            k.regs[offset] = value

    def _arg(self, name: str) -> int:
        return self.kernel.regs.get(self.kregs[name], 0)

    def _pointer(self, name: str) -> int:
        return self._arg(f"{name}_1") | (self._arg(f"{name}_2") << 32)

    def _start_kernel(self) -> None:
        k = self.kernel
        k.running, k.done, k.ready, k.computed, k.done_at = True, False, False, False, None
        self.stats["launches"] += 1

    def _kernel_step(self) -> None:
        """Compute once the whole input packet is there (or flag a stream error)."""
        k = self.kernel
        if not k.running or k.computed or "kernel_hang" in self.faults:
            return
        c = self.contract
        mode, n = self._arg("mode"), self._arg("n_items")
        argmax = bool(self._arg("flags") & P.FLAG_ARGMAX)
        in_rec = c.in_record(n if mode == P.MODE_DECODE else None)
        want = in_rec.nbytes * (1 if mode == P.MODE_DECODE else n)
        got = sum(p.data.size for p in self.in_fifo)
        if not any(p.last for p in self.in_fifo) and got < want:
            return  # still waiting for input
        data = np.concatenate([p.data for p in self.in_fifo]) if self.in_fifo else np.zeros(0, np.uint8)
        arrival = max([p.time for p in self.in_fifo], default=self.cycles)
        self.in_fifo.clear()
        t0 = time.perf_counter()
        try:
            records, status, cycles = self._compute(mode, n, argmax, in_rec, data, want)
        except LookupError as e:  # m_axi access outside memory: the kernel would hang on a bus error
            k.computed = True
            k.regs[self.kregs["status"]] = P.STATUS_RANGE
            raise DeviceError(f"kernel m_axi access failed: {e}") from None
        finally:
            self.stats["compute_wall_s"] += time.perf_counter() - t0
        done = max(arrival, self.cycles) + cycles
        for rec in records:
            self.out_fifo.append(Packet(rec, True, done))
        self.stats["kernel_cycles"] += cycles
        k.computed, k.done_at = True, done
        k.regs[self.kregs["design_id"]] = c.design_id
        k.regs[self.kregs["design_id_ctrl"]] = 1
        k.regs[self.kregs["status"]] = status
        k.regs[self.kregs["status_ctrl"]] = 1

    def _finish_kernel(self) -> None:
        k = self.kernel
        if k.running and k.computed and k.done_at is not None and self.cycles >= k.done_at:
            k.running, k.done, k.ready = False, True, True
            if k.ier & 1:
                k.isr |= 1

    # ---- computation (what the HLS kernels do, with the emulator as their bit-accurate model)
    def _launch_cycles(self, mode: int, n: int) -> int:
        """Modelled kernel time of a launch of ``n`` items (the contract's latency model)."""
        lat = self.latency
        per = lat["cycles_per_token"] if mode == P.MODE_DECODE else lat["cycles_per_sequence"]
        return int(lat["launch_cycles"] + n * per)

    def _compute(self, mode: int, n: int, argmax: bool, in_rec: P.Record, data: np.ndarray, want: int):
        """One launch on the input packet ``data`` (``want`` bytes expected): (output records, status,
        cycles). A packet of the wrong length is a stream error; the kernel computes on it cut or padded."""
        status = P.STATUS_OK if data.size == want else P.STATUS_STREAM
        data = np.concatenate([data, np.zeros(max(0, want - data.size), np.uint8)])[:want]
        if mode == P.MODE_DECODE:
            records, status2, cycles = self._decode_launch(in_rec, data, n, argmax)
        else:
            records, status2, cycles = self._encode_launch(in_rec, data, n)
        return records, status or status2, cycles

    def _graph_from_memory(self) -> Graph:
        """The design graph with the weights currently in gmem0 (rebuilt only when they change)."""
        c = self.contract
        image = self.memory.view(self._pointer("weights"), c.weights_bytes)
        if self._runner is None or self._weights_snapshot is None or not np.array_equal(image, self._weights_snapshot):
            decoded = P.decode_weight_image(image, c)
            graph = P.graph_with_weights(self.design_graph, decoded)
            self._weights_snapshot = image.copy()
            runner = self.compute(graph) if self.compute is not None else Emulator(graph)
            self._runner = (graph, runner, IncrementalDecoder(graph, runner) if c.kind == "decoder" else None)
        return self._runner

    def _encode_launch(self, in_rec: P.Record, data: np.ndarray, n: int):
        graph, runner, _ = self._graph_from_memory()
        out_rec = self.contract.out_record()
        records = []
        for i in range(n):
            feeds = in_rec.unpack(data[i * in_rec.nbytes:(i + 1) * in_rec.nbytes])
            env = runner.run(feeds)
            records.append(out_rec.pack({name: env[name] for name in graph.outputs}))
        cycles = self._launch_cycles(P.MODE_ENCODE, n)
        return records, P.STATUS_OK, cycles

    def _decode_launch(self, in_rec: P.Record, data: np.ndarray, t: int, argmax: bool):
        c = self.contract
        position = self._arg("position")
        out_rec = c.out_record(argmax)
        if t < 1 or position + t > c.context:
            return [np.zeros(out_rec.nbytes, np.uint8)], P.STATUS_RANGE, self._launch_cycles(P.MODE_DECODE, 0)
        _, _, decoder = self._graph_from_memory()
        ids = in_rec.unpack(data)["input_ids"]
        kv_base = self._pointer("kv_cache")
        caches = {}
        for e in c.kv_entries:  # the cache tensors, full context, as they lie in gmem1
            count = int(np.prod(e["shape"]))
            view = self.memory.view(kv_base + e["offset"], count * e["lane"] // 8)
            caches[e["tensor"]] = (e, view)
        state = DecodeState(length=position, mask=[1] * position, cache={})
        for tensor, (e, view) in caches.items():
            full = view.view(f"<i{e['lane'] // 8}").reshape(e["shape"])
            if position:
                state.cache[tensor] = np.take(full, np.arange(position), axis=e["axis"]).astype(np.int64)
        logits = decoder.step(state, ids)  # (1, T, V) codes
        for tensor, (e, view) in caches.items():  # write the new rows back
            full = view.view(f"<i{e['lane'] // 8}").reshape(e["shape"])
            rows = np.take(state.cache[tensor], np.arange(position, position + t), axis=e["axis"])
            index = [slice(None)] * full.ndim
            index[e["axis"]] = slice(position, position + t)
            full[tuple(index)] = rows
        last = logits.reshape(-1, logits.shape[-1])[-1]
        if argmax:
            record = out_rec.pack({"token": np.array([int(np.argmax(last))])})
        else:
            record = out_rec.pack({out_rec.fields[0].name: last})
        cycles = self._launch_cycles(P.MODE_DECODE, t)
        return [record], P.STATUS_OK, cycles

    # ---------------------------------------------------------------------------------------------- DMA
    def _channel(self, offset: int) -> tuple[DmaChannel, int]:
        return (self.mm2s, offset) if offset < 0x30 else (self.s2mm, offset - 0x30)

    def _dma_read(self, offset: int) -> int:
        ch, rel = self._channel(offset)
        if rel == 0x00:
            return ch.cr
        if rel == 0x04:
            if ch.busy:
                self._advance_to(ch.done_at)
                self._service()
            return ch.sr
        if rel in (0x18, 0x48 - 0x30):
            return ch.addr & 0xFFFF_FFFF
        if rel in (0x1C, 0x4C - 0x30):
            return ch.addr >> 32
        if rel == 0x28:
            return ch.received if ch is self.s2mm else ch.length
        return 0

    def _dma_write(self, offset: int, value: int) -> None:
        ch, rel = self._channel(offset)
        if rel == 0x00:
            if value & P.DMACR_RESET:  # a reset of either channel resets the whole engine (PG021)
                for c in (self.mm2s, self.s2mm):
                    c.cr, c.sr, c.busy, c.done_at, c.received, c.length = 0, P.DMASR_HALTED, False, None, 0, 0
                self.in_fifo.clear()
                self.out_fifo.clear()
                return
            ch.cr = value & ~P.DMACR_RESET
            if value & P.DMACR_RS:
                ch.sr &= ~P.DMASR_HALTED
            else:
                ch.sr |= P.DMASR_HALTED
                ch.busy = False
        elif rel == 0x04:
            ch.sr &= ~(value & (P.DMASR_IOC | 0x4000 | 0x2000))  # interrupt bits: write 1 to clear
        elif rel in (0x18, 0x48 - 0x30):
            ch.addr = (ch.addr & ~0xFFFF_FFFF) | value
        elif rel in (0x1C, 0x4C - 0x30):
            ch.addr = (ch.addr & 0xFFFF_FFFF) | (value << 32)
        elif rel == 0x28:
            self._dma_go(ch, value)

    def _dma_go(self, ch: DmaChannel, nbytes: int) -> None:
        if ch.sr & P.DMASR_HALTED or not ch.cr & P.DMACR_RS:
            return  # PG021: LENGTH writes while halted are ignored
        if nbytes == 0:
            ch.sr |= P.DMASR_INT_ERR | P.DMASR_HALTED
            return
        ch.length, ch.busy, ch.done_at, ch.received = nbytes, True, None, 0
        ch.sr &= ~P.DMASR_IDLE
        if ch is self.mm2s:
            try:
                data = self.memory.view(ch.addr, nbytes).copy()
            except LookupError:
                ch.sr |= P.DMASR_DEC_ERR | P.DMASR_HALTED
                ch.busy = False
                return
            if "stall_mm2s" in self.faults:
                return  # the transfer never completes and nothing reaches the kernel
            self.stats["mm2s_bytes"] += nbytes
            done = self.cycles + -(-nbytes // self.contract.beat)
            self.in_fifo.append(Packet(data, True, done))
            ch.done_at = done

    def _s2mm_step(self) -> None:
        ch = self.s2mm
        if not ch.busy or ch.done_at is not None or not self.out_fifo or "stall_s2mm" in self.faults:
            return
        packet = self.out_fifo.pop(0)
        data = packet.data
        if data.size > ch.length:  # the packet does not fit: PG021 flags an internal error and halts
            data = data[:ch.length]
            ch.sr |= P.DMASR_INT_ERR | P.DMASR_HALTED
        try:
            self.memory.view(ch.addr, data.size)[:] = data
        except LookupError:
            ch.sr |= P.DMASR_DEC_ERR | P.DMASR_HALTED
            ch.busy = False
            return
        self.stats["s2mm_bytes"] += data.size
        ch.received = data.size
        ch.done_at = max(self.cycles, packet.time) + -(-data.size // self.contract.beat)

    def _dma_complete(self) -> None:
        for ch in (self.mm2s, self.s2mm):
            if ch.busy and ch.done_at is not None and self.cycles >= ch.done_at:
                ch.busy = False
                ch.sr |= P.DMASR_IDLE | P.DMASR_IOC

    # --------------------------------------------------------------------------------------------- GPIO
    def _gpio_read(self, offset: int) -> int:
        return self.gpio_data if offset == P.GPIO_DATA else 0

    def _gpio_write(self, offset: int, value: int) -> None:
        if offset != P.GPIO_DATA:
            return
        if self.gpio_data & 1 and not value & 1:  # ap_rst_n asserted: the kernel and its registers reset
            self.kernel = KernelState()
            self.in_fifo.clear()
            self.out_fifo.clear()
        self.gpio_data = value & 1

    # --------------------------------------------------------------------------------------------- time
    def _advance_to(self, cycle: int | None) -> None:
        """An ideal poll loop: the clock jumps to a scheduled event; unscheduled events leave it alone."""
        if cycle is not None and cycle > self.cycles:
            self.cycles = cycle

    def _service(self) -> None:
        for _ in range(4):  # move data between the models until nothing changes
            self._kernel_step()
            self._s2mm_step()
            self._dma_complete()
            self._finish_kernel()
