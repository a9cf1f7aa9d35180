"""Part and board descriptions read from ``boards/spartan7/*.toml`` (packaged as ``hwgen/boards``).

A *part* file (table ``[part]``) gives a device's resources; a *board* file (table ``[board]``) names its
part and gives the clock, the pins of the SPI link to the microcontroller, busy and LED pins, and the
bitstream configuration properties. Boards reference parts by ``part_family`` (e.g. ``"xc7s15"``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from hwgen.datafiles import boards_dir
from hwgen.errors import HwgenError


@dataclass(frozen=True)
class PartResources:
    """Capacity of one device. ``bram36`` counts RAMB36 tiles (a RAMB18 is half a tile)."""

    lut: int
    ff: int
    dsp: int
    bram36: float
    lutram_luts: int
    lutram_kbit: int

    @property
    def carry4(self) -> int:
        """One CARRY4 per slice, four LUTs per slice."""
        return self.lut // 4


@dataclass(frozen=True)
class Part:
    """A device: ``name`` like ``"xc7s15"``, ``default_part`` the full Vivado part string."""

    name: str
    family: str
    yosys_family: str
    default_part: str
    resources: PartResources


@dataclass(frozen=True)
class Board:
    """A board: its Vivado part string, its device's resources, clock and pin assignment.

    ``pins`` maps a top-level port name to a package pin, or to a list of pins (bit 0 first) for a bus.
    ``reset_pin`` is None when the board has no reset input (the Vivado hand-off then drives ``rst``
    from a power-on reset). ``config`` holds ``set_property NAME VALUE [current_design]`` pairs and
    ``internal_vref`` bank -> voltage.
    """

    name: str
    description: str
    part: str
    device: Part
    iostandard: str
    clock_pin: str
    clock_mhz: float
    clock_iostandard: str
    pins: dict[str, str | list[str]] = field(default_factory=dict)
    reset_pin: str | None = None
    reset_active_high: bool = True
    config: dict[str, str] = field(default_factory=dict)
    internal_vref: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def resources(self) -> PartResources:
        return self.device.resources

    @property
    def clock_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz


def _read(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise HwgenError(f"{path}: not valid TOML ({e})") from e


def _files(kind: str) -> dict[str, Path]:
    """Name -> file for every ``boards/**/*.toml`` whose top table is ``kind`` ("board" or "part")."""
    found: dict[str, Path] = {}
    for path in sorted(boards_dir().glob("*/*.toml")):
        if kind in _read(path):
            found[path.stem] = path
    return found


def list_boards() -> list[str]:
    """Names of the described boards, sorted."""
    return sorted(_files("board"))


def list_parts() -> list[str]:
    """Names of the described devices (``xc7s15``, ...), sorted."""
    return sorted(_files("part"))


def _need(table: dict, key: str, where: str):
    if key not in table:
        raise HwgenError(f"{where}: missing key {key!r}")
    return table[key]


def load_part(name: str) -> Part:
    """The device ``name`` (e.g. ``"xc7s15"``); HwgenError naming the known parts if there is none."""
    files = _files("part")
    if name not in files:
        raise HwgenError(f"unknown part {name!r}; known parts: {', '.join(sorted(files)) or '(none)'}")
    data = _read(files[name])
    where = str(files[name])
    p, r = _need(data, "part", where), _need(data, "resources", where)
    res = PartResources(
        lut=int(_need(r, "lut", where)),
        ff=int(_need(r, "ff", where)),
        dsp=int(_need(r, "dsp", where)),
        bram36=float(_need(r, "bram36", where)),
        lutram_luts=int(_need(r, "lutram_luts", where)),
        lutram_kbit=int(_need(r, "lutram_kbit", where)),
    )
    return Part(
        name=p.get("name", name),
        family=_need(p, "family", where),
        yosys_family=p.get("yosys_family", "xc7"),
        default_part=_need(p, "default_part", where),
        resources=res,
    )


def load_board(name: str) -> Board:
    """The board ``name`` (e.g. ``"elastic_node_v5"``); HwgenError naming the known boards if unknown."""
    files = _files("board")
    if name not in files:
        raise HwgenError(f"unknown board {name!r}; known boards: {', '.join(sorted(files)) or '(none)'}")
    data = _read(files[name])
    where = str(files[name])
    b, clock = _need(data, "board", where), _need(data, "clock", where)
    iostandard = b.get("iostandard", "LVCMOS33")
    pins = dict(data.get("pins", {}))
    for port, pin in pins.items():
        if not (isinstance(pin, str) or (isinstance(pin, list) and all(isinstance(p, str) for p in pin))):
            raise HwgenError(f"{where}: pin of {port!r} must be a string or a list of strings, not {pin!r}")
    reset = data.get("reset", {})
    return Board(
        name=b.get("name", name),
        description=b.get("description", name),
        part=_need(b, "part", where),
        device=load_part(_need(b, "part_family", where)),
        iostandard=iostandard,
        clock_pin=_need(clock, "pin", where),
        clock_mhz=float(_need(clock, "mhz", where)),
        clock_iostandard=clock.get("iostandard", iostandard),
        pins=pins,
        reset_pin=reset.get("pin"),
        reset_active_high=bool(reset.get("active_high", True)),
        config={str(k): str(v) for k, v in data.get("config", {}).items()},
        internal_vref={str(k): str(v) for k, v in data.get("internal_vref", {}).items()},
        notes=list(b.get("notes", [])),
        sources=list(b.get("sources", [])),
    )


# A part name given where a board is expected stands for the board most users of that part have.
PART_BOARDS = {"xc7s15": "elastic_node_v5", "xc7s25": "arty_s7_25", "xc7s50": "arty_s7_50"}


def resolve_target(name: str) -> Board:
    """A board by name, or for a part name (xc7s15, ...) its usual board (``PART_BOARDS``)."""
    if name in list_boards():
        return load_board(name)
    if name in PART_BOARDS:
        return load_board(PART_BOARDS[name])
    known = sorted(set(list_boards()) | set(PART_BOARDS))
    raise HwgenError(f"unknown board or part {name!r}; known: {', '.join(known)}")
