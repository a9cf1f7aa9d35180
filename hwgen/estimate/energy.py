"""Energy per inference: a first-order power model of a small Spartan-7, or Vivado's power report.

Model (all coefficients in ``COEFFICIENTS``, one place)::

    power_mw = static_mw(part)
             + clock_mhz * ( clock_tree_uw_per_mhz
                           + toggle/0.125 * ( lut * lut_uw_per_mhz + ff * ff_uw_per_mhz
                                            + lutram_luts * lutram_uw_per_mhz )
                           + dsp * dsp_uw_per_mhz + bram36 * bram36_uw_per_mhz ) / 1000
    uj_per_inference = power_mw * latency_cycles / clock_mhz / 1000

Sources and assumptions, so that nobody mistakes the result for a measurement:

* Static power: Spartan-7 is built on TSMC 28 nm HPL (AMD WP488, WP389); XPE/Vivado put the device static
  power of small 7-series parts at 25 °C ambient, typical process, in the tens of milliwatts. The values
  below (XC7S15 30 mW, XC7S25 45 mW, XC7S50 65 mW) are a ballpark scaled with device size, NOT read
  from XPE on this machine: replace them with XPE (UG440) for your part, voltage and temperature.
* Dynamic power is C·V²·f per resource at VCCINT = 1.0 V. The per-resource coefficients are the order of
  magnitude XPE gives for 28 nm 7-series fabric at its default toggle rate of 12.5 % (logic, flip-flops,
  including local routing), with DSP48E1 and RAMB36 counted as fully active every cycle (the MAC array
  and weight memories of this accelerator are busy most cycles of an inference). Expect ±50 %.
* I/O, clock managers and the configuration logic are not modelled (the accelerator uses a handful of
  LVCMOS33 pins at SPI rates and no MMCM).
* The whole chip is charged to the inference: energy = total power x latency. Idle power between
  inferences is the board's business.

When Vivado has run, ``report_power``'s "Total On-Chip Power" replaces the model (method
"vivado report_power"); it is itself an estimate from vectorless activity unless given a SAIF file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hwgen.errors import HwgenError

COEFFICIENTS = {
    # Device static power at 25 °C ambient, typical process (mW): ballpark, see the module docstring.
    "static_mw": {"xc7s15": 30.0, "xc7s25": 45.0, "xc7s50": 65.0},
    # Dynamic power per resource per MHz (µW/MHz) at a 12.5 % toggle rate, VCCINT 1.0 V.
    "lut_uw_per_mhz": 0.010,
    "ff_uw_per_mhz": 0.004,
    "lutram_uw_per_mhz": 0.020,
    "dsp_uw_per_mhz": 10.0,
    "bram36_uw_per_mhz": 15.0,
    # Global clock buffer and spine (µW/MHz), independent of the design size.
    "clock_tree_uw_per_mhz": 20.0,
    # The toggle rate the LUT/FF/LUTRAM coefficients are given at.
    "reference_toggle": 0.125,
}


def model_power_mw(resources: Mapping, clock_mhz: float, part: str = "xc7s15", toggle: float = 0.125) -> dict:
    """Static, dynamic and total power (mW) of ``resources`` at ``clock_mhz`` from ``COEFFICIENTS``."""
    c = COEFFICIENTS
    if part not in c["static_mw"]:
        known = ", ".join(sorted(c["static_mw"]))
        raise HwgenError(f"no static power figure for part {part!r}; known: {known}")
    if clock_mhz <= 0:
        raise HwgenError(f"clock_mhz must be positive, not {clock_mhz!r}")
    if not 0 <= toggle <= 1:
        raise HwgenError(f"toggle must be in [0, 1], not {toggle!r}")
    scale = toggle / c["reference_toggle"]
    lut_logic = resources.get("lut_logic", resources.get("lut", 0) - resources.get("lutram_luts", 0))
    fabric = scale * (
        lut_logic * c["lut_uw_per_mhz"]
        + resources.get("ff", 0) * c["ff_uw_per_mhz"]
        + resources.get("lutram_luts", 0) * c["lutram_uw_per_mhz"]
    )
    hard = resources.get("dsp", 0) * c["dsp_uw_per_mhz"] + resources.get("bram36", 0) * c["bram36_uw_per_mhz"]
    dynamic = clock_mhz * (c["clock_tree_uw_per_mhz"] + fabric + hard) / 1000.0
    static = c["static_mw"][part]
    return {"static_mw": static, "dynamic_mw": dynamic, "total_mw": static + dynamic}


def estimate(
    resources: Mapping,
    latency_cycles: int,
    clock_mhz: float,
    *,
    part: str = "xc7s15",
    toggle: float = 0.125,
    vivado_power: Mapping | str | Path | None = None,
) -> dict:
    """Energy of one inference taking ``latency_cycles`` at ``clock_mhz``.

    Returns ``{"uj_per_inference", "power_mw", "static_mw", "dynamic_mw", "method"}``. With
    ``vivado_power`` (a dict from ``vivado_reports.parse_power`` or the path of a report_power text file)
    Vivado's total on-chip power is used and method is "vivado report_power"; otherwise the model above
    ("estimate: ...").
    """
    if latency_cycles < 0:
        raise HwgenError(f"latency_cycles must be >= 0, not {latency_cycles!r}")
    if clock_mhz <= 0:
        raise HwgenError(f"clock_mhz must be positive, not {clock_mhz!r}")
    if vivado_power is not None:
        if not isinstance(vivado_power, Mapping):
            from hwgen.estimate.vivado_reports import parse_power

            vivado_power = parse_power(Path(vivado_power).read_text(errors="replace"))
        total_w = vivado_power.get("total_w")
        if total_w is None:
            raise HwgenError("the Vivado power report has no 'Total On-Chip Power (W)'")
        static_w, dynamic_w = vivado_power.get("static_w"), vivado_power.get("dynamic_w")
        power = {
            "total_mw": 1000.0 * total_w,
            "static_mw": None if static_w is None else 1000.0 * static_w,
            "dynamic_mw": None if dynamic_w is None else 1000.0 * dynamic_w,
        }
        method = "vivado report_power"
    else:
        power = model_power_mw(resources, clock_mhz, part, toggle)
        method = (
            f"estimate: hwgen.estimate.energy model ({part} static {power['static_mw']:g} mW ballpark + "
            f"per-resource dynamic at {toggle:.1%} toggle, {clock_mhz:g} MHz); not a measurement"
        )
    uj = power["total_mw"] * latency_cycles / clock_mhz / 1000.0
    return {
        "uj_per_inference": round(uj, 4),
        "power_mw": round(power["total_mw"], 2),
        "static_mw": None if power["static_mw"] is None else round(power["static_mw"], 2),
        "dynamic_mw": None if power["dynamic_mw"] is None else round(power["dynamic_mw"], 2),
        "method": method,
    }
