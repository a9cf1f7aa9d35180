"""The ops added after the reference model's: ``lut`` (table activations), ``maxpool`` and ``select_rows``
(the last-step readout), ``concat``. Each op: its golden function
against an independent reference, its unit in Amaranth's simulator == golden on random inputs with the
latency model exact per controller step, a small graph on Verilator, and a model written with the hwgen.nn
layer converted, built and simulated bit-exact."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from amaranth.sim import Simulator
from torch import nn

import hwgen
import hwgen.nn as hnn
from hwgen import hw
from hwgen.errors import HwgenError
from hwgen.estimate.latency import estimate
from hwgen.golden import run
from hwgen.hw import lower
from hwgen.ir.builder import GraphBuilder
from hwgen.ir.types import IntType
from hwgen.ops.concat import concat as golden_concat
from hwgen.ops.lut import lut as golden_lut
from hwgen.ops.maxpool import maxpool as golden_maxpool
from hwgen.ops.select_rows import select_rows as golden_select_rows
from hwgen.sim import simulate as simulate_rtl
from tests.test_hw_top import check_back_to_back, simulate
from tests.test_nn import data, train

I8, U8, I6, I12 = IntType(8), IntType(8, False), IntType(6), IntType(12)


# ---- helpers -------------------------------------------------------------------------------------------------
def step_cycles(top, window) -> dict[int, int]:
    """Cycles the controller spends in each step (``top.step``) for one window, no stalls."""
    counts: dict[int, int] = {}
    flat = [int(v) for v in np.asarray(window).reshape(-1)]
    n_out = int(np.prod(top.design.graph.output_type.shape))

    async def bench(ctx):
        ctx.set(top.y.ready, 1)
        sent, received = 0, 0
        while received < n_out:
            ctx.set(top.x.valid, int(sent < len(flat)))
            if sent < len(flat):
                ctx.set(top.x.payload, flat[sent])
            step, ready, valid = ctx.get(top.step), ctx.get(top.x.ready), ctx.get(top.y.valid)
            counts[step] = counts.get(step, 0) + 1
            await ctx.tick()
            sent += int(sent < len(flat) and ready)
            received += int(valid)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return counts


def check_exact(graph, x, parallel):
    """The lowered graph in Amaranth's simulator == golden on every window (back to back, without and with
    stalls), and the latency model equal to the simulation in every controller step, in total and between
    back-to-back windows. Returns the Top."""
    top = lower(graph, parallel)
    want = run(graph, x).reshape(len(x), -1)
    got, _, _ = check_back_to_back(top, x)
    assert (got == want).all(), f"{got}\n!=\n{want}"
    stalled, _ = simulate(lower(graph, parallel), x, stall_seed=3)
    assert (stalled == want).all()
    model = estimate(top.design)
    measured = step_cycles(lower(graph, parallel), x[0])
    for members in top.design.steps:
        predicted = sum(model["nodes"][graph.nodes[i].name] for i in members)
        assert measured[members[0] + 1] == predicted, [graph.nodes[i].name for i in members]
    return top


def edge_inputs(rng, shape, dtype, n=3):
    x = rng.integers(dtype.qmin, dtype.qmax + 1, size=(n, *shape))
    x[0].flat[0], x[0].flat[-1] = dtype.qmin, dtype.qmax
    x[1][...] = dtype.qmin
    return x


# ---- lut -----------------------------------------------------------------------------------------------------
def test_lut_golden_is_the_table_entry_of_each_input():
    rng = np.random.default_rng(0)
    for dt in (I8, U8, IntType(3), IntType(12)):
        table = rng.integers(-1000, 1000, size=dt.qmax - dt.qmin + 1)
        x = rng.integers(dt.qmin, dt.qmax + 1, size=(5, 7))
        want = np.array([[table[list(range(dt.qmin, dt.qmax + 1)).index(v)] for v in row] for row in x.tolist()])
        assert np.array_equal(golden_lut(x, table, dt.qmin), want)


@pytest.mark.parametrize("cls,fn", [(hnn.QuantGELU, F.gelu), (hnn.QuantSiLU, F.silu),
                                    (hnn.QuantSigmoid, torch.sigmoid), (hnn.QuantTanh, torch.tanh)])
def test_table_activation_forward_is_the_quantized_function(cls, fn):
    """The layer's integers == round(f(x * s_in) / s_out), clamped, computed element by element in torch."""
    torch.manual_seed(0)
    q, act = hnn.QuantAct(6), cls(act_bits=7)
    x = torch.randn(4, 8, 5) * 2
    h = q(x)
    y = act(h)
    s_in, s_out, dt = float(getattr(h, "_hwgen_q").scale), act.out_quant.value(), act.dtype
    want = torch.clamp(torch.floor(fn(hnn.integers(h).double() * s_in) / s_out + 0.5), dt.qmin, dt.qmax).long()
    assert torch.equal(hnn.integers(y), want)
    assert dt.signed == (cls is not hnn.QuantSigmoid)
    # the gradient is the float function's (straight-through), not zero
    x.requires_grad_(True)
    act(q(x)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_lut_refuses_a_table_of_the_wrong_size_or_range():
    b = GraphBuilder("x", (4, 3), I6)
    with pytest.raises(HwgenError, match=r"^node 'g' \(lut\): the table has 63 entries, the input type i6 has 64"):
        b.lut("g", "x", np.zeros(63, np.int64), I8)
    b = GraphBuilder("x", (4, 3), I6)
    with pytest.raises(HwgenError, match=r"constant values \[0, 300\] do not fit its type i8"):
        b.lut("g", "x", np.arange(64) * 300 // 63, I8)
    b = GraphBuilder("x", (4, 3), IntType(13))
    with pytest.raises(HwgenError, match="wider than the 12 bits"):
        b.lut("g", "x", np.zeros(1 << 13, np.int64), I8)


@pytest.mark.parametrize("seed", [0, 1])
def test_lut_unit_standalone_and_chained(seed):
    """A lut on the input (read from memory), then a linear with a chained lut of a 6-bit value into a
    12-bit type, then a lut into an unsigned type: three tables in one ROM."""
    rng = np.random.default_rng(seed)
    rows, c, n = 4, 3, 5
    b = GraphBuilder("x", (rows, c), I8)
    b.lut("t0", "x", rng.integers(-128, 128, size=256), I8)
    b.linear("lin", "t0", rng.integers(-128, 128, size=(n, c)), None, 20000, 14, I6, I8)
    b.lut("t1", "lin", rng.integers(-2048, 2048, size=64), I12)
    b.linear("lin2", "t1", rng.integers(-8, 8, size=(2, n)), None, 20000, 20, I8, IntType(4))
    b.lut("t2", "lin2", rng.integers(0, 256, size=256), U8)
    graph = b.finish("t2")
    top = check_exact(graph, edge_inputs(rng, (rows, c), I8), parallel=int(rng.integers(1, 5)))
    chained = {graph.nodes[i].name for i in top.design.streamed}
    assert chained == {"t1", "t2"}  # the first lut reads the input buffer
    assert top.design.roms["act_lut"][0] == 12  # the widest output type (i12)
    assert len(top.design.roms["act_lut"][1]) == 256 + 64 + 256


def assert_bit_exact_on_verilator(graph, rng, tmp_path, seed: int) -> None:
    """The graph's emitted Verilog (4 lanes) equals golden on 6 edge-case [8, 4] windows, with stalls."""
    v = tmp_path / "hwgen_top.v"
    v.write_text(hw.emit_verilog(lower(graph, 4), name="hwgen_top"))
    res = simulate_rtl(v, graph, edge_inputs(rng, (8, 4), I8, n=6), simulator="verilator", build_dir=tmp_path / "b",
                       seed=seed, stall_in=0.3, stall_out=0.3)
    assert res.error is None and not res.timed_out, res.error
    assert (res.windows, res.mismatches) == (6, 0)


@pytest.mark.sim
def test_lut_graph_on_verilator_with_stalls(tmp_path):
    rng = np.random.default_rng(7)
    b = GraphBuilder("x", (8, 4), I8)
    b.linear("lin", "x", rng.integers(-128, 128, size=(8, 4)), rng.integers(-500, 500, size=8), 21000, 15, I8, I8)
    b.lut("act", "lin", rng.integers(-128, 128, size=256), I8)
    b.add("res", "act", "lin", 16000, 15000, 0, 15, I8)
    graph = b.finish("res")
    assert_bit_exact_on_verilator(graph, rng, tmp_path, seed=2)


class TableActModel(nn.Module):
    """Every table activation in one small forecaster (window 8, 3 features, d 8)."""

    def __init__(self, d=8):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.embed = hnn.QuantLinear(3, d)
        self.gelu = hnn.QuantGELU()
        self.ffn = hnn.QuantLinear(d, d, weight_bits=4)
        self.silu = hnn.QuantSiLU(act_bits=6)
        self.gate = hnn.QuantLinear(d, d)
        self.sigmoid = hnn.QuantSigmoid()
        self.mix = hnn.QuantLinear(d, d)
        self.tanh = hnn.QuantTanh()
        self.pool = hnn.QuantMeanPool()
        self.head = hnn.QuantLinear(d, 1, act_bits=16)

    def forward(self, x):
        h = self.silu(self.ffn(self.gelu(self.embed(self.q(x)))))
        h = self.tanh(self.mix(self.sigmoid(self.gate(h))))
        return self.head(self.pool(h))


@pytest.fixture(scope="module")
def table_model():
    torch.manual_seed(1)
    x = data(48)
    return train(TableActModel(), x, x[:, -1, :1] * 0.5, steps=8), x


def test_table_activations_convert_and_predict_exactly(table_model, tmp_path):
    model, x = table_model
    acc = hwgen.convert(model, x[:16], calibration=x[16:])
    assert [n.op for n in acc.graph.nodes].count("lut") == 4
    model.eval()
    with torch.no_grad():
        assert np.array_equal(acc.predict(x, integers=True), hnn.integers(model(x)).numpy())
    again = hwgen.load(acc.save(tmp_path / "g"))
    assert np.array_equal(again.predict(x, integers=True), acc.predict(x, integers=True))


@pytest.mark.sim
def test_table_activation_model_built_and_simulated_bit_exact_on_verilator(table_model, tmp_path):
    model, x = table_model
    acc = hwgen.convert(model, x[:16])
    build = acc.build(tmp_path / "b", board="xc7s15", parallel=4)
    design = hw.build_design(acc.graph, 4)
    assert len(design.programs["lut"]) == 4 and all(design.head[i] != i for i, n in enumerate(acc.graph.nodes)
                                                    if n.op == "lut")  # every lut chained onto its linear
    assert build.report["hardware"]["parallel"] == 4
    sim = acc.simulate(x[:3].numpy(), stall=0.2, seed=1)
    assert sim["windows"] == 3 and sim["mismatches"] == 0 and sim["error"] is None


@pytest.mark.parametrize("module,hint", [(nn.GELU(), "QuantGELU"), (nn.SiLU(), "QuantSiLU"),
                                         (nn.Sigmoid(), "QuantSigmoid"), (nn.Tanh(), "QuantTanh")])
def test_float_activations_are_refused_with_the_quant_layer_named(module, hint):
    class Float(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.embed, self.act = hnn.QuantAct(8), hnn.QuantLinear(3, 4), module

        def forward(self, x):
            return self.act(self.embed(self.q(x)))

    with pytest.raises(HwgenError) as info:
        hwgen.convert(Float(), data(4))
    assert "\n" not in str(info.value)
    assert re.match(rf"^model\.act: torch\.nn\.\w+ is not quantized; use hwgen\.nn\.{hint} \(at ", str(info.value))


def test_table_activation_refuses_a_wide_input():
    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.embed, self.act = hnn.QuantAct(8), hnn.QuantLinear(3, 4, act_bits=16), hnn.QuantTanh()

        def forward(self, x):
            return self.act(self.embed(self.q(x)))

    with pytest.raises(HwgenError, match=r"^model\.act \(QuantTanh\): its input has 16 bits; a table activation "
                                         r"takes at most 12$"):
        hwgen.convert(Wide(), data(4))


# ---- maxpool and select_rows ---------------------------------------------------------------------------------
def test_maxpool_and_select_rows_golden_against_torch():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(4, 7, 5))
    t = torch.as_tensor(x).double().transpose(1, 2)  # torch pools channels-first
    assert np.array_equal(golden_maxpool(x), t.amax(dim=2, keepdim=True).transpose(1, 2).long().numpy())
    for k in (1, 2, 3, 7):
        want = F.max_pool1d(t, k).transpose(1, 2).long().numpy()  # stride k, the tail rows dropped
        assert np.array_equal(golden_maxpool(x, k), want)
    assert np.array_equal(golden_select_rows(x, 6, 1), x[:, -1:])
    assert np.array_equal(golden_select_rows(x, 2, 3), x[:, 2:5])


def test_maxpool_and_select_rows_refuse_bad_attributes():
    b = GraphBuilder("x", (4, 3), I8)
    for k in (5, 0):
        with pytest.raises(HwgenError, match=rf"^node 'p' \(maxpool\): kernel must lie in 1\.\.4, not {k}"):
            b.maxpool("p", "x", k)
    with pytest.raises(HwgenError, match=r"^node 's' \(select_rows\): rows 3\.\.4 are not within 0\.\.3"):
        b.select_rows("s", "x", 3, 2)


@pytest.mark.parametrize("kernel", [None, 1, 2, 3])
def test_maxpool_unit_standalone_and_chained(kernel):
    """On the input buffer (7 rows: kernel 2 and 3 leave tail rows), and chained onto a linear."""
    rng = np.random.default_rng(kernel or 0)
    b = GraphBuilder("x", (7, 3), I8)
    b.maxpool("p", "x", kernel)
    check_exact(b.finish("p"), edge_inputs(rng, (7, 3), I8), parallel=2)
    b = GraphBuilder("x", (7, 3), I8)
    b.linear("lin", "x", rng.integers(-128, 128, size=(5, 3)), None, 20000, 14, I6, I8)
    b.maxpool("p", "lin", kernel)
    top = check_exact(b.finish("p"), edge_inputs(rng, (7, 3), I8), parallel=3)
    assert top.design.streamed == {1: 0}


@pytest.mark.parametrize("start,count", [(6, 1), (0, 2), (3, 3)])
def test_select_rows_unit_standalone_and_chained(start, count):
    """Standalone it reads only the selected rows; chained it waits for its producer's last element."""
    rng = np.random.default_rng(start)
    b = GraphBuilder("x", (7, 3), I8)
    b.select_rows("s", "x", start, count)
    top = check_exact(b.finish("s"), edge_inputs(rng, (7, 3), I8), parallel=2)
    assert estimate(top.design)["nodes"]["s"] == count * 3 + 4
    b = GraphBuilder("x", (7, 3), I8)
    b.linear("lin", "x", rng.integers(-128, 128, size=(5, 3)), None, 20000, 14, I6, I8)
    b.select_rows("s", "lin", start, count)
    b.maxpool("p", "s")  # both ops on the one unit, a second program
    top = check_exact(b.finish("p"), edge_inputs(rng, (7, 3), I8), parallel=3)
    assert top.design.streamed == {1: 0} and len(top.design.programs["select"]) == 2


@pytest.mark.sim
def test_maxpool_and_last_step_graph_on_verilator_with_stalls(tmp_path):
    rng = np.random.default_rng(8)
    b = GraphBuilder("x", (8, 4), I8)
    b.linear("lin", "x", rng.integers(-128, 128, size=(8, 4)), rng.integers(-500, 500, size=8), 21000, 15, I8, I8)
    b.maxpool("pool", "lin", 2)
    b.lut("act", "pool", rng.integers(-128, 128, size=256), I8)
    b.select_rows("last", "act", 3, 1)
    b.linear("head", "last", rng.integers(-128, 128, size=(2, 8)), None, 21000, 15, I8, I8)
    graph = b.finish("head")
    assert_bit_exact_on_verilator(graph, rng, tmp_path, seed=3)


class PoolModel(nn.Module):
    """Max pooling over pairs of steps, a table activation, the last step, and a global max beside it."""

    def __init__(self, d=8):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.embed = hnn.QuantLinear(3, d)
        self.pool = hnn.QuantMaxPool(2)
        self.act = hnn.QuantTanh()
        self.ffn = hnn.QuantLinear(d, d)
        self.last = hnn.QuantLastStep()
        self.head = hnn.QuantLinear(d, 1, act_bits=16)

    def forward(self, x):
        h = self.ffn(self.act(self.pool(self.embed(self.q(x)))))
        return self.head(self.last(h))


class GlobalMaxModel(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.q, self.embed, self.pool = hnn.QuantAct(8), hnn.QuantLinear(3, d), hnn.QuantMaxPool()
        self.head = hnn.QuantLinear(d, 2, act_bits=16)

    def forward(self, x):
        return self.head(self.pool(self.embed(self.q(x))))


@pytest.fixture(scope="module")
def pool_model():
    torch.manual_seed(2)
    x = data(48)
    return train(PoolModel(), x, x[:, -1, :1] * 0.5, steps=8), x


def test_max_pool_and_last_step_convert_and_predict_exactly(pool_model, tmp_path):
    model, x = pool_model
    acc = hwgen.convert(model, x[:16], calibration=x[16:])
    assert [n.op for n in acc.graph.nodes] == ["linear", "maxpool", "lut", "linear", "select_rows", "linear"]
    assert acc.graph.nodes[1].out.shape == (4, 8) and acc.graph.nodes[4].out.shape == (1, 8)
    model.eval()
    with torch.no_grad():
        assert np.array_equal(acc.predict(x, integers=True), hnn.integers(model(x)).numpy())
    again = hwgen.load(acc.save(tmp_path / "g"))  # graph.json + consts.npz round trip
    assert np.array_equal(again.predict(x, integers=True), acc.predict(x, integers=True))
    torch.manual_seed(3)
    other = train(GlobalMaxModel(), x, x[:, -1, :2], steps=8)
    acc = hwgen.convert(other, x[:16], calibration=x[16:])
    other.eval()
    with torch.no_grad():
        assert np.array_equal(acc.predict(x, integers=True), hnn.integers(other(x)).numpy())
    xg = x.clone().requires_grad_(True)
    other(xg).sum().backward()  # the max's gradient reaches the input
    assert xg.grad.abs().sum() > 0


@pytest.mark.sim
def test_max_pool_and_last_step_model_built_and_simulated_bit_exact_on_verilator(pool_model, tmp_path):
    model, x = pool_model
    acc = hwgen.convert(model, x[:16])
    acc.build(tmp_path / "b", board="xc7s15", parallel=4)
    sim = acc.simulate(x[:3].numpy(), stall=0.2, seed=2)
    assert sim["windows"] == 3 and sim["mismatches"] == 0 and sim["error"] is None


@pytest.mark.parametrize("module,hint", [
    (nn.AdaptiveMaxPool1d(1), r"hwgen\.nn\.QuantMaxPool \(the maximum over all time steps\)"),
    (nn.MaxPool1d(2), r"hwgen\.nn\.QuantMaxPool\(kernel_size\) \(channels-last, stride = kernel\)")])
def test_torch_max_pooling_is_refused_with_quant_max_pool_named(module, hint):
    class Float(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.pool = hnn.QuantAct(8), module

        def forward(self, x):
            return self.pool(self.q(x))

    with pytest.raises(HwgenError, match=rf"^model\.pool: torch\.nn\.\w+ is not quantized; use {hint} \(at "):
        hwgen.convert(Float(), data(4))


# ---- concat --------------------------------------------------------------------------------------------------
def test_concat_golden_against_torch_and_its_refusals():
    rng = np.random.default_rng(4)
    a, b = rng.integers(-128, 128, size=(3, 5, 2)), rng.integers(-128, 128, size=(3, 5, 4))
    assert np.array_equal(golden_concat(a, b), torch.cat([torch.as_tensor(a), torch.as_tensor(b)], -1).numpy())
    gb = GraphBuilder("x", (5, 3), I8)
    gb.linear("lin", "x", rng.integers(-128, 128, size=(4, 3)), None, 20000, 14, I6, I8)
    with pytest.raises(HwgenError, match=r"^node 'c' \(concat\): operands of types i8 and i6 and the output i8 "
                                         r"must share one type"):
        gb.concat("c", "x", "lin")
    gb.linear("lin2", "x", rng.integers(-128, 128, size=(4, 3)), None, 20000, 14, I8, I8, rows=2)
    with pytest.raises(HwgenError, match="with the same number of rows"):
        gb.concat("c", "x", "lin2")


@pytest.mark.parametrize("parallel", [1, 3])
def test_concat_unit(parallel):
    """A value beside itself (both read ports of one buffer), beside a linear's output, and a constant."""
    rng = np.random.default_rng(parallel)
    b = GraphBuilder("x", (5, 3), I8)
    b.concat("self", "x", "x")
    b.linear("lin", "self", rng.integers(-128, 128, size=(4, 6)), None, 20000, 15, I8, I8)
    b.concat("c", "x", "lin")
    pos = b.const("pos", rng.integers(-128, 128, size=(5, 2)), I8)
    b.concat("d", "c", pos)
    top = check_exact(b.finish("d"), edge_inputs(rng, (5, 3), I8), parallel)
    assert not top.design.streamed  # never chained
    assert estimate(top.design)["nodes"]["d"] == 5 * 9 + 4


class CatModel(nn.Module):
    """Two branches of one embedding, requantized by one shared QuantAct, concatenated."""

    def __init__(self, d=8):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.embed = hnn.QuantLinear(3, d)
        self.left = hnn.QuantLinear(d, d)
        self.right = hnn.QuantLinear(d, d // 2)
        self.act = hnn.QuantSiLU()
        self.join = hnn.QuantAct(8)
        self.cat = hnn.QuantCat()
        self.pool = hnn.QuantMeanPool()
        self.head = hnn.QuantLinear(d + d // 2, 1, act_bits=16)

    def forward(self, x):
        h = self.embed(self.q(x))
        h = self.cat(self.join(self.left(h)), self.join(self.act(self.right(h))))
        return self.head(self.pool(h))


@pytest.fixture(scope="module")
def cat_model():
    torch.manual_seed(4)
    x = data(48)
    return train(CatModel(), x, x[:, -1, :1] * 0.5, steps=8), x


def test_concat_model_converts_and_predicts_exactly(cat_model, tmp_path):
    model, x = cat_model
    acc = hwgen.convert(model, x[:16], calibration=x[16:])
    assert "concat" in [n.op for n in acc.graph.nodes]
    model.eval()
    with torch.no_grad():
        assert np.array_equal(acc.predict(x, integers=True), hnn.integers(model(x)).numpy())
    again = hwgen.load(acc.save(tmp_path / "g"))
    assert np.array_equal(again.predict(x, integers=True), acc.predict(x, integers=True))


@pytest.mark.sim
def test_concat_model_built_and_simulated_bit_exact_on_verilator(cat_model, tmp_path):
    model, x = cat_model
    acc = hwgen.convert(model, x[:16])
    acc.build(tmp_path / "b", board="xc7s15", parallel=4)
    sim = acc.simulate(x[:3].numpy(), stall=0.2, seed=3)
    assert sim["windows"] == 3 and sim["mismatches"] == 0 and sim["error"] is None


def test_concat_of_differently_scaled_tensors_and_torch_cat_are_refused():
    class TwoScales(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.a, self.b, self.cat = hnn.QuantAct(8), hnn.QuantLinear(3, 4), hnn.QuantLinear(3, 4), hnn.QuantCat()

        def forward(self, x):
            h = self.q(x)
            return self.cat(self.a(h), self.b(h))

    class TorchCat(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.a = hnn.QuantAct(8), hnn.QuantLinear(3, 4)

        def forward(self, x):
            h = self.q(x)
            return torch.cat([self.a(h), h], dim=-1)

    with pytest.raises(HwgenError, match=r"^model\.cat \(QuantCat\): operands have scales .* requantize both with "
                                         r"one shared hwgen\.nn\.QuantAct first$"):
        hwgen.convert(TwoScales(), data(4))
    with pytest.raises(HwgenError, match=r"^model: torch\.cat is not quantized; use hwgen\.nn\.QuantCat \(at "):
        hwgen.convert(TorchCat(), data(4))
