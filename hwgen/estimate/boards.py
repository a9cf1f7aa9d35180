"""Part and board descriptions read from ``boards/<family>/*.toml`` (packaged as ``hwgen/boards``).

A *part* file (table ``[part]``) gives a device's resources; a *board* file (table ``[board]``) names its
part and gives the clock, the pins of the SPI link to the microcontroller, busy and LED pins, and the
bitstream configuration properties. Boards reference parts by ``part_family`` (e.g. ``"xc7s15"``).

Families: ``spartan7`` (Yosys family ``xc7``, Vivado) and the open-flow families ``ecp5``, ``ice40`` and
``gowin`` (``hwgen impl``: Yosys, nextpnr and the family's bitstream packer). A part of an open-flow family
counts its native resources: ``lut`` LUT4s, ``dsp`` the family's hard multipliers (MULT18X18D, SB_MAC16,
MULT18X18), ``bram_blocks`` block RAMs of ``bram_block_kbit`` each; ``bram36`` is then their capacity in
36-Kb units (a capacity figure, not a block count). ``[impl]`` of a part gives nextpnr's device option.
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
    bram_blocks: int = 0  # native block RAMs (0: count in bram36 tiles, the Xilinx way)
    bram_block_kbit: float = 36.0
    mult_width: tuple[int, int] = (25, 18)  # signed operand widths of one hard multiplier
    spram_kbit: int = 0  # single-port RAM blocks (iCE40 UP: 4 x 256 Kb), not used by the design today

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
    nextpnr: dict[str, str] = field(default_factory=dict)  # [impl]: arch, device (open-flow families)

    @property
    def open_flow(self) -> bool:
        """Whether ``hwgen impl`` can place, route and pack a bitstream for this part with open tools."""
        return bool(self.nextpnr)


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
    package: str | None = None  # open-flow families: nextpnr's package name (CABGA381, sg48, ...)
    speed: str | None = None  # open-flow families: the speed grade nextpnr times for (ECP5: 6, 7, 8)

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
    blocks = int(r.get("bram_blocks", 0))
    block_kbit = float(r.get("bram_block_kbit", 36.0))
    mult = r.get("mult_width", [25, 18])
    if not (isinstance(mult, list) and len(mult) == 2 and all(isinstance(w, int) and w > 0 for w in mult)):
        raise HwgenError(f"{where}: resources.mult_width must be two positive integers, not {mult!r}")
    bram36 = float(r["bram36"]) if "bram36" in r else (blocks * block_kbit / 36.0 if blocks else None)
    if bram36 is None:
        raise HwgenError(f"{where}: missing key 'bram36' (or 'bram_blocks')")
    res = PartResources(
        lut=int(_need(r, "lut", where)),
        ff=int(_need(r, "ff", where)),
        dsp=int(_need(r, "dsp", where)),
        bram36=bram36,
        lutram_luts=int(r.get("lutram_luts", 0) if blocks else _need(r, "lutram_luts", where)),
        lutram_kbit=int(r.get("lutram_kbit", 0) if blocks else _need(r, "lutram_kbit", where)),
        bram_blocks=blocks,
        bram_block_kbit=block_kbit,
        mult_width=(int(mult[0]), int(mult[1])),
        spram_kbit=int(r.get("spram_kbit", 0)),
    )
    impl = data.get("impl", {})
    if impl and not all(k in impl for k in ("arch", "device")):
        raise HwgenError(f"{where}: [impl] needs 'arch' and 'device'")
    return Part(
        name=p.get("name", name),
        family=_need(p, "family", where),
        yosys_family=p.get("yosys_family", "xc7"),
        default_part=_need(p, "default_part", where),
        resources=res,
        nextpnr={str(k): str(v) for k, v in impl.items()},
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
    device = load_part(_need(b, "part_family", where))
    if device.open_flow:
        _need(b, "package", where)
    return Board(
        name=b.get("name", name),
        description=b.get("description", name),
        part=_need(b, "part", where),
        device=device,
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
        package=b.get("package"),
        speed=str(b["speed"]) if "speed" in b else None,
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
