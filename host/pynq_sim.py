"""The simulated overlay behind pynq's own Device seam, so real pynq code (Overlay, allocate, DMA, DefaultIP,
MMIO) runs on x86 against `SimDevice`'s register models. pynq is imported lazily (only `PynqSimDevice` needs it).

Two parts:
  * `write_hwh(contract, path)`: the overlay's hardware handoff (.hwh XML, the subset of Vivado's format that
    PYNQ's metadata parser reads: modules with VLNV and parameters, register maps, the PS memory map). It is
    generated from the contract, so the emulated overlay and the contract cannot disagree; a Vivado build
    writes the real one.
  * `make_pynq_sim_device(sim)`: a ``pynq.Device`` subclass with capability REGISTER_RW whose register
    accesses go to ``sim.bus_read/bus_write`` and whose ``allocate`` returns real ``PynqBuffer``s over the
    simulated DDR (non-cacheable: the array is device memory; cacheable: flush/invalidate copy). The pitfalls
    of running pynq off-board (notes/pynq.md §4) are handled here: clock ``enable`` entries are stripped, the
    device is made ``Device.active_device``, ``interrupt_pins`` is empty, ``download`` only stamps the device.
    Buffers behave as pynq >= 3.1 makes them on a board (the same in 3.1.x and 4.0): at least 8 KB per buffer
    object, and ``flush``/``invalidate`` sync the whole buffer object, not the slice.
Works with pynq 3.1.x and 4.0 (CI runs 3.1.2 and 4.0.0: tests/runtime/test_pynq_path.py).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

from . import protocol as P

PS_MODULES = {"zynq-ultrascale+": ("zynq_ultra_ps_e_0", "xilinx.com:ip:zynq_ultra_ps_e:3.4", "zynq_ultra_ps_e",
                                   "M_AXI_HPM0_FPD", "zynq_ultra_ps_e"),
              "zynq-7000": ("processing_system7_0", "xilinx.com:ip:processing_system7:5.5", "processing_system7",
                            "M_AXI_GP0", "zynq"),
              "versal": ("versal_cips_0", "xilinx.com:ip:versal_cips:3.3", "versal_cips", "M_AXI_FPD", "versal")}


def _attr(value) -> str:
    """``value`` as a quoted XML attribute (``quoteattr``: & < > and quotes escaped); characters XML 1.0 cannot
    hold at all (control characters, unpaired surrogates) become U+FFFD."""
    text = "".join(ch if ch in "\t\n\r" or " " <= ch <= "\ud7ff" or "\ue000" <= ch <= "\ufffd"
                   or ch >= "\U00010000" else "\ufffd" for ch in str(value))
    return quoteattr(text)


def _registers_xml(registers: dict[str, dict], indent: str) -> str:
    out = [f"{indent}<REGISTERS>"]
    for name, reg in registers.items():
        out.append(f"{indent}  <REGISTER NAME={quoteattr(name)}>")
        for key, value in (("DESCRIPTION", name), ("ADDRESS_OFFSET", str(reg["offset"])),
                           ("SIZE", str(reg.get("size", 32))), ("ACCESS", reg.get("access", "read-write")),
                           ("IS_ENABLED", "true"), ("RESET_VALUE", "0")):
            out.append(f"{indent}    <PROPERTY NAME=\"{key}\" VALUE={quoteattr(value)}/>")
        out.append(f"{indent}  </REGISTER>")
    out.append(f"{indent}</REGISTERS>")
    return "\n".join(out)


def _module(instance: str, vlnv: str, modtype: str, params: dict, interface: str, registers: dict | None,
            extra_bus: str = "", memmap: str = "", is_pl: bool = True) -> str:
    version = vlnv.split(":")[-1]
    not_pl = "" if is_pl else 'IS_PL="FALSE" '
    q = _attr  # every value that reaches the XML is quoted for an attribute
    lines = [f'    <MODULE COREREVISION="1" FULLNAME={q("/" + instance)} HWVERSION={q(version)} '
             f'INSTANCE={q(instance)} IPTYPE="PERIPHERAL" IS_ENABLE="1" {not_pl}MODCLASS="PERIPHERAL" '
             f'MODTYPE={q(modtype)} VLNV={q(vlnv)}>',
             "      <DOCUMENTS/>"]
    if registers is not None:
        lines += ["      <ADDRESSBLOCKS>",
                  f"        <ADDRESSBLOCK ACCESS=\"read-write\" INTERFACE={q(interface)} NAME=\"Reg\" "
                  f"RANGE=\"{P.IP_RANGE}\" USAGE=\"register\">",
                  _registers_xml(registers, "          "),
                  "        </ADDRESSBLOCK>",
                  "      </ADDRESSBLOCKS>"]
    lines.append("      <PARAMETERS>")
    for key, value in params.items():
        lines.append(f"        <PARAMETER NAME={quoteattr(key)} VALUE={quoteattr(str(value))}/>")
    lines.append("      </PARAMETERS>")
    if memmap:
        lines += ["      <MEMORYMAP>", memmap, "      </MEMORYMAP>"]
    lines.append("      <PORTS/>")
    lines.append("      <BUSINTERFACES>")
    if interface:
        lines.append(f"        <BUSINTERFACE BUSNAME={q('ps_to_' + instance)} DATAWIDTH=\"32\" NAME={q(interface)} "
                     f"TYPE=\"SLAVE\" VLNV=\"xilinx.com:interface:aximm:1.0\">")
        lines.append("          <PARAMETER NAME=\"PROTOCOL\" VALUE=\"AXI4LITE\"/>")
        lines.append("          <PORTMAPS/>")
        lines.append("        </BUSINTERFACE>")
    lines.append(extra_bus)
    lines.append("      </BUSINTERFACES>")
    lines.append("    </MODULE>")
    return "\n".join(line for line in lines if line)


DMA_REGISTERS = {"MM2S_DMACR": 0x00, "MM2S_DMASR": 0x04, "MM2S_SA": 0x18, "MM2S_SA_MSB": 0x1C,
                 "MM2S_LENGTH": 0x28, "S2MM_DMACR": 0x30, "S2MM_DMASR": 0x34, "S2MM_DA": 0x48,
                 "S2MM_DA_MSB": 0x4C, "S2MM_LENGTH": 0x58}


def hwh_text(contract: P.Contract) -> str:
    """The .hwh XML of the emulated overlay (see the module docstring)."""
    c = contract.data
    family = c.get("family") or "zynq-ultrascale+"
    ps_name, ps_vlnv, ps_type, ps_master, arch = PS_MODULES[family]
    kernel, dma, reset = contract.ip("kernel"), contract.ip("dma"), contract.ip("reset")
    beat_bits = int(c["stream"]["beat_bytes"]) * 8
    slaves = ((kernel, "s_axi_control"), (dma, "S_AXI_LITE"), (reset, "S_AXI"))
    memmap = "\n".join(
        f"        <MEMRANGE ADDRESSBLOCK=\"Reg\" BASENAME=\"C_BASEADDR\" BASEVALUE=\"{ip['base']:#010x}\" "
        f"HIGHNAME=\"C_HIGHADDR\" HIGHVALUE=\"{ip['base'] + ip['range'] - 1:#010x}\" INSTANCE={_attr(ip['name'])} "
        f"IS_DATA=\"TRUE\" IS_INSTRUCTION=\"TRUE\" MASTERBUSINTERFACE=\"{ps_master}\" MEMTYPE=\"REGISTER\" "
        f"SLAVEBUSINTERFACE=\"{itf}\"/>" for ip, itf in slaves)
    ps_bus = (f"        <BUSINTERFACE BUSNAME=\"ps_master\" DATAWIDTH=\"32\" NAME=\"{ps_master}\" TYPE=\"MASTER\" "
              f"VLNV=\"xilinx.com:interface:aximm:1.0\">\n          <PORTMAPS/>\n        </BUSINTERFACE>")
    kernel_regs = {name: dict(reg) for name, reg in kernel["registers"].items()}
    clock = float(c.get("clock_mhz", 250.0))
    ps_params = {"C_FAMILY": family}
    for i in range(4):  # the PS clock settings PYNQ's metadata parser reads (PL clock 0 drives the design)
        if family == "zynq-7000":
            ps_params.update({f"PCW_FPGA_FCLK{i}_ENABLE": int(i == 0), f"PCW_FCLK{i}_PERIPHERAL_DIVISOR0": 1,
                              f"PCW_FCLK{i}_PERIPHERAL_DIVISOR1": 1, f"PCW_FCLK{i}_PERIPHERAL_CLKSRC": "IO PLL",
                              f"PCW_FPGA{i}_PERIPHERAL_FREQMHZ": clock, f"PCW_ACT_FPGA{i}_PERIPHERAL_FREQMHZ": clock})
        else:
            ps_params.update({f"PSU__FPGA_PL{i}_ENABLE": int(i == 0),
                              f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR0": 1,
                              f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR1": 1,
                              f"PSU__CRL_APB__PL{i}_REF_CTRL__SRCSEL": "IOPLL",
                              f"PSU__CRL_APB__PL{i}_REF_CTRL__ACT_FREQMHZ": clock})
    modules = [
        _module(ps_name, ps_vlnv, ps_type, ps_params, "", None, ps_bus, memmap, is_pl=False),
        _module(kernel["name"], kernel["vlnv"], "fpgaformer_top",
                {"C_S_AXI_CONTROL_BASEADDR": hex(kernel["base"]), "DESIGN_ID": hex(contract.design_id)},
                "s_axi_control", kernel_regs),
        _module(dma["name"], dma["vlnv"], "axi_dma",
                {"c_include_sg": 0, "c_sg_length_width": dma["length_width"], "c_include_mm2s": 1,
                 "c_include_s2mm": 1, "c_include_mm2s_dre": 0, "c_include_s2mm_dre": 0, "c_micro_dma": 0,
                 "c_m_axi_mm2s_data_width": beat_bits, "c_m_axis_mm2s_tdata_width": beat_bits,
                 "c_m_axi_s2mm_data_width": beat_bits, "c_s_axis_s2mm_tdata_width": beat_bits,
                 "c_addr_width": 64, "C_BASEADDR": hex(dma["base"])},
                "S_AXI_LITE", {name: {"offset": off, "size": 32, "access": "read-write"}
                               for name, off in DMA_REGISTERS.items()}),
        _module(reset["name"], reset["vlnv"], "axi_gpio",
                {"C_GPIO_WIDTH": 1, "C_ALL_OUTPUTS": 1, "C_IS_DUAL": 0, "C_DOUT_DEFAULT": "0x00000001",
                 "C_BASEADDR": hex(reset["base"])},
                "S_AXI", {"GPIO_DATA": {"offset": 0, "size": 32, "access": "read-write"},
                          "GPIO_TRI": {"offset": 4, "size": 32, "access": "read-write"}}),
    ]
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8" standalone="no" ?>',
        '<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="fpgaformer emulated overlay" VIVADOVERSION="none">',
        f'  <SYSTEMINFO ARCH="{arch}" DEVICE={_attr(c.get("board") or "emulated")} NAME="fpgaformer" '
        'PACKAGE="none" SPEEDGRADE="-1"/>',
        "  <EXTERNALPORTS/>",
        "  <EXTERNALINTERFACES/>",
        "  <MODULES>", *modules, "  </MODULES>",
        "</EDKSYSTEM>", ""])


def write_hwh(contract: P.Contract, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(hwh_text(contract), encoding="utf-8")  # the XML declaration says UTF-8
    return path


def staged_overlay(build_dir: Path, contract: P.Contract) -> Path:
    """A temporary folder with ``fpgaformer.bit`` (an empty placeholder: nothing is programmed) and the
    emulated ``fpgaformer.hwh`` from BUILD (or generated from the contract); returns the .bit path."""
    folder = Path(tempfile.mkdtemp(prefix="fpgaformer-sim-overlay-"))
    hwh = Path(build_dir) / P.SIM_HWH if build_dir is not None else None
    if hwh is not None and hwh.is_file():
        shutil.copy(hwh, folder / P.HWH)
    else:
        write_hwh(contract, folder / P.HWH)
    bit = folder / P.BITSTREAM
    bit.write_bytes(b"")
    return bit


MIN_BO_BYTES = 8192  # pynq >= 3.1 allocates every buffer object at least 8 KB (PYNQ PR #1500, XRT 2.17 workaround)


def _metadata_parser(hwh: str):
    """The .hwh parsed by the parser pynq's own EmbeddedDevice uses in the installed version: 3.1.x ships its copy
    (``pynq.metadata``), 4.0 uses PYNQ-Metadata's (``pynqmetadata.views.runtime``); 2.7 has the legacy HWH."""
    try:  # PYNQ >= 3.0
        from pynqmetadata.frontends import Metadata
    except ImportError:  # PYNQ 2.7
        from pynq.pl_server.hwh_parser import HWH

        return HWH(hwh)
    try:
        from pynq.pl_server.embedded_device import RuntimeMetadataParser
    except ImportError:
        from pynqmetadata.views.runtime import RuntimeMetadataParser
    return RuntimeMetadataParser(Metadata(input=Path(hwh)))


def make_pynq_sim_device(sim, tag: str = "fpgaformer_sim"):
    """A ``pynq.Device`` over ``sim`` (a loaded `SimDevice`), made pynq's active device; see the module doc."""
    import numpy as np
    import pynq
    from pynq.buffer import PynqBuffer
    from pynq.pl_server.device import Device as PynqDeviceBase

    bos = {}  # buffer object (its base address) -> host array of the whole BO (cacheable) or its DDR (non-cacheable)

    class _Memory:
        def __init__(self, device):
            self.device = device

        def allocate(self, shape, dtype, cacheable=0, **kwargs):
            dtype = np.dtype(dtype)
            nbytes = int(np.prod(shape)) * dtype.itemsize
            bo_bytes = max(nbytes, MIN_BO_BYTES)  # as pynq's XrtDevice.allocate_bo (3.1.x and 4.0)
            base = sim.memory.alloc(bo_bytes)
            ddr = sim.memory.view(base, bo_bytes)
            coherent = not cacheable and sim.coherence == "shared"
            backing = ddr if coherent else np.zeros(bo_bytes, np.uint8)
            bos[base] = backing
            return PynqBuffer(shape, dtype, buffer=backing, device_address=base, bo=base, coherent=coherent,
                              device=self.device)

    class PynqSimDevice(PynqDeviceBase):
        """pynq.Device whose PL is the simulated overlay (REGISTER_RW capability)."""

        def __init__(self):
            super().__init__(tag)
            self.capabilities = {"REGISTER_RW": True}
            self.default_memory = _Memory(self)
            self.timestamp = ""
            self.bitfile_name = None
            self.sim = sim

        # registers (pynq.MMIO with REGISTER_RW goes through these)
        def read_registers(self, address, length):
            data = bytearray()
            for at in range(address, address + length, 4):
                data += int(sim.bus_read(at)).to_bytes(4, "little")
            return bytes(data[:length])

        def write_registers(self, address, data):
            data = bytes(data)
            if len(data) % 4:
                data += b"\0" * (4 - len(data) % 4)
            for i in range(0, len(data), 4):
                sim.bus_write(address + i, int.from_bytes(data[i:i + 4], "little"))

        # cache maintenance of cacheable buffers: copy between the host array and the simulated DDR, the whole
        # BO whatever the slice (pynq >= 3.1: bo.sync(XCL_BO_SYNC_BO_TO_DEVICE / FROM_DEVICE))
        def flush(self, bo, offset, ptr, size):
            sim.memory.view(bo, bos[bo].size)[:] = bos[bo]

        def invalidate(self, bo, offset, ptr, size):
            bos[bo][:] = sim.memory.view(bo, bos[bo].size)

        # metadata and download
        def get_bitfile_metadata(self, bitfile_name, partial=False):
            hwh = str(Path(bitfile_name).with_suffix(".hwh"))
            parser = _metadata_parser(hwh)
            for clock in parser.clock_dict.values():  # no PS clock registers to program off-board
                clock.pop("enable", None)
            parser.interrupt_pins = {}
            parser.interrupt_controllers = {}
            return parser

        def download(self, bitstream, parser=None):
            self.post_download(bitstream, parser)

        def gen_cache(self, bitstream, parser=None):
            pass

        def close(self):  # Overlay.free() calls it in 3.1.x (the base class only warns "deprecated")
            pass

    device = PynqSimDevice()
    pynq.Device.active_device = device
    return device
