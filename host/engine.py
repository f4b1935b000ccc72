"""The engine: one runtime above any `Device` (numpy only).

It owns everything that can go wrong between host and overlay, once, for every Device:

  * refusal: the artifact is checked against the overlay's contract (format version, I/O shapes, weights and
    graph checksums) before any byte is sent (`Contract.check_artifact`);
  * buffer plan: the weight image, the KV cache (decoders) and the stream staging buffers are allocated once;
    weights are written once and synced; the KV cache is never touched by the host after it is zeroed;
  * a launch: argument registers (64-bit addresses as two words), arm the S2MM receive of the first output
    record, send the input packet (MM2S), ap_start, then per output record wait for S2MM and arm the next,
    wait for MM2S, wait for ap_done (the only reader of CTRL), check the kernel's status and design id;
  * deadlines: every wait has the launch's deadline (``timeout`` s of wall-clock); on a timeout, device error or
    Ctrl-C the device is reset (DMA reset + kernel reset GPIO) before the error propagates, so it is usable
    by the next call;
  * packing: `protocol.Record` packs inputs and unpacks outputs (codes); floats come from `fixed.to_float`;
  * statistics: host seconds per stage (pack, sync, launch, wait, unpack), launches, items, modelled device
    seconds on a simulated device.

Encoder mode: `encode` streams a batch of sequences in launches of at most ``batch`` sequences (and at most one
DMA length register's worth of input); `embed` mean-pools the hidden states over the attention mask.
Decoder mode: `prefill` (chunks of up to ``prefill_chunk`` tokens) then `step` (one token); per launch only
the token ids go down (the position is a register) and the logits of the last token (or its argmax) come back.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import protocol as P
from .device import Device, DeviceError
from .fixed import quantize, to_float
from .graph import Graph

STAGES = ("pack", "sync", "launch", "wait", "unpack")
LANE_MIN, LANE_END = -(1 << 31), 1 << 31  # integer inputs travel in 32-bit two's-complement lanes


# ------------------------------------------------------------------------------------ input checks
def id_limits(graph: Graph) -> dict[str, int]:
    """{graph input: number of rows of the embedding table(s) it indexes} for every input that is a tensor of
    ids (reaching an Embedding directly or through Reshapes, which keep the element order)."""
    producer = graph.producer()
    limits: dict[str, int] = {}
    for layer in graph.layers:
        if layer.op != "Embedding":
            continue
        name = layer.inputs[0]
        while name not in graph.inputs and name in producer and producer[name].op == "Reshape":
            name = producer[name].inputs[0]
        if name in graph.inputs:
            rows = int(np.shape(layer.params["table"])[0])
            limits[name] = min(rows, limits.get(name, rows))
    return limits


def _first_bad(a: np.ndarray, bad: np.ndarray) -> str:
    """'value v at index i' of the first True of ``bad`` (an index into ``a``)."""
    at = np.unravel_index(int(np.argmax(bad)), a.shape) if a.ndim else ()
    where = f" at index {tuple(int(i) for i in at)}" if a.ndim > 1 else f" at position {int(at[0])}" if a.ndim else ""
    value = a[at]
    return f"{value.item() if hasattr(value, 'item') else value!r}{where}"


def check_ids(values, limit: int | None, what: str = "token id") -> np.ndarray:
    """``values`` as int64 if every one is a whole number in [0, limit) (or in the 32-bit lane without a limit);
    a ValueError that names the first bad value otherwise. Nothing is cast before it is checked: ids of 2**32
    and more, negative ids, uint64 and float ids would alias other ids in the lanes."""
    a = np.asarray(values)
    if a.size == 0:
        return np.zeros(a.shape, np.int64)
    lo, hi = (0, limit) if limit is not None else (LANE_MIN, LANE_END)
    if a.dtype == object and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in a.flat):
        bad = np.vectorize(lambda v: not lo <= int(v) < hi, otypes=[bool])(a)
    elif a.dtype.kind in "iu":
        bad = (a < lo) | (a >= hi)
    else:
        example = _first_bad(a, np.ones(a.shape, bool))
        raise ValueError(f"{what}s must be integers; got {a.dtype} values (e.g. {example})")
    if bad.any():
        allowed = f"the vocabulary has {limit} ids, 0..{limit - 1}" if limit is not None else \
            f"values travel in 32-bit lanes, {LANE_MIN}..{LANE_END - 1}"
        raise ValueError(f"{what} {_first_bad(a, bad)} is out of range: {allowed}")
    return a.astype(np.int64)


def check_feed(name: str, values, dtype: str, limit: int | None = None) -> np.ndarray:
    """One model input's array checked against the input's kind: integer inputs (``dtype`` int*/bool) take
    integer arrays (ids within ``limit``, other integers within the 32-bit lane), returned as int64; float
    inputs take finite real arrays, returned as float64. A ValueError says what is wrong otherwise."""
    a = np.asarray(values)
    if dtype.startswith(("int", "uint")) or dtype == "bool":
        if a.dtype.kind not in ("iub" if dtype == "bool" else "iu"):
            raise ValueError(f"input {name!r} holds {a.dtype} values; the model takes integers ({dtype}) there "
                             "(token ids, masks): give an integer array")
        return check_ids(a.astype(np.int64) if a.dtype.kind == "b" else a, limit,
                         what=f"input {name!r} value" if limit is None else f"input {name!r} token id")
    if a.dtype.kind not in "iuf":
        raise ValueError(f"input {name!r} holds {a.dtype} values; the model takes real numbers ({dtype}) there")
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.all():
        raise ValueError(f"input {name!r} holds {int((~finite).sum())} NaN/inf value(s) (first: "
                         f"{_first_bad(a, ~finite)}); give finite numbers")
    return a


@dataclass
class RunStats:
    """Host time per stage (seconds), counts, and modelled device time (None on hardware)."""

    stages: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    launches: int = 0
    items: int = 0          # sequences (encoder) or tokens processed (decoder)
    new_tokens: int = 0     # generated tokens (decoder)
    wall_s: float = 0.0
    device_s: float | None = None

    @property
    def host_s(self) -> float:
        return sum(self.stages.values())

    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict:
        return {"stages_s": dict(self.stages), "launches": self.launches, "items": self.items,
                "new_tokens": self.new_tokens, "wall_s": self.wall_s, "device_s": self.device_s,
                "tokens_per_s": self.tokens_per_s()}


class Engine:
    """Runs a BUILD's artifact on a Device that holds the matching overlay."""

    def __init__(self, device: Device, graph: Graph, manifest: dict, timeout: float = 10.0, batch: int = 8,
                 prefill_chunk: int | None = None):
        self.device = device
        self.contract = c = device.contract
        c.check_artifact(graph, manifest)  # before anything is sent
        self.graph = graph
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        self.timeout = float(timeout)
        self.id_limits = id_limits(graph)
        self.kind = c.kind
        self.stats = RunStats()
        self._design_checked = False
        self.position: int | None = 0
        if c.kind == "encoder":
            self.in_rec, self.out_rec = c.in_record(), c.out_record()
            for rec, what in ((self.out_rec, "output"), (self.in_rec, "input")):
                if rec.nbytes > c.max_transfer:
                    raise P.ContractError(f"one {what} record is {rec.nbytes} bytes, more than the overlay's DMA "
                                          f"length register allows ({c.max_transfer}); rebuild the overlay with a "
                                          "wider --dma-length-bits")
            self.batch = max(1, min(int(batch), c.max_transfer // self.in_rec.nbytes))
            in_bytes, out_bytes = self.batch * self.in_rec.nbytes, self.batch * self.out_rec.nbytes
        else:
            self.prefill_chunk = max(1, min(int(prefill_chunk or c.context), c.context,
                                            c.max_transfer // 4))
            self.logits_rec, self.argmax_rec = c.out_record(False), c.out_record(True)
            in_bytes = c.in_record(self.prefill_chunk).nbytes
            out_bytes = self.logits_rec.nbytes
            if out_bytes > c.max_transfer:
                raise P.ContractError(f"the logits record ({out_bytes} bytes) exceeds the DMA length register "
                                      f"({c.max_transfer}); rebuild with a wider --dma-length-bits")
        # buffer plan: allocated once
        self.weights = device.alloc(c.weights_bytes)
        np.copyto(self.weights.array[:c.weights_bytes], P.weight_image(graph, c))
        self.weights.sync_to_device()
        self.kv = device.alloc(c.kv_bytes)
        self.kv.array[:] = 0
        self.kv.sync_to_device()
        self.inbuf = device.alloc(in_bytes, cacheable=True)
        self.outbuf = device.alloc(out_bytes, cacheable=True)
        device.reset()

    @classmethod
    def open(cls, build_dir: Path, device: Device, **kwargs) -> "Engine":
        """Load the artifact of ``build_dir`` and the overlay into ``device`` (contract first)."""
        from .artifact import load_artifact

        graph, manifest = load_artifact(Path(build_dir))
        device.load(build_dir)
        return cls(device, graph, manifest, **kwargs)

    def close(self) -> None:
        for buf in (self.weights, self.kv, self.inbuf, self.outbuf):
            buf.free()
        self.device.close()

    # ------------------------------------------------------------------------------------------ timing
    @contextmanager
    def _stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stats.stages[name] += time.perf_counter() - t0

    def reset_stats(self) -> RunStats:
        old, self.stats = self.stats, RunStats()
        return old

    # ------------------------------------------------------------------------------------------ launch
    def _launch(self, mode: int, n_items: int, position: int, flags: int, in_bytes: int,
                out_records: list[tuple[int, int]]) -> None:
        """One kernel run: program, stream, wait (module docstring). Resets the device on any failure."""
        d, c = self.device, self.contract
        deadline = time.monotonic() + self.timeout
        try:
            with self._stage("sync"):
                self.inbuf.sync_to_device()
            with self._stage("launch"):
                d.write("kernel", c.reg("mode"), mode)
                d.write("kernel", c.reg("n_items"), n_items)
                d.write("kernel", c.reg("position"), position)
                d.write("kernel", c.reg("flags"), flags)
                d.write64("kernel", c.reg("weights_1"), self.weights.device_address)
                d.write64("kernel", c.reg("kv_cache_1"), self.kv.device_address)
                first_off, first_len = out_records[0]
                recv = d.dma_transfer("recv", self.outbuf, first_len, first_off)  # arm the receiver first
                send = d.dma_transfer("send", self.inbuf, in_bytes)
                d.kernel_start()
            with self._stage("wait"):
                for i, (offset, nbytes) in enumerate(out_records):
                    got = d.dma_wait(recv, deadline)
                    if got != nbytes:
                        raise DeviceError(f"output record {i}: S2MM received {got} bytes, expected {nbytes} "
                                          "(the kernel ended the packet (TLAST) at the wrong place)")
                    if i + 1 < len(out_records):
                        recv = d.dma_transfer("recv", self.outbuf, out_records[i + 1][1], out_records[i + 1][0])
                d.dma_wait(send, deadline)
                d.wait_done(deadline)
                status = d.read("kernel", c.reg("status"))
                if not self._design_checked and d.read("kernel", c.reg("design_id_ctrl")) & 1:
                    found = d.read("kernel", c.reg("design_id"))
                    if found != c.design_id:
                        raise P.ContractError(f"the loaded bitstream reports design id {found:#010x}, its contract "
                                              f"says {c.design_id:#010x}: the .bit and {P.CONTRACT_FILE} come from "
                                              "different builds. Rebuild the overlay.")
                    self._design_checked = True
                if status != P.STATUS_OK:
                    what = {P.STATUS_STREAM: "its input stream ended early or late (TLAST)",
                            P.STATUS_RANGE: "position/context out of range"}.get(status, f"status {status}")
                    raise DeviceError(f"the kernel reported an error: {what}")
            with self._stage("sync"):
                self.outbuf.sync_from_device()
            self.stats.launches += 1
        except BaseException:  # timeouts, device errors, Ctrl-C: leave the device usable
            self._recover()
            raise

    def _recover(self) -> None:
        self.position = None  # the KV cache of the interrupted sequence is not trustworthy
        try:
            self.device.reset()
        except KeyboardInterrupt:
            self.device.reset()

    def _device_time(self):
        return self.device.modelled_seconds()

    # ----------------------------------------------------------------------------------------- encoder
    def encode(self, feeds: dict[str, np.ndarray], codes: bool = False,
               progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
        """Run N sequences: ``feeds[name]`` is (N, *shape) or (N, *shape without batch 1). Returns every graph
        output as (N, *shape) floats (or int64 codes with ``codes=True``)."""
        if self.kind != "encoder":
            raise P.ContractError("this overlay is a decoder; use prefill/step or the Generator")
        t_start, dev0 = time.perf_counter(), self._device_time()
        fields = self.in_rec.fields
        unknown = sorted(set(feeds) - {f.name for f in fields})
        if unknown:  # a misspelt or extra input is never ignored (the model would run without it)
            raise ValueError(f"unknown input(s) {unknown}; the model takes {[x.name for x in fields]}")
        n = None
        arrays = {}
        for f in fields:
            if f.name not in feeds:
                raise ValueError(f"missing input {f.name!r}; the model takes {[x.name for x in fields]}")
            a = np.asarray(feeds[f.name])
            accepted = [f.shape] + ([f.shape[1:]] if len(f.shape) > 1 and f.shape[0] == 1 else [])
            if a.ndim == 0 or tuple(a.shape[1:]) not in accepted or a.shape[0] == 0:
                forms = " or ".join("(N, " + ", ".join(map(str, s)) + ")" for s in accepted)
                raise ValueError(f"input {f.name!r} has shape {a.shape}; the model takes {forms} for N >= 1 "
                                 "sequences (one sequence per row; a longer sequence is not split into several, "
                                 "and axes are never reordered)")
            count = a.shape[0]
            a = check_feed(f.name, a, self.graph.tensors[f.name].dtype, self.id_limits.get(f.name))
            arrays[f.name] = a.reshape(count, *f.shape)
            if n is not None and count != n:
                raise ValueError(f"inputs disagree on the batch size ({n} vs {count})")
            n = count
        outs = {f.name: np.zeros((n, *f.shape), np.int64) for f in self.out_rec.fields}
        for start in range(0, n, self.batch):
            k = min(self.batch, n - start)
            with self._stage("pack"):
                for i in range(k):
                    values = {}
                    for f in fields:
                        v = arrays[f.name][start + i]
                        values[f.name] = quantize(v, f.fixed) if f.fixed is not None else v
                    at = i * self.in_rec.nbytes
                    self.inbuf.array[at:at + self.in_rec.nbytes] = self.in_rec.pack(values)
            size = self.out_rec.nbytes
            self._launch(P.MODE_ENCODE, k, 0, 0, k * self.in_rec.nbytes, [(i * size, size) for i in range(k)])
            with self._stage("unpack"):
                for i in range(k):
                    rec = self.out_rec.unpack(self.outbuf.array[i * size:(i + 1) * size])
                    for name, v in rec.items():
                        outs[name][start + i] = v
            self.stats.items += k
            if progress is not None:
                progress(start + k, n)
        if not codes:
            outs = {f.name: to_float(outs[f.name], f.fixed) if f.fixed is not None else outs[f.name]
                    for f in self.out_rec.fields}
        self._finish(t_start, dev0)
        return outs

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray, **kwargs) -> np.ndarray:
        """Mean-pooled, L2-normalised sentence embeddings (N, d) from the first output (hidden states)."""
        out = self.encode({"input_ids": input_ids, "attention_mask": attention_mask}, **kwargs)
        hidden = next(iter(out.values()))
        hidden = hidden.reshape(hidden.shape[0], -1, hidden.shape[-1])
        mask = np.asarray(attention_mask).reshape(hidden.shape[0], -1, 1).astype(np.float64)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)

    def _finish(self, t_start: float, dev0) -> None:
        self.stats.wall_s += time.perf_counter() - t_start
        dev1 = self._device_time()
        if dev1 is not None and dev0 is not None:
            self.stats.device_s = (self.stats.device_s or 0.0) + dev1 - dev0

    # ----------------------------------------------------------------------------------------- decoder
    @property
    def context(self) -> int:
        return self.contract.context

    def start_sequence(self) -> None:
        """Forget the current sequence (its cache rows are overwritten by the next prefill)."""
        self.position = 0

    def _decode_launch(self, ids: np.ndarray, argmax: bool) -> np.ndarray | int:
        t = ids.size
        rec = self.contract.in_record(t)
        out = self.argmax_rec if argmax else self.logits_rec
        with self._stage("pack"):
            self.inbuf.array[:rec.nbytes] = rec.pack({"input_ids": ids})
        self._launch(P.MODE_DECODE, t, self.position, P.FLAG_ARGMAX if argmax else 0, rec.nbytes,
                     [(0, out.nbytes)])
        self.position += t
        self.stats.items += t
        with self._stage("unpack"):
            values = out.unpack(self.outbuf.array[:out.nbytes])
        if argmax:
            return int(values["token"][0])
        f = out.fields[0]
        return to_float(values[f.name], f.fixed) if f.fixed is not None else values[f.name].astype(np.float64)

    @property
    def vocab(self) -> int | None:
        """Rows of the embedding table the decoder's token ids index (None when the graph has none)."""
        return self.id_limits.get("input_ids", min(self.id_limits.values(), default=None))

    def token_ids(self, ids) -> np.ndarray:
        """``ids`` as a flat int64 array, each a whole number in [0, vocab) (`check_ids`), else ValueError."""
        return check_ids(ids, self.vocab).reshape(-1)

    def prefill(self, ids, argmax: bool = False):
        """Start a sequence with ``ids``; returns the last token's logits (V,) or, with argmax, its id."""
        if self.kind != "decoder":
            raise P.ContractError("this overlay is an encoder; use encode/embed")
        ids = self.token_ids(ids)
        if ids.size == 0:
            raise ValueError("the prompt is empty")
        if ids.size > self.context:
            raise ValueError(f"the prompt has {ids.size} tokens; the overlay's context is {self.context}")
        t_start, dev0 = time.perf_counter(), self._device_time()
        self.position = 0
        result = None
        for at in range(0, ids.size, self.prefill_chunk):
            chunk = ids[at:at + self.prefill_chunk]
            result = self._decode_launch(chunk, argmax and at + chunk.size == ids.size)
        self._finish(t_start, dev0)
        return result

    def step(self, token: int, argmax: bool = False):
        """Append one token; returns its logits (V,) or, with argmax, the next token id."""
        if self.position is None:
            raise DeviceError("the sequence was interrupted (timeout, error or Ctrl-C); start again with prefill")
        if self.position >= self.context:
            raise ValueError(f"context full ({self.context} tokens)")
        t_start, dev0 = time.perf_counter(), self._device_time()
        token = self.token_ids(token)
        if token.size != 1:
            raise ValueError(f"step takes one token id, got {token.size}")
        result = self._decode_launch(token, argmax)
        self._finish(t_start, dev0)
        return result
