"""The synthesis-report reader on a csynth.xml in the format Vitis HLS writes, and the per-kernel comparison."""

import shutil
from pathlib import Path

import pytest

from fpgaformer.compiler import synthetic
from fpgaformer.compiler.boards import load_board
from fpgaformer.compiler.errors import UserError
from fpgaformer.compiler.fit import choose_hardware
from fpgaformer.compiler.reports import compare, find_reports, read_csynth

FIXTURE = Path(__file__).parents[1] / "fixtures" / "csynth.xml"


def test_reads_the_vitis_csynth_fixture():
    r = read_csynth(FIXTURE)
    assert r.top == "block0" and r.part == "xck26-sfvc784-2LV-c" and r.version == "2023.2"
    assert r.target_clock_ns == 4.0 and r.estimated_clock_ns == pytest.approx(3.412)
    assert (r.latency_best, r.latency_worst, r.interval_min, r.interval_max) == (20514, 20610, 16385, 16386)
    assert r.resources == {"dsp": 388, "bram36": 48.5, "uram": 6, "lut": 60412, "ff": 51377}  # 97 BRAM_18K / 2
    assert r.available == {"dsp": 1248, "bram36": 144, "uram": 64, "lut": 117120, "ff": 234240}


def test_vivado_hls_tags_and_undef_latency(tmp_path):
    text = FIXTURE.read_text().replace("<DSP>388</DSP>", "<DSP48E>388</DSP48E>").replace(
        "<Worst-caseLatency>20610</Worst-caseLatency>", "<Worst-caseLatency>undef</Worst-caseLatency>")
    path = tmp_path / "myproject_csynth.xml"
    path.write_text(text)
    r = read_csynth(path)
    assert r.resources["dsp"] == 388 and r.latency_worst is None


def test_not_a_report_is_a_user_error(tmp_path):
    path = tmp_path / "csynth.xml"
    path.write_text("<profile><nothing/></profile>")
    with pytest.raises(UserError, match="not a Vitis/Vivado HLS csynth.xml"):
        read_csynth(path)
    path.write_text("<profile")
    with pytest.raises(UserError, match="not a readable XML"):
        read_csynth(path)


def test_reports_in_a_build_are_matched_to_their_block(tmp_path):
    g = synthetic.encoder(2, 64, 4, 128, 100, 16, params="shape_only")
    fit = choose_hardware(g, load_board("kv260"), "w8a16", apply=True)
    report_dir = tmp_path / "hls" / "block0" / "prj" / "solution1" / "syn" / "report"
    report_dir.mkdir(parents=True)
    shutil.copy(FIXTURE, report_dir / "csynth.xml")
    reports = find_reports(tmp_path)
    assert [r.top for r in reports] == ["block0"]
    rows = compare(reports, fit.design, g)
    assert rows[0]["layers"] == len(g.blocks()[0])
    est = rows[0]["estimate"]
    assert est["dsp"] > 0 and rows[0]["ratio"]["dsp"] == pytest.approx(est["dsp"] / 388)
