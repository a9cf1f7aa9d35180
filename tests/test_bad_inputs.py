"""Bad inputs, by class (CSV files, checkpoints, flags, JSON): exit 1, one line ``hwgen: error: ...`` naming
the culprit, nothing written. Property tests: malformed CSV files and tampered graph.json files."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hwgen import jsonio, tasks
from hwgen.errors import HwgenError
from hwgen.data.timeseries import describe, load_forecast_data
from hwgen.steps import flow
from hwgen.steps.cli import main

SMALL = ["--window", "4", "--d-model", "4", "--ffn", "4", "--epochs", "1", "--quiet"]


def _rows(n: int = 80) -> list[list[str]]:
    return [[f"{math.sin(i / 5):.4f}", f"{math.cos(i / 3):.4f}"] for i in range(n)]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("\n".join([",".join(header)] + [",".join(r) for r in rows]) + "\n")
    return path


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _fails(capsys, argv: list[str], root: Path, *culprits: str) -> str:
    """Run the CLI; assert exit 1, exactly one stderr line ``hwgen: error: ...`` naming every culprit, and
    no file created or changed under ``root``."""
    before = _snapshot(root)
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 1, (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("hwgen: error: "), err
    for culprit in culprits:
        assert culprit in lines[0], (culprit, lines[0])
    assert _snapshot(root) == before, "a failing command wrote something"
    return lines[0]


@pytest.fixture(scope="module")
def good_csv(tmp_path_factory) -> Path:
    return _write_csv(tmp_path_factory.mktemp("data") / "good.csv", ["a", "b"], _rows())


@pytest.fixture(scope="module")
def models(good_csv, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    fp32, q8 = root / "fp32.pt", root / "q8.pt"
    assert main(["train", "--csv", str(good_csv), "--target", "a", "--fp32", "--out", str(fp32), *SMALL]) == 0
    assert main(["train", "--csv", str(good_csv), "--target", "a", "--bits", "8", "--qat-epochs", "1",
                 "--out", str(q8), *SMALL]) == 0
    return {"fp32": fp32, "q8": q8}


# ---------------------------------------------------------------- CSV files

def _csv_case(name: str, tmp: Path) -> tuple[Path, list[str], tuple[str, ...]]:
    """(CSV file, extra train flags, culprits the error must name)."""
    rows = _rows()
    if name == "huge_feature":  # std overflows: the column would scale to all zeros
        rows[5][1] = "1e300"
        return _write_csv(tmp / "x.csv", ["a", "b"], rows), [], ("'b'", "line 7", "1e+300", "standard deviation")
    if name == "huge_target":
        rows[3][0] = "1e308"
        return _write_csv(tmp / "x.csv", ["a", "b"], rows), [], ("'a'", "line 5", "1e+308")
    if name == "huge_in_test_split":  # not in the statistics, but its scaled value overflows float32
        rows[75][1] = "1e300"
        return _write_csv(tmp / "x.csv", ["a", "b"], rows), [], ("'b'", "line 77", "too large")
    if name == "text_cell":
        rows[9][1] = "oops"
        return _write_csv(tmp / "x.csv", ["a", "b"], rows), [], ("'b'", "line 11", "'oops'")
    if name == "text_cell_in_named_feature":
        rows[9][1] = "oops"
        return _write_csv(tmp / "x.csv", ["a", "b"], rows), ["--features", "a,b"], ("'b'", "line 11")
    if name == "duplicate_header":
        return _write_csv(tmp / "x.csv", ["a", "a"], rows), [], ("duplicate column header 'a'",)
    if name == "empty_file":
        (tmp / "x.csv").write_text("")
        return tmp / "x.csv", [], ("x.csv",)
    if name == "ragged_rows":
        rows[4].append("7")
        return _write_csv(tmp / "x.csv", ["a", "b"], rows), [], ("x.csv",)
    raise AssertionError(name)


CSV_CASES = ["huge_feature", "huge_target", "huge_in_test_split", "text_cell", "text_cell_in_named_feature",
             "duplicate_header", "empty_file", "ragged_rows"]


@pytest.mark.parametrize("case", CSV_CASES)
def test_bad_csv(case, tmp_path, capsys):
    path, extra, culprits = _csv_case(case, tmp_path)
    _fails(capsys, ["train", "--csv", str(path), "--target", "a", "--fp32", "--out", str(tmp_path / "m.pt"),
                    *SMALL, *extra], tmp_path, *culprits)


def test_text_column_left_out_by_features_goes_on(tmp_path):
    rows = _rows()
    rows[9][1] = "oops"
    data = load_forecast_data(None, str(_write_csv(tmp_path / "x.csv", ["a", "b"], rows)), "a", ["a"], 4)
    assert data.features == ("a",)


# ---------------------------------------------------------------- checkpoints

def _tamper(obj: dict, case: str) -> object:
    obj = dict(obj)
    if case == "no_data":
        del obj["data"]
    elif case == "string_data":
        obj["data"] = "pm25"
    elif case == "data_without_target":
        obj["data"] = {k: v for k, v in obj["data"].items() if k != "target"}
    elif case == "no_fp32_state_dict":
        del obj["fp32_state_dict"]
    elif case == "shape_mismatch":
        state = dict(obj["state_dict"])
        key = next(k for k, v in state.items() if v.ndim == 2)
        state[key] = torch.zeros(v.shape[0] + 1, v.shape[1]) if (v := state[key]) is not None else None
        obj["state_dict"] = state
        obj["_key"] = key
    return obj


@pytest.mark.parametrize("case, culprit", [("no_data", "'data'"), ("string_data", "'data' is a str"),
                                           ("no_fp32_state_dict", "'fp32_state_dict'"),
                                           ("data_without_target", "'target'"),
                                           ("shape_mismatch", None)])
@pytest.mark.parametrize("command", ["eval", "export"])
def test_bad_checkpoint_entries(models, case, culprit, command, tmp_path, capsys):
    obj = _tamper(torch.load(models["q8"], weights_only=True), case)
    key = obj.pop("_key", None)
    path = tmp_path / "bad.pt"
    torch.save(obj, path)
    argv = [command, str(path)] + (["--out", str(tmp_path / "g")] if command == "export" else [])
    if case in ("no_fp32_state_dict", "data_without_target") and command == "export":  # export needs the quantized model only
        assert main(argv) == 0
        return
    _fails(capsys, argv, tmp_path, str(path), culprit or repr(key))


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def test_malicious_pickle_is_untrusted(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "hwgen-checkpoint", "x": _Evil()}, path)
    line = _fails(capsys, ["eval", str(path)], tmp_path, str(path), "untrusted")
    assert "corrupt" not in line


def test_garbage_checkpoint(tmp_path, capsys):
    path = tmp_path / "junk.pt"
    path.write_bytes(pickle.dumps([1, 2], protocol=2)[:3])
    _fails(capsys, ["eval", str(path)], tmp_path, str(path), "corrupt")


def test_directory_as_checkpoint(tmp_path, capsys):
    (tmp_path / "d.pt").mkdir()
    _fails(capsys, ["eval", str(tmp_path / "d.pt")], tmp_path, "d.pt", "is a directory")


# ---------------------------------------------------------------- flags

@pytest.mark.parametrize("lr", ["-1", "0", "nan", "inf", "-inf"])
def test_bad_lr(good_csv, lr, tmp_path, capsys):
    _fails(capsys, ["train", "--csv", str(good_csv), "--target", "a", "--fp32", f"--lr={lr}",
                    "--out", str(tmp_path / "m.pt"), *SMALL], tmp_path, "--lr")


def test_diverging_training_names_the_epoch(good_csv, tmp_path):
    from hwgen.frontend.model import ModelConfig
    from hwgen.frontend.train import TrainOptions

    data = load_forecast_data(None, str(good_csv), "a", None, 4)
    cfg = ModelConfig(features=2, window=4, d_model=4, ffn=4)
    with pytest.raises(HwgenError, match="epoch 1 .*not finite"):
        flow.train(data, tasks.get("forecast"), cfg, TrainOptions(epochs=1, lr=float("inf"), progress=False),
                   str(tmp_path / "m.pt"), None, "test", csv=str(good_csv))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["out_under_file", "out_is_dir"])
def test_bad_out_refused_before_training(good_csv, case, tmp_path, capsys, monkeypatch):
    import hwgen.frontend.train as train_mod

    def no_training(*a, **k):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(train_mod, "_fit", no_training)
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    out = tmp_path / ("file/x.pt" if case == "out_under_file" else "dir")
    _fails(capsys, ["train", "--csv", str(good_csv), "--target", "a", "--fp32", "--out", str(out), *SMALL],
           tmp_path, "--out", str(out))


# ---------------------------------------------------------------- JSON

@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_strict_json_names_the_value(value, tmp_path):
    with pytest.raises(HwgenError, match=r"out\.json: .*a\.b\[1\]"):
        flow.write_json(tmp_path / "out.json", {"a": {"b": [1.0, value]}})
    assert list(tmp_path.iterdir()) == []
    assert jsonio.dumps({"a": 1.5}, "x") == '{"a": 1.5}'


def test_eval_json_is_strict(models, capsys):
    capsys.readouterr()
    assert main(["eval", str(models["q8"]), "--json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))


# ---------------------------------------------------------------- property: malformed CSV files

_cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "inf", "-inf", "1e308", "1e300", "-1e300", "abc", "NA", " ", "1,5", '"x"']),
    st.integers(-10**6, 10**6).map(str),
)
_header = st.one_of(st.lists(st.sampled_from(["a", "b", "c", "t"]), min_size=1, max_size=4, unique=True),
                   st.lists(st.sampled_from(["a", "b", "c", "", "a.1", " a", "t"]), min_size=0, max_size=4))


@st.composite
def _csv_text(draw) -> str:
    header = draw(_header)
    width = max(len(header), 1)
    n = draw(st.integers(0, 60))
    base = [[f"{math.sin(i * (j + 1) / 5):.3f}" for j in range(width)] for i in range(n)]
    for _ in range(draw(st.integers(0, 4))):
        if n:
            base[draw(st.integers(0, n - 1))][draw(st.integers(0, width - 1))] = draw(_cell)
    if n and draw(st.booleans()):  # a ragged row
        i = draw(st.integers(0, n - 1))
        base[i] = base[i][: draw(st.integers(0, width))] + draw(st.lists(_cell, max_size=2))
    lines = ([",".join(header)] if header else []) + [",".join(r) for r in base]
    return "\n".join(lines) + ("\n" if lines else "")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_csv_text(), target=st.sampled_from(["a", "b", "t"]))
# rows with more fields than the header (pandas took the extra leading fields as a row index)
@example(text="b\n0.000,0.0,abc\n", target="b")
@example(text="b\n,abc\n", target="b")
def test_property_malformed_csv_loads_finite_or_fails_cleanly(tmp_path, text, target):
    path = tmp_path / "p.csv"
    path.write_text(text)
    try:
        data = load_forecast_data(None, str(path), target, None, 2)
    except HwgenError as exc:
        assert "\n" not in str(exc)
        return
    for split in (data.train, data.val, data.test):
        assert np.isfinite(split.x).all() and np.isfinite(split.y).all()
    desc = describe(data, str(path))
    json.loads(jsonio.dumps(desc, "descriptor"))  # strict JSON, finite statistics


_FEW_CSVS = ["a,a\n1,2\n", "", "a,b\n" + "".join(f"{i},{'x' if i == 3 else i}\n" for i in range(60)),
             "a,b\n" + "".join(f"{1e300 if i == 2 else i},{i % 5}\n" for i in range(60))]


@pytest.mark.parametrize("text", _FEW_CSVS)
def test_property_examples_through_the_cli(text, tmp_path, capsys):
    path = tmp_path / "p.csv"
    path.write_text(text)
    _fails(capsys, ["train", "--csv", str(path), "--target", "a", "--epochs", "1", "--qat-epochs", "1",
                    "--bits", "8", "--out", str(tmp_path / "o.pt"), "--window", "4", "--d-model", "4",
                    "--ffn", "4", "--quiet"], tmp_path, "p.csv")


# ---------------------------------------------------------------- property: tampered graph.json

@pytest.fixture(scope="module")
def graph_dir(models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("graph") / "g"
    assert main(["export", str(models["q8"]), "--out", str(out)]) == 0
    return out


_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
              st.text(max_size=6), st.sampled_from(["int8", "int32", "uint4", "int0", "int99"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _set(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_tampered_graph_loads_or_fails_cleanly(graph_dir, tmp_path_factory, data):
    from hwgen.golden import run
    from hwgen.ir.graph import Graph

    obj = json.loads((graph_dir / "graph.json").read_text())
    paths = [p for p in _paths(obj) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        try:
            _set(obj, path, data.draw(_json_value))
        except (KeyError, IndexError, TypeError):
            continue
        paths = [p for p in _paths(obj) if p]
    work = tmp_path_factory.mktemp("tampered")
    shutil.copy(graph_dir / "consts.npz", work / "consts.npz")
    (work / "graph.json").write_text(json.dumps(obj))
    try:
        graph = Graph.load(work)
    except HwgenError:
        return
    shape = tuple(graph.input_type.shape)
    dtype = graph.input_type.dtype
    x = np.random.default_rng(0).integers(dtype.qmin, dtype.qmax + 1, size=(2, *shape))
    try:
        y = run(graph, x)
    except HwgenError:
        return
    assert np.issubdtype(np.asarray(y).dtype, np.integer)


def _classify_rows(n_series: int = 10, length: int = 8) -> list[list]:
    rng = np.random.default_rng(0)
    return [[str(s), "up" if s % 2 else "down", *(f"{v:.4f}" for v in rng.normal(size=2))]
            for s in range(n_series) for _ in range(length)]


@pytest.mark.parametrize("change, culprit", [
    ("duplicate", "duplicate column header 'f'"),
    ("text", "column 'g' is not numeric: text 'oops'"),
    ("huge", "column 'g': value 1e+300"),
])
def test_task_csv_refused_naming_the_column(change, culprit, tmp_path):
    """The classification/anomaly CSV loaders share the forecast loader's checks."""
    from hwgen.data.tasks import load_anomaly_csv, load_classify_csv

    header, rows = ["series", "label", "f", "g"], _classify_rows()
    if change == "duplicate":
        header = ["series", "label", "f", "f"]
    elif change == "text":
        rows[5][3] = "oops"
    else:
        rows[5][3] = "1e300"
    path = _write_csv(tmp_path / "c.csv", header, rows)
    with pytest.raises(HwgenError, match=re.escape(culprit)):
        load_classify_csv(path, "label", window=4)
    if change != "duplicate":  # an anomaly CSV: numeric 0/1 labels, the same feature columns
        for r in rows:
            r[1] = str(int(r[1] == "up"))
        with pytest.raises(HwgenError, match=re.escape(culprit)):
            load_anomaly_csv(_write_csv(tmp_path / "a.csv", header, rows), "label", window=4)


def test_csv_row_with_more_fields_than_the_header_is_named(tmp_path):
    """pandas would take a long row's extra leading fields as a row index and shift every column; the
    load refuses it with its line."""
    path = tmp_path / "long.csv"
    path.write_text("a,b\n1,2\n3,4,5\n6,7\n")
    with pytest.raises(HwgenError, match=r"long.csv: line 3 has 3 fields, the header 2$"):
        load_forecast_data(None, str(path), "b", None, 2)
