# amaranth: UnusedElaboratable=no
"""Each hardware unit on its own against the matching golden function: arithmetic blocks directly, and every
op kind through a one- or two-node graph with random shapes and edge values (compared with ==)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from hwgen.golden import ops, run
from hwgen.hw import build_design, lower
from hwgen.hw.mac import MacArray
from hwgen.hw.requant import Divider, Isqrt, Requantizer
from hwgen.hw.shiftadd import ShiftAddMul, product_stages, rescale_stages
from hwgen.ir.builder import GraphBuilder
from hwgen.ir.dyadic import softmax_lut
from hwgen.ir.types import IntType
from hwgen.estimate.latency import estimate
from tests.test_hw_top import simulate

I8, U8 = IntType(8), IntType(8, False)


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# ---- arithmetic blocks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fabric", [False, True])
def test_requantizer_edges_and_random(fabric):
    """Rounding ties, negative values, shift 0, saturation at both ends, ReLU, zero point; the product in a
    DSP48E1 or as shift-add in fabric (``latency`` cycles either way)."""
    rq = Requantizer(acc_width=24, m0_width=17, shift_width=8, out_width=8, fabric=fabric)
    assert rq.latency == (4 if not fabric else 3 + rescale_stages())
    rng = np.random.default_rng(0)
    cases = [(-(1 << 23), 65535, 30), ((1 << 23) - 1, 65535, 30), (3, 1, 1), (-3, 1, 1), (5, 1, 1), (-5, 1, 1),
             (1, 1, 0), (-1, 1, 0), (127, 1, 0), (-129, 1, 0), (1000, -65536, 8), (0, 7, 62)]
    cases += [(int(rng.integers(-(1 << 23), 1 << 23)), int(rng.integers(-(1 << 16), 1 << 16)),
               int(rng.integers(0, 40))) for _ in range(60)]
    settings_list = [(0, I8, False), (5, I8, True), (-3, U8, False), (0, U8, True)]

    async def bench(ctx):
        for zp, dt, relu in settings_list:
            ctx.set(rq.zp, zp)
            ctx.set(rq.qmin, dt.qmin)
            ctx.set(rq.qmax, dt.qmax)
            ctx.set(rq.relu, relu)
            for acc, m0, sh in cases:
                ctx.set(rq.acc, acc)
                ctx.set(rq.m0, m0)
                ctx.set(rq.shift, sh)
                ctx.set(rq.i_valid, 1)
                await ctx.tick()
                ctx.set(rq.i_valid, 0)
                await ctx.tick().repeat(rq.latency - 1)
                assert ctx.get(rq.o_valid)
                want = int(ops.requantize(np.int64(acc), m0, sh, dt, zp))
                want = max(want, zp) if relu else want
                assert ctx.get(rq.y) == want, (acc, m0, sh, zp, dt, relu)

    _run(rq, bench)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), st.booleans(), st.integers(1, 17), st.booleans(), st.integers(1, 3), st.data())
def test_shift_add_multiplier_is_exact(wa, sa, wb, sb, levels, data):
    """Any widths and signedness, extreme and random operands, one product per cycle, ``stages`` cycles."""
    sh_a, sh_b = (signed(w) if s else unsigned(w) for w, s in ((wa, sa), (wb, sb)))
    dut = ShiftAddMul(sh_a, sh_b, levels_per_stage=levels)
    assert dut.stages == product_stages(wb, levels)

    def values(sh):
        lo, hi = (-(1 << (sh.width - 1)), (1 << (sh.width - 1)) - 1) if sh.signed else (0, (1 << sh.width) - 1)
        return [lo, hi, lo + hi // 2] + data.draw(st.lists(st.integers(lo, hi), min_size=4, max_size=12))

    pairs = [(x, y) for x in values(sh_a)[:3] for y in values(sh_b)[:3]]
    pairs += list(zip(values(sh_a), values(sh_b)))

    async def bench(ctx):
        got = []
        for i in range(len(pairs) + dut.stages):
            x, y = pairs[min(i, len(pairs) - 1)]
            ctx.set(dut.a, x)
            ctx.set(dut.b, y)
            await ctx.tick()
            if i >= dut.stages - 1 and len(got) < len(pairs):
                got.append(ctx.get(dut.p))
        assert got == [x * y for x, y in pairs]

    _run(dut, bench)


def test_shift_add_multiplier_has_no_multiply_and_pads_stages():
    from amaranth.back import rtlil

    dut = ShiftAddMul(signed(26), signed(17), stages=6)
    assert dut.stages == 6 and product_stages(17) == 4
    assert "$mul" not in rtlil.convert(dut)
    with pytest.raises(ValueError, match="needs 4 stages"):
        ShiftAddMul(signed(26), signed(17), stages=3)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, (1 << 20) - 1), st.integers(1, 4095)), min_size=1, max_size=8))
def test_divider_matches_floor_division(pairs):
    div = Divider(num_width=24, den_width=12, max_q_bits=21)

    async def bench(ctx):
        for num, den in pairs:
            q_bits = max(1, (num // den).bit_length())
            ctx.set(div.num, num)
            ctx.set(div.den, den)
            ctx.set(div.q_bits, q_bits)
            ctx.set(div.start, 1)
            await ctx.tick()
            ctx.set(div.start, 0)
            await ctx.tick().until(div.done)
            assert ctx.get(div.quotient) == num // den

    _run(div, bench)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(0, (1 << 30) - 1), min_size=1, max_size=6))
def test_isqrt_matches_golden(values):
    sq = Isqrt(30)
    values = values + [0, 1, 2, 3, 4, (1 << 30) - 1, (1 << 14) ** 2, (1 << 15) ** 2 - 1]

    async def bench(ctx):
        for v in values:
            ctx.set(sq.n, v)
            ctx.set(sq.start, 1)
            await ctx.tick()
            ctx.set(sq.start, 0)
            await ctx.tick().until(sq.done)
            assert ctx.get(sq.root) == int(ops.isqrt(np.int64(v)))

    _run(sq, bench)


def test_mac_array_sums_and_holds():
    lanes, k = 5, 7
    mac = MacArray(lanes, 9, 9, 24, tag_width=4)
    rng = np.random.default_rng(1)
    a = rng.integers(-256, 256, size=(3, k))
    a[0, :] = -256  # most negative operands: the largest product
    b = rng.integers(-256, 256, size=(3, k, lanes))
    b[0, :, :] = -256

    async def bench(ctx):
        for grp in range(3):
            for i in range(k):
                ctx.set(mac.valid, 1)
                ctx.set(mac.first, i == 0)
                ctx.set(mac.last, i == k - 1)
                ctx.set(mac.tag, grp)
                ctx.set(mac.a, int(a[grp, i]))
                ctx.set(mac.b, [int(v) for v in b[grp, i]])
                await ctx.tick()
            ctx.set(mac.valid, 0)
            for _ in range(MacArray.LATENCY - 1):
                assert not ctx.get(mac.hold_valid)
                await ctx.tick()
            assert ctx.get(mac.hold_valid)
            assert ctx.get(mac.hold_tag) == grp
            assert list(ctx.get(mac.hold)) == [int(v) for v in a[grp] @ b[grp]]

    _run(mac, bench)


def _pair_beats(mac, beats, pair=True):
    """Stream single-beat sums ``(a, a2, b)`` through ``mac`` (one per cycle); the (hold, hold2) each shows
    ``LATENCY`` cycles later."""
    got = []

    async def bench(ctx):
        ctx.set(mac.pair, pair)
        for t in range(len(beats) + MacArray.LATENCY):
            if t < len(beats):
                a, a2, b = beats[t]
                ctx.set(mac.valid, 1)
                ctx.set(mac.first, 1)
                ctx.set(mac.last, 1)
                ctx.set(mac.a, a)
                ctx.set(mac.a2, a2)
                ctx.set(mac.b, b)
            else:
                ctx.set(mac.valid, 0)
            await ctx.tick()
            if t >= MacArray.LATENCY - 1 and len(got) < len(beats):
                assert ctx.get(mac.hold_valid)
                got.append((list(ctx.get(mac.hold)), list(ctx.get(mac.hold2))))

    _run(mac, bench)
    return got


@pytest.mark.parametrize("a_signed, b_signed", [(True, True), (True, False), (False, True), (False, False)])
def test_row_pair_products_exhaustive_over_4_bit_operands(a_signed, b_signed):
    """Two rows through one multiplier (``MacArray`` pack): every pair of 4-bit first and second row operands
    against every 4-bit weight (16 lanes), signed and unsigned mixes: both products == a * b and a2 * b,
    and each pair as tight as ``pair_fits`` allows (S = the product's signed width)."""
    ra = (-8, 7) if a_signed else (0, 15)
    rb = (-8, 7) if b_signed else (0, 15)
    pack = next(s for s in range(2, 24) if MacArray.pair_fits(s, ra, rb))
    assert not MacArray.pair_fits(pack - 1, ra, rb)
    mac = MacArray(16, 6, 6, 12, pack=pack, acc2_width=12)
    ws = list(range(rb[0], rb[1] + 1))
    beats = [(a, a2, ws) for a in range(ra[0], ra[1] + 1) for a2 in range(ra[0], ra[1] + 1)]
    for (a, a2, _), (hold, hold2) in zip(beats, _pair_beats(mac, beats), strict=True):
        assert hold == [a * w for w in ws] and hold2 == [a2 * w for w in ws], (a, a2)


def test_row_pair_sums_of_8_bit_operands_and_the_unpaired_split():
    """8-bit rows (signed and unsigned activations, signed weights, S = 16: two products in one 25 x 18
    product) summed over 40 beats == both dot products, extremes included; and unpaired (``pair`` low),
    with a 12-bit operand, hold + hold2 * 2**16 == the whole sum modulo 2**acc_width."""
    rng = np.random.default_rng(5)
    lanes, k, acc = 4, 40, 25
    assert MacArray.pair_fits(16, (-128, 127), (-128, 127)) and MacArray.pair_fits(16, (0, 255), (-128, 127))
    assert not MacArray.pair_fits(16, (-256, 255), (-128, 127)) and not MacArray.pair_fits(15, (0, 255), (-128, 127))
    for lo, hi, pair, aw in ((-128, 127, True, 9), (0, 255, True, 9), (-2048, 2047, False, 12)):
        mac = MacArray(lanes, aw, 8, acc, tag_width=2, pack=16, acc2_width=acc if pair else acc - 16)
        a = rng.integers(lo, hi + 1, size=(2, k))
        a2 = rng.integers(lo, hi + 1, size=(2, k)) if pair else np.zeros((2, k), dtype=int)
        b = rng.integers(-128, 128, size=(2, k, lanes))
        a[0, :], a2[0, :], b[0] = lo, hi, -128  # the largest products of both signs
        got = []

        async def bench(ctx):
            ctx.set(mac.pair, pair)
            for grp in range(2):
                for i in range(k):
                    ctx.set(mac.valid, 1)
                    ctx.set(mac.first, i == 0)
                    ctx.set(mac.last, i == k - 1)
                    ctx.set(mac.a, int(a[grp, i]))
                    ctx.set(mac.a2, int(a2[grp, i]))
                    ctx.set(mac.b, [int(v) for v in b[grp, i]])
                    await ctx.tick()
                ctx.set(mac.valid, 0)
                await ctx.tick().repeat(MacArray.LATENCY - 1)
                assert ctx.get(mac.hold_valid)
                got.append((list(ctx.get(mac.hold)), list(ctx.get(mac.hold2))))

        _run(mac, bench)
        for grp, (hold, hold2) in enumerate(got):
            first, second = a[grp] @ b[grp], a2[grp] @ b[grp]
            if pair:
                assert hold == [int(v) for v in first] and hold2 == [int(v) for v in second]
            else:
                whole = [(h + (h2 << 16)) % (1 << acc) for h, h2 in zip(hold, hold2)]
                assert whole == [int(v) % (1 << acc) for v in first]


def test_row_pair_arguments_are_checked():
    with pytest.raises(ValueError, match="acc2_width"):
        MacArray(2, 8, 8, 24, pack=16)
    with pytest.raises(ValueError, match="generic multiplier"):
        MacArray(2, 8, 8, 24, multiplier="ecp5", pack=16, acc2_width=20)
    with pytest.raises(ValueError, match="pack"):
        MacArray(2, 8, 8, 24, pack=24, acc2_width=20)


# ---- every op kind through a small graph -------------------------------------------------------------------
def _check(builder, output, x, parallel, fabric=False):
    """``fabric``: every rescale product as shift-add in LUTs (a DSP budget of 0), not in DSP48E1."""
    graph = builder.finish(output)
    expected = run(graph, x).reshape(len(x), -1)
    got, _ = simulate(lower(graph, parallel, dsp_budget=0 if fabric else None), x)
    assert (got == expected).all(), f"{got}\n!=\n{expected}"


def _edge_inputs(rng, shape, dtype, n=2):
    x = rng.integers(dtype.qmin, dtype.qmax + 1, size=(n, *shape))
    x[0].flat[0], x[0].flat[-1] = dtype.qmin, dtype.qmax
    x[1][...] = dtype.qmin  # an all-most-negative window
    return x


@pytest.mark.parametrize("seed, fabric", [(0, False), (1, False), (2, False), (0, True), (2, True)])
def test_linear_relu_zp_saturation(seed, fabric):
    rng = np.random.default_rng(seed)
    rows, k, n = (int(v) for v in rng.integers(1, 6, size=3))
    k, n = k + 1, n * 3
    b = GraphBuilder("x", (rows, k), I8)
    w = rng.integers(-128, 128, size=(n, k))
    w[0, :] = -128
    bias = None if seed == 1 else rng.integers(-3000, 3000, size=n)
    m0 = rng.integers(1 << 14, 1 << 15, size=n) * rng.choice([-1, 1], size=n)
    shift = rng.integers(8, 20, size=n)  # small shifts saturate often
    out = U8 if seed == 2 else I8
    b.linear("lin", "x", w, bias, m0, shift, out, I8, zp=int(rng.integers(-5, 6)) if seed != 2 else 3,
             relu=seed != 1)
    _check(b, "lin", _edge_inputs(rng, (rows, k), I8), parallel=int(rng.integers(1, 6)), fabric=fabric)


@pytest.mark.parametrize("heads, parallel, fabric", [(1, 4, False), (2, 3, False), (4, 2, False), (2, 3, True)])
def test_attention_scores_softmax_apply(heads, parallel, fabric):
    """q = k = v = the input itself (one value read on both operands), softmax rows with ties."""
    rng = np.random.default_rng(heads)
    length, width = 5, 8
    b = GraphBuilder("x", (length, width), I8)
    b.attn_scores("s", "x", "x", heads, 20000, 22, I8)
    b.softmax("p", "s", softmax_lut(0.07, 8), 31, U8)
    b.attn_apply("o", "p", "x", 31000, 16, I8, zp=-2)
    x = _edge_inputs(rng, (length, width), I8)
    x[0, 1] = x[0, 0]  # equal rows: ties in the scores
    _check(b, "o", x, parallel, fabric)


def _attention(heads, length, width):
    b = GraphBuilder("x", (length, width), I8)
    b.attn_scores("s", "x", "x", heads, 20000, 22, I8)
    b.softmax("p", "s", softmax_lut(0.07, 8), 31, U8)
    b.attn_apply("o", "p", "x", 31000, 16, I8, zp=-2)
    return b.finish("o")


@pytest.mark.parametrize("heads, length, width, parallel", [(1, 5, 8, 4), (2, 6, 8, 3), (1, 12, 16, 16),
                                                            (2, 4, 8, 1), (4, 3, 8, 8), (1, 1, 4, 2),
                                                            (1, 24, 8, 20)])
def test_softmax_overlaps_the_scores(heads, length, width, parallel):
    """The softmax starts with the scores node (one controller step), takes the row maxima from the scores
    as they are written and reads each row once it is complete: == golden with random stalls, the latency
    model exact in every step, and fewer cycles than the two nodes one after the other (24 keys: a period
    of exactly one row)."""
    from dataclasses import replace

    from hwgen.hw.units import UNITS
    from tests.test_new_ops import check_exact

    graph = _attention(heads, length, width)
    x = np.random.default_rng(heads * 7 + length).integers(-128, 128, size=(2, length, width))
    x[0, -1] = x[0, 0]  # equal rows: ties in the scores
    top = check_exact(graph, x, parallel)
    d = top.design
    prog = d.programs["softmax"][0]
    assert d.overlapped == {1: 0} and [len(s) for s in d.steps] == [2, 1] and prog.stream
    alone = replace(prog, stream=False, period=max(2 * prog.cols, prog.period))
    apart = UNITS["matmul"].cycles(d, d.programs["matmul"][0]) + UNITS["softmax"].cycles(d, alone)
    together = sum(estimate(d)["nodes"][n.name] for n in graph.nodes[:2])
    assert together < apart


@pytest.mark.parametrize("heads, length, parallel", [(1, 5, 4), (2, 6, 3), (1, 1, 2), (1, 12, 4), (4, 3, 2)])
def test_softmax_after_another_node(heads, length, parallel):
    """A softmax whose input is not the node just before it runs alone, with its own max passes (two
    passes of pipeline A per row; 12 keys: a period of exactly two passes): == golden, the latency model
    exact per step."""
    from tests.test_new_ops import check_exact

    b = GraphBuilder("x", (length, 8), I8)
    b.attn_scores("s", "x", "x", heads, 20000, 22, I8)
    b.add("t", "x", "x", 16000, 16000, 0, 15, I8)
    b.softmax("p", "s", softmax_lut(0.07, 8), 31, U8)
    b.attn_apply("o", "p", "t", 31000, 16, I8, zp=-2)
    graph = b.finish("o")
    x = np.random.default_rng(length).integers(-128, 128, size=(2, length, 8))
    x[0, -1] = x[0, 0]
    top = check_exact(graph, x, parallel)
    assert top.design.overlapped == {} and not top.design.programs["softmax"][0].stream


def test_softmax_overlap_reads_rows_only_once_written():
    """The same step with the softmax set up as a node of its own (its max passes read the scores from the
    memory at once, not waiting for the stream) is wrong: waiting for each row is what keeps the overlap
    exact."""
    from dataclasses import replace

    from hwgen.hw import build_design
    from hwgen.hw.top import Top

    graph = _attention(1, 6, 8)
    x = np.random.default_rng(1).integers(-128, 128, size=(1, 6, 8))
    design = build_design(graph, 4)
    prog = design.programs["softmax"][0]
    design.programs["softmax"][0] = replace(prog, stream=False, period=max(2 * prog.cols, prog.period))
    got, _ = simulate(Top(design), x)
    assert not (got == run(graph, x).reshape(1, -1)).all()


def test_input_read_through_wide_copies_is_loaded_early_after_its_last_reader():
    """The input read by the scores (and its transposed wide copy) and by the weighted sum (through its wide
    copy per head), then two linears: the next window's input, flat and both wide copies, is taken from the
    first linear's step on. Exact back to back (the period the model's), with stalls, per step; taken one
    step earlier, while the weighted sum still reads the wide copy, the outputs are wrong."""
    from hwgen.hw import build_design
    from hwgen.hw.lower import last_input_reader
    from hwgen.hw.top import Top
    from tests.test_new_ops import check_exact

    rng = np.random.default_rng(4)
    b = GraphBuilder("x", (6, 8), I8)
    b.attn_scores("s", "x", "x", 2, 20000, 22, I8)
    b.softmax("p", "s", softmax_lut(0.07, 8), 31, U8)
    b.attn_apply("o", "p", "x", 31000, 16, I8, zp=-2)
    b.linear("l1", "o", rng.integers(-128, 128, size=(8, 8)), rng.integers(-99, 99, size=8), 20000, 15, I8, I8)
    b.linear("l2", "l1", rng.integers(-128, 128, size=(2, 8)), None, 20000, 15, I8, I8)
    graph = b.finish("l2")
    x = rng.integers(-128, 128, size=(4, 6, 8))
    top = check_exact(graph, x, 3)
    d = top.design
    assert {k[0] for k in d.plan.wide} == {"x"} and len(d.plan.wide) == 2
    assert d.steps == [[0, 1], [2], [3], [4]] and d.preload == 2
    e = estimate(d)
    assert e["throughput_cycles"] == e["total"] - e["load"]  # l1, l2 and the send outlast the load
    early = build_design(graph, 3)
    assert last_input_reader(early) == 1
    early.preload = 1
    got, _ = simulate(Top(early), x[:2])
    assert not (got[0] == run(graph, x[:1]).reshape(-1)).all()


@pytest.mark.parametrize("fabric", [False, True])
def test_add_with_constant_affine_and_avgpool(fabric):
    rng = np.random.default_rng(5)
    rows, c = 4, 3
    b = GraphBuilder("x", (rows, c), I8)
    pos = b.const("pos", rng.integers(-128, 128, size=(rows, c)), I8)
    b.add("a", "x", pos, 23000, -17000, 5, 15, I8, zp=1)
    b.affine("n", "a", np.array([9000, -16000, 12000]), np.array([-70000, 5, 65000]), np.array([9, 12, 14]), I8)
    b.avgpool("pool", "n", 31000, 17, -3, I8, zp=-1)
    b.add("twice", "pool", "pool", 16000, 16000, 0, 15, I8)  # one value on both operands
    _check(b, "twice", _edge_inputs(rng, (rows, c), I8), parallel=2, fabric=fabric)


def test_layernorm_edges():
    """Constant rows (standard deviation 0), extreme rows, random rows."""
    rng = np.random.default_rng(6)
    rows, c = 4, 6
    b = GraphBuilder("x", (rows, c), I8)
    gamma = rng.integers(1 << 10, 1 << 12, size=c) * rng.choice([-1, 1], size=c)
    b.layernorm("ln", "x", gamma, rng.integers(-(1 << 14), 1 << 14, size=c), 6, 8, 24, I8, zp=2)
    x = _edge_inputs(rng, (rows, c), I8)
    x[0, 1, :] = 7  # constant row
    x[0, 2, :] = [-128, 127, -128, 127, -128, 127]
    _check(b, "ln", x, parallel=1)


def test_every_unit_program_is_a_frozen_dataclass():
    """Each unit's per-node program is a typed, immutable record (``hwgen.hw.program.config_registers`` reads
    its settings by attribute), and a mapping of settings loads the same registers."""
    from dataclasses import FrozenInstanceError, fields, is_dataclass

    from amaranth.back import rtlil
    from amaranth.hdl import Module, Signal

    from hwgen.hw import build_design
    from hwgen.hw.program import config_registers

    rng = np.random.default_rng(7)
    b = GraphBuilder("x", (4, 6), I8)
    b.add("a", "x", "x", 23000, -17000, 5, 15, I8)
    b.affine("n", "a", np.full(6, 9000), np.zeros(6, int), np.full(6, 9), I8)
    b.layernorm("ln", "n", rng.integers(1 << 10, 1 << 12, size=6), np.zeros(6, int), 6, 8, 24, I8)
    b.avgpool("pool", "ln", 31000, 17, -3, I8)
    design = build_design(b.finish("pool"), 2)
    assert set(design.programs) == {"add", "affine", "layernorm", "avgpool"}
    for progs in design.programs.values():
        for p in progs:
            assert is_dataclass(p) and type(p).__dataclass_params__.frozen, p
            with pytest.raises(FrozenInstanceError):
                setattr(p, fields(p)[0].name, 0)
    prog = design.programs["layernorm"][0]
    assert prog.numel == prog.rows * prog.cols

    def table(programs) -> str:
        m, start, sel = Module(), Signal(name="start"), Signal(name="sel")
        regs = config_registers(m, start, sel, programs, {"numel": unsigned(8), "cols": unsigned(8)})
        return rtlil.convert(m, ports=[start, sel, *regs.values()])

    assert table([prog]) == table([{"numel": prog.numel, "cols": prog.cols}])


# ---- row pairs through whole graphs -----------------------------------------------------------------------------
def _two_linears(rng, rows, k, n, mid):
    """x -> linear (k -> k, the first node: never paired, it reads the input as it arrives) -> linear (k -> n)."""
    b = GraphBuilder("x", (rows, k), I8)
    b.linear("lin", "x", rng.integers(-128, 128, size=(k, k)), rng.integers(-3000, 3000, size=k),
             rng.integers(1 << 14, 1 << 15, size=k), rng.integers(8, 20, size=k), mid, I8, relu=mid is U8)
    w = rng.integers(-128, 128, size=(n, k))
    w[0, :] = -128
    b.linear("lin2", "lin", w, rng.integers(-3000, 3000, size=n),
             rng.integers(1 << 14, 1 << 15, size=n) * rng.choice([-1, 1], size=n), rng.integers(8, 20, size=n),
             I8, I8, zp=-3)
    return b.finish("lin2")


@pytest.mark.parametrize("rows, k, n, parallel, mid, paired", [
    (4, 9, 3, 4, I8, True), (6, 12, 5, 5, U8, True), (2, 7, 6, 6, I8, True), (8, 20, 16, 16, U8, True),
    (6, 9, 1, 3, I8, True), (4, 5, 4, 2, I8, False), (5, 9, 3, 4, I8, False), (4, 4, 4, 4, I8, False)])
def test_linear_row_pairs_bit_exact_and_timed(rows, k, n, parallel, mid, paired):
    """A linear pairs its rows when its outputs fit one group, its rows are even and k > n (not: two groups,
    five rows, k == n): == golden back to back and with stalls, the latency model exact in every step, and a
    paired node takes fewer cycles than the same node one row at a time."""
    from tests.test_new_ops import check_exact

    rng = np.random.default_rng(rows * 100 + k)
    graph = _two_linears(rng, rows, k, n, mid)
    x = rng.integers(-128, 128, size=(3, rows, k))
    x[1][...], x[2][...] = -128, 127
    d = check_exact(graph, x, parallel).design
    assert [p.pair for p in d.programs["matmul"]] == [False, paired]
    assert d.widths["matmul"].get("pack") == (16 if paired else None)
    if paired:
        alone = build_design(graph, parallel, pair_rows=False)
        assert estimate(d)["nodes"]["lin2"] < estimate(alone)["nodes"]["lin2"]


@pytest.mark.parametrize("heads, length, width, parallel, paired", [(1, 6, 4, 4, True), (1, 24, 16, 16, True),
                                                                    (2, 6, 8, 4, False), (1, 5, 4, 4, False)])
def test_attention_apply_row_pairs(heads, length, width, parallel, paired):
    """attn_apply pairs rows with one head and more keys than outputs (24 keys, 16 channels: the shipped
    models' shape), bit-exact with the softmax overlapping the scores; two heads or an odd length do not."""
    from tests.test_new_ops import check_exact

    graph = _attention(heads, length, width)
    x = np.random.default_rng(length).integers(-128, 128, size=(2, length, width))
    x[1][...] = -128
    d = check_exact(graph, x, parallel).design
    assert [p.pair for p in d.programs["matmul"]] == [False, paired]


def test_row_pairs_only_where_the_multiplier_takes_them():
    """No pairs on an ECP5 build (18 x 18 multipliers), with ``pair_rows`` off, or for operands too wide to
    pack (12-bit activations into the paired product)."""
    rng = np.random.default_rng(3)
    graph = _two_linears(rng, 4, 9, 3, I8)
    assert build_design(graph, 4).programs["matmul"][1].pair
    assert not build_design(graph, 4, multiplier="ecp5").programs["matmul"][1].pair
    assert not build_design(graph, 4, pair_rows=False).programs["matmul"][1].pair
    from hwgen.hw.vendor import lowering_options

    assert lowering_options("xc7")["pair_rows"] and not lowering_options("ice40")["pair_rows"]
    wide = IntType(12)
    b = GraphBuilder("x", (4, 9), I8)
    b.linear("lin", "x", rng.integers(-128, 128, size=(9, 9)), None, rng.integers(1 << 14, 1 << 15, size=9),
             rng.integers(8, 20, size=9), wide, I8)
    b.linear("lin2", "lin", rng.integers(-128, 128, size=(3, 9)), None, rng.integers(1 << 14, 1 << 15, size=3),
             rng.integers(8, 20, size=3), I8, I8)
    d = build_design(b.finish("lin2"), 4)
    assert not d.programs["matmul"][1].pair and "pack" not in d.widths["matmul"]


def test_row_pairs_pack_the_narrower_products_when_the_widest_cannot_pair():
    """Two products that could pair: the second's 12-bit operand times 8-bit weights does not pack (its
    packed operand would need 32 bits), so it runs one row at a time and the first still pairs, at its own
    S = 16; bit-exact and timed."""
    from tests.test_new_ops import check_exact

    rng = np.random.default_rng(5)
    b = GraphBuilder("x", (4, 9), I8)
    b.linear("lin", "x", rng.integers(-128, 128, size=(9, 9)), None, rng.integers(1 << 14, 1 << 15, size=9),
             rng.integers(8, 20, size=9), I8, I8)
    b.linear("lin2", "lin", rng.integers(-128, 128, size=(4, 9)), None, rng.integers(1 << 14, 1 << 15, size=4),
             rng.integers(4, 12, size=4), IntType(12), I8)
    b.linear("lin3", "lin2", rng.integers(-128, 128, size=(3, 4)), None, rng.integers(1 << 14, 1 << 15, size=3),
             rng.integers(10, 20, size=3), I8, I8)
    graph = b.finish("lin3")
    x = rng.integers(-128, 128, size=(2, 4, 9))
    x[1][...] = 127
    d = check_exact(graph, x, 4).design
    assert [p.pair for p in d.programs["matmul"]] == [False, True, False]
    assert d.widths["matmul"]["pack"] == 16
