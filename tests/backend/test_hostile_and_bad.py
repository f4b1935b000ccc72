"""Hostile names and bad input (tier 1: needs g++ and hls4ml).

* A model whose ONNX node and tensor names contain ``../``, spaces, quotes and C++ keywords compiles, writes
  nothing outside BUILD, and its kernel C-simulates bit-identically to the emulator.
* A kernel that cannot compile is reported with its name, the first g++ error lines and the project path, by the
  library and by ``fpgaformer verify BUILD --csim`` (exit status 1, no hang).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.csim


def hostile_copy(src, dst):
    """The same model with every node name and every intermediate/output tensor name made hostile."""
    import onnx

    model = onnx.load(str(src))
    g = model.graph
    keep = {i.name for i in g.input} | {i.name for i in g.initializer}
    rename = {}
    for i, node in enumerate(g.node):
        node.name = f"../../{i} class \"int\" 'delete' /etc/x"
        for o in node.output:
            if o and o not in keep and o not in rename:
                rename[o] = f"../t{len(rename)} \"new\" template<int> {o}"
    for node in g.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for vi in list(g.output) + list(g.value_info):
        vi.name = rename.get(vi.name, vi.name)
    onnx.save(model, str(dst))
    return dst


def _require_gxx():
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    pytest.importorskip("hls4ml")


def test_hostile_names_compile_inside_build_and_csim_bit_identical(models, tmp_path):
    _require_gxx()
    from fpgaformer.compiler.backend.hls4ml import write_projects
    from fpgaformer.compiler.backend.verify import verify_csim
    from fpgaformer.compiler.frontend import import_static
    from fpgaformer.compiler.passes.calibrate import synthetic_samples
    from fpgaformer.compiler.quantize import quantize

    _, _, path = models.onnx("tiny_encoder")
    work = tmp_path / "work"
    work.mkdir()
    hostile = hostile_copy(path, work / "hostile.onnx")
    graph, static = import_static(hostile, seq_len=8)
    assert any("../" in l.name and '"' in l.name for l in graph.layers)
    q = quantize(graph, "w8a16", synthetic_samples(graph, 8), static)
    before = set(tmp_path.rglob("*"))
    build = work / "BUILD"
    projects = write_projects(q, build)
    written = set(tmp_path.rglob("*")) - before
    outside = sorted(p for p in written if p != build and build not in p.parents)
    assert written and not outside, outside
    assert not (tmp_path.parent / "etc").exists()
    results = verify_csim(q, projects, synthetic_samples(q, 8, seed=2))
    assert all(r.error is None and r.identical for r in results), [r.to_json() for r in results]
    cpp = (projects[0].path / "firmware" / f"{projects[0].project}.cpp").read_text()
    assert "../" not in cpp.split("// hls-fpga-machine-learning insert layers")[-1].split("//")[0]


def _tiny_build(models, tmp_path):
    from fpgaformer.compiler.backend.hls4ml import write_projects

    q = models.quantized("tiny_encoder", "w8a16")
    build = tmp_path / "BUILD"
    return q, build, write_projects(q, build)


def test_kernel_that_cannot_compile_is_reported(models, tmp_path):
    _require_gxx()
    from fpgaformer.compiler.backend import csim

    _, build, projects = _tiny_build(models, tmp_path)
    project = projects[0]
    header = project.path / "firmware" / "nnet_utils" / "ff_softmax.h"
    header.write_text(header.read_text().replace("uwide_t recip = 0;", "uwide_t recip = undeclared_name;"))
    with pytest.raises(csim.CompileError) as info:
        csim.compile_kernel(project, timeout=600)
    message = str(info.value)
    assert project.name in message and str(project.path) in message
    assert "undeclared_name" in message and "error" in message

    # the CLI: one report per kernel, exit status 1, in bounded time. The BUILD's checksum index is updated to
    # the edited header, so this models a kernel fpgaformer itself wrote that does not compile (an edit it did
    # not write is refused before g++ runs: tests/compiler/test_hostile_paths.py)
    from fpgaformer.compiler.backend.hls4ml import project_checksums

    index = build / "hls" / "kernels.json"
    data = json.loads(index.read_text())
    data["kernels"][0]["files"] = project_checksums(project.path)
    index.write_text(json.dumps(data))
    done = subprocess.run([sys.executable, "-m", "fpgaformer.compiler.cli", "verify", str(build), "--csim",
                           "--json"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads(done.stdout)
    kernel = report["kernels"][0]
    assert not report["passed"] and "undeclared_name" in kernel["error"] and str(project.path) in kernel["error"]
    assert "compiling" in done.stderr  # progress is shown


def test_verify_cli_reports_bit_identical_kernels(models, tmp_path):
    _require_gxx()
    _, build, _ = _tiny_build(models, tmp_path)
    done = subprocess.run([sys.executable, "-m", "fpgaformer.compiler.cli", "verify", str(build), "--csim"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "bit-identical" in done.stdout and "passed" in done.stdout
