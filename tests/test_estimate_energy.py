"""Energy per inference: the documented model and Vivado's report replacing it."""

import pytest

from hwgen.errors import HwgenError
from hwgen.estimate.energy import COEFFICIENTS, estimate, model_power_mw

DESIGN = {"lut": 5000, "lut_logic": 4800, "lutram_luts": 200, "ff": 6000, "dsp": 20, "bram36": 8}

POWER_REPORT = """\
1. Summary
----------

+--------------------------+--------------+
| Total On-Chip Power (W)  | 0.071        |
| Design Power Budget (W)  | Unspecified* |
| Power Budget Margin (W)  | NA           |
| Dynamic (W)              | 0.039        |
| Device Static (W)        | 0.032        |
| Effective TJA (C/W)      | 4.9          |
| Max Ambient (C)          | 84.7         |
| Junction Temperature (C) | 25.3         |
| Confidence Level         | Medium       |
+--------------------------+--------------+
"""


def test_energy_is_power_times_latency():
    e = estimate(DESIGN, latency_cycles=4750, clock_mhz=100.0)
    assert e["method"].startswith("estimate: ")
    assert e["uj_per_inference"] == pytest.approx(e["power_mw"] * 4750 / 100.0 / 1000.0, rel=1e-3)
    assert e["power_mw"] == pytest.approx(e["static_mw"] + e["dynamic_mw"], abs=0.02)
    assert e["static_mw"] == COEFFICIENTS["static_mw"]["xc7s15"]
    # a ballpark, not a wild number: tens to a few hundred mW for a full XC7S15 design at 100 MHz
    assert 30 < e["power_mw"] < 300


def test_more_resources_cost_more_power_and_clock_scales_dynamic():
    base = model_power_mw(DESIGN, 100.0)
    more_dsp = model_power_mw({**DESIGN, "dsp": 40}, 100.0)
    assert more_dsp["dynamic_mw"] > base["dynamic_mw"]
    assert more_dsp["static_mw"] == base["static_mw"]
    half = model_power_mw(DESIGN, 50.0)
    assert half["dynamic_mw"] == pytest.approx(base["dynamic_mw"] / 2)
    assert model_power_mw(DESIGN, 100.0, toggle=0.25)["dynamic_mw"] > base["dynamic_mw"]


def test_vivado_report_replaces_the_model(tmp_path):
    path = tmp_path / "power.rpt"
    path.write_text(POWER_REPORT)
    for source in (path, str(path)):
        e = estimate(DESIGN, latency_cycles=1000, clock_mhz=100.0, vivado_power=source)
        assert e["method"] == "vivado report_power"
        assert e["power_mw"] == 71.0 and e["static_mw"] == 32.0 and e["dynamic_mw"] == 39.0
        assert e["uj_per_inference"] == pytest.approx(71.0 * 1000 / 100.0 / 1000.0)
    with pytest.raises(HwgenError, match="Total On-Chip Power"):
        estimate(DESIGN, 1000, 100.0, vivado_power={"total_w": None})


def test_bad_arguments_are_named():
    with pytest.raises(HwgenError, match="clock_mhz"):
        estimate(DESIGN, 10, 0)
    with pytest.raises(HwgenError, match="latency_cycles"):
        estimate(DESIGN, -1, 100.0)
    with pytest.raises(HwgenError, match="xc7a35t"):
        estimate(DESIGN, 10, 100.0, part="xc7a35t")
