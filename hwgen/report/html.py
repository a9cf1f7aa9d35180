"""`hwgen report DIR`: DIR/report.html, one self-contained page about a build (no external assets).

Every number on the page is a ``<span class="v" data-src=... data-key=...>`` naming where it comes from, so a
reader (or a test) can trace it:

- ``report``: a path in report.json (``hardware/latency_cycles``; parts joined by ``/``);
- ``graph``: a path in graph.json, its nodes keyed by name (``nodes/l0.q/out/dtype``);
- ``pct``: ``100 * a / b`` of two report paths ``a|b``;
- ``pred``: the predictions computed here on the test split (``windows_plotted``, ``mse_units``, ...);
- ``search``: a path in the trials of DIR/search.json (``3/values/0``).

Sections a build has not reached yet (no ``hwgen sim``, no ``hwgen estimate``) say "not run".
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hwgen import progress
from hwgen.report import plots
from hwgen.steps.build import load_build, read_report
from hwgen.errors import HwgenError
from hwgen.ir.graph import Graph

MAX_WINDOWS = 500
RESOURCES = (("lut", "LUT"), ("ff", "flip-flops"), ("dsp", "DSP"), ("bram36", "BRAM36"))
# report.json sections this page renders on its own; any other section goes to "Other recorded results"
RENDERED = {"model", "accuracy", "hardware", "sim", "resources", "timing", "energy", "vivado"}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1000px;margin:2em auto;
padding:0 1em;color:#1d2733;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.1em}h2{border-bottom:2px solid #e4e8ee;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#5b6b7c;margin-top:0}table{border-collapse:collapse;margin:.6em 0}
td,th{padding:.25em .8em;border-bottom:1px solid #e4e8ee;text-align:left;vertical-align:top}
th{background:#f4f6f9;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.na{color:#8a96a3;font-style:italic}.ok{color:#1e7b34;font-weight:700}.bad{color:#b3261e;font-weight:700}
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{border:1px solid #e4e8ee;border-radius:6px;padding:.5em .9em;
min-width:9em}.card b{display:block;font-size:1.3em}.card span.l{color:#5b6b7c;font-size:.85em}
img{max-width:100%;height:auto}code{background:#f4f6f9;padding:0 .25em;border-radius:3px}
"""


# ---- formatting -------------------------------------------------------------------------------------------


def format_number(value: float | int, decimals: int | None = None) -> str:
    """Integers in full; other numbers to ``decimals`` places (default: 4 significant digits), trailing zeros
    dropped, never in exponent notation."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    if decimals is None:
        decimals = min(max(0, 3 - math.floor(math.log10(abs(v)))), 10)
    text = f"{v:.{decimals}f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text in ("-0", "") else text


def format_value(value: Any, decimals: int | None = None) -> str:
    """How a traced value is written on the page: numbers by :func:`format_number`, booleans yes/no, lists of
    integers (shapes) joined by ×, anything else as text."""
    if isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        return format_number(value, decimals)
    if isinstance(value, (list, tuple)):
        return "×".join(format_value(v) for v in value)
    return str(value)


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _na(text: str = "not recorded") -> str:
    return f'<span class="na">{_esc(text)}</span>'


def _v(src: str, key: str, value: Any, decimals: int | None = None) -> str:
    """A traced value (see the module docstring); None renders as "not recorded", untraced. Percentages
    (``src`` "pct") get one decimal."""
    if value is None:
        return _na()
    if decimals is None and src == "pct":
        decimals = 1
    text = format_value(value, decimals)
    return f'<span class="v" data-src="{_esc(src)}" data-key="{_esc(key)}">{_esc(text)}</span>'


def _get(tree: Any, key: str) -> Any:
    """The value at a ``/``-joined path, or None."""
    for part in key.split("/"):
        if isinstance(tree, dict) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and part.lstrip("-").isdigit() and -len(tree) <= int(part) < len(tree):
            tree = tree[int(part)]
        else:
            return None
    return tree


def _table(head: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i >= numeric_from else ""}>{c}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _img(uri: str, alt: str) -> str:
    return f'<p><img src="{uri}" alt="{_esc(alt)}"></p>'


def _not_run(what: str, command: str) -> str:
    return f'<p class="na">not run: {_esc(what)} (run <code>{_esc(command)}</code>)</p>'


# ---- data the page computes ------------------------------------------------------------------------------


def graph_tree(graph_json: dict[str, Any]) -> dict[str, Any]:
    """graph.json with its node list keyed by node name: the tree ``graph`` paths index."""
    return {**graph_json, "nodes": {n["name"]: n for n in graph_json.get("nodes", [])}}


def task_of(graph: Graph) -> str:
    """The model's task from the graph metadata: "forecast" (default), "classify" or "anomaly"."""
    return str(graph.meta.get("task") or "forecast")


def predictions(graph: Graph, max_windows: int = MAX_WINDOWS) -> dict[str, Any]:
    """The deployed integer model (the golden interpreter) on the first ``max_windows`` test windows.

    Returns ``task``, ``windows_plotted``, ``windows_test`` and the arrays and scores the task's plot needs:
    forecast ``truth``/``pred`` in the target's units and ``mse_units``; classify ``truth``/``pred`` labels
    and ``accuracy``; anomaly ``scores``, ``threshold`` and ``truth`` labels when the data have them. Raises
    HwgenError when the graph names no data or the data cannot be loaded."""
    from hwgen import tasks

    if "data" not in graph.meta:
        raise HwgenError("the graph names no dataset to take test windows from")
    data = tasks.reload_data(graph.meta["data"])
    n = min(int(max_windows), len(data.test.x))
    if n == 0:
        raise HwgenError("the test split is empty")
    task = task_of(graph)
    return {"task": task, "windows_plotted": n, "windows_test": len(data.test.x),
            **tasks.get(task).predictions(graph, data, n)}


def load_search(build_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """DIR/search.json, tolerantly: a list of trials or an object with ``trials`` (and maybe ``objectives``
    names and a ``pareto_front`` of trial numbers). A trial's objective values are its ``values`` (a list or
    an object) or its ``objectives`` (an object); it is Pareto-optimal when flagged ``"pareto": true`` or
    listed in ``pareto_front``. Returns ``({"trials", "usable", "names", "front"}, None)``; ``(None, None)``
    without a file; ``(None, why)`` when it cannot be used. ``usable`` holds (index, [(path, value)])."""
    path = Path(build_dir) / "search.json"
    if not path.is_file():
        return None, None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"search.json is not readable JSON ({exc})"
    trials = obj.get("trials") if isinstance(obj, dict) else obj
    if not isinstance(trials, list):
        return None, "search.json holds no list of trials"
    names = obj.get("objectives") if isinstance(obj, dict) else None
    names = [str(n) for n in names] if isinstance(names, list) else None
    listed = {t.get("number") for t in (obj.get("pareto_front") or []) if isinstance(t, dict)} \
        if isinstance(obj, dict) and isinstance(obj.get("pareto_front"), list) else set()
    usable, front = [], []
    for i, t in enumerate(trials):
        if not isinstance(t, dict):
            continue
        values = t.get("values") if t.get("values") is not None else t.get("objectives")
        field = "values" if t.get("values") is not None else "objectives"
        if isinstance(values, list):
            pairs = [(f"{i}/{field}/{j}", v) for j, v in enumerate(values)]
        elif isinstance(values, dict):
            names = names or list(values)
            pairs = [(f"{i}/{field}/{n}", values.get(n)) for n in names]
        else:
            continue
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in pairs):
            continue
        usable.append((i, pairs))
        if t.get("pareto") is True or (t.get("number") is not None and t.get("number") in listed):
            front.append(i)
    if not usable:
        return None, "search.json has no trials with numeric objective values"
    width = max(len(pairs) for _, pairs in usable)
    names = (names or [])[:width] + [f"objective {chr(ord('a') + j)}" for j in range(len(names or []), width)]
    return {"trials": trials, "usable": usable, "names": names, "front": front}, None




# ---- sections --------------------------------------------------------------------------------------------


def _header(r: dict, build_dir: Path) -> str:
    m, hw = r.get("model", {}), r.get("hardware", {})
    name = _v("report", "model/name", m.get("name")) if m.get("name") else _esc(build_dir.name)
    sub = (f'{_v("report", "model/task", m.get("task"))} on {_v("report", "model/dataset", m.get("dataset"))}'
           f' &middot; {_v("report", "hardware/board", hw.get("board"))} '
           f'({_v("report", "hardware/part", hw.get("part"))})')
    return f"<h1>hwgen build report: {name}</h1><p class=sub>{sub}</p>"


def _verdict(sim: dict | None) -> str:
    if not sim:
        return _na("not run")
    ok = sim.get("mismatches") == 0 and not sim.get("error")
    return f'<span class="{"ok" if ok else "bad"}">{"bit-exact" if ok else "MISMATCH"}</span>'


def _cards(r: dict) -> str:
    hw, sim, res, en, acc = (r.get(k) or {} for k in ("hardware", "sim", "resources", "energy", "accuracy"))
    cards = [
        ("latency", f'{_v("report", "hardware/latency_us", hw.get("latency_us"))} µs'),
        ("bit-exactness", _verdict(r.get("sim")) + (f' on {_v("report", "sim/windows", sim.get("windows"))} '
                                                     "windows" if sim else "")),
        ("LUT use", f'{_v("pct", "resources/lut|resources/capacity/lut", _pct(r, "resources/lut", "resources/capacity/lut"))} %'
         if res else _na("not run")),
        ("energy", f'{_v("report", "energy/uj_per_inference", en.get("uj_per_inference"))} µJ per inference'
         if en else _na("not run")),
    ]
    if "int_test_mse_units" in acc:
        cards.append(("deployed test MSE", _v("report", "accuracy/int_test_mse_units", acc["int_test_mse_units"])))
    return "<div class=cards>" + "".join(f"<div class=card><span class=l>{k}</span><b>{v}</b></div>"
                                         for k, v in cards) + "</div>"


def _pct(r: dict, a: str, b: str) -> float | None:
    x, y = _get(r, a), _get(r, b)
    if not isinstance(x, (int, float)) or not isinstance(y, (int, float)) or not y:
        return None
    return 100.0 * x / y


def _model(r: dict, g: dict) -> str:
    m = r.get("model", {})
    cfg = _get(g, "meta/config") or {}
    rows = [[label, _v("report", f"model/{key}", m.get(key))] for key, label in (
        ("window", "input window (steps)"), ("features", "input features"), ("d_model", "model width"),
        ("heads", "attention heads"), ("layers", "encoder layers"), ("macs", "multiply-accumulates per inference"),
        ("bits_w", "weight bits"), ("bits_a", "activation bits"))]
    for key, label in (("ffn", "feed-forward width"), ("norm", "normalisation"), ("bits_in", "input bits"),
                       ("bits_res", "residual-stream bits"), ("bits_prob", "softmax probability bits"),
                       ("bits_out", "output bits"), ("per_channel", "per-channel weight scales"),
                       ("horizon", "forecast steps scored (anomaly)")):
        if key in cfg and (key != "horizon" or cfg[key]):
            rows.append([label, _v("graph", f"meta/config/{key}", cfg[key])])
    return "<h2>Model and quantization</h2>" + _table(["", "value"], rows)


def _layers(g: dict) -> str:
    """Per node: operation, output shape and integer type, the types of its weights and biases."""
    consts = g.get("consts", {})
    rows = [["input", "input", _v("graph", "input/shape", _get(g, "input/shape")),
             _v("graph", "input/dtype", _get(g, "input/dtype")), "", "", ""]]
    for name, node in g.get("nodes", {}).items():
        k = f"nodes/{name}"
        attrs = node.get("attrs", {})
        typed = []
        for attr in ("weight", "bias"):
            c = attrs.get(attr)
            typed.append(_v("graph", f"consts/{c}/dtype", consts[c]["dtype"])
                         if isinstance(c, str) and c in consts else "")
        acc = _v("graph", f"{k}/attrs/widths/acc", _get(node, "attrs/widths/acc")) \
            if _get(node, "attrs/widths/acc") is not None else ""
        rows.append([_v("graph", f"{k}/name", name), _v("graph", f"{k}/op", node.get("op")),
                     _v("graph", f"{k}/out/shape", _get(node, "out/shape")),
                     _v("graph", f"{k}/out/dtype", _get(node, "out/dtype")), *typed, acc])
    return ("<h3>Integer types per node</h3><p>Types as <code>iN</code>/<code>uN</code>: signed/unsigned "
            "integers of N bits (from graph.json).</p>"
            + _table(["node", "op", "output shape", "output type", "weights", "bias", "accumulator bits"],
                     rows, numeric_from=2))


def _accuracy(r: dict) -> str:
    acc = r.get("accuracy")
    if not acc:
        return "<h2>Accuracy</h2>" + _not_run("scoring on the test split", "hwgen build MODEL.pt --out DIR")
    models = (("fp32", "FP32"), ("fake_quant", "quantized torch forward"), ("int", "deployed integer"))
    if any(isinstance(acc.get(k), dict) for k in ("fp32", "integer")):
        return _task_accuracy(acc, models)
    metrics: list[str] = []
    for key in acc:
        for prefix, _ in models:
            if key.startswith(f"{prefix}_test_") and isinstance(acc[key], (int, float)):
                metric = key[len(prefix) + 6:]
                if metric not in metrics:
                    metrics.append(metric)
    names = {"mse": "test MSE (normalised)", "mse_units": "test MSE (units²)", "mae": "test MAE (normalised)",
             "mae_units": "test MAE (units)", "accuracy": "test accuracy"}
    rows = [[label] + [_v("report", f"accuracy/{p}_test_{m}", acc.get(f"{p}_test_{m}")) for m in metrics]
            for p, label in models if any(f"{p}_test_{m}" in acc for m in metrics)]
    out = "<h2>Accuracy</h2>" + _table(["model"] + [names.get(m, m) for m in metrics], rows)
    d = acc.get("fake_quant_vs_integer")
    if isinstance(d, dict):
        out += (f'<p>Quantized torch forward against deployed integer outputs: a fraction '
                f'{_v("report", "accuracy/fake_quant_vs_integer/fraction_differ", d.get("fraction_differ"))} of '
                f'outputs differ, by at most {_v("report", "accuracy/fake_quant_vs_integer/max_lsb", d.get("max_lsb"))}'
                " LSB.</p>")
    return out


def _task_accuracy(acc: dict, models) -> str:
    """Accuracy of a classify/anomaly build: one row per model, a column per metric it recorded."""
    keys = {"int": "integer"}
    metrics: list[str] = []
    for p, _ in models:
        for m, v in (acc.get(keys.get(p, p)) or {}).items():
            if isinstance(v, (int, float)) and m not in metrics:
                metrics.append(m)
    rows = [[label] + [_v("report", f"accuracy/{keys.get(p, p)}/{m}", (acc.get(keys.get(p, p)) or {}).get(m))
                       for m in metrics] for p, label in models if isinstance(acc.get(keys.get(p, p)), dict)]
    out = "<h2>Accuracy</h2>"
    if isinstance(acc.get("windows"), int):
        out += f'<p>On {_v("report", "accuracy/windows", acc["windows"])} test windows.</p>'
    out += _table(["model"] + [_esc(m.replace("_", " ")) for m in metrics], rows)
    d = acc.get("fake_quant_vs_integer")
    if isinstance(d, dict) and "fraction_differ" in d:
        out += (f'<p>Quantized torch forward against deployed integer: a fraction '
                f'{_v("report", "accuracy/fake_quant_vs_integer/fraction_differ", d["fraction_differ"])} of '
                "outputs differ.</p>")
    return out


def _predictions(pred: dict[str, Any] | None, problem: str | None) -> str:
    out = "<h2>Predictions against truth</h2>"
    if pred is None:
        return out + f'<p class="na">not available: {_esc(problem)}</p>'
    span = (f'The deployed integer model (golden interpreter) on the first {_v("pred", "windows_plotted", pred["windows_plotted"])}'
            f' of {_v("pred", "windows_test", pred["windows_test"])} test windows.')
    try:
        img, alt, text = _PLOTS[pred["task"]](pred)
        return out + f"<p>{span}{text}</p>" + _img(img, alt)
    except (ValueError, KeyError, TypeError) as exc:
        return out + f'<p class="na">not available: cannot plot the predictions ({_esc(exc)})</p>'


def _plot_forecast(pred: dict[str, Any]) -> tuple[str, str, str]:
    img = plots.plot_forecast(pred["truth"], pred["pred"], pred.get("units", ""))
    return img, "forecast against truth", f' MSE on these windows: {_v("pred", "mse_units", pred["mse_units"])} (units²).'


def _plot_classify(pred: dict[str, Any]) -> tuple[str, str, str]:
    img = plots.plot_confusion(pred["truth"], pred["pred"], pred.get("labels"))
    return img, "confusion matrix", f' Accuracy on these windows: {_v("pred", "accuracy", pred["accuracy"])}.'


def _plot_anomaly(pred: dict[str, Any]) -> tuple[str, str, str]:
    img = plots.plot_anomaly(pred["scores"], pred["threshold"], pred.get("truth"))
    text = (f' Threshold {_v("pred", "threshold", pred["threshold"])}; '
            f'{_v("pred", "flagged", pred["flagged"])} windows score above it.')
    return img, "anomaly scores and threshold", text


# the plot of each task's predictions (hwgen.tasks: Task.predictions computes what it draws)
_PLOTS = {"forecast": _plot_forecast, "classify": _plot_classify, "anomaly": _plot_anomaly}


def _bit_exactness(r: dict) -> str:
    sim = r.get("sim")
    out = "<h2>Bit-exactness</h2>"
    if not sim:
        return out + _not_run("simulation of the Verilog against the golden model", "hwgen sim DIR")
    rows = [["verdict", _verdict(sim)],
            ["windows checked", _v("report", "sim/windows", sim.get("windows"))],
            ["mismatching output elements", _v("report", "sim/mismatches", sim.get("mismatches"))],
            ["simulator", _v("report", "sim/simulator", sim.get("simulator"))],
            ["stall probability (input idle, output back-pressure)",
             _v("report", "sim/stall_probability", sim.get("stall_probability"))],
            ["simulated cycles per second", _v("report", "sim/sim_cycles_per_s", sim.get("sim_cycles_per_s"))],
            ["wall time (s)", _v("report", "sim/wall_s", sim.get("wall_s"))]]
    fm = sim.get("first_mismatch")
    if isinstance(fm, dict):
        rows.append(["first mismatch", ", ".join(f"{_esc(k)} {_v('report', f'sim/first_mismatch/{k}', v)}"
                                                 for k, v in fm.items())])
    if sim.get("error"):
        rows.append(["error", _v("report", "sim/error", sim["error"])])
    return out + _table(["", ""], rows)


def _latency(r: dict, g: dict) -> str:
    hw, sim = r.get("hardware", {}), r.get("sim") or {}
    out = "<h2>Latency</h2>"
    if not hw:
        return out + _not_run("the build", "hwgen build MODEL.pt --out DIR")
    rows = [["analytic model, cycles per inference", _v("report", "hardware/latency_cycles", hw.get("latency_cycles"))],
            ["analytic model, µs", _v("report", "hardware/latency_us", hw.get("latency_us"))],
            ["analytic model, cycles between windows streamed back to back",
             _v("report", "hardware/throughput_cycles", hw.get("throughput_cycles"))],
            ["analytic model, inferences per second back to back",
             _v("report", "hardware/inferences_per_second", hw.get("inferences_per_second"), decimals=0)],
            ["clock (MHz)", _v("report", "hardware/clock_mhz", hw.get("clock_mhz"))],
            ["multipliers working each cycle", _v("report", "hardware/parallel", hw.get("parallel"))],
            ["DSP bound (MACs / DSPs), cycles", _v("report", "hardware/dsp_bound_cycles", hw.get("dsp_bound_cycles"))]]
    def mean_min_max(label: str, key: str) -> list[str]:  # sim[key] beside sim[key_min_max]
        mm = sim.get(f"{key}_min_max") or [None, None]
        return [f"simulation, {label} (mean; min, max)",
                f'{_v("report", f"sim/{key}", sim[key])} ({_v("report", f"sim/{key}_min_max/0", mm[0])}, '
                f'{_v("report", f"sim/{key}_min_max/1", mm[1])})']

    if sim.get("cycles_per_inference") is not None:
        rows.append(mean_min_max("cycles per inference", "cycles_per_inference"))
        if sim.get("cycles_between_windows") is not None:
            rows.append(mean_min_max("cycles between windows back to back", "cycles_between_windows"))
    else:
        rows.append(["simulation, cycles per inference", _na("not run (hwgen sim DIR)")])
    out += _table(["", ""], rows)
    out += _step_latency(sim)
    per_node = hw.get("cycles_per_node")
    if not per_node:
        return out + '<p class="na">no per-node latency recorded (rebuild with hwgen build)</p>'
    source = _v("report", "hardware/cycles_model", hw.get("cycles_model") or "analytic")
    out += (f"<h3>Cycles per node, analytic model</h3><p>Source: {source}: it follows each unit's schedule "
            "cycle by cycle. A node chained to its producer counts only the cycles it adds.</p>")
    nodes = g.get("nodes", {})
    names = [n for n in nodes if n in per_node] + [n for n in per_node if n not in nodes]  # graph order
    out += _img(plots.plot_bars(names, [per_node[n] for n in names], "cycles"), "cycles per node")
    rows = [[_v("graph", f"nodes/{n}/name", n) if n in nodes else _esc(n),
             _v("graph", f"nodes/{n}/op", _get(nodes, f"{n}/op")) if n in nodes else "",
             _v("report", f"hardware/cycles_per_node/{n}", per_node[n]),
             _v("pct", f"hardware/cycles_per_node/{n}|hardware/latency_cycles",
                _pct(r, f"hardware/cycles_per_node/{n}", "hardware/latency_cycles"))]
            for n in names if "/" not in n]
    return out + _table(["node", "op", "cycles", "% of the inference"], rows, numeric_from=2)


def _step_latency(sim: dict) -> str:
    """The simulation's cycles per controller step (a node and the nodes chained to it) beside the model's."""
    steps = sim.get("cycles_per_step")
    if not steps:
        return ('<h3>Cycles per layer, simulation</h3><p class="na">not recorded (run hwgen sim DIR)</p>'
                if sim else "")
    names = [" + ".join(st.get("nodes") or ["?"]) for st in steps]
    rows = [[" + ".join(_v("graph", f"nodes/{n}/name", n) for n in st.get("nodes") or []) or _na(),
             _v("report", f"sim/cycles_per_step/{i}/cycles", st.get("cycles")),
             _v("report", f"sim/cycles_per_step/{i}/min", st.get("min")),
             _v("report", f"sim/cycles_per_step/{i}/max", st.get("max")),
             _v("report", f"sim/cycles_per_step/{i}/model", st.get("model"))]
            for i, (name, st) in enumerate(zip(names, steps))]
    differ = [st for st in steps if st.get("model") is not None and st.get("cycles") != st.get("model")]
    waits = any(st.get("waits_on_input") for st in steps)
    timed = [st for st in steps if not st.get("waits_on_input")]
    verdict = ("the model differs on some steps" if differ else
               "the model predicts every step exactly" if all(st.get("model") is not None for st in timed) else "")
    if verdict and waits:
        verdict += " (the first takes the input as it arrives, so it waits on the stream: timed with the window)"
    return ("<h3>Cycles per layer, simulation</h3><p>Measured in the simulation of the emitted Verilog: the "
            "cycles the controller spends on each node (with the nodes chained to it), mean, min and max over "
            f"the simulated windows, beside the analytic model{': ' + verdict if verdict else ''}.</p>"
            + _img(plots.plot_bars(names, [st.get("cycles") or 0 for st in steps], "cycles"),
                   "simulated cycles per layer")
            + _table(["node(s)", "simulated cycles", "min", "max", "model"], rows))


def _resources(r: dict) -> str:
    res = r.get("resources")
    out = "<h2>Resources</h2>"
    if not res:
        return out + _not_run("synthesis", "hwgen estimate DIR")
    cap = res.get("capacity") or {}
    rows, names, use = [], [], []
    for key, label in RESOURCES:
        pct = _pct(r, f"resources/{key}", f"resources/capacity/{key}")
        rows.append([label, _v("report", f"resources/{key}", res.get(key)),
                     _v("report", f"resources/capacity/{key}", cap.get(key)),
                     _v("pct", f"resources/{key}|resources/capacity/{key}", pct),
                     _v("report", f"resources/model/{key}", _get(res, f"model/{key}"))])
        if pct is not None:
            names.append(label)
            use.append(pct)
    verdict = ('<span class="ok">fits</span>' if res.get("fits") else '<span class="bad">does NOT fit</span>')
    out += (f'<p>{_v("report", "resources/tool", res.get("tool"))} on {_v("report", "resources/part", res.get("part"))}:'
            f" the design {verdict} the part.</p>")
    out += _table(["resource", "used", "available", "use (%)", "resource model"], rows)
    if names:
        out += _img(plots.plot_bars(names, use, "% of the part", limit=100.0), "resource use")
    for i, problem in enumerate(res.get("problems") or []):
        out += f'<p class="bad">{_v("report", f"resources/problems/{i}", problem)}</p>'
    t = r.get("timing")
    if t:
        start, end = t.get("path_start") or {}, t.get("path_end") or {}
        out += (f'<p>Logic delay of the longest register-to-register path: '
                f'{_v("report", "timing/logic_delay_ns", t.get("logic_delay_ns"))} ns (routing excluded) from '
                f'{_v("report", "timing/path_start/type", start.get("type"))} '
                f'{_v("report", "timing/path_start/cell", start.get("cell"))} to '
                f'{_v("report", "timing/path_end/type", end.get("type"))} '
                f'{_v("report", "timing/path_end/cell", end.get("cell"))} &middot; '
                f'{_v("report", "timing/method", t.get("method"))}</p>'
                f'<p>Logic levels (proxy): {_v("report", "timing/logic_levels", t.get("logic_levels"))}</p>')
    return out


def _energy(r: dict) -> str:
    en = r.get("energy")
    out = "<h2>Energy</h2>"
    if not en:
        return out + _not_run("the energy estimate", "hwgen estimate DIR")
    rows = [[label, _v("report", f"energy/{key}", en.get(key))] for key, label in (
        ("uj_per_inference", "µJ per inference"), ("power_mw", "power (mW)"), ("static_mw", "static (mW)"),
        ("dynamic_mw", "dynamic (mW)"), ("latency_cycles", "cycles per inference used"),
        ("latency_source", "latency from"), ("method", "method")) if key in en]
    return out + _table(["", ""], rows)


def _search(build_dir: Path) -> str:
    found, problem = load_search(build_dir)
    if found is None and problem is None:
        return ""
    out = "<h2>Search: Pareto front</h2>"
    if found is None:
        return out + f'<p class="na">not available: {_esc(problem)}</p>'
    trials, usable, names, front = found["trials"], found["usable"], found["names"], set(found["front"])
    out += "<p>Trials of the search (search.json); the Pareto-optimal ones highlighted.</p>"
    two = [(i, pairs) for i, pairs in usable if len(pairs) >= 2]
    if two:
        v = np.array([[pairs[0][1], pairs[1][1]] for _, pairs in two], dtype=float)
        out += _img(plots.plot_pareto(v, [i in front for i, _ in two], names[:2]), "Pareto front")
    rows = []
    for i, pairs in usable:
        if front and i not in front:
            continue
        t = trials[i]
        params = t.get("params") if isinstance(t.get("params"), dict) else {}
        rows.append([_v("search", f"{i}/number", t["number"]) if "number" in t else ""]
                    + [_v("search", key, value) for key, value in pairs]
                    + [""] * (len(names) - len(pairs))
                    + ["; ".join(f"{_esc(k)} {_v('search', f'{i}/params/{k}', p)}" for k, p in params.items()
                                 if isinstance(p, (str, int, float, bool)))])
    heading = "Pareto-optimal trials" if front else "Trials (none flagged Pareto-optimal)"
    return out + f"<h3>{heading}</h3>" + _table(["trial"] + [_esc(n) for n in names] + ["parameters"], rows)



def _flatten(tree: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [kv for k, v in tree.items() for kv in _flatten(v, f"{prefix}/{k}")]
    if isinstance(tree, list) and len(tree) <= 8:
        return [kv for i, v in enumerate(tree) for kv in _flatten(v, f"{prefix}/{i}")]
    if isinstance(tree, (str, int, float, bool)):
        return [(prefix, tree)]
    return []


def _other(r: dict) -> str:
    rows = []
    for section in sorted(set(r) - RENDERED - {"vivado"}) + (["vivado"] if "vivado" in r else []):
        for key, value in _flatten(r[section], section):
            rows.append([f'<code class="k">{_esc(key.replace("/", " › "))}</code>', _v("report", key, value)])
    if not rows:
        return ""
    return "<h2>Other recorded results</h2>" + _table(["report.json key", "value"], rows)


# ---- the page --------------------------------------------------------------------------------------------


def report_html(build_dir: str | os.PathLike, max_windows: int = MAX_WINDOWS,
                predict: Callable[[Graph, int], dict[str, Any]] | None = None) -> str:
    """The report page of a build folder as one HTML string (images inline). ``predict`` computes the
    predictions section (default :func:`predictions`); a failure there renders as "not available"."""
    build_dir = Path(build_dir)
    graph = load_build(build_dir)
    r = read_report(build_dir)
    g = graph_tree(json.loads((build_dir / "graph.json").read_text()))
    pred, problem = None, None
    with progress.step(f"report: predicting up to {max_windows} test windows"):
        try:
            pred = (predict or predictions)(graph, max_windows)
        except HwgenError as exc:
            problem = str(exc)
    with progress.step("report: drawing"):
        parts = [_header(r, build_dir), _cards(r), _model(r, g), _layers(g), _accuracy(r), _predictions(pred, problem),
                 _bit_exactness(r), _latency(r, g), _resources(r), _energy(r), _search(build_dir), _other(r)]
    title = f"hwgen report: {_esc((r.get('model') or {}).get('name') or build_dir.name)}"
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{title}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
            f"<body>\n" + "\n".join(p for p in parts if p) + "\n</body></html>\n")


def render_report(build_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                  max_windows: int = MAX_WINDOWS) -> Path:
    """Write the report page to ``out`` (default DIR/report.html) atomically; return its path. HwgenError
    (one line) for a folder that is not a build."""
    build_dir = Path(build_dir)
    text = report_html(build_dir, max_windows)
    path = Path(out) if out is not None else build_dir / "report.html"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
