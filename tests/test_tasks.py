"""Classification and anomaly detection: metrics, the golden head ops, their hardware units against golden,
the CLI end to end, and (slow) the shipped task models bit-exact on Verilator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hwgen.errors import HwgenError
from hwgen.golden import ops, run
from hwgen.hw import lower
from hwgen.ir.builder import GraphBuilder
from hwgen.ops import macs
from hwgen.ir.types import IntType
from hwgen.tasks.metrics import accuracy, macro_f1, precision_recall_f1, roc_auc
from tests.test_hw_top import check_back_to_back, simulate

ROOT = Path(__file__).resolve().parents[1]
I8, I16 = IntType(8), IntType(16)


# ---- metrics against hand-made cases ------------------------------------------------------------------------
def test_accuracy_and_macro_f1_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    assert accuracy(pred, y) == 4 / 6
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 0 -> 0.8; class 2: tp 1 fp 0 fn 1 -> 2/3
    assert macro_f1(pred, y, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert macro_f1(pred, y, 4) == macro_f1(pred, y, 3)  # a class seen nowhere is left out
    assert macro_f1(y, y, 3) == 1.0
    with pytest.raises(ValueError):
        accuracy(pred[:2], y)


def test_precision_recall_f1_by_hand():
    m = precision_recall_f1(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 1, 0, 1]))
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 1)
    assert m["precision"] == 2 / 3 and m["recall"] == 2 / 3 and m["f1"] == pytest.approx(2 / 3)
    assert precision_recall_f1(np.zeros(3), np.array([0, 1, 0]))["f1"] == 0.0


def test_roc_auc_by_hand_and_against_pair_count():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert roc_auc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5  # all tied: one half
    assert roc_auc([3, 2, 1], [1, 0, 0]) == 1.0 and roc_auc([1, 2, 3], [1, 0, 0]) == 0.0
    assert roc_auc([1, 2], [0, 0]) is None
    rng = np.random.default_rng(0)
    s, y = rng.integers(0, 6, size=80), rng.integers(0, 2, size=80)
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(s, y) == pytest.approx(pairs / (len(pos) * len(neg)))


# ---- golden ops and the IR ------------------------------------------------------------------------------------
def test_golden_argmax_ties_lowest_and_scores():
    x = np.array([[[3, 9, 9, -1]], [[-5, -5, -5, -5]], [[0, 1, 2, 127]]])
    assert ops.argmax(x).reshape(-1).tolist() == [1, 0, 3]
    assert ops.argmax(x, scores=True)[0].tolist() == [[1, 3, 9, 9, -1]]


def test_golden_anomaly_score_by_hand():
    x = np.array([[1, -2], [3, 4]])  # L=2, F=2
    rec = np.array([[2, 2, 0, 5]])  # row-major reconstruction
    mx, mr = np.array([4, 8]), np.array([3, 3])
    # |4-6| + |-16-6| + |12-0| + |32-15| = 2 + 22 + 12 + 17 = 53; round_shift(53, 2) = 13 (53/4 = 13.25)
    out = ops.anomaly_score(x, rec, mx, mr, 2, 12, I16)
    assert out.tolist() == [[13, 1]]
    assert ops.anomaly_score(x, rec, mx, mr, 2, 13, I16).tolist() == [[13, 0]]  # flag is score > threshold
    assert ops.anomaly_score(x * 100, rec, mx, mr, 0, 0, I8).tolist() == [[127, 1]]  # saturates at qmax


def _anomaly_graph(rng, L, F, shift, threshold, out=I16, horizon=0):
    """A window [L, F] and its reconstruction from the pooled window; with ``horizon`` H, a window [L + H, F]
    whose first L rows (read by a ``rows``-limited linear) forecast the last H, which are scored."""
    b = GraphBuilder("x", (L + horizon, F), I8)
    src = "x"
    if horizon:
        src = b.linear("ctx", "x", rng.integers(-128, 128, size=(F, F)), None, [20000] * F, [14] * F, I8, I8,
                       rows=L)
    p = b.avgpool("pool", src, 20000, 15, 0, I8)
    n = (horizon or L) * F
    rec = b.linear("rec", p, rng.integers(-128, 128, size=(n, F)), None, [30000] * n, [12] * n, I16, I8)
    b.anomaly_score("an", "x", rec, rng.integers(1, 1 << 15, size=F), rng.integers(1, 1 << 12, size=F), shift,
                    threshold, out, offset=L * F if horizon else 0)
    return b.finish("an")


def test_golden_forecast_anomaly_score_by_hand():
    x = np.array([[9, 9], [1, -2], [3, 4]])  # L=1 context row, H=2 scored rows, F=2
    rec = np.array([[2, 2, 0, 5]])  # the forecast of rows 1 and 2
    mx, mr = np.array([4, 8]), np.array([3, 3])
    # the rows after the context: as in the reconstruction case, 53 -> 13
    assert ops.anomaly_score(x, rec, mx, mr, 2, 12, I16, offset=2).tolist() == [[13, 1]]
    assert ops.anomaly_score(x[None], rec[None], mx, mr, 2, 12, I16, offset=2).tolist() == [[[13, 1]]]
    # the context row does not count: changing it changes nothing, changing a scored row does
    x2 = x.copy()
    x2[0] = -50
    assert ops.anomaly_score(x2, rec, mx, mr, 2, 12, I16, offset=2).tolist() == [[13, 1]]
    x2[2, 1] = 5
    assert ops.anomaly_score(x2, rec, mx, mr, 2, 12, I16, offset=2).tolist() == [[15, 1]]


def test_ir_rows_and_offset_are_checked():
    rng = np.random.default_rng(0)
    g = _anomaly_graph(rng, 5, 2, 10, 5, horizon=3)
    assert g.node("ctx").out.shape == (5, 2) and g.node("ctx").attrs["rows"] == 5
    assert g.node("an").attrs["offset"] == 10 and macs(g, g.node("ctx")) == 5 * 2 * 2
    assert g.node("an").attrs["widths"]["acc"] == g.node("an").attrs["widths"]["diff"] + 3 + 1  # 6 terms
    y = run(g, rng.integers(-128, 128, size=(3, 8, 2)))
    assert y.shape == (3, 1, 2)
    b = GraphBuilder("x", (4, 2), I8)
    with pytest.raises(HwgenError, match="rows 5 must lie in 1..4"):
        b.linear("l", "x", np.ones((3, 2), np.int64), None, [1] * 3, [1] * 3, I8, I8, rows=5)
    b = GraphBuilder("x", (4, 2), I8)
    rec = b.const("rec", np.zeros((1, 4), np.int64))
    for off in (1, 6):  # not on a row boundary; past the end of the window
        with pytest.raises(HwgenError, match="must be whole rows"):
            b.anomaly_score(f"an{off}", "x", rec, [1, 1], [1, 1], 0, 0, I16, offset=off)
    b.anomaly_score("an", "x", rec, [1, 1], [1, 1], 0, 0, I16, offset=4)


def test_ir_checks_task_ops():
    b = GraphBuilder("x", (2, 3), I8)
    with pytest.raises(HwgenError, match="one row of class scores"):
        b.argmax("am", "x", I8)
    b = GraphBuilder("x", (1, 300), I16)
    with pytest.raises(HwgenError, match="cannot hold the class index"):
        b.argmax("am", "x", I8)
    b = GraphBuilder("x", (1, 4), I16)
    with pytest.raises(HwgenError, match="cannot hold the class index and the scores"):
        b.argmax("am", "x", I8, scores=True)
    b = GraphBuilder("x", (3, 2), I8)
    short = b.const("short", np.zeros((1, 5), np.int64))
    with pytest.raises(HwgenError, match="must be whole rows"):
        b.anomaly_score("an", "x", short, [1, 1], [1, 1], 0, 0, I16)
    b = GraphBuilder("x", (3, 2), I8)
    rec = b.const("rec", np.zeros((1, 6), np.int64))
    with pytest.raises(HwgenError, match="threshold 40000"):
        b.anomaly_score("an", "x", rec, [1, 1], [1, 1], 0, 40000, I16)
    g = _anomaly_graph(np.random.default_rng(0), 4, 2, 10, 5)
    w = g.node("an").attrs["widths"]
    assert w["diff"] == max(8 + 16, 16 + 13) + 1 and w["acc"] == w["diff"] + 3 + 1


# ---- hardware units against golden (Amaranth simulator), cycles against the latency model ------------------
@pytest.mark.parametrize("scores", [False, True])
def test_argmax_unit_matches_golden(scores):
    rng = np.random.default_rng(1)
    c = 7
    b = GraphBuilder("x", (1, c), I8)
    b.argmax("am", "x", I8, scores=scores)
    g = b.finish("am")
    x = rng.integers(-128, 128, size=(5, 1, c))
    x[1] = -128  # all equal: index 0
    x[2, 0, [2, 5]] = 127  # a tie at the maximum: the lower index
    x[3, 0, -1] = 127  # the maximum last
    expected = run(g, x).reshape(len(x), -1)
    got, _, _ = check_back_to_back(lower(g, 2), x)  # the first window's cycles and the period exact
    assert (got == expected).all(), f"{got} != {expected}"
    assert expected[:4, 0].tolist()[1:] == [0, 2, c - 1]


@pytest.mark.parametrize("L, F, shift, threshold, horizon",
                         [(4, 3, 22, 170, 0), (6, 1, 9, 0, 0), (3, 2, 0, 32767, 0), (4, 3, 22, 112, 2),
                          (6, 1, 9, 0, 1)])
def test_anomaly_unit_matches_golden(L, F, shift, threshold, horizon):
    rng = np.random.default_rng(L)
    g = _anomaly_graph(rng, L, F, shift, threshold, horizon=horizon)
    x = rng.integers(-128, 128, size=(4, L + horizon, F))
    x[1] = -128
    x[2] = 0
    expected = run(g, x).reshape(len(x), -1)
    got, cycles = simulate(lower(g, 3), x, stall_seed=5)
    assert (got == expected).all(), f"{got} != {expected}"
    quiet, _, _ = check_back_to_back(lower(g, 3), x)
    assert (quiet == expected).all()
    if shift == 22:  # scores in range, some flagged and some not
        assert 0 < expected[:, 0].max() < 32767 and len(set(expected[:, 1].tolist())) == 2


# ---- the command line end to end on a tiny run -------------------------------------------------------------
def _cli(*argv):
    from hwgen.steps.cli import main

    return main([str(a) for a in argv])


TINY = ("--d-model", 8, "--ffn", 8, "--epochs", 2, "--qat-epochs", 1, "--bits", 8, "--quiet")


def test_cli_classify_end_to_end(tmp_path, capsys):
    model = tmp_path / "c.pt"
    assert _cli("train", "--task", "classify", "--dataset", "italypowerdemand", "--out", model, *TINY) == 0
    capsys.readouterr()
    assert _cli("eval", model, "--json", "--quiet") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["task"] == "classify" and res["windows"] == 1029 and res["classes"] == ["1", "2"]
    for key in ("fp32", "fake_quant", "integer"):
        assert 0 <= res[key]["accuracy"] <= 1 and 0 <= res[key]["macro_f1"] <= 1
    assert _cli("export", model, "--out", tmp_path / "g") == 0
    from hwgen.ir.graph import Graph

    g = Graph.load(tmp_path / "g")
    assert g.nodes[-1].op == "argmax" and g.output_type.shape == (1, 3) and g.meta["task"] == "classify"
    # the class index alone: the same index, no scores after it
    assert _cli("export", model, "--out", tmp_path / "gi", "--index-only") == 0
    gi = Graph.load(tmp_path / "gi")
    assert gi.output_type.shape == (1, 1) and gi.meta["class_scores"] is False and g.meta["class_scores"] is True
    from hwgen.tasks import reload_data
    from hwgen.tasks.base import integer_outputs as golden_outputs

    x = reload_data(g.meta["data"]).test.x[:50]
    assert (golden_outputs(gi, x)[:, 0] == golden_outputs(g, x)[:, 0]).all()
    capsys.readouterr()
    assert _cli("build", tmp_path / "g", "--out", tmp_path / "b", "--index-only", "--quiet") == 1
    assert "give the checkpoint to return the class index alone" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_cli_anomaly_end_to_end_on_csv(tmp_path, capsys):
    t = np.arange(700)
    lab = ((t > 600) & (t < 620)).astype(int)
    v = np.sin(t / 4) + np.where(lab == 1, 2.0, 0.0)
    path = tmp_path / "a.csv"
    path.write_text("v,label\n" + "".join(f"{a:.4f},{f}\n" for a, f in zip(v, lab)))
    model = tmp_path / "a.pt"
    # the default: forecast the 4 steps after each window of 8 and score them; quantization options pass through
    assert _cli("train", "--task", "anomaly", "--csv", path, "--target", "label", "--window", 8, "--out", model,
                "--precision", "ffn.w=4", "--dampen", "1", *TINY) == 0
    capsys.readouterr()
    assert _cli("eval", model, "--quiet") == 0
    text = capsys.readouterr().out
    assert "ROC-AUC" in text and "integer" in text
    from hwgen.steps import flow

    res = flow.evaluate(str(model), "test")
    assert res["anomalous_windows"] == 19 + 4 - 1 and res["integer"]["roc_auc"] is not None
    graph = flow.export(str(model), str(tmp_path / "g"))
    assert graph.meta["threshold_calibrated"] and graph.node("anomaly").attrs["threshold"] == graph.meta["threshold"]
    assert graph.input_type.shape == (12, 1) and graph.node("embed").attrs["rows"] == 8
    assert graph.node("anomaly").attrs["offset"] == 8 and graph.output_type.shape == (1, 2)
    assert graph.consts["l0.ffn1.weight"].dtype.bits == 4 and graph.meta["config"]["precision"] == "ffn.w=4"
    # the threshold: the largest integer score of the normal (training and validation) windows
    from hwgen.tasks import reload_data
    from hwgen.tasks.anomaly import normal_windows
    from hwgen.tasks.base import integer_outputs as golden_outputs

    data = reload_data(graph.meta["data"])
    assert graph.meta["threshold"] == golden_outputs(graph, normal_windows(data))[:, 0].max()
    # --horizon 0: reconstruct the whole window instead
    recon = tmp_path / "r.pt"
    assert _cli("train", "--task", "anomaly", "--csv", path, "--target", "label", "--window", 8, "--horizon", 0,
                "--out", recon, *TINY) == 0
    res = flow.evaluate(str(recon), "test")
    assert res["anomalous_windows"] == 19 + 8 - 1
    g = flow.export(str(recon), str(tmp_path / "gr"))
    assert _cli("export", recon, "--out", tmp_path / "gi", "--index-only") == 1
    assert "applies to classifiers, not to an anomaly model" in capsys.readouterr().err
    assert g.input_type.shape == (8, 1) and "rows" not in g.node("embed").attrs and "offset" not in g.node("anomaly").attrs


@pytest.mark.parametrize("argv, match", [
    (("--task", "classify", "--dataset", "nope"), "unknown classification dataset 'nope'"),
    (("--task", "anomaly", "--dataset", "gunpoint"), "use --task classify"),
    (("--task", "classify", "--dataset", "pm25"), "unknown classification dataset 'pm25'"),
    (("--task", "classify", "--csv", "FILE"), "needs --target"),
    (("--task", "classify", "--csv", "FILE", "--target", "nope"), "no column 'nope'"),
    (("--task", "classify", "--dataset", "gunpoint", "--horizon", "2"), "--horizon works with --task anomaly only"),
    (("--dataset", "pm25", "--horizon", "2"), "--horizon works with --task anomaly only"),
    (("--task", "anomaly", "--dataset", "kdd135", "--horizon", "40"), "horizon must be an integer in 0..32"),
    (("--task", "anomaly", "--dataset", "kdd135", "--features", "value"), "--features works with --task forecast"),
    (("--task", "anomaly", "--dataset", "kdd135", "--threshold-quantile", "1.5"), "threshold quantile must lie"),
])
def test_cli_train_bad_inputs(tmp_path, capsys, argv, match):
    csv = tmp_path / "f.csv"
    csv.write_text("series,label,a\n0,x,1\n0,x,2\n")
    argv = tuple(str(csv) if a == "FILE" else a for a in argv)
    assert _cli("train", *argv, "--bits", 8, "--out", tmp_path / "m.pt", "--quiet") == 1
    assert match in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


# ---- the shipped task models on Verilator --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.sim
def test_class_index_only_accelerator_bit_exact_on_verilator(tmp_path):
    from hwgen.steps.build import build, simulate_build

    report = build(str(ROOT / "models" / "basicmotions_w8.pt"), str(tmp_path / "b"), "xc7s15", 8,
                   with_accuracy=False, class_scores=False)
    from hwgen.ir.graph import Graph

    assert Graph.load(tmp_path / "b").output_type.shape == (1, 1) and report["model"]["task"] == "classify"
    sim = simulate_build(str(tmp_path / "b"), "verilator", windows=16, stall=0.2, seed=2)
    assert sim["mismatches"] == 0 and sim["error"] is None and sim["windows"] == 16


@pytest.mark.slow
@pytest.mark.sim
@pytest.mark.parametrize("name", ["basicmotions_w8", "kdd135_w8"])
def test_shipped_task_model_bit_exact_on_verilator(name, tmp_path):
    from hwgen.steps.build import build, simulate_build

    from hwgen.report.summary import summary_markdown

    report = build(str(ROOT / "models" / f"{name}.pt"), str(tmp_path / name), "xc7s15", "auto")
    assert report["model"]["task"] in ("classify", "anomaly")
    from tests.test_accelerator import assert_verilog_as_recorded

    assert_verilog_as_recorded(name, tmp_path / name)
    sim = simulate_build(str(tmp_path / name), "verilator", windows=32, stall=0.2, seed=1)
    assert sim["windows"] == 32 and sim["mismatches"] == 0 and sim["error"] is None
    # stalls only add cycles (the testbench counts one fewer than the model, tests/test_accelerator.py)
    assert sim["cycles_per_inference"] >= report["hardware"]["latency_cycles"] - 1
    # per layer, simulated == model (the first step takes the input as it arrives: it waits on the stream)
    assert all(st["cycles"] == st["model"] for st in sim["cycles_per_step"] if not st.get("waits_on_input"))
    # the terminal summary speaks the task's metrics, from report.json
    text = summary_markdown(tmp_path / name)
    integer = report["accuracy"]["integer"]
    if name == "kdd135_w8":
        assert report["model"]["horizon"] == 4 and "input 36 steps (32 + 4 scored)" in text
        assert f"deployed integer {integer['precision']:.3f} / {integer['recall']:.3f} / {integer['f1']:.3f}, " \
               f"{integer['roc_auc']:.3f}" in text
    else:
        assert f"deployed integer {integer['accuracy']:.3f} / {integer['macro_f1']:.3f}" in text


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pm25_w8", "basicmotions_w8", "kdd135_w8"])
def test_shipped_models_quantized_forward_equals_their_integer_model(name):
    """`hwgen eval`: the quantized torch forward (what QAT trained) and the deployed integer model agree on
    every test output of the shipped checkpoints (exact QAT)."""
    from hwgen.steps import flow

    result = flow.evaluate(str(Path(__file__).resolve().parents[1] / "models" / f"{name}.pt"), "test")
    assert result["fake_quant_vs_integer"]["fraction_differ"] == 0.0
    assert result["fake_quant_vs_integer"].get("max_lsb", 0) == 0
