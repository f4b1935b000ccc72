"""The hardware contract of a fpgaformer overlay: register map, stream order, packing (numpy only).

This module is the single definition of how the host talks to the overlay. The runtime (`engine`), the
register-accurate model (`sim_device`) and the overlay generator (``fpgaformer build``, overlays/) all read
it; ``make_contract`` writes it into BUILD as ``fpgaformer.json`` beside the ``.hwh`` (overlays/README.md is
the prose version).

Block design (one per BUILD):

    PS --M_AXI_HPM0/GP0--> AXI interconnect --> fpgaformer_0   (HLS top, s_axilite CONTROL)
                                             --> axi_dma_0      (AXI DMA 7.1, simple mode, MM2S + S2MM)
                                             --> axi_gpio_reset (AXI GPIO 2.0, channel 1 drives ap_rst_n)
    axi_dma_0 M_AXIS_MM2S --> fpgaformer_0 in_stream    fpgaformer_0 out_stream --> axi_dma_0 S_AXIS_S2MM
    fpgaformer_0 m_axi gmem0 (weights), gmem1 (KV cache), axi_dma_0 M_AXI_* --> PS S_AXI_HP0 (DDR)

Kernel registers (Vitis HLS s_axilite layout: 0x00 control, 0x04 GIE, 0x08 IER, 0x0C ISR, then one slot per
argument from 0x10; a 32-bit scalar takes 8 bytes, a 64-bit pointer 12 bytes: low word, high word, reserved):

    CTRL  bit 0 ap_start (host writes 1; reads 1 while running), bit 1 ap_done (clear on read),
          bit 2 ap_idle, bit 3 ap_ready (clear on read), bit 7 auto_restart (never used)
    mode      0 = encode: ``n_items`` whole sequences;  1 = decode: ``n_items`` new tokens at ``position``
    n_items   sequences (encode) or new tokens T (decode) in this launch
    position  decode: tokens already in the KV cache (p); the new tokens occupy p .. p+T-1
    flags     bit 0: decode returns the argmax id (int32) instead of the logits of the last new token
    weights   64-bit address of the weight image (m_axi gmem0), read by the kernel
    kv_cache  64-bit address of the KV cache (m_axi gmem1), read and written by the kernel
    design_id (out) the kernel's compiled-in design id, valid after a run (``design_id_ctrl`` bit 0)
    status    (out) 0 ok, 1 input stream ended early or late (TLAST), 2 position/context out of range

Streams (AXI4-Stream, ``beat_bytes`` wide; lanes little-endian, lane 0 in the least significant bits):

    in   one packet per launch (TLAST on its last beat): ``n_items`` input records back to back.
         encode record = every graph input in graph order, flattened, each value in a lane (ids and masks:
         32-bit lanes; fixed-point inputs: their codes); decode record = T token ids in 32-bit lanes.
    out  one packet per output record (TLAST on each record's last beat): encode = every graph output's codes
         in graph order; decode = the logits codes of the last new token (V lanes), or one int32 id.
    Every record is padded with zero bytes to a whole number of beats.

Lanes: a W-bit fixed-point code travels in the smallest of 8/16/32/64 bits that holds it, sign-extended
(signed types) or zero-extended; `pack` / `unpack` are the only converters.

Weight image (gmem0): every parameter the kernels quantize (``<key>_type`` in the layer's quant attrs), as
codes in lanes, each entry aligned to 64 bytes, in graph order; `weight_image` / `decode_weight_image`.
KV cache (gmem1): per attention cache point (see host.decoder), the full-context tensor of codes, token axis at
full length, C order; a step reads rows < p and writes rows p .. p+T-1.

AXI DMA registers (PG021, simple mode): MM2S DMACR 0x00, DMASR 0x04, SA 0x18/0x1C, LENGTH 0x28;
S2MM DMACR 0x30, DMASR 0x34, DA 0x48/0x4C, LENGTH 0x58. DMACR bit 0 RS, bit 2 reset; DMASR bit 0 halted,
bit 1 idle, bit 4 DMAIntErr, bit 5 DMASlvErr, bit 6 DMADecErr, bit 12 IOC_Irq (write 1 to clear).
Writing LENGTH starts a transfer; S2MM LENGTH reads back the bytes received. Lengths are < 2**length_width.

Reset GPIO: AXI GPIO channel 1 data (0x00) bit 0 drives the kernel's ap_rst_n (write 0 then 1 to reset).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .artifact import json_default, read_versioned_json
from .fixed import FixedType, quantize, to_float
from .graph import Graph, layer_macs

PROTOCOL_VERSION = 1
CONTRACT_FILE = "fpgaformer.json"
BITSTREAM = "fpgaformer.bit"
HWH = "fpgaformer.hwh"
SIM_HWH = "overlay/sim/fpgaformer.hwh"  # the emulated overlay's metadata (generated, no bitstream)

KERNEL_VLNV = "fpgaformer.org:hls:fpgaformer_top:1.0"
DMA_VLNV = "xilinx.com:ip:axi_dma:7.1"
GPIO_VLNV = "xilinx.com:ip:axi_gpio:2.0"

MODE_ENCODE, MODE_DECODE = 0, 1
FLAG_ARGMAX = 1
STATUS_OK, STATUS_STREAM, STATUS_RANGE = 0, 1, 2

# HLS control register bits
AP_START, AP_DONE, AP_IDLE, AP_READY, AUTO_RESTART = 0x1, 0x2, 0x4, 0x8, 0x80

# AXI DMA (PG021) register offsets and bits
MM2S_DMACR, MM2S_DMASR, MM2S_SA, MM2S_SA_MSB, MM2S_LENGTH = 0x00, 0x04, 0x18, 0x1C, 0x28
S2MM_DMACR, S2MM_DMASR, S2MM_DA, S2MM_DA_MSB, S2MM_LENGTH = 0x30, 0x34, 0x48, 0x4C, 0x58
DMACR_RS, DMACR_RESET, DMACR_IOC_IRQ_EN, DMACR_ERR_IRQ_EN = 0x1, 0x4, 0x1000, 0x4000
DMASR_HALTED, DMASR_IDLE, DMASR_INT_ERR, DMASR_SLV_ERR, DMASR_DEC_ERR, DMASR_IOC = 0x1, 0x2, 0x10, 0x20, 0x40, 0x1000
DMASR_ERRORS = DMASR_INT_ERR | DMASR_SLV_ERR | DMASR_DEC_ERR
GPIO_DATA, GPIO_TRI = 0x00, 0x04

# kernel arguments in the order of the HLS top's signature: (name, kind) with kind scalar | pointer | output
KERNEL_ARGS = (("mode", "scalar"), ("n_items", "scalar"), ("position", "scalar"), ("flags", "scalar"),
               ("weights", "pointer"), ("kv_cache", "pointer"), ("design_id", "output"), ("status", "output"))

# base addresses of the PS master port the IPs hang off, per board family
BASE_ADDRESS = {"zynq-ultrascale+": 0xA000_0000, "zynq-7000": 0x4000_0000, "versal": 0xA400_0000}
IP_RANGE = 0x1_0000
ALIGN = 64


class ContractError(Exception):
    """An artifact and an overlay that do not belong together, or a malformed contract."""


# ---------------------------------------------------------------------------------------------- registers
def kernel_registers() -> dict[str, dict]:
    """name -> {offset, size, access}: the Vitis HLS s_axilite layout of `KERNEL_ARGS` (module docstring)."""
    regs = {"CTRL": {"offset": 0x00, "size": 32, "access": "read-write"},
            "GIER": {"offset": 0x04, "size": 32, "access": "read-write"},
            "IP_IER": {"offset": 0x08, "size": 32, "access": "read-write"},
            "IP_ISR": {"offset": 0x0C, "size": 32, "access": "read-write"}}
    offset = 0x10
    for name, kind in KERNEL_ARGS:
        if kind == "pointer":
            regs[f"{name}_1"] = {"offset": offset, "size": 32, "access": "write-only"}
            regs[f"{name}_2"] = {"offset": offset + 4, "size": 32, "access": "write-only"}
            offset += 12
        elif kind == "output":
            regs[name] = {"offset": offset, "size": 32, "access": "read-only"}
            regs[f"{name}_ctrl"] = {"offset": offset + 4, "size": 32, "access": "read-only"}
            offset += 8
        else:
            regs[name] = {"offset": offset, "size": 32, "access": "write-only"}
            offset += 8
    return regs


# ------------------------------------------------------------------------------------------------ packing
def lane_bits(width: int) -> int:
    """Bits of the lane a ``width``-bit code travels in: the smallest of 8, 16, 32, 64 that holds it."""
    for lane in (8, 16, 32, 64):
        if width <= lane:
            return lane
    raise ContractError(f"a {width}-bit value does not fit a 64-bit lane")


def pack(codes: np.ndarray, lane: int) -> np.ndarray:
    """Integer codes -> little-endian bytes (uint8), one ``lane``-bit lane per code (two's complement)."""
    dtype = np.dtype(f"<i{lane // 8}")
    return np.ascontiguousarray(np.asarray(codes).reshape(-1).astype(np.int64).astype(dtype)).view(np.uint8)


def unpack(data: np.ndarray, lane: int, count: int, width: int | None = None, signed: bool = True) -> np.ndarray:
    """Bytes -> int64 codes: ``count`` lanes; the low ``width`` bits of each lane, sign-extended if signed."""
    raw = np.frombuffer(np.ascontiguousarray(data[: count * lane // 8]).tobytes(), dtype=f"<u{lane // 8}")
    codes = raw.astype(np.uint64)
    width = lane if width is None else width
    if width < 64:
        codes = codes & np.uint64((1 << width) - 1)
    codes = codes.astype(np.int64) if width < 64 else codes.view(np.int64)
    if signed and width < 64:
        codes = np.where(codes >= (1 << (width - 1)), codes - (1 << width), codes)
    return codes


def padded(nbytes: int, beat: int) -> int:
    return -(-nbytes // beat) * beat


@dataclass(frozen=True)
class Field:
    """One tensor in a stream record: ``count`` values in ``lane``-bit lanes (``fixed`` None for integers)."""

    name: str
    shape: tuple[int, ...]
    lane: int
    fixed: FixedType | None = None

    @property
    def count(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.count * self.lane // 8

    def to_json(self) -> dict:
        d = {"name": self.name, "shape": list(self.shape), "lane": self.lane}
        if self.fixed is not None:
            d["fixed"] = self.fixed.to_dict()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Field":
        fixed = FixedType.from_dict(d["fixed"]) if d.get("fixed") else None
        return cls(d["name"], tuple(d["shape"]), int(d["lane"]), fixed)


@dataclass(frozen=True)
class Record:
    """A stream record: fields back to back, padded to whole beats."""

    fields: tuple[Field, ...]
    beat: int

    @property
    def nbytes(self) -> int:
        return padded(sum(f.nbytes for f in self.fields), self.beat)

    def pack(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """{field: integer codes (or ints)} -> bytes of one record."""
        out = np.zeros(self.nbytes, np.uint8)
        at = 0
        for f in self.fields:
            v = np.asarray(values[f.name])
            if v.size != f.count:
                raise ContractError(f"stream field {f.name!r} needs {f.count} values {f.shape}, got {v.shape}")
            out[at:at + f.nbytes] = pack(v, f.lane)
            at += f.nbytes
        return out

    def unpack(self, data: np.ndarray) -> dict[str, np.ndarray]:
        """Bytes of one record -> {field: int64 codes of the field's shape}."""
        out, at = {}, 0
        for f in self.fields:
            width = f.fixed.width if f.fixed is not None else f.lane
            signed = f.fixed.signed if f.fixed is not None else True
            out[f.name] = unpack(data[at:at + f.nbytes], f.lane, f.count, width, signed).reshape(f.shape)
            at += f.nbytes
        return out


# --------------------------------------------------------------------------------------- weight image
def quantized_params(graph: Graph) -> list[tuple[str, np.ndarray, FixedType]]:
    """(key "layer/param", codes, type) of every parameter the kernels read from the weight image, in graph
    order: exactly the parameters the emulator quantizes (``<param>_type`` in the layer's quant attrs),
    Linear weights with their per-column shifts applied (as the emulator does)."""
    out = []
    for layer in graph.layers:
        q = layer.attrs.get("quant", {})
        for key in ("weight", "bias", "gamma", "beta", "const", "table", "cos", "sin"):
            if key in layer.params and f"{key}_type" in q:
                t = FixedType.from_dict(q[f"{key}_type"])
                value = np.asarray(layer.params[key], np.float64)
                if layer.op == "Linear" and key == "weight":
                    value = value * np.ldexp(1.0, np.asarray(q.get("weight_col_shift", 0), np.int64))
                out.append((f"{layer.name}/{key}", quantize(value, t), t))
    return out


def weight_entries(graph: Graph) -> tuple[list[dict], int]:
    entries, offset = [], 0
    for key, codes, t in quantized_params(graph):
        lane = lane_bits(t.width)
        nbytes = codes.size * lane // 8
        entries.append({"key": key, "offset": offset, "shape": list(codes.shape), "lane": lane,
                        "fixed": t.to_dict()})
        offset = padded(offset + nbytes, ALIGN)
    return entries, offset


def weight_image(graph: Graph, contract: "Contract") -> np.ndarray:
    """The bytes the host writes to the weights buffer (checked against the contract's layout)."""
    image = np.zeros(contract.weights_bytes, np.uint8)
    entries = {e["key"]: e for e in contract.weights}
    params = quantized_params(graph)
    if [k for k, _, _ in params] != list(entries):
        raise ContractError("the artifact's parameters differ from the overlay's weight layout")
    for key, codes, t in params:
        e = entries[key]
        if list(codes.shape) != e["shape"] or t.to_dict() != e["fixed"]:
            raise ContractError(f"parameter {key}: shape {codes.shape} / type {t} differ from the overlay's "
                                f"{tuple(e['shape'])} / {FixedType.from_dict(e['fixed'])}")
        data = pack(codes, e["lane"])
        image[e["offset"]:e["offset"] + data.size] = data
    return image


def decode_weight_image(image: np.ndarray, contract: "Contract") -> dict[str, tuple[np.ndarray, FixedType]]:
    """Weight image bytes -> {key: (codes, type)} (what the kernels see in gmem0)."""
    out = {}
    for e in contract.weights:
        t = FixedType.from_dict(e["fixed"])
        count = int(np.prod(e["shape"]))
        codes = unpack(image[e["offset"]:], e["lane"], count, t.width, t.signed)
        out[e["key"]] = (codes.reshape(e["shape"]), t)
    return out


def graph_with_weights(graph: Graph, decoded: dict[str, tuple[np.ndarray, FixedType]]) -> Graph:
    """A copy of ``graph`` whose quantized parameters are the values of ``decoded`` codes. Quantizing them
    again gives exactly those codes (the values are on the types' grids), so the emulator then computes with
    what is in device memory."""
    g = graph.copy()
    for layer in g.layers:
        q = layer.attrs.get("quant", {})
        for key in list(layer.params):
            name = f"{layer.name}/{key}"
            if name not in decoded:
                continue
            codes, t = decoded[name]
            value = to_float(codes, t)
            if layer.op == "Linear" and key == "weight":
                value = value * np.ldexp(1.0, -np.asarray(q.get("weight_col_shift", 0), np.int64))
            layer.params[key] = value
    return g


# ----------------------------------------------------------------------------------------------- contract
def graph_signature(graph: Graph) -> str:
    """sha256 of the graph's structure and types (manifest JSON without weights)."""
    text = json.dumps(graph.to_json(), sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def is_decoder(graph: Graph) -> bool:
    """A causal LM (the front end sets meta["kind"]); decoders run in decode mode with a KV cache."""
    return graph.meta.get("kind") == "decoder"


def _io_field(graph: Graph, name: str) -> Field:
    t = graph.tensors[name]
    if t.fixed is not None and t.dtype not in ("int64", "bool"):
        ft = FixedType.from_dict(t.fixed)
        return Field(name, tuple(t.shape), lane_bits(ft.width), ft)
    return Field(name, tuple(t.shape), 32)


@dataclass
class Contract:
    """A parsed ``fpgaformer.json``: see the module docstring for the meaning of every part."""

    data: dict[str, Any]

    # ---- identity
    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def design_id(self) -> int:
        return int(self.data["design_id"])

    @property
    def beat(self) -> int:
        return int(self.data["stream"]["beat_bytes"])

    # ---- IPs
    def ip(self, role: str) -> dict:
        return self.data["ips"][role]

    def reg(self, name: str) -> int:
        return int(self.data["ips"]["kernel"]["registers"][name]["offset"])

    @property
    def max_transfer(self) -> int:
        return (1 << int(self.data["ips"]["dma"]["length_width"])) - 1

    # ---- streams
    def in_record(self, tokens: int | None = None) -> Record:
        if self.kind == "decoder":
            return Record((Field("input_ids", (tokens or 1,), 32),), self.beat)
        return Record(tuple(Field.from_json(f) for f in self.data["inputs"]), self.beat)

    def out_record(self, argmax: bool = False) -> Record:
        if self.kind == "decoder":
            if argmax:
                return Record((Field("token", (1,), 32),), self.beat)
            f = Field.from_json(self.data["outputs"][0])
            return Record((Field(f.name, (f.shape[-1],), f.lane, f.fixed),), self.beat)
        return Record(tuple(Field.from_json(f) for f in self.data["outputs"]), self.beat)

    @property
    def context(self) -> int:
        return int(self.data.get("context") or 0)

    # ---- memory
    @property
    def weights(self) -> list[dict]:
        return self.data["weights"]["entries"]

    @property
    def weights_bytes(self) -> int:
        return max(int(self.data["weights"]["bytes"]), ALIGN)

    @property
    def kv_entries(self) -> list[dict]:
        return self.data["kv_cache"]["entries"]

    @property
    def kv_bytes(self) -> int:
        return max(int(self.data["kv_cache"]["bytes"]), ALIGN)

    # ---- I/O
    def to_json(self) -> str:
        return json.dumps(self.data, indent=1, sort_keys=True, default=json_default)

    def save(self, directory: Path) -> Path:
        path = Path(directory) / CONTRACT_FILE
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, directory: Path) -> "Contract":
        """Read and check ``fpgaformer.json`` once (`check_contract`); the rest of the code trusts its fields."""
        path = Path(directory) / CONTRACT_FILE
        data = read_versioned_json(
            path, "fpgaformer-overlay", "protocol_version", PROTOCOL_VERSION,
            ContractError, missing=f"{directory} has no overlay contract ({CONTRACT_FILE}); create it with "
                                   f"`fpgaformer build {directory} --board NAME`.",
            redo="rebuild the overlay")
        try:
            check_contract(data)
        except _Bad as e:
            raise ContractError(f"{path} is not an overlay contract fpgaformer wrote: {e}. The file is damaged or "
                                f"was edited; rebuild the overlay (`fpgaformer build {directory} --board NAME`) and "
                                "the vendor tools' bitstream with it.") from None
        return cls(data)

    # ---- checks
    def check_artifact(self, graph: Graph, manifest: dict) -> None:
        """Refuse an artifact that is not the one this overlay was built for (version, shapes, checksums)."""
        art = self.data["artifact"]
        problems = []
        if manifest.get("version") != art["version"]:
            problems.append(f"artifact format version {manifest.get('version')} != {art['version']}")
        for key, fields in (("inputs", graph.inputs), ("outputs", graph.outputs)):
            want = [(f["name"], list(f["shape"])) for f in self.data[key]]
            have = [(n, list(graph.tensors[n].shape)) for n in fields]
            if want != have:
                problems.append(f"{key} {have} != overlay {want}")
        if manifest.get("weights_sha256") != art["weights_sha256"]:
            problems.append(f"weights checksum {str(manifest.get('weights_sha256'))[:12]}... != overlay "
                            f"{art['weights_sha256'][:12]}...")
        if graph_signature(graph) != art["graph_sha256"]:
            problems.append("the graph (layers, types or kernel settings) differs from the one the overlay "
                            "was built from")
        if problems:
            raise ContractError("the artifact does not match the loaded overlay (built for "
                                f"{art.get('build', '?')}): " + "; ".join(problems) +
                                ". Nothing was sent to the device. Rebuild the overlay from this BUILD "
                                "(`fpgaformer build`) or load the BUILD it was made from.")

    def check_ip_dict(self, ip_dict: dict) -> None:
        """Compare the overlay's metadata (pynq ``Overlay.ip_dict`` from the .hwh) with the contract."""
        problems = []
        for role in ("kernel", "dma", "reset"):
            want = self.ip(role)
            got = ip_dict.get(want["name"])
            if got is None:
                problems.append(f"IP {want['name']} ({role}) is missing")
                continue
            if got.get("type") != want["vlnv"]:
                problems.append(f"{want['name']} is {got.get('type')}, expected {want['vlnv']}")
            if int(got.get("phys_addr", -1)) != int(want["base"]):
                problems.append(f"{want['name']} at {got.get('phys_addr'):#x}, expected {want['base']:#x}")
        kernel = ip_dict.get(self.ip("kernel")["name"], {})
        for name, reg in self.ip("kernel")["registers"].items():
            hw = kernel.get("registers", {}).get(name)
            if hw is not None and int(hw["address_offset"]) != reg["offset"]:
                problems.append(f"register {name} at {int(hw['address_offset']):#x}, expected {reg['offset']:#x}")
        if problems:
            raise ContractError("the overlay's .hwh does not match its contract " + CONTRACT_FILE + ": " +
                                "; ".join(problems) + ". Rebuild the overlay; nothing was sent.")


class _Bad(Exception):
    """One problem of a contract read from a file (`check_contract`)."""


MAX_CONTRACT_BYTES = 1 << 36  # weight image / KV cache bytes a contract may declare
LANES = (8, 16, 32, 64)


def _int(value, what: str, low: int = 0, high: int = (1 << 63) - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(f"{what} must be a whole number of {low}..{high}, got {value!r}"[:300])
    return value


def _obj(data, key: str, what: str) -> dict:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, dict):
        raise _Bad(f"{what} is missing or not an object")
    return value


def _list(data, key: str, what: str) -> list:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        raise _Bad(f"{what} is missing or not a list")
    return value


def _typed_entry(e, what: str, integer_lane: int | None = 32) -> tuple[int, ...]:
    """A stream field or memory entry: shape, lane and (optional) fixed type that agree with each other."""
    from .graph import GraphError, check_fixed, check_shape

    if not isinstance(e, dict):
        raise _Bad(f"{what} is not an object")
    try:
        shape = check_shape(e.get("shape"), what)
        t = check_fixed(e["fixed"], what) if e.get("fixed") is not None else None
    except GraphError as err:
        raise _Bad(str(err)) from None
    want = lane_bits(t.width) if t is not None else integer_lane
    if e.get("lane") not in LANES or (want is not None and e["lane"] != want):
        raise _Bad(f"{what} has lane {e.get('lane')!r}; its values travel in {want or 'an 8/16/32/64'}-bit lanes")
    return shape


def _layout(section: dict, what: str, key: str) -> None:
    """Entries of the weight image / KV cache: each at the 64-byte aligned end of the one before (the layout
    `make_contract` writes), ``bytes`` the end of the last."""
    offset, names = 0, set()
    for i, e in enumerate(_list(section, "entries", f"{what}.entries")):
        shape = _typed_entry(e, f"{what}.entries[{i}]", integer_lane=None)
        if not isinstance(e.get(key), str) or e[key] in names:
            raise _Bad(f"{what}.entries[{i}] has no {key} or repeats one")
        names.add(e[key])
        if e.get("offset") != offset:
            raise _Bad(f"{what} entry {e[key]!r} is at offset {e.get('offset')!r}; the layout puts it at {offset}")
        offset = padded(offset + int(np.prod(shape, dtype=np.int64)) * e["lane"] // 8, ALIGN)
        if offset > MAX_CONTRACT_BYTES:
            raise _Bad(f"{what} would need more than {MAX_CONTRACT_BYTES:,} bytes")
    if section.get("bytes") != offset:
        raise _Bad(f"{what}.bytes is {section.get('bytes')!r}; its entries end at byte {offset}")


def check_contract(data: dict) -> None:
    """Raise _Bad naming the first field of a contract (as `make_contract` writes it) that is missing, of the
    wrong type, out of range or inconsistent with the others."""
    kind = data.get("kind")
    if kind not in ("encoder", "decoder"):
        raise _Bad(f"kind must be 'encoder' or 'decoder', got {kind!r}")
    _int(data.get("design_id"), "design_id", 0, (1 << 32) - 1)
    clock = data.get("clock_mhz", 250.0)
    if isinstance(clock, bool) or not isinstance(clock, (int, float)) or not 0 < clock <= 100_000:
        raise _Bad(f"clock_mhz must be a number of MHz > 0, got {clock!r}")
    _int(data.get("context") or 0, "context", 1 if kind == "decoder" else 0, 1 << 20)
    art = _obj(data, "artifact", "artifact")
    for key in ("weights_sha256", "graph_sha256"):
        if not isinstance(art.get(key), str):
            raise _Bad(f"artifact.{key} is missing")
    ips = _obj(data, "ips", "ips")
    for role in ("kernel", "dma", "reset"):
        ip = _obj(ips, role, f"ips.{role}")
        for key in ("name", "vlnv"):
            if not isinstance(ip.get(key), str):
                raise _Bad(f"ips.{role}.{key} is missing or not a string")
        _int(ip.get("base"), f"ips.{role}.base", 0, (1 << 64) - 1)
        _int(ip.get("range"), f"ips.{role}.range", 0x1000, 1 << 32)
    registers = _obj(ips["kernel"], "registers", "ips.kernel.registers")
    for name, reg in kernel_registers().items():  # the HLS s_axilite layout is fixed by the protocol version
        if not isinstance(registers.get(name), dict) or registers[name].get("offset") != reg["offset"]:
            raise _Bad(f"kernel register {name} is missing or not at offset {reg['offset']:#x}")
    _int(ips["dma"].get("length_width"), "ips.dma.length_width", 8, 26)
    beat = _int(_obj(data, "stream", "stream").get("beat_bytes"), "stream.beat_bytes", 1, 1024)
    if beat & (beat - 1):
        raise _Bad(f"stream.beat_bytes must be a power of two, got {beat}")
    for key in ("inputs", "outputs"):
        fields = _list(data, key, key)
        if not fields:
            raise _Bad(f"{key} is empty")
        for i, f in enumerate(fields):
            _typed_entry(f, f"{key}[{i}]")
            if not isinstance(f.get("name"), str):
                raise _Bad(f"{key}[{i}] has no name")
    _layout(_obj(data, "weights", "weights"), "weights", "key")
    kv = _obj(data, "kv_cache", "kv_cache")
    _layout(kv, "kv_cache", "tensor")
    for i, e in enumerate(kv["entries"]):
        _int(e.get("axis"), f"kv_cache.entries[{i}].axis", 0, len(e["shape"]) - 1)
    latency = _obj(data, "latency", "latency")
    for key in ("launch_cycles", "cycles_per_sequence", "cycles_per_token"):
        value = latency.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2 ** 62:
            raise _Bad(f"latency.{key} must be a number of cycles >= 0, got {value!r}")


def make_contract(graph: Graph, manifest: dict, board: dict | None = None, length_width: int = 26,
                  beat_bytes: int = 8, latency: dict | None = None) -> Contract:
    """The contract of the overlay for a quantized ``graph`` (from `load_artifact`) on ``board``
    ({"name", "family", "clock_mhz"}). ``length_width`` is the DMA length register width (PG021, 8..26)."""
    board = board or {"name": "emulated", "family": "zynq-ultrascale+", "clock_mhz": 250.0}
    if not all(t.fixed is not None for n, t in graph.tensors.items()
               if t.dtype not in ("int64", "bool") and any(n in l.outputs for l in graph.layers)):
        raise ContractError("the BUILD holds a float graph; compile it with a precision "
                            "(`fpgaformer compile --precision ...`) before building an overlay")
    if not 8 <= length_width <= 26:
        raise ContractError(f"the DMA length register width must be 8..26 bits (PG021), got {length_width}")
    base = BASE_ADDRESS.get(board.get("family", "zynq-ultrascale+"))
    if base is None:
        raise ContractError(f"board family {board.get('family')!r} has no PYNQ overlay flow (supported: "
                            f"{', '.join(BASE_ADDRESS)}); Alveo cards run through XRT directly")
    kind = "decoder" if is_decoder(graph) else "encoder"
    entries, wbytes = weight_entries(graph)
    kv, kvbytes, context = [], 0, 0
    if kind == "decoder":
        from .decoder import IncrementalDecoder

        dec = IncrementalDecoder(graph)
        context = dec.context
        for point in dec.cache_points:
            t = FixedType.from_dict(graph.tensors[point.tensor].fixed)
            shape = list(graph.tensors[point.tensor].shape)
            lane = lane_bits(t.width)
            kv.append({"tensor": point.tensor, "layer": point.layer, "axis": point.axis, "shape": shape,
                       "lane": lane, "fixed": t.to_dict(), "offset": kvbytes})
            kvbytes = padded(kvbytes + int(np.prod(shape)) * lane // 8, ALIGN)
    gsig = graph_signature(graph)
    design_id = int(hashlib.sha256((gsig + manifest["weights_sha256"]).encode()).hexdigest()[:8], 16)
    data = {
        "format": "fpgaformer-overlay", "protocol_version": PROTOCOL_VERSION, "kind": kind,
        "board": board.get("name"), "family": board.get("family"), "clock_mhz": float(board.get("clock_mhz", 250)),
        "design_id": design_id, "context": context,
        "artifact": {"version": manifest.get("version"), "weights_sha256": manifest["weights_sha256"],
                     "graph_sha256": gsig, "build": board.get("name")},
        "ips": {
            "kernel": {"name": "fpgaformer_0", "vlnv": KERNEL_VLNV, "base": base, "range": IP_RANGE,
                       "registers": kernel_registers(), "args": [list(a) for a in KERNEL_ARGS]},
            "dma": {"name": "axi_dma_0", "vlnv": DMA_VLNV, "base": base + IP_RANGE, "range": IP_RANGE,
                    "length_width": length_width, "data_width": beat_bytes * 8},
            "reset": {"name": "axi_gpio_reset", "vlnv": GPIO_VLNV, "base": base + 2 * IP_RANGE,
                      "range": IP_RANGE},
        },
        "stream": {"beat_bytes": beat_bytes},
        "inputs": [_io_field(graph, n).to_json() for n in graph.inputs],
        "outputs": [_io_field(graph, n).to_json() for n in graph.outputs],
        "weights": {"bytes": wbytes, "entries": entries},
        "kv_cache": {"bytes": kvbytes, "entries": kv},
        "latency": latency or default_latency(graph, kind),
    }
    return Contract(data)


def default_latency(graph: Graph, kind: str, macs_per_cycle: int = 256) -> dict:
    """A cycle model when no estimate is given: MACs / ``macs_per_cycle`` plus fixed launch costs."""
    macs = sum(layer_macs(layer, graph) for layer in graph.layers)
    tokens = max(1, int(graph.tensors[graph.inputs[0]].shape[-1]) if graph.inputs else 1)
    per_token = max(1, macs // tokens // macs_per_cycle)
    return {"model": f"MACs/{macs_per_cycle} per cycle", "launch_cycles": 2000,
            "cycles_per_sequence": max(1, macs // macs_per_cycle), "cycles_per_token": per_token}

