"""The terminal summary of a build folder (Markdown), read from its report.json."""

from __future__ import annotations

from pathlib import Path

from hwgen import tasks
from hwgen.steps.build import load_build, read_report
from hwgen.tasks.base import fmt as _fmt


def summary_markdown(build_dir: str | Path) -> str:
    """A short Markdown summary: model, accuracy, bit-exactness, latency, resources, energy, hand-off."""
    build_dir = Path(build_dir)
    load_build(build_dir)
    r = read_report(build_dir)
    m, hw, acc = r.get("model", {}), r.get("hardware", {}), r.get("accuracy", {})
    lines = [f"## {m.get('name') or build_dir.name}: "
             + " ".join(str(v) for v in (m.get("dataset"), m.get("task")) if v is not None), ""]
    window = f"window {m.get('window')}"
    if m.get("horizon"):  # a forecasting anomaly detector's input: its window, then the steps it scores
        window = f"input {m.get('window')} steps ({m.get('window') - m['horizon']} + {m['horizon']} scored)"
    lines.append(f"- model: {window} x {m.get('features')} features, d_model {m.get('d_model')}, "
                 f"{m.get('heads')} head(s), {m.get('layers')} layer(s), W{m.get('bits_w')}A{m.get('bits_a')}, "
                 f"{m.get('macs')} MACs per inference")
    if acc:
        lines.append(tasks.get(acc.get("task", "forecast")).summary_line(acc))
    sim = r.get("sim")
    if sim:
        verdict = "BIT-EXACT" if sim.get("mismatches") == 0 and not sim.get("error") else "MISMATCH"
        lines.append(f"- simulation ({sim.get('simulator')}): {verdict} on {sim.get('windows')} windows "
                     f"({sim.get('mismatches')} mismatching elements), "
                     f"{_fmt(sim.get('cycles_per_inference'), '.0f')} cycles per inference measured"
                     + (f", {_fmt(sim['cycles_between_windows'], '.0f')} between windows back to back"
                        if sim.get("cycles_between_windows") is not None else ""))
    else:
        lines.append("- simulation: not run (hwgen sim)")
    if hw:
        lines.append(f"- latency: {hw.get('latency_cycles')} cycles = {_fmt(hw.get('latency_us'), '.1f')} µs at "
                     f"{hw.get('clock_mhz')} MHz with {hw.get('parallel')} multipliers "
                     f"(DSP bound {hw.get('dsp_bound_cycles')} cycles)")
        if hw.get("throughput_cycles") is not None:
            lines.append(f"- throughput (windows back to back): one window per {hw['throughput_cycles']} cycles "
                         f"= {_fmt(hw.get('inferences_per_second'), ',.0f')} inferences/s")
    res = r.get("resources")
    if res:
        units = res.get("units") or {}  # an open-flow family's cells (hwgen.steps.impl.estimate_open)
        bram = f"{units['bram']} {res.get('bram')}" if units else f"BRAM36 {res.get('bram36')}"
        lines.append(f"- resources ({res.get('tool')}): {units.get('lut', 'LUT')} {res.get('lut')}, FF {res.get('ff')}, "
                     f"{units.get('dsp', 'DSP')} {res.get('dsp')}, {bram} -> "
                     f"{'fits' if res.get('fits') else 'DOES NOT FIT'} {hw.get('part')}")
    energy = r.get("energy")
    if energy:
        lines.append(f"- energy: {_fmt(energy.get('uj_per_inference'), '.3f')} µJ per inference "
                     f"({energy.get('method')})")
    for name, impl in sorted((r.get("implementation") or {}).items()):  # hwgen impl (open flow)
        fmax = ", ".join(f"{v:g} MHz" for v in (impl.get("fmax_mhz") or {}).values()) or "none"
        lines.append(f"- open implementation on {name} ({impl.get('device')}): post-route Fmax {fmax}, target "
                     f"{impl.get('clock_mhz')} MHz {'met' if impl.get('met') else 'NOT met'}"
                     + (f"; {impl['error']}" if impl.get("error") else ""))
    if (build_dir / "vivado").is_dir():
        lines.append(f"- Vivado hand-off: {build_dir / 'vivado'} (build.sh)")
    return "\n".join(lines)
