"""The overlay's model kernel ``ff_model``: generated C++ that runs a whole quantized graph behind the contract.

``fpgaformer build`` writes, under ``BUILD/overlay/hls/``:

    kernels/<kernel>/   one hls4ml project per partition, each in its own C++ namespace ``ff_<kernel>``:
                        ``pre`` (layers before the first block, embedding lookups excepted), ``block<i>``
                        (decoders: the one-token step kernel with its K/V cache ports), ``post`` (final norm,
                        LM head, pooling)
    ff_model.h/.cpp     the kernel behind the contract (host/protocol.py, overlays/README.md)
    fpgaformer_top.cpp  the HLS top: AXI-lite registers, AXI4-Stream in/out, m_axi gmem0 (weights) and gmem1
                        (KV cache) around ``ff_model`` (compiler/build_cli.py)
    csim_bridge.cpp     C simulation only: pushes a DMA packet into the top's input stream, calls the top with
                        device memory as its m_axi arrays, drains the output stream (host/csim_device.py)

What ``ff_model`` does per launch (on-chip design: every kernel holds its weights on chip; only the embedding
tables, too large for any board's BRAM, are read from the weight image in gmem0):

    encode (mode 0), per item of ``n_items``:
        input record (every graph input, 32-bit lanes for ids and masks) from in_stream
        Embedding rows  y[s, :] = table[id_s, :]           read from gmem0 at the contract's offsets
        pre -> block0 -> ... -> blockN-1 -> post           hls4ml kernels, buffers between them
        output record (every graph output's codes in lanes, zero padded, TLAST) to out_stream
    decode (mode 1), T = ``n_items`` new tokens at p = ``position``, one token at a time (t = 0..T-1):
        x = table[id_t]; pre(x, p+t); for each block: K/V caches (full context C) read from gmem1,
        step kernel (attends to rows <= p+t), the new K/V rows written back to gmem1 at row p+t;
        after the last token: post -> logits (V lanes) or, with flags bit 0, their argmax (int32)
    status: 1 the input packet ended early or late (TLAST), 2 mode/position/length/id out of range.

Every size is a compile-time constant (loops run to a constant bound and break at ``n_items``), so the same
source is what Vitis HLS reads; the C simulation runs it through g++ bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...host import protocol as P
from ...host.fixed import FixedType
from ...host.graph import Graph, Layer, Tensor
from ..partition import COPIED_INTO_BLOCKS, POSITION, Partition, _sub_graph, cache_input, decoder_step_partition, \
    external_inputs, partition
from .hls4ml import OVERLAY_DIR, BackendError, KernelProject, namespace_of, write_project
from .names import Namer

HLS_DIR = Path("overlay") / "hls"     # relative to BUILD
KERNELS = "kernels"
CSIM_DIR = Path("overlay") / "csim"   # objects and the C-simulation library
MODEL_SOURCES = ("ff_model.h", "ff_model.cpp", "fpgaformer_top.cpp")
COMPILE_TIMEOUT_S = 1800


# ------------------------------------------------------------------------------------------- partitions
def split_graph(graph: Graph) -> tuple[list[Layer], list[Layer], list[Layer]]:
    """(embedding lookups, layers before the first block, layers after the last block) of ``graph``.

    Mask layers outside blocks (PaddingMask, constant keep flags) are copied into every block that reads
    them (compiler.partition), so they belong to no host region."""
    layers = graph.layers
    in_block = [i for i, l in enumerate(layers) if l.block is not None]
    if not in_block:
        raise BackendError("the graph has no transformer blocks: there is nothing for the overlay to run")
    first, last = in_block[0], in_block[-1]
    loose = [l for l in layers[first:last + 1] if l.block is None and l.op not in COPIED_INTO_BLOCKS]
    if loose:
        raise BackendError(f"layer {loose[0].name!r} ({loose[0].op}) lies between blocks outside any block; "
                           "the overlay runs blocks back to back")
    embeds = [l for l in layers[:first] if l.op == "Embedding"]
    id_reshapes = {l.name for l in layers[:first] if l.op == "Reshape" and id_source(graph, l.output)}
    pre = [l for l in layers[:first] if l.op not in ("Embedding",) + COPIED_INTO_BLOCKS and l.name not in id_reshapes]
    post = [l for l in layers[last + 1:] if l.op not in COPIED_INTO_BLOCKS]
    for layer in pre + post:
        if layer.op == "Embedding":
            raise BackendError(f"layer {layer.name!r}: an embedding lookup after the first block")
    for layer in embeds:
        if id_source(graph, layer.inputs[0]) is None:
            raise BackendError(f"layer {layer.name!r}: an embedding of a computed index is not supported")
    return embeds, pre, post


def id_source(graph: Graph, name: str) -> str | None:
    """The graph input a tensor of token ids is, through Reshapes (which keep the element order), or None."""
    producer = graph.producer()
    while name not in graph.inputs:
        layer = producer.get(name)
        if layer is None or layer.op != "Reshape":
            return None
        name = layer.inputs[0]
    return name if graph.tensors[name].fixed is None else None


def step_region(graph: Graph, layers: list[Layer], name: str, decoder) -> Partition:
    """Host-region layers (before or after the blocks) of a causal LM as a one-token step kernel: every tensor
    at one token; constants with a token axis (learned absolute positions) read at row ``position``."""
    context = decoder.context
    produced = {o for l in layers for o in l.outputs}
    inputs = external_inputs(layers)
    tensors = {n: Tensor(n, decoder._resized(n, 1, context), graph.tensors[n].dtype, graph.tensors[n].fixed)
               for n in inputs + sorted(produced)}
    steps = []
    for layer in layers:
        if layer.op in ("RoPE", "PaddingMask", "MatMul", "Softmax"):
            raise BackendError(f"layer {layer.name!r} ({layer.op}) outside a block: not supported in a decoder "
                               "overlay")
        step = decoder._layer_for_step(layer, 1, context, 0)
        step = dataclasses.replace(step, inputs=list(step.inputs), attrs=dict(step.attrs), params=dict(layer.params))
        if "const_slice" in step.attrs:
            step.inputs.append(POSITION)
            if POSITION not in inputs:
                inputs.append(POSITION)
                tensors[POSITION] = Tensor(POSITION, (1,), "int64")
        steps.append(step)
    names = {l.name for l in layers}
    later = {i for l in graph.layers if l.name not in names for i in l.inputs}
    outputs = [o for l in layers for o in l.outputs if o in later or o in graph.outputs]
    meta = {k: v for k, v in graph.meta.items() if k != "onnx_outputs"}
    meta.update(partition=f"decoder_{name}", context=context)
    return Partition(name, None, Graph(inputs, outputs, tensors, steps, meta))


def overlay_partitions(graph: Graph) -> tuple[list[Layer], list[Partition]]:
    """(embedding lookups, kernels in launch order) of the overlay of a quantized ``graph``."""
    embeds, pre, post = split_graph(graph)
    if P.is_decoder(graph):
        from ...host.decoder import IncrementalDecoder

        dec = IncrementalDecoder(graph)
        parts = [step_region(graph, pre, "pre", dec)] if pre else []
        parts += [decoder_step_partition(graph, b, dec) for b in graph.blocks()]
        parts += [step_region(graph, post, "post", dec)] if post else []
    else:
        parts = [Partition("pre", None, _sub_graph(graph, pre, "pre"))] if pre else []
        parts += partition(graph)
        parts += [Partition("post", None, _sub_graph(graph, post, "post"))] if post else []
    return embeds, parts


def not_emitted(graph: Graph) -> list[str]:
    """Where the BUILD's hardware plan asks for hardware this overlay does not generate yet (one sentence each):
    the overlay holds every non-embedding weight on chip, in one kernel per block, one engine per layer."""
    mac = [l for l in graph.layers if l.op in ("Linear", "MatMul") and l.hw]
    out = []
    streamed = [l for l in mac if l.op == "Linear" and l.hw.get("weights") == "streamed"]
    if streamed:
        out.append(f"{len(streamed)} Linear layers the plan streams from DDR are generated with their weights on "
                   "chip")
    n_blocks = len(graph.blocks())
    if any(l.hw.get("kernel") == "shared" for l in mac) and n_blocks > 1:
        out.append(f"the plan's one block kernel shared by {n_blocks} blocks is generated as {n_blocks} kernels "
                   f"({n_blocks}x its resources)")
    if any(l.hw.get("engine") for l in mac):
        out.append("the plan's decode engine shared by every matrix product is generated as one engine per layer")
    return out


# ------------------------------------------------------------------------------------------- C++ writer
@dataclass
class Buffer:
    """One tensor ff_model holds between kernels."""

    tensor: str
    cpp: str
    ctype: str
    count: int


def _int(v) -> str:
    return f"{int(v)}ULL" if int(v) >= 2 ** 31 else str(int(v))


class ModelWriter:
    """Writes ff_model.h / ff_model.cpp for one design (see the module docstring)."""

    def __init__(self, graph: Graph, contract: P.Contract, embeds: list[Layer], projects: list[KernelProject],
                 parts: list[Partition]):
        self.graph, self.contract, self.embeds = graph, contract, embeds
        self.projects, self.parts = projects, parts
        self.beat_bits = contract.beat * 8
        self.names = Namer(reserved=("ff_model", "weights", "kv_cache", "in_stream", "out_stream", "mode",
                                     "n_items", "position", "flags", "status", "rd", "wr"))
        self.buffers: dict[str, Buffer] = {}
        self.weights = {e["key"]: e for e in contract.weights}
        self.decoder = contract.kind == "decoder"

    # ---- buffers
    def buffer(self, tensor: str, ctype: str, count: int) -> Buffer:
        b = self.buffers.get(tensor)
        if b is None:
            b = Buffer(tensor, self.names.ident(f"t_{tensor}", "t"), ctype, int(count))
            self.buffers[tensor] = b
        elif b.ctype != ctype or b.count != int(count):
            raise BackendError(f"tensor {tensor!r} is {b.ctype}[{b.count}] for one kernel and {ctype}[{count}] "
                               "for another")
        return b

    def _plan_buffers(self) -> None:
        for project in self.projects:
            for port in project.inputs + project.outputs:
                if port.ctype is None:
                    raise BackendError(f"kernel {project.name!r}: port {port.cpp} has no C++ type (rewrite it)")
                self.buffer(port.tensor, port.ctype, int(np.prod(port.shape)))
        for name in self.graph.outputs:
            if name not in self.buffers:
                raise BackendError(f"graph output {name!r} is computed by no kernel of the overlay")

    # ---- pieces of code
    def prototypes(self) -> str:
        out = []
        for project in self.projects:
            args = ", ".join(f"{p.ctype} {p.cpp}[{int(np.prod(p.shape))}]" for p in project.inputs + project.outputs)
            out.append(f"namespace {namespace_of(project.name)} {{\nvoid {project.project}({args});\n}}")
        return "\n".join(out)

    def declarations(self) -> str:
        lines = []
        for b in self.buffers.values():
            lines.append(f"    static {b.ctype} {b.cpp}[{b.count}];  // {_comment(b.tensor)}")
        return "\n".join(lines)

    def call(self, project: KernelProject) -> str:
        args = ", ".join(self.buffers[p.tensor].cpp for p in project.inputs + project.outputs)
        return f"{namespace_of(project.name)}::{project.project}({args});"

    def embedding(self, layer: Layer, rows: str, row0: str, indent: str) -> str:
        """Rows of ``layer``'s table for the ids in ``ids`` (buffer of the id input), from gmem0."""
        e = self.weights.get(f"{layer.name}/table")
        if e is None:
            raise BackendError(f"layer {layer.name!r}: its table is not in the weight image")
        t = FixedType.from_dict(e["fixed"])
        vocab, dim = (int(v) for v in e["shape"])
        out = self.buffers[layer.output]
        ids = self.id_buffer(id_source(self.graph, layer.inputs[0]))
        lb = e["lane"] // 8
        return f"""{indent}for (unsigned r = 0; r < {rows}; r++) {{  // Embedding {_comment(layer.name)}
{indent}    unsigned id = {ids}[{row0}r];
{indent}    if (id >= {vocab}u) {{
{indent}        bad_id = true;
{indent}        id = 0;
{indent}    }}
{indent}    for (unsigned c = 0; c < {dim}; c++) {{
{indent}#pragma HLS PIPELINE II = 1
{indent}        ff::lane_t v = ff::lane_value(ff::mem_read<FF_BEAT_BITS>(weights, {_int(e['offset'])} + (unsigned long long)(id * {dim}u + c) * {lb}, {e['lane']}), {t.width}, {str(t.signed).lower()});
{indent}        {out.cpp}[r * {dim} + c] = ff::from_lane<{out.ctype}, {t.frac}>(v);
{indent}    }}
{indent}}}"""

    def id_buffer(self, name: str) -> str:
        return self.names.ident(f"ids_{name}", "ids")

    def read_record(self, fields: list[P.Field], indent: str) -> str:
        lines = []
        for f in fields:
            if f.fixed is None:
                if f.name in self.buffers:  # a 0/1 mask a kernel reads
                    b = self.buffers[f.name]
                    lines.append(f"{indent}for (unsigned i = 0; i < {f.count}; i++) "
                                 f"{b.cpp}[i] = rd.lane(in_stream, {f.lane}) != 0;")
                else:  # token ids (Embedding indices)
                    lines.append(f"{indent}for (unsigned i = 0; i < {f.count}; i++) "
                                 f"{self.id_buffer(f.name)}[i] = rd.lane(in_stream, {f.lane}).to_uint();")
            else:
                b = self.buffers[f.name]
                lines.append(f"{indent}for (unsigned i = 0; i < {f.count}; i++) {b.cpp}[i] = ff::code_to<{b.ctype}>("
                             f"ff::lane_value(rd.lane(in_stream, {f.lane}), {f.fixed.width}, "
                             f"{str(f.fixed.signed).lower()}));")
        lines.append(f"{indent}rd.align();")
        return "\n".join(lines)

    def write_fields(self, fields: list[P.Field], indent: str) -> str:
        """One output record: each field's codes in its lanes, zero padding and TLAST."""
        lines = []
        for f in fields:
            b = self.buffers[f.name]
            lines.append(f"{indent}for (unsigned i = 0; i < {f.count}; i++) "
                         f"wr.lane(out_stream, ff::icode({b.cpp}[i]), {f.lane});")
        lines.append(f"{indent}wr.end_record(out_stream);")
        return "\n".join(lines)

    # ---- whole files
    def header(self) -> str:
        c = self.contract
        return f"""// Generated by `fpgaformer build` (overlay protocol {c.data['protocol_version']}): the kernel behind the
// overlay contract fpgaformer.json. See compiler/backend/overlay.py for what it computes.
#ifndef FF_MODEL_H_
#define FF_MODEL_H_

#include "ap_axi_sdata.h"
#include "ap_int.h"
#include "hls_stream.h"

#define FF_BEAT_BITS {self.beat_bits}
typedef ap_axiu<FF_BEAT_BITS, 0, 0, 0> ff_beat_t;  // AXI4-Stream beat, TLAST carried explicitly
typedef ap_uint<FF_BEAT_BITS> ff_word_t;           // one m_axi word of device memory

static const unsigned long long FF_WEIGHT_WORDS = {max(1, -(-c.weights_bytes // c.beat))}ULL;
static const unsigned long long FF_KV_WORDS = {max(1, -(-c.kv_bytes // c.beat))}ULL;
static const unsigned FF_DESIGN_ID = {c.design_id:#010x}u;

// returns the status register: 0 ok, 1 input packet ended early or late, 2 out of range
unsigned ff_model(hls::stream<ff_beat_t> &in_stream, hls::stream<ff_beat_t> &out_stream, unsigned mode,
                  unsigned n_items, unsigned position, unsigned flags, ff_word_t *weights, ff_word_t *kv_cache);

#endif
"""

    def source(self) -> str:
        self._plan_buffers()
        c = self.contract
        max_beats = c.max_transfer // c.beat + 1
        ids = []
        for f in c.in_record(1).fields:
            if f.fixed is None and f.name not in self.buffers:
                ids.append(f"    static unsigned {self.id_buffer(f.name)}[{f.count if not self.decoder else c.context}];")
        body = self.decode_body() if self.decoder else self.encode_body()
        return f"""// Generated by `fpgaformer build` from the quantized graph and fpgaformer.json; do not edit (rebuild).
// What it computes: compiler/backend/overlay.py. Kernels: {', '.join(p.name for p in self.projects)}.
#include "ff_model.h"
#include "ff_overlay.h"

// the kernels, each compiled from its own project (kernels/<name>/firmware) in its own namespace
{self.prototypes()}

static const unsigned long long FF_MAX_BEATS = {max_beats}ULL;  // one DMA transfer

unsigned ff_model(hls::stream<ff_beat_t> &in_stream, hls::stream<ff_beat_t> &out_stream, unsigned mode,
                  unsigned n_items, unsigned position, unsigned flags, ff_word_t *weights, ff_word_t *kv_cache) {{
    ff::StreamIn<FF_BEAT_BITS> rd;
    ff::StreamOut<FF_BEAT_BITS> wr;
    bool bad_id = false;
{ids and chr(10).join(ids) or ''}
{self.declarations()}
{body}
}}
"""

    def refuse(self, expected_beats: str, zero_record_bytes: int) -> str:
        """Drain the input packet, send one zero record, report a range error (or a stream error if the packet
        did not have the expected length)."""
        return f"""        unsigned long long beats = 0;
        bool ended = false;
        for (unsigned long long i = 0; i < FF_MAX_BEATS; i++) {{
            if (ended)
                break;
            ff_beat_t beat = in_stream.read();
            ended = beat.last == 1;
            beats++;
        }}
        for (unsigned i = 0; i < {zero_record_bytes}; i++)
            wr.byte(out_stream, 0);
        wr.end_record(out_stream);
        return beats == {expected_beats} ? {P.STATUS_RANGE}u : {P.STATUS_STREAM}u;"""

    def encode_body(self) -> str:
        c = self.contract
        in_rec, out_rec = c.in_record(), c.out_record()
        max_items = max(1, c.max_transfer // in_rec.nbytes)
        embeds = "\n".join(self.embedding(l, str(int(np.prod(self.graph.tensors[l.inputs[0]].shape))), "", " " * 8)
                           for l in self.embeds)
        calls = "\n".join(" " * 8 + self.call(p) for p in self.projects)
        return f"""    if (mode != {P.MODE_ENCODE}u) {{
{self.refuse(str(in_rec.nbytes // c.beat), out_rec.nbytes)}
    }}
Items:
    for (unsigned item = 0; item < {max_items}u; item++) {{
        if (item >= n_items)
            break;
{self.read_record(list(in_rec.fields), ' ' * 8)}
{embeds}
{calls}
{self.write_fields(list(out_rec.fields), ' ' * 8)}
    }}
    rd.finish(in_stream, FF_MAX_BEATS);
    if (rd.error)
        return {P.STATUS_STREAM}u;
    return bad_id ? {P.STATUS_RANGE}u : {P.STATUS_OK}u;"""

    def decode_body(self) -> str:
        c = self.contract
        C = c.context
        out_rec = c.out_record()
        logits = self.buffers[self.graph.outputs[0]]
        V = out_rec.fields[0].count
        if logits.count != V:
            raise BackendError(f"the decoder's output {self.graph.outputs[0]!r} has {logits.count} values per "
                               f"token, the contract {V}")
        ids_field = c.in_record(1).fields[0]
        ids = self.id_buffer(ids_field.name) if ids_field.name not in self.buffers else None
        if ids is None or len(self.embeds) != 1 or id_source(self.graph, self.embeds[0].inputs[0]) != ids_field.name:
            raise BackendError("a decoder overlay needs exactly one embedding lookup of the token ids")
        mask = next((self.buffers[n].cpp for n in self.graph.inputs if n in self.buffers), None)
        pos = self.buffers.get(POSITION)
        kv = {e["tensor"]: e for e in c.kv_entries}
        steps = []
        for project, part in zip(self.projects, self.parts):
            points = getattr(part, "cache_points", None) or {}
            lines = []
            for tensor in points:
                e = kv[tensor]
                buf = self.buffers[cache_input(tensor)]
                t = FixedType.from_dict(e["fixed"])
                if buf.count != int(np.prod(e["shape"])):
                    raise BackendError(f"cache {tensor!r}: kernel port of {buf.count} values, contract "
                                       f"{tuple(e['shape'])}")
                lb = e["lane"] // 8
                lines.append(f"""            for (unsigned i = 0; i < {buf.count}; i++) {{  // K/V cache {_comment(tensor)} from gmem1
#pragma HLS PIPELINE II = 1
                {buf.cpp}[i] = ff::code_to<{buf.ctype}>(ff::lane_value(ff::mem_read<FF_BEAT_BITS>(kv_cache, {_int(e['offset'])} + (unsigned long long)i * {lb}, {e['lane']}), {t.width}, {str(t.signed).lower()}));
            }}""")
            lines.append("            " + self.call(project))
            for tensor, axis in points.items():
                e = kv[tensor]
                row = self.buffers[tensor]
                shape = [int(v) for v in e["shape"]]
                inner = int(np.prod(shape[axis + 1:]))
                lb = e["lane"] // 8
                lines.append(f"""            for (unsigned f = 0; f < {row.count}; f++) {{  // the new row of {_comment(tensor)} to gmem1
#pragma HLS PIPELINE II = 1
                unsigned long long at = ((unsigned long long)(f / {inner}) * {C} + pos) * {inner} + f % {inner};
                ff::mem_write<FF_BEAT_BITS>(kv_cache, {_int(e['offset'])} + at * {lb}, {e['lane']}, ff::icode({row.cpp}[f]));
            }}""")
            if part.name == "post":
                lines = ["            if (t + 1 == n_items) {"] + ["    " + l for l in "\n".join(lines).splitlines()] + \
                        ["            }"]
            steps.append("\n".join(lines))
        set_mask = f"""            for (unsigned k = 0; k < {C}; k++)
                {mask}[k] = k <= pos;""" if mask else ""
        set_pos = f"            {pos.cpp}[0] = pos;" if pos else ""
        return f"""    if (mode != {P.MODE_DECODE}u || n_items < 1 || n_items > {C}u || position > {C}u - n_items) {{
{self.refuse(f"(n_items * 4ULL + {c.beat - 1}) / {c.beat}", c.out_record(False).nbytes)}
    }}
    for (unsigned t = 0; t < {C}u; t++) {{
        if (t >= n_items)
            break;
        {ids}[t] = rd.lane(in_stream, {ids_field.lane}).to_uint();
    }}
    rd.align();
    rd.finish(in_stream, FF_MAX_BEATS);
Tokens:
    for (unsigned t = 0; t < {C}u; t++) {{
        if (t >= n_items)
            break;
        unsigned pos = position + t;
{set_pos}
{set_mask}
{self.embedding(self.embeds[0], "1", "t + ", " " * 8)}
{chr(10).join(steps)}
    }}
    if (flags & {P.FLAG_ARGMAX}u) {{
        unsigned best = 0;
        ff::lane_t best_code = ff::icode({logits.cpp}[0]);
        for (unsigned v = 1; v < {V}; v++) {{
            ff::lane_t code = ff::icode({logits.cpp}[v]);
            if (code > best_code) {{
                best_code = code;
                best = v;
            }}
        }}
        wr.lane(out_stream, best, 32);
        wr.end_record(out_stream);
    }} else {{
{self.write_fields(list(out_rec.fields), ' ' * 8)}
    }}
    if (rd.error)
        return {P.STATUS_STREAM}u;
    return bad_id ? {P.STATUS_RANGE}u : {P.STATUS_OK}u;"""


def _comment(text: str) -> str:
    """``text`` safe inside a // comment (no line breaks, no trigraph or backslash continuation)."""
    return "".join(ch if ch.isprintable() and ch not in "\\?" else "_" for ch in str(text))[:120]


# --------------------------------------------------------------------------------------------- projects
def write_overlay_sources(build_dir: Path, graph: Graph, contract: P.Contract, top_source: str,
                          progress=None) -> dict:
    """Write every source the overlay top includes (see the module docstring); returns an index."""
    from ...host.artifact import check_no_symlinks
    from .hls4ml import DEFAULT_BACKEND, DEFAULT_PART

    check_no_symlinks(build_dir, *(Path(build_dir) / HLS_DIR / n for n in (KERNELS, "ff_model.cpp", "ff_model.h",
                                                                          "fpgaformer_top.cpp", "csim_bridge.cpp")))
    hls = Path(build_dir) / HLS_DIR
    kernels_dir = hls / KERNELS
    if kernels_dir.exists():
        shutil.rmtree(kernels_dir)  # fpgaformer's own output (BUILD/overlay/hls/kernels), rewritten whole
    kernels_dir.mkdir(parents=True)
    embeds, parts = overlay_partitions(graph)
    projects = []
    for i, part in enumerate(parts):
        if progress:
            progress(f"writing overlay kernel {part.name} ({i + 1}/{len(parts)})")
        projects.append(write_project(part, kernels_dir, DEFAULT_BACKEND, DEFAULT_PART))
    writer = ModelWriter(graph, contract, embeds, projects, parts)
    files = {"ff_model.cpp": writer.source(), "ff_model.h": writer.header(), "fpgaformer_top.cpp": top_source,
             "csim_bridge.cpp": bridge_source()}
    for name, text in files.items():
        (hls / name).write_text(text)
    return {"kernels": [p.name for p in projects], "embeddings": [l.name for l in embeds],
            "not_emitted": not_emitted(graph)}


def bridge_source() -> str:
    return """// C simulation only (never synthesised): the DMA engines and device memory around the HLS top, for
// host/csim_device.py. Bytes of one MM2S packet go into the top's input stream as beats (TLAST on the last);
// device memory is copied into m_axi word arrays (and the KV cache back after the launch); the output stream's
// beats come back as bytes with their TLAST flags.
#include <cstring>
#include <vector>

#include "ff_model.h"

void fpgaformer_top(hls::stream<ff_beat_t> &in_stream, hls::stream<ff_beat_t> &out_stream, unsigned mode,
                    unsigned n_items, unsigned position, unsigned flags, ff_word_t *weights, ff_word_t *kv_cache,
                    unsigned *design_id, unsigned *status);

static const unsigned BEAT = FF_BEAT_BITS / 8;

static void to_words(const unsigned char *bytes, unsigned long long n, std::vector<ff_word_t> &words) {
    words.assign((n + BEAT - 1) / BEAT + 1, ff_word_t(0));
    for (unsigned long long w = 0; w * BEAT < n; w++) {
        ff_word_t word = 0;
        for (unsigned b = 0; b < BEAT && w * BEAT + b < n; b++)
            word.range(8 * b + 7, 8 * b) = bytes[w * BEAT + b];
        words[w] = word;
    }
}

static void to_bytes(const std::vector<ff_word_t> &words, unsigned char *bytes, unsigned long long n) {
    for (unsigned long long i = 0; i < n; i++)
        bytes[i] = words[i / BEAT].range(8 * (i % BEAT) + 7, 8 * (i % BEAT)).to_uint();
}

extern "C" long long ff_overlay_launch(const unsigned char *in, unsigned long long in_bytes, unsigned char *out,
                                       unsigned char *out_last, unsigned long long out_beats_max, unsigned mode,
                                       unsigned n_items, unsigned position, unsigned flags, const unsigned char *w,
                                       unsigned long long w_bytes, unsigned char *kv, unsigned long long kv_bytes,
                                       unsigned *design_id, unsigned *status) {
    static std::vector<unsigned char> w_seen;
    static std::vector<ff_word_t> w_words;
    if (w_seen.size() != w_bytes || std::memcmp(w_seen.data(), w, w_bytes) != 0) {  // weights changed
        w_seen.assign(w, w + w_bytes);
        to_words(w, w_bytes, w_words);
    }
    std::vector<ff_word_t> kv_words;
    to_words(kv, kv_bytes, kv_words);
    hls::stream<ff_beat_t> in_stream, out_stream;
    unsigned long long beats = (in_bytes + BEAT - 1) / BEAT;
    for (unsigned long long i = 0; i < beats; i++) {
        ff_beat_t beat;
        beat.data = 0;
        for (unsigned b = 0; b < BEAT && i * BEAT + b < in_bytes; b++)
            beat.data.range(8 * b + 7, 8 * b) = in[i * BEAT + b];
        beat.keep = -1;
        beat.strb = -1;
        beat.user = 0;
        beat.id = 0;
        beat.dest = 0;
        beat.last = i + 1 == beats;
        in_stream.write(beat);
    }
    fpgaformer_top(in_stream, out_stream, mode, n_items, position, flags, w_words.data(), kv_words.data(),
                   design_id, status);
    to_bytes(kv_words, kv, kv_bytes);
    long long n = 0;
    while (!out_stream.empty()) {
        ff_beat_t beat = out_stream.read();
        if ((unsigned long long)n >= out_beats_max)
            return -1;  // more output than the S2MM side can take
        for (unsigned b = 0; b < BEAT; b++)
            out[n * BEAT + b] = beat.data.range(8 * b + 7, 8 * b).to_uint();
        out_last[n] = beat.last;
        n++;
    }
    return in_stream.empty() ? n : -2;  // -2: the top left input beats unread
}
"""


# ------------------------------------------------------------------------------------------------ build
def _cstring(text: str) -> str:
    """``text`` as a C string literal (for -D on a command line passed without a shell)."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable() and ord(ch) < 128:
            out.append(ch)
        else:
            raise BackendError(f"the path {text!r} holds a character that cannot reach a C++ macro; use a BUILD "
                               "path of printable ASCII characters")
    out.append('"')
    return "".join(out)


def _compile_units(build_dir: Path, synthesis: bool) -> list[tuple[Path, list[str]]]:
    """(source, g++ flags) of every translation unit of the overlay (synthesis: as Vitis HLS reads them)."""
    hls = (Path(build_dir) / HLS_DIR).resolve()
    kernels = sorted(p for p in (hls / KERNELS).iterdir() if (p / "kernel.json").is_file())
    if not kernels:
        raise BackendError(f"{hls} holds no kernels: run `fpgaformer build` first")
    ap_types = kernels[0] / "firmware" / "ap_types"
    common = ["-std=c++14", "-Wno-unknown-pragmas", f"-I{OVERLAY_DIR}", f"-I{ap_types}",
              f"-I{OVERLAY_DIR / 'csim'}"]
    if synthesis:
        common.append("-DFF_SYNTH")
    units = []
    for k in kernels:
        project = json.loads((k / "kernel.json").read_text())["project"]
        flags = [f"-I{k / 'firmware'}", f"-I{k / 'firmware' / 'ap_types'}", "-std=c++14", "-Wno-unknown-pragmas"]
        if synthesis:
            flags.append("-DFF_SYNTH")
        else:  # C simulation: weights from the project's text files; hls4ml's nnet:: helpers (inline
            # templates that read WEIGHTS_DIR) get a namespace per kernel so the linker cannot merge them
            flags += [f"-DWEIGHTS_DIR={_cstring(str(k / 'firmware' / 'weights'))}", f"-Dnnet=nnet_{project}"]
        units.append((k / "firmware" / f"{project}.cpp", flags))
    for name in ("ff_model.cpp", "fpgaformer_top.cpp") + (() if synthesis else ("csim_bridge.cpp",)):
        units.append((hls / name, common + [f"-I{hls}"]))
    return units


def compile_overlay(build_dir: Path, progress=None) -> Path:
    """g++-compile the whole overlay (kernels, ff_model, top, DMA bridge) into one shared library; reused
    while no source changed. Returns the library path."""
    if shutil.which("g++") is None:
        raise BackendError("g++ is not installed: the overlay's C simulation needs it")
    units = _compile_units(build_dir, False)
    digest = hashlib.sha256()
    hls = Path(build_dir) / HLS_DIR
    for path in sorted(hls.rglob("*")):
        if path.is_file() and path.suffix in (".h", ".cpp", ".txt"):
            digest.update(str(path.relative_to(hls)).encode())
            digest.update(path.read_bytes())
    for src in sorted(OVERLAY_DIR.rglob("*.h")):
        digest.update(src.read_bytes())
    digest.update(repr([flags for _, flags in units]).encode())
    out = (Path(build_dir) / CSIM_DIR).resolve()
    lib = out / f"ff_overlay-{digest.hexdigest()[:16]}.so"
    if lib.is_file():
        return lib
    if out.exists():
        shutil.rmtree(out)  # fpgaformer's own objects and libraries
    out.mkdir(parents=True)

    def one(i_unit):
        i, (src, flags) = i_unit
        obj = out / f"u{i}.o"
        done = subprocess.run(["g++", "-O2", "-fPIC", *flags, "-c", str(src), "-o", str(obj)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            from .csim import CompileError

            raise CompileError(src.stem, src.parent, done.stdout)
        if progress:
            progress(f"compiled {src.name}")
        return obj

    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        objects = list(pool.map(one, enumerate(units)))
    tmp = lib.with_suffix(".so.partial")
    done = subprocess.run(["g++", "-shared", "-o", str(tmp), *map(str, objects)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=COMPILE_TIMEOUT_S)
    if done.returncode != 0:
        from .csim import CompileError

        raise CompileError("overlay", out, done.stdout, "link failed")
    for obj in objects:
        obj.unlink()
    os.replace(tmp, lib)
    return lib
