"""The command line end to end on a small CSV, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hwgen.steps.cli import main


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    t = np.arange(600)
    level = np.sin(t / 12.0) + 0.1 * rng.normal(size=t.size)
    other = np.cos(t / 7.0)
    path = tmp_path_factory.mktemp("data") / "series.csv"
    lines = ["level,other,label"] + [f"{a:.4f},{b:.4f},x" for a, b in zip(level, other)]
    path.write_text("\n".join(lines) + "\n")
    return path


SMALL = ["--window", "8", "--d-model", "8", "--ffn", "8", "--epochs", "30", "--qat-epochs", "4", "--lr", "5e-3",
         "--quiet"]


@pytest.fixture(scope="module")
def trained(csv_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "m8.pt"
    rc = main(["train", "--csv", str(csv_file), "--target", "level", "--features", "level,other", "--bits", "8",
               "--out", str(out), *SMALL])
    assert rc == 0 and out.is_file()
    return out


def test_train_eval_export_on_csv(trained, tmp_path, capsys):
    capsys.readouterr()
    assert main(["eval", str(trained), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test"
    for key in ("fp32", "fake_quant", "integer"):
        assert set(result[key]) == {"mse", "mae", "mse_units", "mae_units"}
        assert result[key]["mse"] > 0
    # a sine is easy: the deployed integer model must beat predicting the mean (MSE 1 in scaled units)
    assert result["integer"]["mse"] < 0.5
    assert main(["export", str(trained), "--out", str(tmp_path / "ir")]) == 0
    graph = json.loads((tmp_path / "ir" / "graph.json").read_text())
    assert graph["input"]["shape"] == [8, 2] and graph["nodes"][0]["op"] == "linear"


def test_fp32_checkpoint_eval_and_export_error(csv_file, tmp_path, capsys):
    out = tmp_path / "f.pt"
    assert main(["train", "--csv", str(csv_file), "--target", "level", "--fp32", "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"model", "split", "windows", "fp32"}
    assert main(["export", str(out), "--out", str(tmp_path / "ir")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwgen: error:") and "FP32" in err and "\n" not in err
    assert not (tmp_path / "ir").exists()


@pytest.mark.parametrize("args,culprit", [
    (["--target", "nope"], "nope"),
    (["--target", "level", "--features", "level,label"], "label"),
    (["--target", "level", "--window", "400"], "rows"),
    ([], "--target"),
    (["--target", "level", "--fp32", "--bits", "4"], "exactly one"),
])
def test_train_bad_input(csv_file, tmp_path, capsys, args, culprit):
    extra = [] if "--fp32" in args else ["--fp32"]
    rc = main(["train", "--csv", str(csv_file), *args, *extra, "--out", str(tmp_path / "x.pt"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("hwgen: error:") and culprit in err[0]
    assert not (tmp_path / "x.pt").exists()


def test_missing_files(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "none.pt")]) == 1
    assert "none.pt" in capsys.readouterr().err
    assert main(["train", "--csv", str(tmp_path / "none.csv"), "--target", "a", "--fp32", "--out",
                 str(tmp_path / "x.pt")]) == 1
    assert "none.csv" in capsys.readouterr().err


def test_closed_output_pipe_ends_quietly():
    """`hwgen boards | head -1`: the reader leaves early; hwgen stops without a traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import sys; from hwgen.steps.cli import main; sys.exit(main())",
                             "boards"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # nothing will read what it prints
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "Traceback" not in err and err == ""


@pytest.mark.sim
def test_sim_windows_all_takes_every_window_of_the_inputs_file(trained, tmp_path, capsys):
    """`hwgen sim --windows all --inputs FILE.npy` simulates exactly the file's windows, no fewer, no more."""
    build_dir = tmp_path / "build"
    assert main(["build", str(trained), "--out", str(build_dir), "--parallel", "4", "--no-eval", "--quiet"]) == 0
    np.save(tmp_path / "w.npy", np.random.default_rng(1).normal(size=(5, 8, 2)))
    capsys.readouterr()
    assert main(["sim", str(build_dir), "--windows", "all", "--inputs", str(tmp_path / "w.npy"), "--quiet"]) == 0
    assert "bit-exact on 5 windows" in capsys.readouterr().out
    report = json.loads((build_dir / "report.json").read_text())
    assert report["sim"]["windows"] == 5 and report["sim"]["mismatches"] == 0
    assert main(["sim", str(build_dir), "--windows", "2", "--inputs", str(tmp_path / "w.npy"), "--quiet"]) == 0
    assert json.loads((build_dir / "report.json").read_text())["sim"]["windows"] == 2


@pytest.mark.parametrize("value", ["0", "-3", "some", "2.5", ""])
def test_sim_bad_windows_is_one_line_error(tmp_path, capsys, value):
    rc = main(["sim", str(tmp_path / "no-build"), "--windows", value, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("hwgen: error:") and "--windows" in err[0]
    assert repr(value) in err[0]


# ---- the commands that need no torch load none ---------------------------------------------------------------
TORCH_FREE = """
import json, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import hwgen
from hwgen.steps.cli import main

build_dir = sys.argv[1]
rcs = [main(["boards"]), main(["sim", build_dir, "--windows", "3", "--quiet"]),
       main(["report", build_dir, "--windows", "20", "--quiet"])]
loaded = sorted(m for m in sys.modules if m.startswith(("torch", "hwgen.frontend", "hwgen.steps.flow")))
print(json.dumps({"rcs": rcs, "loaded": loaded}))
"""


@pytest.mark.sim
def test_boards_sim_and_report_run_without_torch(trained, tmp_path):
    """`hwgen boards`, `hwgen sim` and `hwgen report` on a build folder import no torch (nor the torch
    steps): they work where torch cannot even be imported."""
    import subprocess
    import sys

    build_dir = tmp_path / "build"
    assert main(["build", str(trained), "--out", str(build_dir), "--quiet"]) == 0
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE, str(build_dir)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"rcs": [0, 0, 0], "loaded": ["torch"]}, proc.stderr[-3000:]  # torch: the None placeholder
    report = json.loads((build_dir / "report.json").read_text())
    assert report["sim"]["windows"] == 3 and report["sim"]["mismatches"] == 0
    assert (build_dir / "report.html").is_file()


IMPORT_ALL = """
import importlib, pkgutil, sys
import torch
torch.set_num_threads(2)
import hwgen
names = [m.name for m in pkgutil.walk_packages(hwgen.__path__, "hwgen.")
         if not m.name.startswith("hwgen.sim.tb_") and m.name != "hwgen.__main__"]
for name in names:
    importlib.import_module(name)
print(len(names), torch.get_num_threads())
"""


def test_importing_hwgen_changes_no_global_state():
    """Importing any hwgen module (hwgen.steps.flow included) leaves torch's thread count alone; the CLI
    sets it for the torch commands."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules, threads = map(int, proc.stdout.split())
    assert modules > 40 and threads == 2
