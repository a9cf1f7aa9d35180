"""The terminal summary of a build folder (Markdown), read from its report.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwgen.steps.build import load_build, read_report


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def _accuracy_line(acc: dict[str, Any]) -> str:
    """The accuracy of the FP32 and the deployed integer model, in the task's own metrics."""
    task = acc.get("task", "forecast")
    fp32, integer = acc.get("fp32") or {}, acc.get("integer") or {}
    if task == "classify":
        return (f"- accuracy on {acc.get('windows')} test windows (accuracy / macro-F1): FP32 "
                f"{_fmt(fp32.get('accuracy'), '.3f')} / {_fmt(fp32.get('macro_f1'), '.3f')}, deployed integer "
                f"{_fmt(integer.get('accuracy'), '.3f')} / {_fmt(integer.get('macro_f1'), '.3f')}")
    if task == "anomaly":
        return (f"- anomaly detection on {acc.get('windows')} test windows (precision / recall / F1, ROC-AUC): "
                f"FP32 {_fmt(fp32.get('precision'), '.3f')} / {_fmt(fp32.get('recall'), '.3f')} / "
                f"{_fmt(fp32.get('f1'), '.3f')}, {_fmt(fp32.get('roc_auc'), '.3f')}; deployed integer "
                f"{_fmt(integer.get('precision'), '.3f')} / {_fmt(integer.get('recall'), '.3f')} / "
                f"{_fmt(integer.get('f1'), '.3f')}, {_fmt(integer.get('roc_auc'), '.3f')}")
    return (f"- accuracy (test MSE, units²): FP32 {_fmt(acc.get('fp32_test_mse_units'), '.1f')}, "
            f"deployed integer {_fmt(acc.get('int_test_mse_units'), '.1f')}")


def summary_markdown(build_dir: str | Path) -> str:
    """A short Markdown summary: model, accuracy, bit-exactness, latency, resources, energy, hand-off."""
    build_dir = Path(build_dir)
    load_build(build_dir)
    r = read_report(build_dir)
    m, hw, acc = r.get("model", {}), r.get("hardware", {}), r.get("accuracy", {})
    lines = [f"## {m.get('name') or build_dir.name}: {m.get('dataset')} {m.get('task')}", ""]
    window = f"window {m.get('window')}"
    if m.get("horizon"):  # a forecasting anomaly detector's input: its window, then the steps it scores
        window = f"input {m.get('window')} steps ({m.get('window') - m['horizon']} + {m['horizon']} scored)"
    lines.append(f"- model: {window} x {m.get('features')} features, d_model {m.get('d_model')}, "
                 f"{m.get('heads')} head(s), {m.get('layers')} layer(s), W{m.get('bits_w')}A{m.get('bits_a')}, "
                 f"{m.get('macs')} MACs per inference")
    if acc:
        lines.append(_accuracy_line(acc))
    sim = r.get("sim")
    if sim:
        verdict = "BIT-EXACT" if sim.get("mismatches") == 0 and not sim.get("error") else "MISMATCH"
        lines.append(f"- simulation ({sim.get('simulator')}): {verdict} on {sim.get('windows')} windows "
                     f"({sim.get('mismatches')} mismatching elements), "
                     f"{_fmt(sim.get('cycles_per_inference'), '.0f')} cycles per inference measured")
    else:
        lines.append("- simulation: not run (hwgen sim)")
    if hw:
        lines.append(f"- latency: {hw.get('latency_cycles')} cycles = {_fmt(hw.get('latency_us'), '.1f')} µs at "
                     f"{hw.get('clock_mhz')} MHz with {hw.get('parallel')} multipliers "
                     f"(DSP bound {hw.get('dsp_bound_cycles')} cycles)")
    res = r.get("resources")
    if res:
        lines.append(f"- resources ({res.get('tool')}): LUT {res.get('lut')}, FF {res.get('ff')}, "
                     f"DSP {res.get('dsp')}, BRAM36 {res.get('bram36')} -> "
                     f"{'fits' if res.get('fits') else 'DOES NOT FIT'} {hw.get('part')}")
    energy = r.get("energy")
    if energy:
        lines.append(f"- energy: {_fmt(energy.get('uj_per_inference'), '.3f')} µJ per inference "
                     f"({energy.get('method')})")
    if (build_dir / "vivado").is_dir():
        lines.append(f"- Vivado hand-off: {build_dir / 'vivado'} (build.sh)")
    return "\n".join(lines)
