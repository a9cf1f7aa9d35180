"""Simulation of real lowered graphs: the emitted ``hwgen_top`` must equal the golden model on every element.

Synthetic graphs (hwgen.ir.synthetic) are lowered with hwgen.hw.lower, emitted with hwgen.hw.emit_verilog and
streamed through cocotb with idle and back-pressure patterns on both streams.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwgen import hw
from hwgen.golden import run as golden_run
from hwgen.ir.graph import Const, Graph
from tests.synthetic import SyntheticConfig, random_graph
from hwgen.sim import simulate

SMALL = SyntheticConfig(window=4, features=2, d_model=4, ffn=8, outputs=2)


def emit(graph: Graph, path: Path, parallel: int) -> Path:
    path.write_text(hw.emit_verilog(hw.lower(graph, parallel=parallel), name="hwgen_top"))
    return path


def with_const(graph: Graph, name: str, value: np.ndarray) -> Graph:
    """``graph`` with constant ``name`` replaced (same type): a design that must fail the check."""
    consts = dict(graph.consts)
    consts[name] = Const(value, consts[name].dtype)
    return Graph(graph.input_name, graph.input_type, graph.nodes, consts, graph.output_name, graph.meta)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sim_hw_build")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    graph, x = random_graph(SMALL, seed=4)
    return graph, x, emit(graph, tmp_path_factory.mktemp("rtl") / "small.v", parallel=2)


@pytest.mark.sim
@pytest.mark.slow
def test_synthetic_graph_on_verilator_with_stalls_matches_golden(build_dir, tmp_path):
    graph, x = random_graph(SyntheticConfig(), seed=0)
    v = emit(graph, tmp_path / "hwgen_top.v", parallel=4)
    res = simulate(v, graph, x[:12], simulator="verilator", build_dir=build_dir, seed=1, stall_in=0.3,
                   stall_out=0.5)
    assert res.error is None and not res.timed_out, res.error
    assert (res.windows, res.mismatches, res.first_mismatch) == (12, 0, None)
    mean, lo, hi = res.cycles_per_inference
    assert 0 < lo <= mean <= hi


@pytest.mark.sim
def test_small_synthetic_graph_on_icarus_with_stalls_matches_golden(small, build_dir):
    graph, x, v = small
    res = simulate(v, graph, x[:3], simulator="icarus", build_dir=build_dir, seed=2, stall_in=0.4,
                   stall_out=0.4)
    assert res.error is None, res.error
    assert (res.simulator, res.windows, res.mismatches) == ("icarus", 3, 0)


@pytest.mark.sim
@pytest.mark.slow
def test_small_synthetic_graph_same_schedule_on_both_simulators(small, build_dir):
    graph, x, v = small
    runs = [simulate(v, graph, x[:2], simulator=s, build_dir=build_dir, seed=9, stall_in=0.2, stall_out=0.2)
            for s in ("icarus", "verilator")]
    assert [r.mismatches for r in runs] == [0, 0]
    assert runs[0].cycles_per_inference == runs[1].cycles_per_inference
    assert runs[0].sim_cycles == runs[1].sim_cycles


@pytest.mark.sim
def test_a_design_lowered_from_a_different_constant_is_caught(small, build_dir, tmp_path):
    graph, x, _ = small
    name = "head.weight"
    w = graph.consts[name].value.copy()
    w[1, 0] = -w[1, 0] if w[1, 0] not in (0, -128) else 77
    bad = with_const(graph, name, w)
    want, have = golden_run(graph, x[:3]).reshape(3, -1), golden_run(bad, x[:3]).reshape(3, -1)
    differs = np.argwhere(want != have)
    assert differs.size, "the altered constant must change some output for this test to mean anything"
    window, element = (int(i) for i in differs[0])
    res = simulate(emit(bad, tmp_path / "bad.v", parallel=2), graph, x[:3], simulator="icarus",
                   build_dir=build_dir, stall_out=0.3)
    assert res.mismatches == int((want != have).sum()) > 0
    assert res.first_mismatch == {"window": window, "element": element,
                                  "expected": int(want[window, element]), "got": int(have[window, element])}
