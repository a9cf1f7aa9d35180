"""The most important test: every shipped model, built and simulated as emitted Verilog on real PM2.5 test
windows with random stalls on both streams, equals the golden model on every output element."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hwgen.steps.build import build, simulate_build
from hwgen.errors import HwgenError

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["pm25_w8", "pm25_w6", "pm25_w4"]
RECORDED_SHA256 = json.loads((Path(__file__).parent / "verilog_sha256.json").read_text())


def assert_verilog_as_recorded(name: str, build_dir: Path) -> None:
    """The emitted Verilog of a shipped model at --parallel auto is byte for byte what was recorded."""
    for file, want in RECORDED_SHA256[name].items():
        got = hashlib.sha256((build_dir / "rtl" / file).read_bytes()).hexdigest()
        assert got == want, f"{name}: rtl/{file} changed (sha256 {got}); see tests/verilog_sha256.json"


@pytest.mark.slow
@pytest.mark.sim
@pytest.mark.parametrize("name", MODELS)
def test_shipped_model_bit_exact_on_verilator(name, tmp_path):
    model = ROOT / "models" / f"{name}.pt"
    report = build(str(model), str(tmp_path / name), "xc7s15", "auto", with_accuracy=False)
    assert 1 <= report["hardware"]["parallel"] <= 20
    assert_verilog_as_recorded(name, tmp_path / name)
    sim = simulate_build(str(tmp_path / name), "verilator", windows=256, stall=0.2, seed=1)
    assert sim["windows"] == 256 and sim["mismatches"] == 0 and sim["error"] is None
    saved = json.loads((tmp_path / name / "report.json").read_text())
    assert saved["sim"]["mismatches"] == 0 and saved["sim"]["windows"] == 256
    # stalls only ever add cycles to what the analytic model predicts for an unstalled window (the
    # testbench counts from the first input beat's cycle to the last output beat's, one fewer than the model)
    assert sim["cycles_per_inference"] >= report["hardware"]["latency_cycles"] - 1


@pytest.mark.sim
def test_small_model_bit_exact_on_icarus(tmp_path):
    report = build(str(ROOT / "models" / "pm25_w4.pt"), str(tmp_path / "b"), "xc7s15", 20, with_accuracy=False,
                   force=True)  # 20 lanes: beyond the resource model, simulated all the same
    assert report["hardware"]["parallel"] == 20
    sim = simulate_build(str(tmp_path / "b"), "icarus", windows=2, stall=0.3, seed=2)
    assert sim["mismatches"] == 0 and sim["windows"] == 2


def test_build_bad_inputs(tmp_path):
    model = str(ROOT / "models" / "pm25_w8.pt")
    with pytest.raises(HwgenError, match="exceeds the 20 DSP48E1"):
        build(model, str(tmp_path / "x"), "xc7s15", 21, with_accuracy=False)
    with pytest.raises(HwgenError, match="unknown board or part 'nope'"):
        build(model, str(tmp_path / "x"), "nope", 4, with_accuracy=False)
    with pytest.raises(HwgenError, match="positive integer or 'auto'"):
        build(model, str(tmp_path / "x"), "xc7s15", "many", with_accuracy=False)
    with pytest.raises(HwgenError, match="FP32"):
        build(str(ROOT / "models" / "pm25_fp32.pt"), str(tmp_path / "x"), "xc7s15", 4, with_accuracy=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(HwgenError, match="build folder not found"):
        simulate_build(str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HwgenError, match="no graph.json"):
        simulate_build(str(tmp_path / "empty"))


@pytest.mark.sim
def test_emitted_verilog_lints_clean_with_documented_waivers(tmp_path):
    """The accelerator and its SPI wrapper pass `verilator --lint-only -Wall` with only the documented
    waivers (hwgen.estimate.lint.AMARANTH_WAIVERS)."""
    from hwgen.estimate.lint import lint_verilog

    build(str(ROOT / "models" / "pm25_w8.pt"), str(tmp_path / "b"), "xc7s15", 4, with_accuracy=False)
    assert lint_verilog([tmp_path / "b" / "rtl" / "hwgen_top.v"], "hwgen_top") == []
    assert lint_verilog([tmp_path / "b" / "rtl" / "hwgen_spi_top.v"], "hwgen_spi_top") == []


def test_build_is_deterministic(tmp_path):
    model = str(ROOT / "models" / "pm25_w4.pt")
    for name in ("a", "b"):
        build(model, str(tmp_path / name), "xc7s15", 6, with_accuracy=False)
    for rel in ("rtl/hwgen_top.v", "rtl/hwgen_spi_top.v", "graph.json", "consts.npz", "report.json",
                "design.json", "vivado/build.tcl", "vivado/board.xdc"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


@pytest.mark.slow
@pytest.mark.sim
def test_generalised_model_bit_exact_on_verilator(tmp_path):
    """A randomly configured model unlike the reference (2 heads, 2 layers, LayerNorm, another window and
    d_model, 6-bit) lowered, emitted and simulated on Verilator with stalls: every element == golden."""
    from hwgen.hw import emit_verilog, lower
    from tests.synthetic import SyntheticConfig, random_graph
    from hwgen.sim import simulate

    cfg = SyntheticConfig(window=12, features=4, d_model=24, heads=2, layers=2, ffn=32, norm="layer",
                          bits_w=6, bits_a=6)
    graph, x = random_graph(cfg, seed=7)
    path = tmp_path / "hwgen_top.v"
    path.write_text(emit_verilog(lower(graph, parallel=6)))
    res = simulate(path, graph, x[:24], build_dir=tmp_path / "sim", seed=3, stall_in=0.2, stall_out=0.2)
    assert res.windows == 24 and res.mismatches == 0 and res.error is None


@pytest.mark.sim
def test_one_design_per_build_and_sim_reads_it(tmp_path, monkeypatch, capsys):
    """`build --parallel auto` lowers each candidate once without ROM images, and the resource model lowers it
    once more with them (it maps each ROM as Yosys does, by its contents); the chosen parallelism is lowered
    once with them for the build; design.json records the Design, and `sim` reads it instead of lowering
    again."""
    import importlib

    import hwgen.estimate.model
    import hwgen.hw

    lowering = importlib.import_module("hwgen.hw.lower")  # the module (hwgen.hw.lower is also a function)
    calls = []
    real = lowering.build_design

    def counting(graph, lanes, images=True, dsp_budget=None, multiplier="generic", lutram=True, pair_rows=True,
                 distributed_buffers=frozenset()):
        calls.append((lanes, images, pair_rows))
        return real(graph, lanes, images, dsp_budget=dsp_budget, multiplier=multiplier, lutram=lutram,
                    pair_rows=pair_rows, distributed_buffers=distributed_buffers)

    monkeypatch.setattr(hwgen.hw, "build_design", counting)
    monkeypatch.setattr(lowering, "build_design", counting)
    monkeypatch.setattr(hwgen.estimate.model, "build_design", counting)
    out = tmp_path / "b"
    report = build(str(ROOT / "models" / "pm25_w8.pt"), str(out), "xc7s15", "auto", with_accuracy=False)
    p = report["hardware"]["parallel"]
    # each candidate once as the build would pair its rows, once more one row at a time where the paired
    # design does not fit (the chosen one's pairs settled by its candidate); with images once per prediction
    seen = [(lanes, pair) for lanes, images, pair in calls if not images]
    assert {lanes for lanes, _ in seen} == set(range(1, 21))
    assert all(seen.count((lanes, True)) == 1 for lanes in range(1, 21))
    assert all(seen.count((lanes, False)) <= 1 for lanes in range(1, 21))
    with_images = [(lanes, pair) for lanes, images, pair in calls if images]
    assert sorted(with_images) == sorted([*seen, (p, with_images[-1][1])]) and with_images[-1][0] == p
    design = json.loads((out / "design.json").read_text())
    assert design["lanes"] == p and design["latency"]["total"] == report["hardware"]["latency_cycles"]
    paired = [n["name"] for n in design["nodes"] if n.get("row_pairs")]
    assert paired == ["l0.attn", "l0.ffn2"]  # FFN-down and the attention-weighted sum: K > outputs
    assert f"two rows at a time through each multiplier in {', '.join(paired)}" in capsys.readouterr().err
    assert [name for s in design["steps"] for name in s["nodes"]] == [n["name"] for n in design["nodes"]]
    assert any(len(s["nodes"]) > 1 for s in design["steps"])  # chained element-wise nodes share a step

    def refuse(*args, **kwargs):
        raise AssertionError("sim lowered the graph again")

    monkeypatch.setattr(hwgen.hw, "build_design", refuse)
    monkeypatch.setattr(lowering, "build_design", refuse)
    sim = simulate_build(str(out), "verilator", windows=2)
    assert sim["mismatches"] == 0
    steps = {s["step"]: s["nodes"] for s in design["steps"]}
    assert [st["nodes"] for st in sim["cycles_per_step"]] == [steps[st["step"]] for st in sim["cycles_per_step"]]
    # every node step as the model says; the first (the embedding, taking the input as it arrives) waits on
    # the input stream, so only the window's total is compared for it (tests/test_hw_top.py times it alone)
    timed = [st for st in sim["cycles_per_step"] if not st.get("waits_on_input")]
    assert design["load_with_first_node"] and len(timed) == len(sim["cycles_per_step"]) - 1
    assert all(st["cycles"] == st["model"] for st in timed)
