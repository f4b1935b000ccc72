"""Board data: one TOML file per board in ``boards/`` (package ``fpgaformer.boards``), read with tomllib.

A user adds a board by adding a file ``boards/<name>.toml`` (or by passing a path to a ``.toml`` file
wherever a board name is accepted). Every field in `REQUIRED` must be present; the loader names the first
missing one. Figures carry their public source in a comment in the file.

Arithmetic the estimator takes from a board (all documented here, used by ``estimate`` and ``roofline``):

* DSP packing (AMD WP486): a DSP48E2 has a 27x18 multiplier; two products ``x*w1``, ``x*w2`` that share the
  operand ``x`` (on the 18-bit port) fit in one DSP when the two narrow operands sit at offsets 0 and
  ``s = bx + bw + 2`` of the 27-bit port: ``s + bw <= 27`` and ``bx <= 18``. int8 x int8 packs 2 per DSP;
  8 x 16 does not. A DSP48E1 (Zynq-7000) packs 1 (its pre-adder path is too narrow, WP486 is E2-only).
  A product wider than the multiplier takes ``ceil(max/27) * ceil(min/18)`` DSPs (25 x 18 on DSP48E1).
* Off-chip bandwidth at PL clock f: ``BW(f) = min(BW_peak, ports * port_bits/8 * f)`` (AXI port cap, PG201);
  the achievable figure used by estimates is ``bandwidth_efficiency * BW(f)``.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import UserError

# (section, key, type) of every field a board file must have.
REQUIRED: tuple[tuple[str | None, str, type], ...] = (
    (None, "name", str), (None, "part", str), (None, "family", str), (None, "pynq_version", str),
    ("resources", "dsp", int), ("resources", "dsp_type", str), ("resources", "bram36", int),
    ("resources", "uram", int), ("resources", "lut", int), ("resources", "ff", int),
    ("clock", "default_mhz", float),
    ("memory", "type", str), ("memory", "size_gb", float), ("memory", "peak_bandwidth_gbs", float),
    ("memory", "bandwidth_efficiency", float),
    ("axi", "ports", int), ("axi", "port_bits", int),
)

# Multiplier port widths (wide port, narrow port) per DSP type.
MULTIPLIER_PORTS = {"DSP48E1": (25, 18), "DSP48E2": (27, 18), "DSP58": (27, 24)}

BRAM36_BITS = 36 * 1024
URAM_BITS = 288 * 1024


@dataclass(frozen=True)
class Board:
    """One board's figures (see the module docstring for how they are used)."""

    name: str
    title: str
    part: str
    family: str
    pynq_version: str
    dsp: int
    dsp_type: str
    bram36: int
    uram: int
    lut: int
    ff: int
    clock_mhz: float
    memory_type: str
    memory_gb: float
    peak_bandwidth_gbs: float
    bandwidth_efficiency: float
    axi_ports: int
    axi_port_bits: int
    source: str = ""

    # ------------------------------------------------------------------------------------------ arithmetic
    def products_per_dsp(self, shared_bits: int, packed_bits: int) -> int:
        """Products sharing one ``shared_bits`` operand that one DSP computes (WP486 packing; 1 or 2)."""
        if self.dsp_type == "DSP48E1":
            return 1
        wide, narrow = MULTIPLIER_PORTS.get(self.dsp_type, (27, 18))
        offset = shared_bits + packed_bits + 2
        return 2 if shared_bits <= narrow and offset + packed_bits <= wide else 1

    def dsps_per_multiply(self, a_bits: int, b_bits: int) -> int:
        """DSPs for one ``a_bits x b_bits`` product: ``ceil(max/wide) * ceil(min/narrow)``."""
        wide, narrow = MULTIPLIER_PORTS.get(self.dsp_type, (27, 18))
        hi, lo = max(a_bits, b_bits), min(a_bits, b_bits)
        return math.ceil(hi / wide) * math.ceil(lo / narrow)

    def dsp_cost_per_product(self, a_bits: int, b_bits: int) -> float:
        """DSPs per product in a dot-product array: ``dsps_per_multiply / packing``, where either operand may
        be the shared one (an input is shared by the products of one row, a weight by those of many rows)."""
        return self.dsps_per_multiply(a_bits, b_bits) / self.packing(a_bits, b_bits)

    def packing(self, a_bits: int, b_bits: int) -> int:
        """Products per DSP for ``a_bits x b_bits`` products in a dot-product array (best operand order)."""
        return max(self.products_per_dsp(a_bits, b_bits), self.products_per_dsp(b_bits, a_bits))

    def port_cap_gbs(self, clock_mhz: float) -> float:
        """AXI cap ``ports * port_bits/8 * f`` in GB/s."""
        return self.axi_ports * self.axi_port_bits / 8 * clock_mhz * 1e6 / 1e9

    def bandwidth_gbs(self, clock_mhz: float | None = None) -> float:
        """Peak usable bandwidth ``min(BW_peak, port cap at f)`` in GB/s (no efficiency factor)."""
        f = self.clock_mhz if clock_mhz is None else clock_mhz
        return min(self.peak_bandwidth_gbs, self.port_cap_gbs(f))

    def sram_bits(self) -> int:
        return self.bram36 * BRAM36_BITS + self.uram * URAM_BITS

    def resources(self) -> dict[str, int]:
        return {"dsp": self.dsp, "bram36": self.bram36, "uram": self.uram, "lut": self.lut, "ff": self.ff}


# ------------------------------------------------------------------------------------------------- loading
def board_dir() -> Path:
    return Path(str(resources.files("fpgaformer.boards")))


def known_boards() -> list[str]:
    return sorted(p.stem for p in board_dir().glob("*.toml"))


def load_board(name: str | Path) -> Board:
    """Board by name (``kv260``) or by path to a TOML file. Raises UserError on unknown names/bad files."""
    text = str(name)
    path = Path(text)
    if text.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise UserError(f"board file {text} does not exist. Pass a board name ({', '.join(known_boards())}) "
                            "or the path of a board TOML file.")
    else:
        path = board_dir() / f"{text.lower()}.toml"
        if not path.is_file():
            raise UserError(f"unknown board {text!r}. Known boards: {', '.join(known_boards())}. To add a board, "
                            f"copy one of the files in {board_dir()} to <name>.toml and edit its figures.")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"board file {path} is not valid TOML ({e}). Fix the file; see the other boards in "
                        f"{board_dir()} for the format.") from None
    return board_from_dict(data, str(path))


def board_from_dict(data: dict, source: str = "<dict>") -> Board:
    """Validate a parsed board file and build a `Board`; a missing or mistyped field is named in the error."""
    values = {}
    for section, key, kind in REQUIRED:
        where = f"{section}.{key}" if section else key
        table = data if section is None else data.get(section)
        if not isinstance(table, dict) or key not in table:
            raise UserError(f"board file {source} lacks the field '{where}'"
                            + (f" (in the [{section}] table)" if section else "")
                            + ". Add it with its value and a comment naming its public source; every board "
                            f"needs: {', '.join(s + '.' + k if s else k for s, k, _ in REQUIRED)}.")
        value = table[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else \
            isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise UserError(f"board file {source}: field '{where}' must be a {kind.__name__}, got {value!r}.")
        values[where] = value
    if values["resources.dsp_type"] not in MULTIPLIER_PORTS:
        raise UserError(f"board file {source}: resources.dsp_type {values['resources.dsp_type']!r} is not one of "
                        f"{', '.join(MULTIPLIER_PORTS)}.")
    for where in ("resources.dsp", "resources.lut", "resources.ff", "clock.default_mhz",
                  "memory.peak_bandwidth_gbs", "axi.ports", "axi.port_bits"):
        if values[where] <= 0:
            raise UserError(f"board file {source}: field '{where}' must be positive, got {values[where]!r}.")
    if not 0 < values["memory.bandwidth_efficiency"] <= 1:
        raise UserError(f"board file {source}: memory.bandwidth_efficiency must be in (0, 1].")
    return Board(
        name=values["name"], title=str(data.get("title", values["name"])), part=values["part"],
        family=values["family"], pynq_version=values["pynq_version"], dsp=values["resources.dsp"],
        dsp_type=values["resources.dsp_type"], bram36=values["resources.bram36"], uram=values["resources.uram"],
        lut=values["resources.lut"], ff=values["resources.ff"], clock_mhz=float(values["clock.default_mhz"]),
        memory_type=values["memory.type"], memory_gb=float(values["memory.size_gb"]),
        peak_bandwidth_gbs=float(values["memory.peak_bandwidth_gbs"]),
        bandwidth_efficiency=float(values["memory.bandwidth_efficiency"]), axi_ports=values["axi.ports"],
        axi_port_bits=values["axi.port_bits"], source=source)
