"""Board data files: every board loads, its figures match the anchors note's table, bad input is explained."""

import pytest

from fpgaformer.compiler.boards import REQUIRED, board_dir, known_boards, load_board
from fpgaformer.compiler.errors import UserError

BOARDS = ("pynq-z2", "zcu104", "kv260", "zcu102", "u250", "u280")

# (DSP, BRAM36, URAM, LUT, peak GB/s) from notes/anchors.md section 4
ANCHORS = {"pynq-z2": (220, 140, 0, 53_200, 2.1), "kv260": (1_248, 144, 64, 117_120, 19.2),
           "zcu104": (1_728, 312, 96, 230_400, 19.2), "zcu102": (2_520, 912, 0, 274_080, 19.2),
           "u250": (12_288, 2_688, 1_280, 1_728_000, 77), "u280": (9_024, 2_016, 960, 1_303_680, 460)}


def test_the_six_boards_are_known():
    assert set(BOARDS) <= set(known_boards())


@pytest.mark.parametrize("name", BOARDS)
def test_board_figures_match_anchors(name):
    b = load_board(name)
    assert (b.dsp, b.bram36, b.uram, b.lut, b.peak_bandwidth_gbs) == ANCHORS[name]
    assert b.name == name and b.part and b.pynq_version and b.ff > b.lut
    assert b.axi_ports > 0 and b.axi_port_bits in (64, 128, 256, 512)


@pytest.mark.parametrize("name", BOARDS)
def test_every_figure_has_a_source_comment(name):
    lines = (board_dir() / f"{name}.toml").read_text().splitlines()
    for section, key, _ in REQUIRED:
        if key in ("name", "family"):  # identifiers, not figures
            continue
        line = next(l for l in lines if l.split("=")[0].strip() == key)
        assert "#" in line, f"{name}: {key} has no source comment"


def test_packing_rules():
    kv, z2 = load_board("kv260"), load_board("pynq-z2")
    assert kv.packing(8, 8) == 2 and kv.packing(8, 16) == 1 and kv.packing(4, 8) == 2
    assert z2.packing(8, 8) == 1
    assert kv.dsps_per_multiply(16, 16) == 1 and kv.dsps_per_multiply(32, 16) == 2


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(UserError) as e:
        load_board("zcu999")
    for name in BOARDS:
        assert name in str(e.value)


def _board_text(drop: str | None = None, replace: tuple[str, str] | None = None) -> str:
    text = (board_dir() / "kv260.toml").read_text()
    lines = [l for l in text.splitlines() if drop is None or l.split("=")[0].strip() != drop]
    text = "\n".join(lines)
    return text.replace(*replace) if replace else text


@pytest.mark.parametrize("field, named", [("uram", "resources.uram"), ("peak_bandwidth_gbs",
                                                                         "memory.peak_bandwidth_gbs"),
                                          ("part", "part"), ("port_bits", "axi.port_bits")])
def test_missing_field_is_named(tmp_path, field, named):
    path = tmp_path / "myboard.toml"
    path.write_text(_board_text(drop=field))
    with pytest.raises(UserError, match=f"lacks the field '{named}'"):
        load_board(path)


def test_mistyped_field_and_bad_toml_are_explained(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text(_board_text(replace=("dsp = 1248", 'dsp = "many"')))
    with pytest.raises(UserError, match="resources.dsp"):
        load_board(path)
    path.write_text("name = [")
    with pytest.raises(UserError, match="not valid TOML"):
        load_board(path)


def test_a_board_file_given_by_path_loads(tmp_path):
    path = tmp_path / "kv260-fast.toml"
    path.write_text(_board_text(replace=('name = "kv260"', 'name = "kv260-fast"')).replace(
        "default_mhz = 250", "default_mhz = 300"))
    b = load_board(path)
    assert b.name == "kv260-fast" and b.clock_mhz == 300
