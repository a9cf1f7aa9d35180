"""Verilator lint with documented waivers."""

import pytest

from hwgen.errors import HwgenError
from hwgen.estimate.lint import AMARANTH_WAIVERS, lint_verilog

CLEAN = """\
module clean_counter (
    input  wire       clk,
    input  wire       rst,
    output reg  [7:0] count
);
    always @(posedge clk)
        if (rst)
            count <= 8'd0;
        else
            count <= count + 8'd1;
endmodule
"""

DIRTY = """\
module dirty (
    input  wire       en,
    input  wire [3:0] d,
    output reg  [3:0] q,
    output wire [3:0] z
);
    wire [3:0] never;
    always @(*) if (en) q = d;
    assign z = never;
endmodule
"""


def write(tmp_path, name, text):
    path = tmp_path / f"{name}.v"
    path.write_text(text)
    return path


def test_clean_module_has_no_warnings(tmp_path):
    assert lint_verilog([write(tmp_path, "clean_counter", CLEAN)], "clean_counter") == []
    assert lint_verilog([write(tmp_path, "clean_counter", CLEAN)], "clean_counter", waivers=[]) == []


def test_dirty_module_reports_latch_and_undriven(tmp_path):
    warnings = lint_verilog([write(tmp_path, "dirty", DIRTY)], "dirty")
    assert any(w.startswith("%Warning-LATCH") and "'q'" in w for w in warnings)
    assert any(w.startswith("%Warning-UNDRIVEN") and "'never'" in w for w in warnings)


def test_waivers_are_documented_and_applied(tmp_path):
    assert all(len(why) > 20 for why in AMARANTH_WAIVERS.values())
    narrow = "module narrow (input wire [7:0] a, output wire [3:0] y);\n  assign y = a;\nendmodule\n"
    path = write(tmp_path, "narrow", narrow)
    assert any("WIDTHTRUNC" in w for w in lint_verilog([path], "narrow", waivers=[]))
    assert not any("WIDTH" in w for w in lint_verilog([path], "narrow"))


def test_syntax_error_and_wrong_top_are_hwgen_errors(tmp_path):
    with pytest.raises(HwgenError, match="verilator"):
        lint_verilog([write(tmp_path, "broken", "module broken(; endmodule\n")], "broken")
    with pytest.raises(HwgenError, match="other"):
        lint_verilog([write(tmp_path, "clean_counter", CLEAN)], "other")
