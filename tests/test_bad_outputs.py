"""Bad output paths and concurrent updates: every command refuses with one line, writes nothing half-done and
never deletes what hwgen did not write."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hwgen.errors import HwgenError
from hwgen.steps.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "pm25_w8.pt"

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason="models/pm25_w8.pt not shipped")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """One build of the shipped model for the module (~5 s)."""
    out = tmp_path_factory.mktemp("built") / "b"
    assert main(["build", str(MODEL), "--out", str(out), "--no-eval", "--parallel", "4", "--quiet"]) == 0
    return out


@pytest.fixture
def build_copy(built, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(built, dst)
    return dst


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("hwgen: error: ")
    return err[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"")
            for p in sorted(folder.rglob("*"))}


# ---- 1. build replaces only a previous build folder --------------------------------------------------------


def test_build_folder_has_marker_and_normal_mode(built):
    marker = built / ".hwgen-build"
    assert marker.read_text().splitlines()[0] == "hwgen-build-folder format 1"
    mask = os.umask(0)
    os.umask(mask)
    assert (built.stat().st_mode & 0o777) == 0o777 & ~mask


def test_build_replaces_a_previous_build_folder(build_copy, capsys):
    (build_copy / "rtl" / "stale.v").write_text("// stale\n")
    assert main(["build", str(MODEL), "--out", str(build_copy), "--no-eval", "--parallel", "4", "--quiet"]) == 0
    assert not (build_copy / "rtl" / "stale.v").exists()
    assert (build_copy / ".hwgen-build").is_file()


@pytest.mark.parametrize("case", ["unrelated", "checkpoint_inside", "checkpoint_inside_force", "regular_file",
                                  "parent_is_file", "cwd"])
def test_build_refuses_bad_out(case, tmp_path, capsys, monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    source, extra = str(MODEL), []
    if case == "unrelated":
        out = work / "d"
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    elif case.startswith("checkpoint_inside"):
        out = work / "b"
        out.mkdir()
        shutil.copyfile(MODEL, out / "m.pt")
        source = str(out / "m.pt")
        extra = ["--force"] if case.endswith("force") else []
    elif case == "regular_file":
        out = work / "f"
        out.write_text("a file\n")
    elif case == "parent_is_file":
        (work / "f").write_text("a file\n")
        out = work / "f" / "sub"
    else:
        out = Path(".")
        monkeypatch.chdir(work)
        (work / "keep.txt").write_text("keep\n")
    before = snapshot(work)
    capsys.readouterr()
    rc = main(["build", source, "--out", str(out), "--no-eval", "--parallel", "4", "--quiet", *extra])
    assert rc == 1
    line = error_line(capsys)
    assert str(out) in line
    assert snapshot(work) == before  # nothing written, nothing deleted, no staging folder left


def test_build_force_replaces_a_non_build_folder(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    assert main(["build", str(MODEL), "--out", str(out), "--no-eval", "--parallel", "4", "--quiet",
                 "--force"]) == 0
    assert not (out / "notes.txt").exists() and (out / ".hwgen-build").is_file()


def test_export_to_a_regular_file(tmp_path, capsys):
    out = tmp_path / "f"
    out.write_text("a file\n")
    assert main(["export", str(MODEL), "--out", str(out)]) == 1
    assert str(out) in error_line(capsys)
    assert out.read_text() == "a file\n"


# ---- 2. report.json sections under a lock -------------------------------------------------------------------


def test_concurrent_report_updates_keep_every_section(build_copy):
    from hwgen.steps.build import read_report, update_report

    def writer(section: str) -> None:
        for i in range(40):
            update_report(build_copy, {section: {"i": i}})

    threads = [threading.Thread(target=writer, args=(s,)) for s in ("sim", "resources", "energy")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = read_report(build_copy)
    assert report["sim"] == report["resources"] == report["energy"] == {"i": 39}
    assert "hardware" in report and "model" in report


def test_concurrent_report_updates_across_processes(build_copy):
    code = ("import sys; from hwgen.steps.build import update_report\n"
            "for i in range(30): update_report(sys.argv[1], {sys.argv[2]: {'i': i}})\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(build_copy), s]) for s in ("sim", "resources")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    report = json.loads((build_copy / "report.json").read_text())
    assert report["sim"] == report["resources"] == {"i": 29}


# ---- 3. --parallel beyond the resource model ----------------------------------------------------------------


def test_build_parallel_that_does_not_fit(tmp_path, capsys):
    # The anomaly model at 20 lanes: its anomaly-score unit keeps two DSP48E1 (22 predicted) and the LUTs
    # exceed 80% of the part (the PM2.5 models fit at 20 lanes since their rescale products move to fabric).
    out = tmp_path / "p20"
    model = ROOT / "models" / "kdd135_w8.pt"
    assert main(["build", str(model), "--out", str(out), "--no-eval", "--parallel", "20", "--quiet"]) == 1
    line = error_line(capsys)
    assert "22 DSP predicted" in line and "LUT predicted" in line and "--force" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


# ---- 4. simulation sources in a private folder -------------------------------------------------------------


def test_sim_sources_not_in_shared_temp(tmp_path, monkeypatch):
    from hwgen.sim import runner

    shared = tmp_path / "shared"
    victim = tmp_path / "victim.v"
    victim.write_text("precious\n")
    key = "verilator-0123456789abcdef"
    planted = shared / "hwgen-sim-src" / key
    planted.mkdir(parents=True)
    (planted / "hwgen_top.v").symlink_to(victim)
    monkeypatch.setattr(runner.tempfile, "tempdir", str(shared))
    build_dir = tmp_path / "sim_build"
    build_dir.mkdir()
    path = runner._private_copy("module hwgen_top; endmodule\n", key, build_dir)
    assert build_dir in path.parents and not path.is_symlink()
    assert path.read_text() == "module hwgen_top; endmodule\n"
    assert victim.read_text() == "precious\n"


def test_sim_sources_refuse_a_planted_symlink(tmp_path):
    from hwgen.sim import runner

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    build_dir = tmp_path / "sim_build"
    (build_dir / "src").mkdir(parents=True)
    (build_dir / "src" / "key").symlink_to(elsewhere)
    with pytest.raises(HwgenError, match="symbolic link"):
        runner._private_copy("module hwgen_top; endmodule\n", "key", build_dir)
    assert list(elsewhere.iterdir()) == []
    # a symlink at the file itself is replaced, not followed
    victim = tmp_path / "victim.v"
    victim.write_text("precious\n")
    (build_dir / "src" / "k2").mkdir()
    (build_dir / "src" / "k2" / "hwgen_top.v").symlink_to(victim)
    path = runner._private_copy("module hwgen_top; endmodule\n", "k2", build_dir)
    assert not path.is_symlink() and victim.read_text() == "precious\n"


# ---- 5. report without report.json --------------------------------------------------------------------------


def test_report_without_report_json(build_copy, capsys):
    (build_copy / "report.json").unlink()
    before = snapshot(build_copy)
    assert main(["report", str(build_copy), "--quiet"]) == 1
    line = error_line(capsys)
    assert "report.json" in line and "hwgen build" in line
    assert snapshot(build_copy) == before


# ---- 6. search space and --quiet ----------------------------------------------------------------------------


@pytest.mark.parametrize("space, name", [("d_model=-8", "d_model"), ("bits_w=1,9", "bits_w"),
                                         ("norm=group", "norm")])
def test_search_space_validated_first(space, name, tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["search", "--space", space, "--trials", "1", "--out", str(out), "--study", str(tmp_path / "s.db"),
               "--quiet"])
    assert rc == 1
    assert f"--space {name}" in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


# ---- 7. flag names, Yosys errors, a full stdout --------------------------------------------------------------


@pytest.mark.parametrize("stall", ["1.5", "-0.1", "nan"])
def test_sim_stall_names_the_flag(built, stall, capsys):
    assert main(["sim", str(built), "--stall", stall, "--quiet"]) == 1
    line = error_line(capsys)
    assert "--stall" in line and "stall_in" not in line


def test_yosys_parse_error_is_one_line(tmp_path):
    from hwgen.estimate.resources import synthesize

    bad = tmp_path / "hwgen_top.v"
    bad.write_text("module hwgen_top(input a; endmodule garbage (\n")
    with pytest.raises(HwgenError) as exc:
        synthesize([bad], "hwgen_top", tmp_path / "work", quiet=True)
    msg = str(exc.value)
    assert "\n" not in msg and "ERROR" in msg and str(bad) in msg and "Yosys Open" not in msg


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_stdout_on_a_full_disk():
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "hwgen", "boards"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwgen: error: "), proc.stderr


# ---- 8. a changed graph is refused ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["sim", "estimate", "report"])
@pytest.mark.parametrize("changed", ["graph.json", "consts.npz"])
def test_changed_graph_is_refused(build_copy, command, changed, capsys):
    path = build_copy / changed
    if changed == "graph.json":
        graph = json.loads(path.read_text())
        graph["meta"]["input_scale"] = graph["meta"]["input_scale"] * 2
        path.write_text(json.dumps(graph))
    else:
        path.write_bytes(path.read_bytes() + b"\0")
    before = snapshot(build_copy)
    assert main([command, str(build_copy), "--quiet"]) == 1
    assert f"{path}: changed" in error_line(capsys)
    assert snapshot(build_copy) == before


def _default_sigint() -> None:  # a child of a shell's background job starts with SIGINT ignored
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog")
def test_interrupted_sim_leaves_no_run_folder(build_copy):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "hwgen", "sim", str(build_copy), "--windows", "64",
                             "--simulator", "icarus", "--quiet"], stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    sim_build = build_copy / "sim_build"
    try:
        t0 = time.monotonic()
        while not list(sim_build.glob("run-*")) and time.monotonic() - t0 < 60 and proc.poll() is None:
            time.sleep(0.2)
        assert list(sim_build.glob("run-*")), "the simulation did not start"
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(sim_build.glob("run-*")) == []
    assert "sim" not in json.loads((build_copy / "report.json").read_text())


def test_sigint_to_the_search_parent_stops_its_workers(tmp_path):
    """SIGINT to the parent alone (not its process group) stops both workers within seconds; finished trials
    are kept in the study and search.json (~20 s)."""
    import signal
    import time

    space = ["--space", "window=8", "--space", "d_model=8", "--space", "heads=1", "--space", "layers=1",
             "--space", "ffn=8", "--space", "bits_w=8", "--space", "bits_a=8", "--space", "parallel=2"]
    proc = subprocess.Popen([sys.executable, "-m", "hwgen", "search", "--workers", "2", "--trials", "500",
                             "--epochs", "1", "--qat-epochs", "1", "--train-windows", "256", "--val-windows", "128",
                             *space, "--out", str(tmp_path / "out"), "--study", str(tmp_path / "s.db")],
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_sigint)
    try:
        for line in proc.stderr:  # the first finished trial
            if line.startswith("search: trial"):
                break
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        workers = [int(p) for p in children.read_text().split()] if children.is_file() else []
        workers = [p for p in workers if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        proc.stderr.read()
        assert proc.wait(timeout=30) == 130
        assert time.monotonic() - t0 < 20
        alive = lambda: [p for p in workers if Path(f"/proc/{p}").exists()  # noqa: E731
                         and "zombie" not in Path(f"/proc/{p}/status").read_text()]
        assert alive() == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    summary = json.loads((tmp_path / "out" / "search.json").read_text())
    assert summary["run"]["interrupted"] and summary["counts"]["complete"] >= 1
