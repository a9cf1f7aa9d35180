"""Board and part descriptions in boards/spartan7/ (packaged as hwgen/boards)."""

import re

import pytest

from hwgen.errors import HwgenError
from hwgen.datafiles import boards_dir
from hwgen.estimate.boards import list_boards, list_parts, load_board, load_part

BOARDS = ["arty_s7_25", "arty_s7_50", "elastic_node_v5", "spartan_edge_accelerator"]


def test_boards_folder_is_found_from_the_package():
    assert (boards_dir() / "spartan7" / "xc7s15.toml").is_file()


def test_every_board_and_part_is_listed():
    assert set(BOARDS) <= set(list_boards())
    assert {"xc7s15", "xc7s25", "xc7s50"} <= set(list_parts())


def test_xc7s15_resources():
    p = load_part("xc7s15")
    r = p.resources
    assert (r.lut, r.ff, r.dsp, r.bram36, r.lutram_kbit) == (8000, 16000, 20, 10, 150)
    assert p.default_part == "xc7s15ftgb196-1"
    assert r.lutram_luts * 64 == 150 * 1024


@pytest.mark.parametrize(
    "name, lut, ff, dsp, bram36",
    [("xc7s25", 14600, 29200, 80, 45), ("xc7s50", 32600, 65200, 120, 75)],
)
def test_larger_parts(name, lut, ff, dsp, bram36):
    r = load_part(name).resources
    assert (r.lut, r.ff, r.dsp, r.bram36) == (lut, ff, dsp, bram36)


def test_elastic_node_defaults_to_speed_grade_2_and_says_so():
    b = load_board("elastic_node_v5")
    assert b.part == "xc7s15ftgb196-2"
    assert any("-2" in n for n in b.notes)
    assert (b.clock_pin, b.clock_mhz) == ("H11", 100.0)
    assert b.pins["spi_sclk"] == "N11" and b.pins["busy"] == "L12"
    assert b.pins["led"] == ["H12", "J12", "K12", "J11"]
    assert b.resources.dsp == 20


def test_spartan_edge_and_arty_parts():
    assert load_board("spartan_edge_accelerator").part == "xc7s15ftgb196-1"
    assert load_board("arty_s7_25").part == "xc7s25csga324-1"
    arty = load_board("arty_s7_50")
    assert arty.part == "xc7s50csga324-1" and arty.resources.dsp == 120
    assert (arty.clock_pin, arty.clock_iostandard) == ("R2", "SSTL135")


@pytest.mark.parametrize("name", BOARDS)
def test_board_pins_are_valid_and_never_shared(name):
    b = load_board(name)
    pins = [b.clock_pin] + ([b.reset_pin] if b.reset_pin else [])
    for value in b.pins.values():
        pins += [value] if isinstance(value, str) else value
    assert all(re.fullmatch(r"[A-Z]{1,2}[0-9]{1,2}", p) for p in pins), pins
    assert len(pins) == len(set(pins)), f"{name}: a pin is assigned twice: {pins}"
    assert b.part.startswith(b.device.name)
    assert b.clock_mhz > 0


def test_unknown_board_names_the_known_ones():
    with pytest.raises(HwgenError) as e:
        load_board("zedboard")
    assert "zedboard" in str(e.value)
    for known in BOARDS:
        assert known in str(e.value)


def test_unknown_part_names_the_known_ones():
    with pytest.raises(HwgenError, match=r"xc7a35t.*xc7s15"):
        load_part("xc7a35t")
