"""Vivado hand-off: XDC/TCL rendering, board tops, atomic writing, run_vivado without Vivado."""

import json
import os
import re

import jinja2
import pytest

from hwgen.codegen.vivado import (
    BOARD_TOP,
    SPI_TOP_PORTS,
    Port,
    plan_board_io,
    ports_from_verilog,
    render_template,
    run_vivado,
    write_vivado_project,
)
from hwgen.errors import HwgenError
from hwgen.estimate.boards import load_board
from hwgen.estimate.lint import lint_verilog

SPI_TOP = """\
module hwgen_spi_top (
    input  wire       clk,
    input  wire       rst,
    input  wire       spi_sclk,
    input  wire       spi_cs_n,
    input  wire       spi_mosi,
    output reg        spi_miso,
    output wire       busy,
    output wire [3:0] led
);
    reg [2:0] s;
    always @(posedge clk) begin
        if (rst) begin
            s <= 3'd0;
            spi_miso <= 1'b0;
        end else begin
            s <= {s[1:0], spi_sclk};
            spi_miso <= spi_mosi ^ spi_cs_n ^ s[2];
        end
    end
    assign busy = s[1];
    assign led = {s, rst};
endmodule
"""

XDC_PIN = re.compile(
    r"^set_property -dict \{ PACKAGE_PIN (\w+) IOSTANDARD (\w+) \} \[get_ports \{([\w\[\]]+)\}\]$", re.MULTILINE
)


def constrained(xdc: str) -> dict[str, str]:
    return {port: pin for pin, _std, port in XDC_PIN.findall(xdc)}


def port_bits(ports) -> set[str]:
    return {p.name if p.width == 1 else f"{p.name}[{i}]" for p in ports for i in range(p.width)}


@pytest.fixture
def spi_top(tmp_path):
    path = tmp_path / "hwgen_spi_top.v"
    path.write_text(SPI_TOP)
    return path


@pytest.mark.parametrize("board", ["elastic_node_v5", "spartan_edge_accelerator", "arty_s7_25", "arty_s7_50"])
def test_every_top_level_port_is_constrained(tmp_path, spi_top, board):
    out = write_vivado_project(tmp_path, [spi_top], board)
    meta = json.loads((out / "hwgen_vivado.json").read_text())
    xdc = (out / "board.xdc").read_text()
    rtl = "\n".join(p.read_text() for p in (out / "rtl").glob("*.v"))
    top_ports = ports_from_verilog(rtl, meta["vivado_top"])
    pins = constrained(xdc)
    assert set(pins) == port_bits(top_ports)
    assert len(set(pins.values())) == len(pins), "two ports on one pin"
    b = load_board(board)
    assert pins["clk"] == b.clock_pin
    assert f"create_clock -name sys_clk -period {1000 / b.clock_mhz:.3f}" in xdc
    assert "[get_ports {clk}]" in xdc
    tcl = (out / "build.tcl").read_text()
    assert f"synth_design -part {b.part} -top {meta['vivado_top']}" in tcl


def test_elastic_node_pins_part_and_power_on_reset(tmp_path, spi_top):
    out = write_vivado_project(tmp_path, [spi_top], "elastic_node_v5")
    pins = constrained((out / "board.xdc").read_text())
    assert pins == {
        "clk": "H11", "spi_sclk": "N11", "spi_cs_n": "P12", "spi_mosi": "P11", "spi_miso": "M12",
        "busy": "L12", "led[0]": "H12", "led[1]": "J12", "led[2]": "K12", "led[3]": "J11",
    }  # fmt: skip
    assert "IOSTANDARD LVCMOS33" in (out / "board.xdc").read_text()
    assert "CLOCK_DEDICATED_ROUTE FALSE are needed" in (out / "board.xdc").read_text()
    assert "set_property CLOCK_DEDICATED_ROUTE" not in (out / "board.xdc").read_text()
    tcl = (out / "build.tcl").read_text()
    assert "synth_design -part xc7s15ftgb196-2 -top hwgen_board_top" in tcl
    for step in ["read_verilog {rtl/hwgen_spi_top.v}", "read_verilog {rtl/hwgen_board_top.v}", "read_xdc board.xdc",
                 "opt_design", "place_design", "route_design", "report_utilization -file",
                 "report_timing_summary -file", "report_power -file", "write_bitstream"]:  # fmt: skip
        assert step in tcl
    assert "vivado -mode batch" in (out / "build.sh").read_text()
    assert (out / "build.sh").stat().st_mode & 0o111
    board_top = (out / "rtl" / "hwgen_board_top.v").read_text()
    assert ".rst(por_rst)" in board_top


def test_part_override(tmp_path, spi_top):
    out = write_vivado_project(tmp_path, [spi_top], "elastic_node_v5", part="xc7s15ftgb196-1")
    assert "-part xc7s15ftgb196-1 " in (out / "build.tcl").read_text()
    with pytest.raises(HwgenError, match="part"):
        write_vivado_project(tmp_path, [spi_top], "elastic_node_v5", part="xc7s15; exec rm")


def test_arty_uses_the_wrapper_directly(tmp_path, spi_top):
    out = write_vivado_project(tmp_path, [spi_top], "arty_s7_50", ports=SPI_TOP_PORTS)
    assert not (out / "rtl" / f"{BOARD_TOP}.v").exists()
    xdc = (out / "board.xdc").read_text()
    assert constrained(xdc)["rst"] == "G15"
    assert "IOSTANDARD SSTL135 } [get_ports {clk}]" in xdc
    assert "set_property INTERNAL_VREF 0.675 [get_iobanks 34]" in xdc
    assert "-top hwgen_spi_top" in (out / "build.tcl").read_text()


def test_board_top_for_missing_pins_lints_clean(tmp_path, spi_top):
    out = write_vivado_project(tmp_path, [spi_top], "spartan_edge_accelerator")
    board_top = out / "rtl" / f"{BOARD_TOP}.v"
    text = board_top.read_text()
    assert ".busy()" in text and "led_full" in text
    assert [p for p in ports_from_verilog(text, BOARD_TOP) if p.name == "led"] == [Port("led", "output", 2)]
    warnings = lint_verilog([out / "rtl" / "hwgen_spi_top.v", board_top], BOARD_TOP, waivers=["DECLFILENAME"])
    assert warnings == []


def test_an_input_without_a_pin_is_an_error(tmp_path, spi_top):
    ports = [*SPI_TOP_PORTS, Port("start", "input")]
    with pytest.raises(HwgenError, match=r"no pin for input port 'start'.*spi_sclk"):
        write_vivado_project(tmp_path, [spi_top], "elastic_node_v5", ports=ports)
    assert not (tmp_path / "vivado").exists()
    assert list(tmp_path.iterdir()) == [spi_top]
    with pytest.raises(HwgenError, match="clk"):
        plan_board_io(load_board("elastic_node_v5"), [Port("rst", "input")], "t")


def test_rewrite_replaces_the_folder_atomically(tmp_path, spi_top):
    first = write_vivado_project(tmp_path, [spi_top], "arty_s7_25")
    (first / "stale.txt").write_text("from an older build")
    second = write_vivado_project(tmp_path, [spi_top], "elastic_node_v5")
    assert second == first and not (second / "stale.txt").exists()
    assert "xc7s15ftgb196-2" in (second / "build.tcl").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hwgen_spi_top.v", "vivado"]


def test_missing_verilog_leaves_nothing(tmp_path):
    with pytest.raises(HwgenError, match="not found"):
        write_vivado_project(tmp_path / "out", [tmp_path / "nope.v"], "elastic_node_v5", ports=SPI_TOP_PORTS)
    assert not (tmp_path / "out" / "vivado").exists()


def test_undefined_template_variable_raises():
    board = load_board("elastic_node_v5")
    with pytest.raises(jinja2.UndefinedError, match="part"):
        render_template("build.tcl.j2", board=board, top="t", verilog_files=["a.v"])
    with pytest.raises(jinja2.UndefinedError):
        render_template("board.xdc.j2", board=board, part="xc7s15ftgb196-1", top="t")


def test_ports_from_verilog_ansi_and_amaranth_style():
    amaranth = """
module hwgen_top(x__valid, y__ready, clk, rst, x__payload, y__payload);
  input clk;
  wire clk;
  input rst;
  input [7:0] x__payload;
  input x__valid;
  input y__ready;
  output [15:0] y__payload;
endmodule
module \\hwgen_top.u_add (clk, in_data);
  input clk;
  input [7:0] in_data;
endmodule
"""
    assert ports_from_verilog(amaranth, "hwgen_top") == [
        Port("clk", "input"), Port("rst", "input"), Port("x__payload", "input", 8),
        Port("x__valid", "input"), Port("y__ready", "input"), Port("y__payload", "output", 16),
    ]  # fmt: skip
    assert ports_from_verilog(SPI_TOP, "hwgen_spi_top") == list(SPI_TOP_PORTS)
    with pytest.raises(HwgenError, match="not found"):
        ports_from_verilog(SPI_TOP, "other")


def test_run_vivado_without_vivado_gives_the_command(tmp_path, spi_top, monkeypatch, capsys):
    out = write_vivado_project(tmp_path, [spi_top], "elastic_node_v5")
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)
    result = run_vivado(tmp_path)
    assert result["ran"] is False
    assert result["command"] == f"cd {out.resolve()} && vivado -mode batch -nojournal -log vivado.log -source build.tcl"
    assert result["command"] in capsys.readouterr().err
    with pytest.raises(HwgenError, match="build.tcl"):
        run_vivado(tmp_path / "empty")


def test_run_vivado_runs_a_vivado_on_path_and_parses_its_reports(tmp_path, spi_top, monkeypatch):
    out = write_vivado_project(tmp_path / "build", [spi_top], "elastic_node_v5")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "vivado"
    # Stands in for Vivado: checks its arguments and writes a power report where build.tcl would.
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in *"-source build.tcl"*) ;; *) exit 3;; esac\n'
        "mkdir -p reports\n"
        "printf '| Total On-Chip Power (W)  | 0.090 |\\n| Dynamic (W) | 0.058 |\\n' > reports/power.rpt\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    result = run_vivado(out)
    assert result["ran"] is True and result["returncode"] == 0
    assert result["reports"]["power"]["total_w"] == 0.09
    assert result["reports"]["utilization"] is None
