"""The whole accelerator in Amaranth's simulator against the golden interpreter (outputs compared with ==)."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from hwgen.errors import HwgenError
from hwgen.golden import run
from hwgen.hw import emit_verilog, lower
from hwgen.estimate.latency import of_graph as estimate
from tests.synthetic import SyntheticConfig, random_graph


def stream(top, windows, stall_seed=None, max_cycles=2_000_000, gaps=None):
    """Stream ``windows`` through ``top`` back to back (the producer offers the next window's first element
    right after the last one's); returns (outputs per window, the cycle of each window's first accepted
    input beat, the cycle of each window's last output beat). With ``stall_seed``, valid and ready toggle
    randomly; ``gaps`` {beat index: cycles}: the producer holds valid low that long before that input beat
    (counted over all windows' elements)."""
    rng = np.random.default_rng(stall_seed)
    stall = (lambda: rng.random() < 0.3) if stall_seed is not None else (lambda: False)
    flat_in = [int(v) for w in windows for v in np.asarray(w).reshape(-1)]
    per_window = np.asarray(windows[0]).size
    outputs, first_in, last_out = [], {}, {}
    n_out = top.design.graph.output_type.shape
    n_out = int(np.prod(n_out))

    async def producer(ctx):
        cycle = 0
        for i, v in enumerate(flat_in):
            if gaps and i in gaps:
                ctx.set(top.x.valid, 0)
                await ctx.tick().repeat(gaps[i])
                cycle += gaps[i]
            while stall():
                ctx.set(top.x.valid, 0)
                await ctx.tick()
                cycle += 1
            ctx.set(top.x.payload, v)
            ctx.set(top.x.valid, 1)
            while True:
                ready = ctx.get(top.x.ready)
                await ctx.tick()
                cycle += 1
                if ready:
                    break
            if i % per_window == 0:
                first_in[i // per_window] = cycle - 1
        ctx.set(top.x.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(outputs) < n_out * len(windows):
            r = not stall()
            ctx.set(top.y.ready, int(r))
            valid, payload = ctx.get(top.y.valid), ctx.get(top.y.payload)
            await ctx.tick()
            cycle += 1
            if valid and r:
                outputs.append(payload)
                if len(outputs) % n_out == 0:
                    last_out[len(outputs) // n_out - 1] = cycle - 1
            if cycle > max_cycles:
                raise AssertionError(f"no output after {max_cycles} cycles ({len(outputs)} received)")

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    got = np.array(outputs, dtype=np.int64).reshape(len(windows), -1)
    return got, [first_in[w] for w in range(len(windows))], [last_out[w] for w in range(len(windows))]


def simulate(top, windows, stall_seed=None, max_cycles=2_000_000):
    """:func:`stream`; returns (outputs per window, cycles per window from the first accepted input beat to
    the last output beat). The first window's is the latency of a window alone; a later window's first
    beats may be taken while the window before it still computes (and its cycles include that wait)."""
    got, first_in, last_out = stream(top, windows, stall_seed, max_cycles)
    return got, [b - a + 1 for a, b in zip(first_in, last_out)]


def check_back_to_back(top, windows):
    """Stream ``windows`` (at least 2) back to back with no stalls through ``top`` and require the latency
    model exact: the first window's cycles == ``total``, the first input beats of consecutive windows from
    the second on and the last output beats of all of them ``throughput_cycles`` apart, the first two
    windows' first beats ``load`` plus the steps before the early load apart. Returns (outputs, first input
    beats, last output beats) as :func:`stream`."""
    from hwgen.estimate.latency import estimate as design_estimate

    model = design_estimate(top.design)
    got, first_in, last_out = stream(top, windows)
    period = model["throughput_cycles"]
    assert last_out[0] - first_in[0] + 1 == model["total"]
    assert [b - a for a, b in zip(first_in[1:], first_in[2:])] == [period] * (len(windows) - 2)
    assert [b - a for a, b in zip(last_out, last_out[1:])] == [period] * (len(windows) - 1)
    assert first_in[1] - first_in[0] == model["next_input_cycles"]
    return got, first_in, last_out


def check_graph(graph, x, parallel, windows=2, stall_seed=None):
    """Simulate ``windows`` back-to-back windows and require == against the golden interpreter; returns the
    measured cycles per window."""
    expected = run(graph, x[:windows]).reshape(windows, -1)
    got, cycles = simulate(lower(graph, parallel), x[:windows], stall_seed=stall_seed)
    assert got.shape == expected.shape
    assert (got == expected).all(), f"mismatch:\n{got}\n!=\n{expected}"
    return cycles


def model_exact(measured, graph, parallel):
    predicted = estimate(graph, parallel)["total"]
    assert measured == predicted, f"measured {measured}, model {predicted}"


def test_default_config_with_stalls_back_to_back():
    graph, x = random_graph(SyntheticConfig(), seed=3)
    check_graph(graph, x, parallel=4, windows=3, stall_seed=11)


def test_default_config_latency_model():
    graph, x = random_graph(SyntheticConfig(), seed=4)
    cycles = check_graph(graph, x, parallel=5, windows=1)
    model_exact(cycles[0], graph, 5)


def test_back_to_back_windows_take_the_next_input_while_computing():
    """Windows streamed back to back with no stalls: == golden, the first window's cycles == ``total``, the
    windows ``throughput_cycles`` apart exactly; only the embedding (and the positional add chained to it)
    reads the input, so the next window's input arrives while this one computes (its own buffer) and the
    whole load leaves the period: ``total - load``."""
    graph, x = random_graph(SyntheticConfig(), seed=4)
    top = lower(graph, 5)
    d = top.design
    assert d.preload == 1 and d.steps[0] == [0, 1] and d.preload_step == 3
    assert d.plan.flat[graph.input_name] not in {d.plan.flat[n.name] for n in graph.nodes}
    got, first_in, last_out = check_back_to_back(top, x[:4])
    assert (got == run(graph, x[:4]).reshape(4, -1)).all()
    e = estimate(graph, 5)
    # the embedding runs while the input arrives (load 0); back to back its input is all in before it
    # starts, so the period is the total less the cycles the first step waited for input
    from hwgen.hw.units import UNITS

    kind, idx = d.node_unit[0]
    alone = UNITS[kind].cycles(d, d.programs[kind][idx])
    assert d.load_overlap and e["load"] == 0 and e["nodes"][graph.nodes[0].name] >= alone
    assert e["throughput_cycles"] == e["total"] - (e["nodes"][graph.nodes[0].name] - alone)
    assert first_in[1] < last_out[0] and first_in[2] < last_out[1]  # taken while the window before computes


def test_back_to_back_input_longer_than_the_compute_continues_in_load():
    """A long window and little compute (the last row only): the next window's input does not all fit in
    the steps after its reader and the send; the load goes on in LOAD where it stopped. Exact and ==
    golden back to back, with random stalls and with the producer pausing mid-window during the early load
    (the rest then arrives after the send)."""
    from hwgen.ir.builder import GraphBuilder
    from hwgen.ir.types import IntType

    rng = np.random.default_rng(3)
    b = GraphBuilder("x", (24, 3), IntType(8))
    b.select_rows("last", "x", 23)
    b.linear("lin", "last", rng.integers(-128, 128, size=(4, 3)), rng.integers(-99, 99, size=4), 20000, 14,
             IntType(8), IntType(8))
    graph = b.finish("lin")
    x = rng.integers(-128, 128, size=(5, 24, 3))
    want = run(graph, x).reshape(len(x), -1)
    top = lower(graph, 2)
    e = estimate(graph, 2)
    assert top.design.preload == 1 and e["preload_cycles"] < e["load"]
    assert e["throughput_cycles"] == e["nodes"]["last"] + e["load"]
    got, first_in, last_out = check_back_to_back(top, x)
    assert (got == want).all()
    for seed in (1, 2):
        assert (simulate(lower(graph, 2), x, stall_seed=seed)[0] == want).all()
    n_in = 24 * 3
    got, first_in, last_out = stream(lower(graph, 2), x[:3], gaps={n_in + 5: 40, 2 * n_in + 1: 60})
    assert (got == want[:3]).all() and first_in[1] < last_out[0]


def test_next_window_arriving_early_does_not_corrupt_the_current_one():
    """The next window offered at once, late, in bursts, and with random stalls on both streams: every
    window's output == golden (its input is overwritten only once no step reads it any more)."""
    graph, x = random_graph(SyntheticConfig(window=6, features=3, d_model=8, ffn=8), seed=12)
    want = run(graph, x[:4]).reshape(4, -1)
    n_in = 6 * 3
    for gaps in ({}, {n_in: 150}, {n_in + 3: 90, 2 * n_in + 7: 400, 3 * n_in: 1}):
        got, _, _ = stream(lower(graph, 3), x[:4], gaps=gaps)
        assert (got == want).all(), gaps
    for seed in (5, 6):
        assert (simulate(lower(graph, 3), x[:4], stall_seed=seed)[0] == want).all()


def test_early_load_one_step_too_soon_is_wrong():
    """The same design with the next window's input taken from the input's last reading step on (one step
    too early) computes wrong outputs back to back: the early load must wait for that step to end."""
    from hwgen.hw import Top, build_design
    from hwgen.hw.lower import last_input_reader

    graph, x = random_graph(SyntheticConfig(window=6, features=3, d_model=8, ffn=8), seed=12)
    want = run(graph, x[:3]).reshape(3, -1)
    design = build_design(graph, 3)
    assert design.preload == last_input_reader(design) + 1 == 1
    # the controller with a load step of its own (with the load in the first node's step the first step
    # itself takes the window's input, and the early load of the next starts when it ends)
    assert design.load_overlap
    design.load_overlap = False
    design.preload -= 1
    got, _ = simulate(Top(design), x[:3])
    assert not (got[0] == want[0]).all()


def test_heads2_layers2_layernorm_4bit():
    cfg = SyntheticConfig(window=5, features=2, d_model=8, heads=2, layers=2, ffn=8, norm="layer",
                          bits_w=4, bits_a=4)
    graph, x = random_graph(cfg, seed=5)
    cycles = check_graph(graph, x, parallel=3, windows=2, stall_seed=7)
    graph, x = random_graph(cfg, seed=6)
    cycles = check_graph(graph, x, parallel=3, windows=1)
    model_exact(cycles[0], graph, 3)


def test_wide_copies_of_two_layers_share_memories():
    """Layer 0's K and V copies are dead before layer 1 writes its own: each pair shares one memory (and its
    writer), no two copies of one memory are alive at once, and the accelerator stays exact."""
    from amaranth.lib.memory import Memory

    from hwgen.hw import build_design
    from hwgen.hw.top import Top

    cfg = SyntheticConfig(window=6, features=2, d_model=8, heads=2, layers=2, ffn=8, norm="layer",
                          bits_w=6, bits_a=6)
    graph, x = random_graph(cfg, seed=11)
    d = build_design(graph, 4)
    plan, nodes = d.plan, graph.nodes
    assert len(plan.wide) == 4 and len(plan.wide_slots) == 2
    by_kind = {}
    for key, slot in plan.wide_slot.items():
        by_kind.setdefault(key[1], set()).add(slot)
    assert all(len(slots) == 1 for slots in by_kind.values())
    index = {n.name: i for i, n in enumerate(nodes)}
    life = {key: (d.head[index[key[0]]], max(i for i, n in enumerate(nodes) if plan.wide_key(graph, n) == key))
            for key in plan.wide}
    for a in plan.wide:
        for b in plan.wide:
            if a < b and plan.wide_slot[a] == plan.wide_slot[b]:
                assert life[a][1] < life[b][0] or life[b][1] < life[a][0]
    top = Top(d)
    module = top.elaborate(None)
    wide = [name for name, (sub, _) in module._named_submodules.items()
            if isinstance(sub, Memory) and name.startswith("wide")]
    assert len(wide) == 2
    check_graph(graph, x, parallel=4, windows=2, stall_seed=3)


def test_heads4_odd_sizes_p1():
    cfg = SyntheticConfig(window=3, features=1, d_model=4, heads=4, ffn=4, outputs=2, bits_w=3, bits_a=6)
    graph, x = random_graph(cfg, seed=8)
    cycles = check_graph(graph, x, parallel=1, windows=2, stall_seed=2)
    check_graph(graph, x, parallel=7, windows=1)
    assert cycles


@pytest.mark.parametrize("beats_before_reset, wait", [(5, 0), (16, 60), (16 + 5, 0), (32, 0)])
def test_reset_returns_to_idle(beats_before_reset, wait):
    """Reset during the input load, during the computation, during the next window's early load (5 of its
    16 beats taken while the window before it computes or waits to send), or with the next input complete:
    the next window is then computed exactly."""
    graph, x = random_graph(SyntheticConfig(window=4, features=4, d_model=4, ffn=4), seed=9)
    top = lower(graph, 2)
    expected = run(graph, x[1]).reshape(-1)
    got = []
    m = Module()
    m.submodules.top = top
    m.domains.sync = cd = ClockDomain("sync")

    async def bench(ctx):
        for v in np.concatenate([x[0].reshape(-1), x[2].reshape(-1)])[:beats_before_reset]:
            ctx.set(top.x.payload, int(v))
            ctx.set(top.x.valid, 1)
            await ctx.tick().until(top.x.ready)
        ctx.set(top.x.valid, 0)
        await ctx.tick().repeat(wait + 1)
        ctx.set(cd.rst, 1)
        await ctx.tick()
        ctx.set(cd.rst, 0)
        for v in x[1].reshape(-1):
            ctx.set(top.x.payload, int(v))
            ctx.set(top.x.valid, 1)
            await ctx.tick().until(top.x.ready)
        ctx.set(top.x.valid, 0)
        ctx.set(top.y.ready, 1)
        for _ in range(20_000):
            if len(got) == expected.size:
                break
            if ctx.get(top.y.valid):
                got.append(ctx.get(top.y.payload))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8, domain="sync")
    sim.add_testbench(bench)
    sim.run()
    assert got == list(expected)


def test_bad_parallelism_and_unsupported_op():
    graph, _ = random_graph(SyntheticConfig(window=2, features=1, d_model=2, ffn=2), seed=0)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(HwgenError, match="parallelism"):
            lower(graph, bad)
    node = graph.nodes[0]
    broken = graph.replace_nodes([type(node)("conv", node.name, node.inputs, node.attrs, node.out),
                                  *graph.nodes[1:]])
    with pytest.raises(HwgenError, match="conv"):
        lower(broken, 2)


def test_emit_verilog_deterministic_small():
    graph, _ = random_graph(SyntheticConfig(window=3, features=2, d_model=4, ffn=4), seed=1)
    text = emit_verilog(lower(graph, 2))
    assert text == emit_verilog(lower(graph, 2))
    for port in ("clk", "rst", "x__payload", "x__valid", "x__ready", "y__payload", "y__valid", "y__ready"):
        assert port in text
    assert "module hwgen_top" in text


REFERENCE = SyntheticConfig(window=24, features=7, d_model=16, heads=1, layers=1, ffn=64, norm="batch")


def test_reference_p20_exact_and_latency():
    graph, x = random_graph(REFERENCE, seed=0)
    cycles = check_graph(graph, x, parallel=20, windows=1)
    model_exact(cycles[0], graph, 20)


def test_reference_p20_rescale_in_fabric_exact_and_latency_to_the_cycle():
    """With a DSP budget of 20 every rescale product of the reference design is shift-add in fabric: still
    == golden, and the latency model (3 cycles more per unit in fabric) equals the simulation exactly."""
    from hwgen.estimate.latency import estimate as design_estimate
    from hwgen.estimate.model import dsp_count
    from hwgen.hw import Top, build_design

    graph, x = random_graph(REFERENCE, seed=0)
    design = build_design(graph, 20, dsp_budget=20)
    assert design.fabric == {"matmul", "add", "affine", "avgpool", "softmax"}
    assert dsp_count(design) == 20
    expected = run(graph, x[:1]).reshape(1, -1)
    got, cycles = simulate(Top(design), x[:1])
    assert (got == expected).all()
    nodes_in_fabric = sum(len(design.programs[kind]) for kind in design.fabric)  # 17 of the 18 nodes
    assert cycles[0] == design_estimate(design)["total"] == estimate(graph, 20)["total"] + 3 * nodes_in_fabric


def test_reference_emit_verilog():
    graph, _ = random_graph(REFERENCE, seed=0)
    text = emit_verilog(lower(graph, 20), name="hwgen_top")
    assert "module hwgen_top" in text and "y__payload" in text
    assert text == emit_verilog(lower(graph, 20), name="hwgen_top")


@pytest.mark.parametrize("parallel", [1, 2, 6])
def test_latency_model_matches_simulation(parallel):
    graph, x = random_graph(SyntheticConfig(window=4, features=2, d_model=6, heads=2, ffn=8), seed=10)
    cycles = check_graph(graph, x, parallel=parallel, windows=1)
    model_exact(cycles[0], graph, parallel)


def test_latency_model_reference_sanity():
    """Per-node cycles add up; products never beat the multiplier bound (one product per lane and cycle, two
    in a node whose rows pair); more lanes never cost cycles."""
    from hwgen.estimate.latency import estimate as of_design
    from hwgen.hw import build_design
    from hwgen.ops import macs

    graph, _ = random_graph(REFERENCE, seed=0)
    previous = None
    for p in (1, 4, 8, 16, 20):
        e = estimate(graph, p)
        assert e["total"] == e["load"] + sum(e["nodes"].values()) + e["send"]
        d = build_design(graph, p, images=False)
        per_cycle = {graph.nodes[i].name: p * (1 + d.programs[k][j].pair) for i, (k, j) in enumerate(d.node_unit)
                     if k == "matmul"}
        assert all(e["nodes"][n] >= macs(graph, graph.node(n)) / lanes for n, lanes in per_cycle.items())
        assert of_design(build_design(graph, p, images=False, pair_rows=False))["mac_cycles"] >= e["macs"] / p
        assert previous is None or e["total"] <= previous
        previous = e["total"]


def test_reference_design_shares_units_and_chains_elementwise_nodes():
    """One MAC array serves every product node; the element-wise nodes after a producer are chained."""
    from hwgen.hw import build_design

    graph, _ = random_graph(REFERENCE, seed=0)
    design = build_design(graph, 20)
    kinds = {kind for kind, _ in design.node_unit}
    assert kinds == {"matmul", "add", "affine", "softmax", "avgpool"}
    assert len(design.programs["matmul"]) == 10  # embed, q, k, v, scores, apply, out, ffn1, ffn2, head
    chained = sorted(graph.nodes[i].name for i in design.streamed)
    assert chained == sorted(["pos_add", "l0.res1", "l0.norm1", "l0.res2", "l0.norm2", "pool"])
    assert len(design.plan.buffers) <= 7  # values share buffers by lifetime, but for the input's own
    flat = design.plan.flat
    assert [name for name, b in flat.items() if b == flat[graph.input_name]] == [graph.input_name]


def test_dsp_count_reference():
    from hwgen.estimate.model import dsp_count
    from hwgen.hw import build_design

    graph, _ = random_graph(REFERENCE, seed=0)
    design = build_design(graph, 20, images=False)
    assert dsp_count(design) == 26  # what Yosys synth_xilinx 0.70 reported for this design
    assert dsp_count(design, rescale_in_dsp=False) == 20


@pytest.mark.parametrize("parallel", [1, 4])
def test_per_embedding_group_inputs(parallel):
    """Linears reading a per-embedding-group tensor add group partial sums rescaled by shifts: == golden."""
    cfg = SyntheticConfig(window=4, features=2, d_model=8, ffn=8, outputs=2, peg_shl=3)
    graph, x = random_graph(cfg, seed=21)
    assert sum("in_shl" in n.attrs for n in graph.nodes) == 5  # q, k, v, ffn1, head
    cycles = check_graph(graph, x, parallel=parallel, windows=2, stall_seed=4)
    assert max(cycles) >= estimate(graph, parallel)["total"]


def test_load_in_the_first_node_step_needs_its_gate(monkeypatch):
    """The first linear runs while the input arrives, its reads waiting for each element: == golden with
    random stalls, the model exact without; the same design with the gate left out of the MAC array reads
    elements not yet written when the input stalls (8 inputs to 4 outputs on 4 lanes: one read per cycle,
    as fast as the input), and is wrong."""
    from hwgen.hw.matmul import MatmulUnit
    from hwgen.ir.builder import GraphBuilder
    from hwgen.ir.types import IntType

    rng = np.random.default_rng(8)
    b = GraphBuilder("x", (6, 8), IntType(8))
    b.linear("lin", "x", rng.integers(-128, 128, size=(4, 8)), rng.integers(-99, 99, size=4), 20000, 14,
             IntType(8), IntType(8))
    graph = b.finish("lin")
    x = rng.integers(-128, 128, size=(3, 6, 8))
    want = run(graph, x).reshape(3, -1)
    top = lower(graph, 4)
    e = estimate(graph, 4)
    assert top.design.load_overlap and e["load"] == 0
    got, cycles = simulate(top, x)
    assert (got == want).all() and cycles[0] == e["total"]
    for seed in (3, 4):
        assert (simulate(lower(graph, 4), x, stall_seed=seed)[0] == want).all()
    make = MatmulUnit.make.__func__

    def ungated(cls, design, programs, addr_width):
        unit = make(cls, design, programs, addr_width)
        unit.gated_reads = False
        return unit

    monkeypatch.setattr(MatmulUnit, "make", classmethod(ungated))
    got, _ = simulate(lower(graph, 4), x, stall_seed=3)
    assert not (got == want).all()
