"""`hwgen report`: the HTML page of a real build; every number on it traced back to report.json, graph.json,
the test-split predictions or search.json; images inline; missing steps shown as "not run"; progress output."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from hwgen import progress
from hwgen.steps.build import build, read_report, simulate_build, write_report
from hwgen.steps.cli import main
from hwgen.errors import HwgenError
from hwgen.ir.graph import Graph
from hwgen.report.html import render_report, report_html
from hwgen.report.plots import confusion_matrix, plot_anomaly, plot_confusion
from hwgen.tasks import reload_data
from hwgen.tasks.forecast import golden_predict

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "models" / "pm25_w8.pt"
PARALLEL = 4
WINDOWS = 40  # predictions plotted: keeps the golden run short
ALLOWED_WORDS = {"FP32", "BRAM36"}  # fixed labels that contain digits


# ---- reading the page back -----------------------------------------------------------------------------


class Page(HTMLParser):
    """Traced values (data-src, data-key, text), images, links, and the visible text outside traced values
    and report.json key labels."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.traced: list[tuple[str, str, str]] = []
        self.images: list[str] = []
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value) of every src/href
        self.free_text: list[str] = []
        self.stack: list[tuple[str, dict | None]] = []  # (tag, traced attrs or None)
        self.buf: list[str] = []
        self.skip = 0  # inside <style>, <title>, a traced value or a key label

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href"):
            if name in a:
                self.refs.append((tag, name, a[name]))
        if tag == "img":
            self.images.append(a.get("src", ""))
            return
        if tag in ("meta", "br", "link", "input"):
            return
        traced = a if "data-src" in a else None
        skipping = traced is not None or tag in ("style", "title", "script") or "k" in (a.get("class") or "").split()
        if traced is not None:
            self.buf = []
        self.stack.append((tag, traced, skipping))
        self.skip += skipping

    def handle_endtag(self, tag):
        if not self.stack or tag in ("img", "meta", "br", "link", "input"):
            return
        open_tag, traced, skipping = self.stack.pop()
        assert open_tag == tag, f"unbalanced HTML: <{open_tag}> closed by </{tag}>"
        if traced is not None:
            self.traced.append((traced["data-src"], traced["data-key"], "".join(self.buf)))
        self.skip -= skipping

    def handle_data(self, data):
        if self.skip:
            self.buf.append(data)
        else:
            self.free_text.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    assert not page.stack, f"unclosed elements: {page.stack[:3]}"
    return page


def lookup(tree, key: str):
    for part in key.split("/"):
        if isinstance(tree, dict):
            assert part in tree, f"{key}: no {part!r}"
            tree = tree[part]
        else:
            tree = tree[int(part)]
    return tree


def assert_shows(text: str, value, where: str) -> None:
    """``text`` is how the page writes ``value``: integers exactly, floats to the digits shown."""
    if isinstance(value, bool):
        assert text == ("yes" if value else "no"), where
    elif isinstance(value, int):
        assert text == str(value), f"{where}: shows {text!r}, recorded {value}"
    elif isinstance(value, float):
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert abs(float(text) - value) <= 0.5 * 10.0**-decimals * (1 + 1e-9), f"{where}: {text!r} vs {value}"
        if value != 0:  # at least 3 significant digits, or the right unit of a percentage
            assert abs(float(text) - value) <= max(abs(value) * 5e-3, 0.05), f"{where}: {text!r} vs {value}"
    elif isinstance(value, list):
        assert text == "×".join(str(v) for v in value), where
    else:
        assert text == str(value), f"{where}: shows {text!r}, recorded {value!r}"


def expected_predictions(build_dir: Path, windows: int) -> dict:
    """Predictions on the test split, computed here independently of the page."""
    graph = Graph.load(build_dir)
    data = reload_data(graph.meta["data"])
    n = min(windows, len(data.test.x))
    _, real = golden_predict(graph, data.test.x[:n])
    truth, pred = data.to_units(data.test.y[:n].reshape(n, -1)[:, 0]), data.to_units(real[:, 0])
    return {"windows_plotted": n, "windows_test": len(data.test.x),
            "mse_units": float(np.mean((pred - truth) ** 2))}


def check_page(text: str, build_dir: Path, pred: dict | None = None, search=None) -> Page:
    """Every traced value equals its source; no other number appears in the visible text."""
    page = parse(text)
    report = json.loads((build_dir / "report.json").read_text()) if (build_dir / "report.json").is_file() else {}
    graph = json.loads((build_dir / "graph.json").read_text())
    graph["nodes"] = {n["name"]: n for n in graph["nodes"]}
    assert page.traced, "no traced values on the page"
    for src, key, shown in page.traced:
        where = f"{src}:{key}"
        if src == "report":
            assert_shows(shown, lookup(report, key), where)
        elif src == "graph":
            assert_shows(shown, lookup(graph, key), where)
        elif src == "pct":
            a, b = key.split("|")
            assert_shows(shown, 100.0 * lookup(report, a) / lookup(report, b), where)
        elif src == "pred":
            assert pred is not None and key in pred, where
            assert_shows(shown, pred[key], where)
        elif src == "search":
            assert_shows(shown, lookup(search, key), where)
        else:
            raise AssertionError(f"unknown source {src!r}")
    words = re.findall(r"\S+", " ".join(page.free_text))
    stray = [w for w in words if re.search(r"[0-9]", w) and w.strip(".,:;()") not in ALLOWED_WORDS]
    assert not stray, f"numbers on the page not traced to a source: {stray[:10]}"
    return page


# ---- one build for the module -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A real build (small parallelism, scored on the test split), without simulation or synthesis."""
    out = tmp_path_factory.mktemp("report") / "b"
    build(str(CHECKPOINT), str(out), parallel=PARALLEL)
    return out


def add_estimate(build_dir: Path) -> dict:
    """resources/energy sections as ``hwgen estimate`` writes them, from the resource model instead of Yosys
    (seconds instead of a minute)."""
    from hwgen.estimate.boards import resolve_target
    from hwgen.estimate.energy import estimate as energy_estimate
    from hwgen.estimate.model import predict_graph as predict
    from hwgen.estimate.resources import fit

    report = read_report(build_dir)
    board = resolve_target(report["hardware"]["board"])
    res = predict(Graph.load(build_dir), report["hardware"]["parallel"])
    fits, problems = fit(res, board)
    cap = board.device.resources
    report["resources"] = {**{k: res[k] for k in ("lut", "ff", "dsp", "bram36")}, "fits": fits,
                           "problems": problems, "tool": "resource model", "part": board.part,
                           "capacity": {"lut": cap.lut, "ff": cap.ff, "dsp": cap.dsp, "bram36": cap.bram36},
                           "model": {k: round(v, 1) for k, v in res.items()}}
    energy = energy_estimate(res, report["hardware"]["latency_cycles"], board.clock_mhz, part=board.device.name)
    report["energy"] = {**energy, "latency_cycles": report["hardware"]["latency_cycles"],
                        "latency_source": "analytic model"}
    write_report(build_dir, report)
    return report


@pytest.fixture(scope="module")
def estimated(built, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "e"
    shutil.copytree(built, out)
    add_estimate(out)
    return out


@pytest.fixture(scope="module")
def expected(built) -> dict:
    return expected_predictions(built, WINDOWS)


# ---- tests ------------------------------------------------------------------------------------------------


def test_every_number_traces_to_its_source(estimated, expected):
    text = report_html(estimated, max_windows=WINDOWS)
    page = check_page(text, estimated, expected)
    keys = {(s, k) for s, k, _ in page.traced}
    report = read_report(estimated)
    for key in ("hardware/latency_cycles", "hardware/parallel", "accuracy/fp32_test_mse_units",
                "accuracy/int_test_mse_units", "accuracy/fake_quant_test_mse", "resources/lut", "resources/dsp",
                "energy/uj_per_inference", "model/macs", "model/bits_w"):
        assert ("report", key) in keys, key
    for node in report["hardware"]["cycles_per_node"]:
        assert ("report", f"hardware/cycles_per_node/{node}") in keys
        assert ("graph", f"nodes/{node}/out/dtype") in keys
    assert ("pct", "resources/lut|resources/capacity/lut") in keys
    assert {("pred", "windows_plotted"), ("pred", "windows_test"), ("pred", "mse_units")} <= keys
    # the simulation has not run: said so, not failed
    assert "not run: simulation" in text


def test_checker_catches_a_wrong_or_untraced_number(estimated, expected):
    text = report_html(estimated, max_windows=WINDOWS)
    cycles = read_report(estimated)["hardware"]["latency_cycles"]
    tag = f'data-key="hardware/latency_cycles">{cycles}<'
    assert tag in text
    with pytest.raises(AssertionError, match="latency_cycles"):
        check_page(text.replace(tag, f'data-key="hardware/latency_cycles">{cycles + 1}<'), estimated, expected)
    with pytest.raises(AssertionError, match="not traced"):
        check_page(text.replace("<h2>Energy</h2>", "<h2>Energy</h2><p>about 42 mW</p>"), estimated, expected)


def test_images_inline_and_no_external_assets(estimated, expected):
    text = report_html(estimated, max_windows=WINDOWS)
    page = parse(text)
    assert len(page.images) == 3  # forecast, cycles per node, resource use
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert all(v.startswith("data:") for _, _, v in page.refs), page.refs
    assert not re.search(r"<link|<script|url\(|@import|https?://", text)


def test_missing_steps_render_as_not_run(built, expected, tmp_path):
    text = report_html(built, max_windows=WINDOWS)
    check_page(text, built, expected)
    for what in ("not run: simulation", "not run: synthesis", "not run: the energy estimate"):
        assert what in text
    # a graph folder whose report.json is gone, and whose data cannot be loaded, still renders
    bare = tmp_path / "bare"
    shutil.copytree(built, bare, ignore=shutil.ignore_patterns("report.json", "rtl", "vivado", ".hwgen-build"))
    graph = json.loads((bare / "graph.json").read_text())
    del graph["meta"]["data"]
    (bare / "graph.json").write_text(json.dumps(graph))
    text = report_html(bare)
    check_page(text, bare)
    assert "not available: the graph names no dataset" in text
    assert "not run: scoring" in text


def test_cli_writes_report_and_prints_summary(estimated, capsys):
    assert main(["report", str(estimated), "--windows", str(WINDOWS), "--quiet"]) == 0
    out, err = capsys.readouterr()
    path = estimated / "report.html"
    assert path.is_file() and f"report: {path}" in out
    assert out.startswith("## ") and "- latency:" in out  # the Markdown summary stays
    assert err == ""  # --quiet
    assert not list(estimated.glob(".report.html*"))
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "</html>" in text


def test_bad_folder_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hwgen: error: ") and "build folder not found" in err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no graph.json" in err
    assert not (tmp_path / "empty" / "report.html").exists()
    with pytest.raises(HwgenError):
        render_report(tmp_path / "missing")


def no_predictions(graph, windows):
    raise HwgenError("skipped here")


def test_search_pareto_front(built, tmp_path):
    folder = tmp_path / "s"
    shutil.copytree(built, folder)
    trials = [{"number": i, "values": [float(4.5 + i), float(300 - 20 * i + 15 * (i % 2))], "pareto": i % 2 == 0,
               "params": {"bits": 8 - i % 3, "parallel": 2 + i}} for i in range(6)]
    trials.append({"number": 6, "state": "FAIL"})  # no values: ignored
    (folder / "search.json").write_text(json.dumps({"objectives": ["latency_us", "mse"], "trials": trials}))
    text = report_html(folder, predict=no_predictions)
    page = check_page(text, folder, search=trials)
    shown = {k for s, k, _ in page.traced if s == "search"}
    assert shown >= {f"{i}/values/{j}" for i in (0, 2, 4) for j in (0, 1)}
    assert not any(k.startswith(("1/", "3/", "5/")) for k in shown)  # only the Pareto-optimal rows
    assert 'alt="Pareto front"' in text and len(page.images) == 2  # cycles per node, Pareto front
    assert "not available: skipped here" in text
    # the layout `hwgen search` writes: objectives by name, failed trials without them, a pareto_front list
    search = {"objectives": ["mse", "latency"], "trials": [
        {"number": 0, "state": "COMPLETE", "params": {"bits": 8}, "objectives": {"mse": 0.06, "latency": 9000.0}},
        {"number": 1, "state": "FAIL", "params": {"bits": 4}, "objectives": None},
        {"number": 2, "state": "COMPLETE", "params": {"bits": 6}, "objectives": {"mse": 0.07, "latency": 7000.0}},
        {"number": 3, "state": "COMPLETE", "params": {"bits": 6}, "objectives": {"mse": 0.08, "latency": 9500.0}}],
        "pareto_front": [{"number": 0}, {"number": 2}]}
    (folder / "search.json").write_text(json.dumps(search))
    text = report_html(folder, predict=no_predictions)
    page = check_page(text, folder, search=search["trials"])
    shown = {k for s, k, _ in page.traced if s == "search"}
    assert {"0/objectives/mse", "2/objectives/latency", "2/params/bits"} <= shown
    assert not any(k.startswith(("1/", "3/")) for k in shown)
    assert 'alt="Pareto front"' in text
    # tolerant: a malformed file is reported on the page, not raised
    (folder / "search.json").write_text("{not json")
    text = report_html(folder, predict=no_predictions)
    assert "not available: search.json is not readable JSON" in text


def test_classify_and_anomaly_sections_from_arrays(built):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=60)
    pred = np.where(rng.random(60) < 0.8, truth, (truth + 1) % 3)
    cm = confusion_matrix(truth, pred)
    assert cm.shape == (3, 3) and cm.sum() == 60
    assert int(np.trace(cm)) == int(np.sum(truth == pred))
    assert cm[0, 1] == int(np.sum((truth == 0) & (pred == 1)))
    classify = {"task": "classify", "windows_plotted": 60, "windows_test": 60, "truth": truth, "pred": pred,
                "accuracy": float(np.mean(truth == pred)), "labels": ["calm", "busy", "storm"]}
    text = report_html(built, predict=lambda g, n: classify)
    check_page(text, built, classify)
    assert 'alt="confusion matrix"' in text
    scores = rng.normal(size=80)
    anomaly = {"task": "anomaly", "windows_plotted": 80, "windows_test": 80, "scores": scores, "threshold": 1.5,
               "flagged": int(np.sum(scores > 1.5)), "truth": (scores > 1.8).astype(int)}
    text = report_html(built, predict=lambda g, n: anomaly)
    check_page(text, built, anomaly)
    assert 'alt="anomaly scores and threshold"' in text
    for uri in (plot_confusion(truth, pred), plot_anomaly(scores, 1.5)):
        assert base64.b64decode(uri.split(",", 1)[1])[:4] == b"\x89PNG"
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [1])


def test_progress_silent_off_terminal(capsys):
    progress.set_quiet(False)
    with progress.step("work", total=3) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""  # stderr is not a terminal under pytest


def test_sim_progress_file_reaches_the_callback(tmp_path):
    from hwgen.sim.runner import _watch_progress
    from hwgen.testbenches.tb_top import ProgressFile

    seen = []
    path = tmp_path / "progress"
    pf = ProgressFile(path, per_window=3, windows=4, interval=0.0)
    with _watch_progress(path, lambda stage, done: seen.append((stage, done))):
        for beat in range(1, 13):
            pf.update(beat)
    assert seen[0] == ("simulate", 0) and seen[-1] == ("simulate", 4)
    assert int(path.read_text()) == 4


def test_terminal_progress_lines(tmp_path):
    """Under a terminal (a pseudo-terminal), a step draws and leaves its elapsed time; --quiet hides it."""
    pytest.importorskip("pty")
    import os
    import pty

    code = ("from hwgen import progress\nimport time\nprogress.set_quiet({q})\n"
            "with progress.step('demo', total=2, unit='windows') as b:\n    time.sleep(0.5); b.update(2)\n")
    for quiet in (False, True):
        main_fd, child_fd = pty.openpty()
        proc = subprocess.run([sys.executable, "-c", code.format(q=quiet)], stderr=child_fd, stdout=subprocess.PIPE,
                              cwd=ROOT, timeout=60)
        os.close(child_fd)
        chunks = []
        while True:
            try:
                data = os.read(main_fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        os.close(main_fd)
        err = b"".join(chunks).decode(errors="replace")
        assert proc.returncode == 0
        if quiet:
            assert err == ""
        else:
            assert "demo: done in" in err and "(2/2 windows)" in err


@pytest.mark.slow
def test_report_after_a_real_simulation(estimated, expected, tmp_path, monkeypatch, capsys):
    """A real Verilator run of two windows (a cold compile takes a minute): its verdict, window count and
    measured cycles on the page; the progress bar reached the last window."""
    folder = tmp_path / "sim"
    shutil.copytree(estimated, folder)
    monkeypatch.setattr(progress, "enabled", lambda: True)
    simulate_build(str(folder), windows=2)
    err = capsys.readouterr().err
    assert "sim: verilator: done in" in err and "(2/2 windows)" in err
    text = report_html(folder, max_windows=WINDOWS)
    page = check_page(text, folder, expected)
    keys = {k for s, k, _ in page.traced if s == "report"}
    assert {"sim/windows", "sim/mismatches", "sim/cycles_per_inference"} <= keys
    assert '<span class="ok">bit-exact</span>' in text
    assert "not run: simulation" not in text
    # latency per layer measured in the simulation: every node in one controller step, in graph order, and
    # the analytic model equal to the measurement on each step
    steps = json.loads((folder / "report.json").read_text())["sim"]["cycles_per_step"]
    assert [n for st in steps for n in st["nodes"]] == [n.name for n in Graph.load(folder).nodes]
    # (the first step takes the input as it arrives: it waits on the stream and has no model of its own)
    assert [st["step"] for st in steps if st.get("waits_on_input")] == [steps[0]["step"]]
    assert all(st["cycles"] == st["min"] == st["max"] == st["model"] for st in steps[1:])
    assert {f"sim/cycles_per_step/{i}/cycles" for i in range(len(steps))} <= keys
    assert "the model predicts every step exactly" in text


# Headless Chromium as root: no sandbox, no GPU, and nothing that reaches for the network (a fresh profile is
# given per run with --user-data-dir).
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars")
SHOT_SIZE = (1100, 3000)  # width, height
BROWSER_TIMEOUT = 120  # seconds


def screenshot(browser: str, url: str, shot: Path, profile: Path) -> None:
    """``url`` rendered by ``browser`` into the PNG ``shot``; the browser and its helper processes are killed
    after BROWSER_TIMEOUT seconds."""
    import os
    import signal

    profile.mkdir()
    cmd = [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
           f"--window-size={SHOT_SIZE[0]},{SHOT_SIZE[1]}", url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{browser} took more than {BROWSER_TIMEOUT} s for a screenshot")
    else:
        if proc.returncode != 0 or not shot.is_file():
            last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            pytest.fail(f"{browser} exited with {proc.returncode}, no screenshot: {last}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def check_screenshot(pixels: np.ndarray) -> None:
    """A rendered page, not a blank one: the expected size, text and plots on a plain background."""
    assert pixels.shape[:2] == (SHOT_SIZE[1], SHOT_SIZE[0]) and pixels.shape[2] in (3, 4), pixels.shape
    rgb = np.round(pixels[..., :3] * 255).astype(np.int64) if pixels.dtype.kind == "f" else pixels[..., :3]
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colours, counts = np.unique(codes, return_counts=True)
    background = colours[np.argmax(counts)]
    drawn = codes != background
    assert drawn.mean() > 0.02, f"only {drawn.mean():.2%} of the screenshot differs from its background"
    assert len(colours) > 200, f"only {len(colours)} colours: no antialiased text or plots"
    rows = np.flatnonzero(drawn.any(axis=1))
    assert rows[0] < 200, "nothing drawn at the top of the page"
    # the inline plots: saturated pixels (matplotlib's colours), not only grey text and table rules
    saturation = rgb.max(axis=-1) - rgb.min(axis=-1)
    assert (saturation > 80).sum() > 1000, "no coloured plots in the screenshot"


def test_screenshot_checker_catches_a_blank_page():
    blank = np.ones((SHOT_SIZE[1], SHOT_SIZE[0], 3), dtype=np.float32)
    with pytest.raises(AssertionError, match="differs from its background"):
        check_screenshot(blank)
    text_only = blank.copy()
    text_only[20:1000:7, 40:900] = 0.2  # grey lines of "text", no plots
    with pytest.raises(AssertionError):
        check_screenshot(text_only)
    with pytest.raises(AssertionError):
        check_screenshot(blank[:800])


def test_screenshot_in_a_headless_browser(estimated, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless browser installed (scripts/install.sh installs Debian's chromium as root)")
    from matplotlib.image import imread

    page = render_report(estimated, tmp_path / "r.html", max_windows=WINDOWS)
    shot = tmp_path / "shot.png"
    screenshot(browser, page.as_uri(), shot, tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20000
    check_screenshot(imread(shot))
