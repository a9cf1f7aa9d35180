"""Parse Vivado's text reports: report_utilization, report_timing_summary, report_power.

Each parser takes the report's text and returns a dict; a value the report does not contain is None
(never a guess). ``parse_build_dir`` reads the three files ``build.tcl`` writes.
"""

from __future__ import annotations

import re
from pathlib import Path

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"

# Row label in the utilization tables -> our key.
_UTIL_ROWS = {
    "Slice LUTs": "lut",
    "Slice LUTs*": "lut",
    "CLB LUTs": "lut",
    "LUT as Logic": "lut_logic",
    "LUT as Memory": "lut_memory",
    "Slice Registers": "ff",
    "Register as Flip Flop": "ff_flip_flop",
    "DSPs": "dsp",
    "Block RAM Tile": "bram36",
    "Bonded IOB": "iob",
}


def _table_row(text: str, label: str) -> list[str] | None:
    """The cells of the first ``| label | ... |`` row, label excluded."""
    for line in text.splitlines():
        s = line.strip()
        if not s.startswith("|"):
            continue
        cells = [c.strip() for c in s.strip("|").split("|")]
        if cells and cells[0] == label:
            return cells[1:]
    return None


def _to_number(cell: str) -> float | int | None:
    m = re.match(rf"^\s*({_NUM})", cell or "")
    if not m:
        return None
    v = float(m.group(1))
    return int(v) if v.is_integer() and "." not in m.group(1) else v


def parse_utilization(text: str) -> dict:
    """Used and available counts from ``report_utilization``.

    Returns ``{"lut", "lut_logic", "lut_memory", "ff", "ff_flip_flop", "dsp", "bram36", "iob"}`` (used;
    bram36 is Vivado's "Block RAM Tile", where a RAMB18 counts 0.5) and the same keys with ``_available``.
    Missing rows give None.
    """
    out: dict = {}
    for label, key in _UTIL_ROWS.items():
        if key in out and out[key] is not None:
            continue
        row = _table_row(text, label)
        # Columns: Used | Fixed | [Prohibited |] Available | Util%  (Prohibited appears from Vivado 2019).
        used = _to_number(row[0]) if row else None
        available = _to_number(row[-2]) if row and len(row) >= 3 else None
        out[key] = used
        out[f"{key}_available"] = available
    m = re.search(r"^\|\s*Device\s*:\s*(\S+)", text, flags=re.MULTILINE)
    out["device"] = m.group(1) if m else None
    return out


def parse_timing_summary(text: str) -> dict:
    """WNS/TNS/WHS/THS (ns), failing endpoint counts and whether timing is met, from report_timing_summary.

    ``met`` is True when Vivado says "All user specified timing constraints are met.", False when it says
    "Timing constraints are not met." (or the numbers show a failure), None when neither can be told.
    """
    out: dict = {
        "wns_ns": None, "tns_ns": None, "tns_failing_endpoints": None,
        "whs_ns": None, "ths_ns": None, "ths_failing_endpoints": None, "met": None,
    }  # fmt: skip
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*WNS\(ns\)\s+TNS\(ns\)", line):
            # The header, a dashes line, then the numbers (Vivado prints NA for unconstrained designs).
            for row in lines[i + 1 : i + 4]:
                fields = row.split()
                if fields and not set(row.strip()) <= {"-", " "}:
                    vals = [None if f == "NA" else _to_number(f) for f in fields]
                    if len(vals) >= 8:
                        out["wns_ns"], out["tns_ns"], out["tns_failing_endpoints"] = vals[0], vals[1], vals[2]
                        out["whs_ns"], out["ths_ns"], out["ths_failing_endpoints"] = vals[4], vals[5], vals[6]
                    break
            break
    if "All user specified timing constraints are met." in text:
        out["met"] = True
    elif "Timing constraints are not met." in text:
        out["met"] = False
    elif out["wns_ns"] is not None and out["whs_ns"] is not None:
        out["met"] = out["wns_ns"] >= 0 and out["whs_ns"] >= 0
    if out["met"] and out["wns_ns"] is not None and out["wns_ns"] < 0:
        out["met"] = False
    return out


def parse_power(text: str) -> dict:
    """Total on-chip, dynamic and device static power (W), junction temperature and confidence level."""

    def value(label: str) -> str | None:
        row = _table_row(text, label)
        return row[0] if row else None

    def watts(label: str) -> float | None:
        v = _to_number(value(label) or "")
        return None if v is None else float(v)

    confidence = value("Confidence Level")
    return {
        "total_w": watts("Total On-Chip Power (W)"),
        "dynamic_w": watts("Dynamic (W)"),
        "static_w": watts("Device Static (W)"),
        "junction_c": watts("Junction Temperature (C)"),
        "confidence": confidence or None,
    }


def parse_build_dir(build_dir: str | Path) -> dict:
    """The three reports ``build.tcl`` writes in ``build_dir/reports``: {"utilization", "timing", "power"};
    a report that is missing gives None."""
    reports = Path(build_dir) / "reports"
    parsers = {
        "utilization": ("utilization.rpt", parse_utilization),
        "timing": ("timing_summary.rpt", parse_timing_summary),
        "power": ("power.rpt", parse_power),
    }
    out = {}
    for key, (name, parse) in parsers.items():
        path = reports / name
        out[key] = parse(path.read_text(errors="replace")) if path.exists() else None
    return out
