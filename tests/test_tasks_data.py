"""Classification and anomaly datasets: the .ts parser, splits, scaling, labels, CSV layouts, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from hwgen.data.tasks import (downsample_factor, load_anomaly_csv, load_classify_csv, load_kdd135, load_mitdb,
                              load_ucr, parse_ts, stratified_split)
from hwgen.data.tasks import load_anomaly_data, load_classify_data
from hwgen.tasks import get as get_task
from hwgen.errors import HwgenError

TS = """# a comment
@problemName Tiny
@univariate false
@dimensions 2
@classLabel true a b
@data
1,2,3,4:5,6,7,8:a
0,0,0,1:1,1,1,1:b
4,3,2,1:8,7,6,5:a
"""


def test_parse_ts_multivariate(tmp_path):
    path = tmp_path / "t.ts"
    path.write_text(TS)
    x, labels, classes = parse_ts(path)
    assert x.shape == (3, 2, 4) and classes == ["a", "b"] and labels == ["a", "b", "a"]
    assert x[0, 1].tolist() == [5, 6, 7, 8] and x[2, 0].tolist() == [4, 3, 2, 1]


@pytest.mark.parametrize("text, match", [
    (TS.replace("@classLabel true a b\n", ""), "no @classLabel"),
    (TS.replace("5,6,7,8:a", "5,6,7:a"), "unequal length"),
    (TS.replace("0,0,0,1:", "0,?,0,1:"), "not a number"),
    (TS.replace(":b\n", ":c\n"), "not among the declared classes"),
    (TS.split("@data")[0] + "@data\n", "no series"),
])
def test_parse_ts_rejects_bad_files(tmp_path, text, match):
    path = tmp_path / "bad.ts"
    path.write_text(text)
    with pytest.raises(HwgenError, match=match):
        parse_ts(path)


def test_stratified_split_is_seeded_and_per_class():
    labels = np.array([0] * 10 + [1] * 5 + [2])
    kept, carved = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([kept, carved]).tolist()) == list(range(16))
    assert np.bincount(labels[carved], minlength=3).tolist() == [2, 1, 0]  # a lone series stays in training
    again = stratified_split(labels, 0.2, seed=3)
    assert (again[1] == carved).all()
    assert not np.array_equal(stratified_split(labels, 0.2, seed=4)[1], carved)


def test_downsample_factor():
    assert [downsample_factor(t, w) for t, w in ((100, 100), (100, 50), (100, 25), (101, 50), (24, 96))] == \
        [1, 2, 4, 3, 1]


def test_basicmotions_default_split_and_scaling():
    d = load_ucr("basicmotions", window=50)
    assert d.classes == ("Standing", "Running", "Walking", "Badminton")
    assert d.window == 50 and d.downsample == 2 and d.train.x.shape == (32, 50, 6)
    assert len(d.val.x) == 8 and len(d.test.x) == 40
    assert np.bincount(d.val.labels, minlength=4).tolist() == [2, 2, 2, 2]  # stratified: 10 per class in TRAIN
    flat = d.train.x.reshape(-1, 6)  # standardised on the training series only
    assert np.allclose(flat.mean(axis=0), 0, atol=1e-5) and np.allclose(flat.std(axis=0), 1, atol=1e-4)
    assert not np.allclose(d.val.x.reshape(-1, 6).mean(axis=0), 0, atol=1e-3)
    assert (d.train.y == d.train.labels).all() and d.train.y.dtype == np.int64


def test_univariate_ucr_sets():
    g, i = load_ucr("gunpoint"), load_ucr("italypowerdemand")
    assert g.train.x.shape[1:] == (50, 1) and g.downsample == 3 and len(g.test.x) == 150
    assert i.train.x.shape[1:] == (24, 1) and i.downsample == 1 and len(i.test.x) == 1029
    assert len(i.train.x) + len(i.val.x) == 67


def test_anomaly_sets_labels_and_normal_training():
    m = load_mitdb(window=32)
    assert m.train.labels.sum() == 0 and m.val.labels.sum() == 0
    # the labelled run (rows 6936..7287) lies in the test part: windows overlapping it are anomalous
    assert m.test.labels.sum() == 383 and m.test.x.shape[1:] == (32, 1)
    assert (m.train.y == m.train.x.reshape(len(m.train.x), -1)).all()
    k = load_kdd135(window=32)
    first = int(k.test.start[np.argmax(k.test.labels)])
    assert first == 4187 - 31 and k.test.labels.sum() == 12 + 32 - 1  # windows touching the 12 labelled rows
    assert len(k.train.x) + len(k.val.x) == 1200 - 2 * 31


def test_forecasting_anomaly_windows_score_their_last_steps():
    k = load_kdd135(window=32, horizon=4)
    assert k.horizon == 4 and k.window == 32 and k.train.x.shape[1:] == (36, 1)
    for split in (k.train, k.val, k.test):  # the target is the 4 steps after the model's window
        assert (split.y == split.x[:, 32:].reshape(len(split.x), -1)).all()
    first = int(k.test.start[np.argmax(k.test.labels)])
    # anomalous when one of the 4 scored steps is labelled: 12 + 4 - 1 windows from the one whose last
    # step is the first labelled row (rows 4187..4198)
    assert first == 4187 - 35 and k.test.labels.sum() == 12 + 4 - 1
    assert len(k.train.x) + len(k.val.x) == 1200 - 2 * 35 and k.train.labels.sum() == 0
    m = load_mitdb(window=32, horizon=2)
    # training windows touching the labelled run anywhere (context or scored steps) are dropped
    assert m.train.labels.sum() == 0 and m.test.x.shape[1:] == (34, 1)
    from hwgen.data.tasks import MAX_HORIZON
    from hwgen.frontend.model import MAX_HORIZON as MODEL_MAX_HORIZON

    assert MAX_HORIZON == MODEL_MAX_HORIZON == 32  # the data and the model configuration agree
    with pytest.raises(HwgenError, match="horizon must be an integer in 0..32, not 33"):
        load_kdd135(window=32, horizon=33)
    with pytest.raises(HwgenError, match="a horizon is an anomaly-detection setting"):
        get_task("classify").load_data("gunpoint", None, None, None, 0, 2)


def _classify_csv(tmp_path, n_series=20, length=12, bad=None):
    rng = np.random.default_rng(0)
    rows = ["series,label,a,b"]
    for s in range(n_series):
        lab = "up" if s % 2 else "down"
        for t in range(length):
            v = (t if lab == "up" else -t) + rng.normal()
            rows.append(f"{s},{lab},{v:.3f},{rng.normal():.3f}")
    if bad == "length":
        rows.pop()
    if bad == "label":
        rows[1] = rows[1].replace(",down,", ",up,")
    path = tmp_path / "c.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_classify_csv_long_layout(tmp_path):
    d = load_classify_csv(_classify_csv(tmp_path), "label", window=6)
    assert d.classes == ("down", "up") and d.features == ("a", "b")
    assert d.window == 6 and d.downsample == 2
    assert len(d.train.x) + len(d.val.x) + len(d.test.x) == 20 and len(d.test.x) == 4


@pytest.mark.parametrize("bad, match", [("length", "different lengths"), ("label", "more than one label")])
def test_classify_csv_rejects(tmp_path, bad, match):
    with pytest.raises(HwgenError, match=match):
        load_classify_csv(_classify_csv(tmp_path, bad=bad), "label", window=6)


def test_anomaly_csv_and_missing_label(tmp_path):
    t = np.arange(600)
    lab = ((t > 500) & (t < 510)).astype(int)
    path = tmp_path / "a.csv"
    path.write_text("v,w,flag\n" + "".join(f"{np.sin(i / 5):.4f},{i % 7},{f}\n" for i, f in zip(t, lab)))
    d = load_anomaly_csv(path, "flag", window=8)
    assert d.features == ("v", "w") and d.test.labels.sum() == 9 + 7 and d.train.labels.sum() == 0
    with pytest.raises(HwgenError, match="no label column 'nope'"):
        load_anomaly_csv(path, "nope", window=8)
    with pytest.raises(HwgenError, match="no column 'series'"):
        load_classify_csv(path, "flag")


def test_unknown_dataset_and_task_mismatch():
    with pytest.raises(HwgenError, match="unknown classification dataset 'nope'"):
        load_classify_data("nope", None, None, None)
    with pytest.raises(HwgenError, match="use --task anomaly"):
        load_classify_data("mitdb", None, None, None)
    with pytest.raises(HwgenError, match="use --task classify"):
        load_anomaly_data("basicmotions", None, None, None)
    with pytest.raises(HwgenError, match="needs --target"):
        load_anomaly_data(None, "x.csv", None, None)
