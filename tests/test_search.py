"""hwgen search: Pareto front, recorded failures, resume, interruption, two workers, bad inputs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from hwgen.steps import search
from hwgen.steps.cli import main
from hwgen.errors import HwgenError
from hwgen.steps.search import SearchSettings, SearchSpace, pareto_front, run_search

TINY = SearchSpace(window=(8,), d_model=(8,), heads=(1, 2), layers=(1,), ffn=(8, 16), bits_w=(4, 8), bits_a=(8,),
                   parallel=(1, 2))
FAST = SearchSettings(epochs=1, qat_epochs=1, train_windows=256, val_windows=128, space=TINY)


def _dominates(a: dict, b: dict) -> bool:
    return all(a[k] <= b[k] for k in a) and any(a[k] < b[k] for k in a)


def _run(tmp_path, trials: int, settings: SearchSettings = FAST, **kw) -> dict:
    return run_search(settings, trials, tmp_path / "out", study=str(tmp_path / "study.db"), **kw)


def test_pareto_front_helper():
    pts = [[1, 5], [2, 2], [1, 5], [3, 3], [0, 9], [2, 2.5]]
    assert pareto_front(pts) == [0, 1, 4]  # [3,3] and [2,2.5] dominated; the second [1,5] is a repeat


def test_search_writes_an_undominated_front(tmp_path):
    summary = _run(tmp_path, 4)
    on_disk = json.loads((tmp_path / "out" / "search.json").read_text())
    assert on_disk["pareto_front"] == summary["pareto_front"]
    complete = [t for t in on_disk["trials"] if t["state"] == "COMPLETE"]
    assert len(on_disk["trials"]) == 4 and complete and on_disk["pareto_front"]
    for point in on_disk["pareto_front"]:
        assert not any(_dominates(t["objectives"], point["objectives"]) for t in complete)
        m = point["metrics"]
        assert point["objectives"] == {"mse": m["val_mse"], "latency": m["latency_cycles"], "lut": m["lut"]}
        assert m["latency_cycles"] > 0 and m["dsp"] >= point["params"]["parallel"] and m["uj_per_inference"] > 0
    # Every completed trial left its integer graph for later verification.
    for t in complete:
        assert (tmp_path / "out" / "graphs" / f"trial-{t['number']}" / "graph.json").is_file()
    # Each front point is either on the front or dominated: the front is maximal.
    numbers = {p["number"] for p in on_disk["pareto_front"]}
    for t in complete:
        if t["number"] not in numbers:
            assert any(_dominates(p["objectives"], t["objectives"]) or p["objectives"] == t["objectives"]
                       for p in on_disk["pareto_front"])


def test_failures_are_recorded_and_the_search_goes_on(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = search.train_and_export

    def flaky(params, settings):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected failure")
        return real(params, settings)

    monkeypatch.setattr(search, "train_and_export", flaky)
    summary = _run(tmp_path, 3)
    trials = summary["trials"]
    first = next(t for t in trials if t["failure_kind"] == "error")
    assert first["state"] == "FAIL" and first["failure"] == "RuntimeError: injected failure"
    assert any(t["state"] == "COMPLETE" and t["number"] > first["number"] for t in trials)
    assert summary["run"]["trials_finished"] == 3


def test_a_design_that_does_not_fit_fails_with_its_reason(tmp_path):
    # 20 lanes + the LayerNorm's 5 rescale DSPs (which stay in DSP48E1) > 20
    settings = replace(FAST, space=replace(TINY, parallel=(20,), norm=("layer",)))
    summary = _run(tmp_path, 2, settings)
    assert [t["state"] for t in summary["trials"]] == ["FAIL", "FAIL"]
    for t in summary["trials"]:
        assert t["failure_kind"] == "does not fit" and "DSP > 20" in t["failure"]
    assert summary["pareto_front"] == [] and summary["counts"]["failed_by_kind"] == {"does not fit": 2}


def test_resume_adds_trials_and_keeps_the_old_ones(tmp_path):
    first = _run(tmp_path, 2)
    second = _run(tmp_path, 4)
    assert second["run"]["trials_finished"] == 2
    finished = [t for t in second["trials"] if t["state"] == "COMPLETE" or t["failure_kind"]]
    assert len(finished) == 4
    for old in first["trials"]:
        new = next(t for t in second["trials"] if t["number"] == old["number"])
        assert (new["state"], new["params"], new["objectives"]) == (old["state"], old["params"], old["objectives"])
    assert _run(tmp_path, 4)["run"]["trials_finished"] == 0  # already done: nothing more to run


def test_interrupt_keeps_finished_trials_and_resume_completes(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = search.sample_params

    def interrupted_second(trial, space):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(trial, space)

    monkeypatch.setattr(search, "sample_params", interrupted_second)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, 3, replace(FAST, space=replace(TINY, parallel=(2,))))
    partial = json.loads((tmp_path / "out" / "search.json").read_text())
    assert partial["run"]["interrupted"] and partial["counts"]["complete"] == 1
    assert [t["failure_kind"] for t in partial["trials"] if t["state"] == "FAIL"] == ["interrupted"]
    summary = _run(tmp_path, 3, replace(FAST, space=replace(TINY, parallel=(2,))))
    assert summary["counts"]["complete"] == 3 and summary["run"]["trials_finished"] == 2
    kept = next(t for t in partial["trials"] if t["state"] == "COMPLETE")
    assert any(t["number"] == kept["number"] and t["objectives"] == kept["objectives"] for t in summary["trials"])


@pytest.mark.slow  # two spawned processes importing torch: about 30 s on 2 busy cores
def test_two_workers_share_one_study(tmp_path):
    summary = _run(tmp_path, 4, workers=2)
    finished = [t for t in summary["trials"] if t["state"] == "COMPLETE" or t["failure_kind"]]
    assert len(finished) in (4, 5)  # a worker may start one trial while the other finishes the last
    assert len({t["worker"] for t in finished}) == 2


def test_resuming_with_other_settings_is_refused(tmp_path):
    _run(tmp_path, 1, replace(FAST, space=replace(TINY, parallel=(20,))))
    with pytest.raises(HwgenError, match="epochs=1, not 2"):
        _run(tmp_path, 2, replace(FAST, epochs=2, space=replace(TINY, parallel=(20,))))


def test_mixed_precision_spec():
    params = {"window": 8, "d_model": 8, "heads": 1, "layers": 1, "ffn": 8, "norm": "batch", "bits_w": 6,
              "bits_a": 8, "parallel": 2, "bits_w_attn": 4, "bits_w_ffn": 6}
    assert search.precision_spec(params) == "attn.w=4"
    cfg = search.model_config(params, 7)
    assert (cfg.bits_for("attn", "w"), cfg.bits_for("ffn", "w"), cfg.bits_for("embed", "w")) == (4, 6, 6)
    uniform = {k: v for k, v in params.items() if not k.startswith("bits_w_")}
    assert search.precision_spec(uniform) == "" and search.model_config(uniform, 7).bits_w == 6


@pytest.mark.parametrize("args, culprit", [
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--storage", "nosuchdb://x/y"], "cannot open the study storage nosuchdb://x/y"),
    (["--storage", "postgresql://user:secret@localhost/db"], "storage postgresql://user:***@localhost/db"),
    (["--trials", "0"], "--trials must be an integer >= 1, not 0"),
    (["--space", "d_model=eight"], "values must be integers"),
])
def test_bad_inputs_give_one_line_errors(tmp_path, capsys, args, culprit):
    code = main(["search", "--out", str(tmp_path / "out"), "--study", str(tmp_path / "s.db"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("hwgen: error:") and culprit in err
    assert "secret" not in err and not (tmp_path / "out" / "search.json").exists()


@pytest.mark.slow
def test_verify_rechecks_a_pareto_point_with_the_real_flow(tmp_path):
    settings = replace(FAST, space=replace(TINY, heads=(1,), ffn=(8,), bits_w=(8,), parallel=(2,)))
    summary = _run(tmp_path, 1, settings, verify=1)
    (v,) = summary["verified"]
    point = summary["pareto_front"][0]
    assert v["sim"]["bit_exact"] and v["yosys"]["fits"]
    assert v["yosys"]["dsp"] == point["metrics"]["dsp"]
    assert v["latency_cycles_model"] == point["metrics"]["latency_cycles"]


def test_trials_are_judged_on_the_design_the_build_makes():
    """A trial's hardware is ``hwgen build``'s design at its parallelism: on a part with 4.5 BRAM36 the
    shipped W8 at P = 16 pairs rows with one buffer moved into distributed RAM (the design as first lowered
    needs 5.0 and would fail the trial)."""
    from pathlib import Path

    from hwgen.estimate.boards import resolve_target
    from hwgen.estimate.model import predict
    from hwgen.hw import build_design
    from hwgen.steps.build import candidate, graph_from

    graph = graph_from(str(Path(__file__).resolve().parents[1] / "models" / "pm25_w8.pt"))[0]
    board = resolve_target("xc7s15")
    short = replace(board, device=replace(board.device, resources=replace(board.device.resources, bram36=4.5)))
    assert predict(build_design(graph, 16, images=False, dsp_budget=20))["bram36"] == 5.0
    hw = search._hardware(graph, 16, short)
    design, need = candidate(graph, short, 16)
    assert hw["bram36"] == need["bram36"] == 4.5 and hw["lut"] == need["lut"]
    assert design.distributed_buffers and hw["latency_cycles"] == search._hardware(graph, 16, board)["latency_cycles"]
