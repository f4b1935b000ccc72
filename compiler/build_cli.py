"""``fpgaformer build BUILD --board NAME``: the PYNQ overlay of a compiled BUILD.

Writes, from the artifact and the board file:
  BUILD/fpgaformer.json            the overlay contract (host/protocol.py): registers, streams, packing,
                                   weight image and KV cache layout, latency model; read by the runtime
  BUILD/overlay/config.tcl         every name, address and width of the contract as Tcl variables
  BUILD/overlay/{hls,build,block_design}.tcl   Vitis HLS top export + Vivado block design and bitstream
  BUILD/overlay/hls/fpgaformer_top.cpp         the HLS top: the contract's interfaces around the backend
  BUILD/overlay/sim/fpgaformer.hwh the emulated overlay's metadata (what `--emulate` and the pynq CI path load)
Then, when ``vitis_hls`` and ``vivado`` are on PATH, runs them, which places ``fpgaformer.bit`` +
``fpgaformer.hwh`` in BUILD (the PYNQ overlay); otherwise prints the exact commands.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import UserError

OVERLAY_DIR = "overlay"


def overlay_sources() -> Path:
    return Path(__file__).resolve().parent.parent / "overlays"


def latency_model(graph, board, clock_mhz: float) -> dict:
    """Cycles per launch from the estimate of the BUILD's hardware plan (a fit when the BUILD has none; the
    MAC model of the protocol when the estimator gives no design)."""
    from ..host.protocol import default_latency, is_decoder

    kind = "decoder" if is_decoder(graph) else "encoder"
    try:
        from .estimate import estimate_graph, has_settings
        from .fit import choose_hardware

        if has_settings(graph):  # the BUILD's own hardware plan, at the BUILD's precision
            from .precision import preset_of

            design = estimate_graph(graph, board, preset_of(graph.meta.get("precision")), clock_mhz=clock_mhz)
            reason = ""
        else:
            result = choose_hardware(graph.copy(), board, clock_mhz=clock_mhz, suggest=False, apply=False)
            design, reason = result.design, result.reason
    except Exception as e:  # the estimate is advisory; the fallback keeps the build going
        design, reason = None, f"{type(e).__name__}: {e}"
    if design is None:
        model = default_latency(graph, kind)
        model["model"] += f" (estimator gave no fitting design: {reason or 'none'})"
        return model
    cycles = max(1, int(round(design.latency_s * clock_mhz * 1e6)))
    return {"model": f"fpgaformer estimate ({design.mode}, {design.kernel} kernel) on {board.name}",
            "launch_cycles": 2000, "cycles_per_sequence": cycles, "cycles_per_token": cycles}


def _tcl_config(contract, board, jobs: int, build_dir: Path) -> str:
    """config.tcl: one ``set ff_<key> <word>`` per value, every value written as ONE Tcl word whose value is
    exactly the text (board fields and the BUILD path come from users and must not run as Tcl).

    The word is the text with every ASCII character other than a letter, a digit or one of ``_-./:+,=@%`` (none
    of them Tcl syntax) preceded by a backslash; control characters become three-digit octal escapes and
    newline/tab/CR \\n \\t \\r. In Tcl's parser a backslash + such a character stands for that character alone
    (Tcl(n) rule 9), so no ``[``, ``$``, ``{``, ``"``, ``;`` or white space in a value can start a substitution or
    end the word. Letters and digits are never escaped (``\\n``, ``\\u``, ``\\0``... are escape sequences);
    non-ASCII characters are no Tcl syntax and stay as they are (the file is UTF-8). The address map is a Tcl
    list of such words, itself written as one word."""

    def word(value) -> str:
        text = str(value)
        if any("\ud800" <= ch <= "\udfff" for ch in text):  # undecodable bytes of a path (surrogateescape)
            raise UserError(f"{text!r} is not valid UTF-8, so config.tcl cannot hold it; rename the BUILD folder "
                            "(or fix the board file) to use UTF-8 characters only.")
        out = []
        for ch in text:
            if ch.isascii() and ch.isalnum() or not ch.isascii() or ch in "_-./:+,=@%":
                out.append(ch)
            elif ch in "\n\t\r":
                out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
            elif ord(ch) < 0x20 or ch == "\x7f":
                out.append(f"\\{ord(ch):03o}")
            else:
                out.append("\\" + ch)
        return "".join(out) or "{}"

    c = contract.data
    k, d, r = contract.ip("kernel"), contract.ip("dma"), contract.ip("reset")
    amap = " ".join(word(x) for ip in (k, d, r)
                    for x in (ip["name"], "Reg", f"{ip['base']:#x}", f"{ip['range']:#x}"))
    hls_include = overlay_sources() / "hls"
    values = {
        "ff_design": "fpgaformer", "ff_part": board.part, "ff_family": board.family,
        "ff_clock_mhz": c["clock_mhz"], "ff_kernel_name": k["name"], "ff_kernel_vlnv": k["vlnv"],
        "ff_dma_name": d["name"], "ff_dma_length_width": d["length_width"], "ff_reset_name": r["name"],
        "ff_stream_bits": d["data_width"], "ff_address_map": amap, "ff_jobs": jobs,
        "ff_ip_repo": "./ip_repo", "ff_hls_include": str(hls_include), "ff_backend_dir": str(build_dir / "hls"),
        "ff_bit_out": str(build_dir / "fpgaformer.bit"), "ff_hwh_out": str(build_dir / "fpgaformer.hwh"),
    }
    lines = ["# written by `fpgaformer build` from fpgaformer.json; do not edit (rebuild instead)"]
    for key, value in values.items():
        lines.append(f"set {key} {word(value)}")
    return "\n".join(lines) + "\n"


def _hls_top(contract) -> str:
    """The HLS top: AXI-lite arguments in the contract's order, AXIS with TLAST, m_axi for weights and KV."""
    c = contract.data
    args = [f"    // {name}: {kind}" for name, kind in c["ips"]["kernel"]["args"]]
    return f"""// Generated by `fpgaformer build` from fpgaformer.json (protocol version {c['protocol_version']}).
// The interface below is the overlay contract (overlays/README.md); the computation is ff_model (ff_model.cpp,
// generated beside this file from the quantized graph), called once per launch.
#include "ff_model.h"

// arguments, in register order:
{chr(10).join(args)}
void fpgaformer_top(hls::stream<ff_beat_t> &in_stream, hls::stream<ff_beat_t> &out_stream,
                    unsigned mode, unsigned n_items, unsigned position, unsigned flags,
                    ff_word_t *weights, ff_word_t *kv_cache, unsigned *design_id, unsigned *status) {{
#pragma HLS INTERFACE mode=axis port=in_stream
#pragma HLS INTERFACE mode=axis port=out_stream
#pragma HLS INTERFACE mode=m_axi port=weights offset=slave bundle=gmem0 depth=FF_WEIGHT_WORDS max_read_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=kv_cache offset=slave bundle=gmem1 depth=FF_KV_WORDS max_read_burst_length=64
#pragma HLS INTERFACE mode=s_axilite port=mode
#pragma HLS INTERFACE mode=s_axilite port=n_items
#pragma HLS INTERFACE mode=s_axilite port=position
#pragma HLS INTERFACE mode=s_axilite port=flags
#pragma HLS INTERFACE mode=s_axilite port=weights
#pragma HLS INTERFACE mode=s_axilite port=kv_cache
#pragma HLS INTERFACE mode=s_axilite port=design_id
#pragma HLS INTERFACE mode=s_axilite port=status
#pragma HLS INTERFACE mode=s_axilite port=return
    *design_id = FF_DESIGN_ID;
    *status = ff_model(in_stream, out_stream, mode, n_items, position, flags, weights, kv_cache);
}}
"""


def _refuse_links(build_dir: Path, *targets: Path) -> None:
    """Before `build_overlay` writes anything: no target, nor a folder between BUILD and it, may be a symbolic
    link (a link planted in a BUILD would send the write outside it); raises the artifact's OutputError."""
    from ..host.artifact import check_no_symlinks

    check_no_symlinks(build_dir, *targets)


def build_overlay(build_dir: Path, board_name: str, length_width: int = 26, clock_mhz: float | None = None,
                  jobs: int = 8, log=print):
    """Write the contract and the overlay sources into BUILD; returns (contract, commands to run)."""
    from ..host.artifact import ArtifactError, load_artifact
    from ..host.protocol import SIM_HWH, ContractError, make_contract
    from ..host.pynq_sim import write_hwh
    from .boards import load_board

    build_dir = Path(build_dir).resolve()
    try:
        graph, manifest = load_artifact(build_dir)
    except ArtifactError:
        raise
    board = load_board(board_name)
    clock = float(clock_mhz or board.clock_mhz)
    info = {"name": board.name, "family": board.family, "clock_mhz": clock}
    try:
        contract = make_contract(graph, manifest, info, length_width=length_width,
                                 beat_bytes=max(8, min(16, board.axi_port_bits // 8)),
                                 latency=None)
        contract.data["latency"] = latency_model(graph, board, clock)
    except ContractError as e:
        raise UserError(str(e)) from None
    tmp = build_dir / ".fpgaformer.json.tmp"
    out = build_dir / OVERLAY_DIR
    scripts = ("block_design.tcl", "build.tcl", "hls.tcl")
    _refuse_links(build_dir, tmp, build_dir / "fpgaformer.json", out / "hls", out / "config.tcl",
                  out / "README.txt", build_dir / SIM_HWH, *(out / name for name in scripts))
    tmp.write_text(contract.to_json())
    os.replace(tmp, build_dir / "fpgaformer.json")
    (out / "hls").mkdir(parents=True, exist_ok=True)
    for name in scripts:
        shutil.copy(overlay_sources() / "tcl" / name, out / name)
    (out / "config.tcl").write_text(_tcl_config(contract, board, jobs, build_dir), encoding="utf-8")
    from .backend.overlay import write_overlay_sources

    write_overlay_sources(build_dir, graph, contract, _hls_top(contract), progress=log)
    write_hwh(contract, build_dir / SIM_HWH)
    commands = [f"cd {out}", "vitis_hls -f hls.tcl", "vivado -mode batch -source build.tcl"]
    (out / "README.txt").write_text("Build the PYNQ overlay (Vitis HLS + Vivado on PATH):\n\n    " +
                                    "\n    ".join(commands) + "\n\nResult: ../fpgaformer.bit + ../fpgaformer.hwh\n")
    return contract, commands


def cmd_build(args) -> int:
    from . import validate

    validate.number(args.dma_length_bits, "--dma-length-bits", low=8, high=26, integer=True,
                    unit="width of the AXI DMA length register")
    validate.positive(args.clock, "--clock", "MHz")
    validate.count(args.jobs, "--jobs", what="Vivado implementation jobs")
    contract, commands = build_overlay(args.build, args.board, args.dma_length_bits, args.clock, args.jobs)
    lat = contract.data["latency"]
    print(f"wrote {args.build}/fpgaformer.json (overlay protocol {contract.data['protocol_version']}, "
          f"{contract.kind}, design id {contract.design_id:#010x}) and the overlay sources in "
          f"{args.build}/{OVERLAY_DIR}/; latency model: {lat['model']}")
    from ..host.artifact import load_artifact
    from .backend.overlay import not_emitted

    graph, _ = load_artifact(Path(args.build))
    for gap in not_emitted(graph):
        print(f"note: {gap} (the estimate of this BUILD is of its plan; `--check` lists every difference)")
    if args.check:
        return _check(Path(args.build), graph)
    have = shutil.which("vitis_hls") and shutil.which("vivado")
    if have and not args.scripts_only:
        out = Path(args.build) / OVERLAY_DIR
        for cmd in (["vitis_hls", "-f", "hls.tcl"], ["vivado", "-mode", "batch", "-source", "build.tcl"]):
            print("running: " + " ".join(cmd), flush=True)
            if subprocess.run(cmd, cwd=out).returncode != 0:
                raise UserError(f"`{' '.join(cmd)}` failed in {out}; see its log there.")
        print(f"overlay ready: {args.build}/fpgaformer.bit + fpgaformer.hwh")
    else:
        why = "--scripts-only given" if args.scripts_only else "vitis_hls / vivado are not on PATH"
        print(f"{why}; to make the bitstream run:\n    " + "\n    ".join(commands))
        print(f"meanwhile `fpgaformer run {args.build} --emulate` runs the emulated overlay")
    return 0


def _check(build: Path, graph) -> int:
    """``build --check``: the generated overlay against its plan and the synthesis rules (backend/overlay_check)."""
    from .backend.overlay_check import check_build

    print("checking the generated overlay (kernels against plan.json, synthesis rules, g++ -fsyntax-only "
          "-DFF_SYNTH of every source)...", flush=True)
    problems = check_build(build, graph)
    for p in problems:
        print(f"  problem: {p}")
    if problems:
        print(f"check failed: {len(problems)} problem(s)")
        return 1
    print("check passed: every source the top includes is written, compiles in its synthesis configuration, and "
          "its hardware is the plan's")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("build", help="write the PYNQ overlay (contract, HLS top, Vivado scripts) and build it "
                                     "when the vendor tools are on PATH")
    p.add_argument("build", type=Path, help="BUILD directory made by `fpgaformer compile --precision ...`")
    p.add_argument("--board", required=True, help="board name (boards/*.toml) or a path to a board file")
    p.add_argument("--dma-length-bits", type=int, default=26,
                   help="AXI DMA length register width (8..26): one transfer moves < 2**N bytes")
    p.add_argument("--clock", type=float, default=None, help="PL clock in MHz (default: the board's)")
    p.add_argument("--jobs", type=int, default=8, help="Vivado implementation jobs")
    p.add_argument("--scripts-only", action="store_true", help="write the scripts, do not run the tools")
    p.add_argument("--check", action="store_true",
                   help="after writing, check the generated hardware against the plan and the synthesis rules "
                        "(exit 1 on any problem); runs no vendor tool")
    p.set_defaults(func=cmd_build)
