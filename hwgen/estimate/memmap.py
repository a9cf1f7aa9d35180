"""How Yosys synth_xilinx maps each memory of the accelerator onto 7-series primitives, without Yosys.

``synth_xilinx -family xc7`` runs ``memory_libmap`` with the block RAM library ``brams_xc4v.txt``
(``HAS_SIZE_36``, ``HAS_CASCADE``, ``HAS_CONFLICT_BUG``, ``HAS_MIXWIDTH_SDP``), the LUTRAM library ``lutrams_xc5v.txt`` and
``-logic-cost-rom 1/64``. For each memory it prices every candidate and keeps the cheapest:

* block RAM, true dual port (ports A and B, each read or write) or simple dual port (one write port W,
  one read port R), each as RAMB18E1 (``HALF``: 16 Kbit, 1-18 bits per port true dual port, up to 36
  simple dual port; cost 129), RAMB36E1 (``FULL``: 32 Kbit, up to 36 / 72 bits; cost 257) or two
  cascaded RAMB36E1 (``CASCADE``: 64 Kbit, up to 9 bits; cost 513);
* distributed RAM (not for ROMs): simple dual port RAM32M / RAM64M (32 x 6 or 64 x 3 bits, 4 LUTs;
  cost 1 + 7 per used width share), dual port (32 x 4 .. 128 x 1, cost 8 per share) or quad port (32 x 2,
  64 x 1, cost 7 per share);
* logic: one cost unit per bit of a RAM, 1/64 per bit of a ROM; chosen unless a primitive is strictly
  cheaper than the truncated logic cost.

A candidate's cost (``MemMapping::handle_geom``): the cell cost times the cells, data width rounded up to
the write-enable granularity (9-bit bytes in block RAM) and to the chosen port width, times the depth
blocks and times the copies needed for the read ports (a write port and each read port not sharing its
address take one port of a copy), plus 0.5 per bit of read multiplexer and write decoder over depth blocks
and 2 per emulated read register. Before mapping, Yosys drops ROM data columns that are constant and
memories nothing reads (``opt_mem``); :func:`hwgen.estimate.model.memories` does the same. A memory is
priced at its full width: a 5-bit buffer read at 4 bits became four 16K x 1 RAMB18 (five priced, the one
holding the unread bit removed), not the three of a 4-bit one, so flat buffers are only as wide as their
values are read (``hwgen.hw.memory``). Checked against the
mapping Yosys 0.70 logged for every memory of the calibration designs (``bench/resources_model.py``) and
its ``memory_libmap`` debug costs for one of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LOGIC_COST_ROM = 1.0 / 64.0
LOGIC_COST_RAM = 1.0
FACTOR_MUX = FACTOR_DEMUX = 0.5
FACTOR_EMU = 2
BRAM_BYTE = 9
# (name, kind, mode or abits, abits, widths (index = log2 step), cost, widthscale, primitive, ports)
# ports: "tdp" two read/write ports; "sdp" one write + one read; LUTRAM "sdp" (W + R), "dp" (RW + R),
# "qp" (RW + 3 R)
BLOCK = [
    ("BRAM_TDP", "HALF", 14, (1, 2, 4, 9, 18), 129, "tdp", {"RAMB18E1": 1}),
    ("BRAM_TDP", "FULL", 15, (1, 2, 4, 9, 18, 36), 257, "tdp", {"RAMB36E1": 1}),
    ("BRAM_TDP", "CASCADE", 16, (1, 2, 4, 9), 513, "tdp", {"RAMB36E1": 2}),
    ("BRAM_SDP", "HALF", 14, (1, 2, 4, 9, 18, 36), 129, "sdp", {"RAMB18E1": 1}),
    ("BRAM_SDP", "FULL", 15, (1, 2, 4, 9, 18, 36, 72), 257, "sdp", {"RAMB36E1": 1}),
]
# (name, abits, width, cost, widthscale, ports, LUTs per cell)
LUTRAM = [
    ("LUTRAM_SDP", 5, 6, 8, 7, "sdp", 4), ("LUTRAM_SDP", 6, 3, 8, 7, "sdp", 4),
    ("LUTRAM_DP", 5, 4, 8, 8, "dp", 4), ("LUTRAM_DP", 6, 2, 8, 8, "dp", 4), ("LUTRAM_DP", 7, 1, 8, 8, "dp", 4),
    ("LUTRAM_QP", 5, 2, 7, 7, "qp", 4), ("LUTRAM_QP", 6, 1, 7, 7, "qp", 4),
]


@dataclass(frozen=True)
class Mem:
    """One memory as Yosys sees it before mapping: ``width`` data bits (constant ROM columns removed),
    ``depth`` words, ``reads`` synchronous read ports, ``writes`` write ports (0: a ROM), ``lanes`` write
    enables per word (the wide copies' byte lanes of ``width // lanes`` bits), ``block``: forced into block
    RAM (``rom_style = "block"``), ``distributed``: forced into LUTRAM (``ram_style = "distributed"``)."""

    name: str
    width: int
    depth: int
    reads: int
    writes: int = 1
    lanes: int = 1
    block: bool = False
    distributed: bool = False


@dataclass(frozen=True)
class Mapping:
    """What a memory becomes: ``kind`` (logic, BRAM_TDP, BRAM_SDP, LUTRAM_SDP, ...), block RAM halves,
    LUTRAM LUTs, and its cost."""

    kind: str
    ramb18: int = 0
    ramb36: int = 0
    lutram_luts: int = 0
    cells: int = 0
    depth_blocks: int = 1
    cost: float = 0.0

    @property
    def bram36(self) -> float:
        return self.ramb36 + 0.5 * self.ramb18


def _swizzle(mem: Mem, byte: int) -> int:
    """Data bits per word once every write-enable lane starts on a multiple of ``byte`` bits."""
    lane_bits = mem.width // mem.lanes
    return mem.lanes * -(-lane_bits // byte) * byte


def _copies(ports: str, mem: Mem) -> int | None:
    """Copies of the memory its read ports need on a primitive with ``ports`` (None: not mappable): a
    read port takes a free port of a copy; the write port takes one in every copy."""
    if ports == "tdp":
        return max(1, -(-mem.reads // 2)) if mem.writes == 0 else max(1, mem.reads)
    if ports == "sdp":
        return max(1, mem.reads)
    if ports == "dp":  # RW (taken by the write port) + R
        return max(1, mem.reads) if mem.writes else None
    if ports == "qp":  # RW + three R
        return max(1, -(-mem.reads // 3)) if mem.writes else None
    return None


def _geometry(mem: Mem, abits: int, widths: tuple[int, ...], cost: float, widthscale: float, copies: int,
              byte: int) -> tuple[float, int, int]:
    """(cost, cells, depth blocks) of the cheapest port width for one primitive."""
    best = None
    for log2, unit in enumerate(widths):
        eff_byte = unit if (byte == 0 or byte > unit) else byte
        if mem.writes == 0:
            eff_byte = 1
        mult_a = -(-mem.depth // (1 << (abits - log2)))
        repl = -(-(mult_a * _swizzle(mem, eff_byte)) // unit)
        demux = mult_a * mem.lanes * mem.writes if mult_a != 1 else 0
        mux = (mult_a - 1) * mem.width * mem.reads
        c = (cost - widthscale) * repl * copies + widthscale * mult_a * mem.width / unit * copies
        c += FACTOR_MUX * mux + FACTOR_DEMUX * demux + FACTOR_EMU * mem.reads
        if best is None or c < int(best[0]):
            best = (c, repl * copies, mult_a)
    return best


def map_memory(mem: Mem) -> Mapping:
    """The primitive Yosys synth_xilinx (0.70, xc7) picks for ``mem``."""
    if mem.width <= 0 or mem.depth <= 0 or mem.reads == 0:
        return Mapping("removed")
    logic = mem.width * mem.depth * (LOGIC_COST_RAM if mem.writes else LOGIC_COST_ROM)
    best = None if mem.block else Mapping("logic", cost=logic)
    best_cost = math.inf if mem.block else int(logic)
    if mem.distributed:  # ``ram_style = "distributed"``: LUTRAM only
        best, best_cost = None, math.inf
    if mem.writes and not mem.block:  # the LUTRAM library comes first; it prunes ROMs
        for name, abits, width, cost, ws, ports, luts in LUTRAM:
            copies = _copies(ports, mem)
            if copies is None:
                continue
            c, cells, blocks = _geometry(mem, abits, (width,), cost, ws, copies, 0)
            if c < best_cost:
                best_cost = c
                best = Mapping(name, lutram_luts=cells * luts, cells=cells, depth_blocks=blocks, cost=c)
    for name, mode, abits, widths, cost, ports, prim in (() if mem.distributed else BLOCK):
        copies = _copies(ports, mem)
        if copies is None:
            continue
        c, cells, blocks = _geometry(mem, abits, widths, cost, 0, copies, BRAM_BYTE)
        if c < best_cost:
            best_cost = c
            best = Mapping(name, ramb18=cells * prim.get("RAMB18E1", 0), ramb36=cells * prim.get("RAMB36E1", 0),
                           cells=cells, depth_blocks=blocks, cost=c)
    return best
