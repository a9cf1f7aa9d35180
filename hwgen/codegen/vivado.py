"""Vivado hand-off: a self-contained folder with the RTL, ``board.xdc``, ``build.tcl`` and ``build.sh``.

``write_vivado_project`` renders the jinja2 templates in ``rtl_templates/`` (StrictUndefined: a missing
variable is an error, never an empty string) for one board, constraining every top-level port. When the
board lacks a pin the top needs (no reset button, fewer LEDs, no busy line), a small board top
``hwgen_board_top`` is generated around the top: it drives ``rst`` from a power-on reset and leaves the
missing outputs unconnected; an input without a pin is an error. ``run_vivado`` runs the flow where
Vivado is installed and otherwise returns the command to run elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from hwgen.datafiles import templates_dir
from hwgen import jsonio
from hwgen.errors import HwgenError
from hwgen.estimate.boards import Board, load_board

BOARD_TOP = "hwgen_board_top"
POR_CYCLES = 15
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PIN = re.compile(r"[A-Z]{1,2}[0-9]{1,2}")
OPEN_PIN = re.compile(r"[A-Z]{0,2}[0-9]{1,3}")  # nextpnr pin names: ECP5 balls (B11), iCE40/Gowin numbers (35)
_PART = re.compile(r"[a-z0-9]+(-[0-9a-z]+)*")


@dataclass(frozen=True)
class Port:
    """A top-level port: ``direction`` is "input" or "output"; ``width`` in bits."""

    name: str
    direction: str
    width: int = 1

    def __post_init__(self):
        if not _IDENT.fullmatch(self.name):
            raise HwgenError(f"port name must be a plain Verilog identifier, not {self.name!r}")
        if self.direction not in ("input", "output"):
            raise HwgenError(f"port {self.name!r}: direction must be input or output, not {self.direction!r}")
        if self.width < 1:
            raise HwgenError(f"port {self.name!r}: width must be positive, not {self.width!r}")


# The SPI wrapper's interface (hwgen_spi_top), for reference and tests.
SPI_TOP_PORTS = (
    Port("clk", "input"),
    Port("rst", "input"),
    Port("spi_sclk", "input"),
    Port("spi_cs_n", "input"),
    Port("spi_mosi", "input"),
    Port("spi_miso", "output"),
    Port("busy", "output"),
    Port("led", "output", 4),
)


def ports_from_verilog(text: str, module: str) -> list[Port]:
    """The ports of ``module`` in Verilog ``text`` (ANSI or non-ANSI declarations), in declaration order."""
    m = re.search(rf"\bmodule\s+{re.escape(module)}\b(.*?)\bendmodule\b", text, flags=re.DOTALL)
    if not m:
        raise HwgenError(f"module {module!r} not found in the Verilog sources")
    body = re.sub(r"//[^\n]*|/\*.*?\*/", "", m.group(1), flags=re.DOTALL)
    decl = re.compile(
        r"\b(input|output|inout)\b\s*(?:wire|reg|logic)?\s*(?:signed)?\s*"
        r"(?:\[\s*(\d+)\s*:\s*(\d+)\s*\])?\s*"
        r"([A-Za-z_][\w$]*(?:\s*,\s*(?!input\b|output\b|inout\b)[A-Za-z_][\w$]*)*)"
    )
    ports: list[Port] = []
    seen = set()
    for d in decl.finditer(body):
        direction, hi, lo, names = d.groups()
        if direction == "inout":
            raise HwgenError(f"module {module!r}: inout ports are not supported ({names.strip()})")
        width = abs(int(hi) - int(lo)) + 1 if hi is not None else 1
        for name in re.split(r"\s*,\s*", names.strip()):
            if name and name not in seen:
                seen.add(name)
                ports.append(Port(name, direction, width))
    if not ports:
        raise HwgenError(f"module {module!r} declares no ports")
    return ports


def _braced(value: str) -> str:
    return "{" + str(value) + "}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["braced"] = _braced
    return env


def render_template(template: str, **context) -> str:
    """``rtl_templates/<template>`` rendered with ``context``; jinja2.UndefinedError if one is missing."""
    return _environment().get_template(template).render(**context)


def _pins_of(board: Board, port: Port, pattern: re.Pattern = _PIN) -> list[str] | None:
    pins = board.pins.get(port.name)
    if pins is None:
        return None
    pins = [pins] if isinstance(pins, str) else list(pins)
    for p in pins:
        if not pattern.fullmatch(p):
            raise HwgenError(f"board {board.name}: {p!r} (for port {port.name}) is not a package pin name")
    return pins


def plan_board_io(board: Board, ports: Sequence[Port], top: str, pin_pattern: re.Pattern = _PIN) -> dict:
    """How ``ports`` of ``top`` map onto ``board``: the Vivado top and its ports, every pin constraint,
    and the board top to generate when the board lacks pins (None when ``top`` fits the board as is).

    HwgenError naming the port when an input (other than rst) has no pin, or there is no clk port.
    """
    by_name = {p.name: p for p in ports}
    if "clk" not in by_name or by_name["clk"].direction != "input" or by_name["clk"].width != 1:
        raise HwgenError(f"top {top!r} needs a 1-bit input port 'clk' for the board clock")
    constraints, outer_ports, connections, wires, assigns, dropped = [], [], [], [], [], []
    por = False
    for port in ports:
        if port.name == "clk":
            outer_ports.append(port)
            connections.append({"port": "clk", "expr": "clk"})
            continue
        if port.name == "rst" and port.direction == "input" and port.width == 1:
            if board.reset_pin:
                constraints.append({"port": "rst", "pin": board.reset_pin, "iostandard": board.iostandard})
                outer_ports.append(port)
                connections.append({"port": "rst", "expr": "rst" if board.reset_active_high else "~rst"})
            else:
                por = True
                connections.append({"port": "rst", "expr": "por_rst"})
                dropped.append(f"rst: no reset pin on {board.name}; driven by the power-on reset")
            continue
        pins = _pins_of(board, port, pin_pattern)
        if pins is None:
            if port.direction == "input":
                known = ", ".join(sorted(board.pins)) or "(none)"
                raise HwgenError(f"board {board.name} has no pin for input port {port.name!r} of {top}; "
                                 f"it assigns: {known}")  # fmt: skip
            dropped.append(f"{port.name}: no pin on {board.name}; left unconnected")
            connections.append({"port": port.name, "expr": ""})
            continue
        if len(pins) < port.width and port.direction == "input":
            raise HwgenError(f"board {board.name} has {len(pins)} pin(s) for the {port.width}-bit input "
                             f"{port.name!r} of {top}")  # fmt: skip
        used = pins[: port.width]
        if port.width == 1:
            constraints.append({"port": port.name, "pin": used[0], "iostandard": board.iostandard})
        else:
            for bit, pin in enumerate(used):
                bit_port = f"{port.name}[{bit}]"
                constraints.append({"port": bit_port, "pin": pin, "iostandard": board.iostandard})
        outer_ports.append(Port(port.name, port.direction, len(used)))
        if len(used) < port.width:
            full = f"{port.name}_full"
            wires.append({"name": full, "width": port.width})
            assigns.append(f"{port.name} = {full}[{len(used) - 1}:0]")
            connections.append({"port": port.name, "expr": full})
            bits = f"{port.name}[{port.width - 1}:{len(used)}]"
            dropped.append(f"{bits}: no pins on {board.name}; left unconnected")
        else:
            connections.append({"port": port.name, "expr": port.name})
    shim = por or bool(dropped)
    return {
        "vivado_top": BOARD_TOP if shim else top,
        "ports": outer_ports if shim else list(ports),
        "constraints": constraints,
        "shim": (
            {"name": BOARD_TOP, "ports": outer_ports, "connections": connections, "wires": wires,
             "assigns": assigns, "dropped": dropped, "por": por}
            if shim else None
        ),  # fmt: skip
    }


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``, replacing an older ``final`` only once the new one is complete."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_vivado_project(
    out_dir: str | Path,
    verilog_files: Iterable[str | Path],
    board: Board | str,
    top: str = "hwgen_spi_top",
    ports: Sequence[Port] | None = None,
    *,
    part: str | None = None,
) -> Path:
    """Write ``out_dir/vivado/`` for ``board``: rtl/ (copies of ``verilog_files``), board.xdc, build.tcl,
    build.sh and hwgen_vivado.json (what was decided: part, tops, pins, dropped ports). Returns the folder.

    ``ports`` defaults to the ports of ``top`` read from the Verilog files; ``part`` overrides the board's
    part string (e.g. another speed grade). Written to a temporary folder and renamed into place, so a
    failure leaves no half-written folder.
    """
    board = load_board(board) if isinstance(board, str) else board
    part = part or board.part
    if not _PART.fullmatch(part):
        raise HwgenError(f"part must look like xc7s15ftgb196-1, not {part!r}")
    if not _IDENT.fullmatch(top):
        raise HwgenError(f"top must be a Verilog module name, not {top!r}")
    sources = [Path(f) for f in verilog_files]
    if not sources:
        raise HwgenError("write_vivado_project: no Verilog files given")
    for f in sources:
        if not f.is_file():
            raise HwgenError(f"Verilog file not found: {f}")
    names = [f.name for f in sources]
    if len(set(names)) != len(names):
        raise HwgenError(f"Verilog files must have distinct names, got {names}")
    if ports is None:
        text = "\n".join(f.read_text(errors="replace") for f in sources)
        ports = ports_from_verilog(text, top)
    ports = list(ports)

    plan = plan_board_io(board, ports, top)
    vivado_top = plan["vivado_top"]
    rtl_names = [f"rtl/{n}" for n in names]
    if plan["shim"]:
        rtl_names.append(f"rtl/{BOARD_TOP}.v")
    input_names = [p.name for p in plan["ports"] if p.direction == "input" and p.name != "clk"]
    output_names = [p.name + ("[*]" if p.width > 1 else "") for p in plan["ports"] if p.direction == "output"]
    context = {
        "board": board,
        "part": part,
        "top": vivado_top,
        "verilog_files": rtl_names,
        "clock": {"port": "clk", "pin": board.clock_pin, "iostandard": board.clock_iostandard},
        "constraints": plan["constraints"],
        "sclk_port": "spi_sclk" if any(p.name == "spi_sclk" for p in plan["ports"]) else None,
        "async_inputs": input_names,
        "async_outputs": output_names,
    }
    rendered = {
        "board.xdc": render_template("board.xdc.j2", **context),
        "build.tcl": render_template("build.tcl.j2", **context),
        "build.sh": render_template("build.sh.j2", **context),
    }
    if plan["shim"]:
        s = plan["shim"]
        unconnected = bool(s["wires"]) or any(not c["expr"] for c in s["connections"])
        rendered[f"rtl/{BOARD_TOP}.v"] = render_template(
            "board_top.v.j2", board=board, top=top, module_name=s["name"], ports=s["ports"],
            connections=s["connections"], wires=s["wires"], assigns=s["assigns"], dropped=s["dropped"],
            por=s["por"], unconnected=unconnected, por_cycles=POR_CYCLES, por_bits=POR_CYCLES.bit_length(),
            clock_port="clk",
        )  # fmt: skip
    manifest = {
        "board": board.name,
        "part": part,
        "top": top,
        "vivado_top": vivado_top,
        "clock_mhz": board.clock_mhz,
        "pins": {"clk": board.clock_pin, **{c["port"]: c["pin"] for c in plan["constraints"]}},
        "board_top": plan["shim"]["dropped"] if plan["shim"] else None,
        "notes": board.notes,
        "command": "vivado -mode batch -source build.tcl",
    }

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".vivado.tmp-", dir=out))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the hand-off folder is meant to be shared
        (tmp / "rtl").mkdir()
        for src, name in zip(sources, names):
            shutil.copyfile(src, tmp / "rtl" / name)
        for rel, text in rendered.items():
            (tmp / rel).write_text(text)
        (tmp / "hwgen_vivado.json").write_text(jsonio.dumps(manifest, str(out / "vivado" / "hwgen_vivado.json"), indent=2) + "\n")
        script = tmp / "build.sh"
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        _replace_dir(tmp, out / "vivado")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "vivado"


def run_vivado(build_dir: str | Path) -> dict:
    """Run ``build.tcl`` in ``build_dir`` (the folder ``write_vivado_project`` returned, or its parent)
    when ``vivado`` is on PATH, and parse its reports.

    Returns ``{"ran": True, "returncode", "reports": {...}}`` after a run, or ``{"ran": False, "command"}``
    (also printed) with the exact command to run on a machine with Vivado.
    """
    from hwgen.estimate.vivado_reports import parse_build_dir

    folder = Path(build_dir)
    if not (folder / "build.tcl").exists() and (folder / "vivado" / "build.tcl").exists():
        folder = folder / "vivado"
    if not (folder / "build.tcl").exists():
        raise HwgenError(f"no build.tcl in {build_dir}: run write_vivado_project first")
    args = ["vivado", "-mode", "batch", "-nojournal", "-log", "vivado.log", "-source", "build.tcl"]
    command = f"cd {folder.resolve()} && {' '.join(args)}"
    vivado = shutil.which("vivado")
    if vivado is None:
        print(f"[hwgen] vivado is not on PATH; on a machine with Vivado run:\n  {command}", file=sys.stderr)
        return {"ran": False, "command": command}
    print(f"[hwgen] running Vivado in {folder} (log: vivado.log)", file=sys.stderr, flush=True)
    proc = subprocess.run([vivado, *args[1:]], cwd=folder)
    reports = parse_build_dir(folder)
    return {"ran": True, "returncode": proc.returncode, "command": command, "reports": reports}
