"""Per-node settings of a shared unit: registers loaded from a table when the unit starts a node."""

from __future__ import annotations

from collections.abc import Mapping

from amaranth.hdl import Shape, Signal

# Cycles an element-wise pass adds to its element count: start, read, 4 arithmetic stages, done.
ELEMENT_TAIL = 7


def config_registers(m, start, sel, programs: list, shapes: dict[str, Shape]) -> dict:
    """Registers named like ``shapes``' keys, loaded with setting ``name`` of ``programs[sel]`` when
    ``start`` is high.

    A program is either a unit's program dataclass, whose field or property ``name`` is read by attribute,
    or a mapping from setting names to values (for a table with values derived from the programs, as
    ``MatmulUnit``, ``SoftmaxUnit`` and ``AnomalyScoreUnit`` build). Units are shared by every node of their
    op kind; the table is the only per-node state they hold, so one unit serves all layers.
    """
    if not programs:
        raise ValueError("a shared unit needs at least one node program, not an empty list")
    regs = {name: Signal(shape, name=f"cfg_{name}") for name, shape in shapes.items()}
    with m.If(start):
        with m.Switch(sel):
            for idx, prog in enumerate(programs):
                with m.Case(idx):
                    m.d.sync += [regs[name].eq(int(_setting(prog, name))) for name in shapes]
    return regs


def _setting(prog, name: str):
    """Setting ``name`` of a program: an item of a mapping, else an attribute."""
    return prog[name] if isinstance(prog, Mapping) else getattr(prog, name)


def signed_width(*values: int) -> int:
    """Bits of the narrowest signed type holding every value (at least 2)."""
    bits = 2
    for v in values:
        while not -(1 << (bits - 1)) <= int(v) < (1 << (bits - 1)):
            bits += 1
    return bits


def program_terms(programs) -> dict[str, float]:
    """"cfg_reg": the bits of a unit's per-node configuration registers that some program sets (Yosys
    drops register bits every program leaves 0), "cfg_var": those that differ between programs (each a
    small table lookup on ``sel``); integer fields only (of program dataclasses or mappings; a dataclass's
    properties are not counted)."""
    rows = [p if isinstance(p, Mapping) else vars(p) for p in programs]
    reg = var = 0
    for name in (rows[0] if rows else {}):
        values = [r[name] for r in rows]
        if not all(isinstance(v, (int, bool)) for v in values):
            continue
        bits = signed_width(*values) if min(values) < 0 else max(max(values).bit_length(), 1)
        reg += sum(1 for b in range(bits) if any((int(v) >> b) & 1 for v in values))
        var += sum(1 for b in range(bits) if len({(int(v) >> b) & 1 for v in values}) > 1)
    return {"cfg_reg": reg, "cfg_var": var}


def counter_bits(n: int) -> int:
    """Bits of a counter up to ``n``."""
    return max(int(n), 1).bit_length()


class Lowered:
    """What a shared unit declares for lowering and the estimators (mixed into each unit's Component).

    ``kind``: the ``hwgen.ops.Unit`` it runs; ``RESCALE_DSPS``: its multipliers besides the MAC lanes, as
    Yosys synth_xilinx maps them onto DSP48E1 (it ignores the ``use_dsp = "no"`` hint of
    ``hwgen.hw.vendor``); ``FABRIC_CAPABLE``: it can build them as shift-add in LUTs instead (when its kind
    is in ``Design.fabric``: ``dsps`` 0, ``rescale_delay`` more cycles in ``cycles`` and
    ``chained_cycles``, ``fabric_products`` for the LUT estimate); ``CHAINED_CYCLES``: when chained onto its
    producer, the cycles it ends after it with its products in DSPs;
    ``ROM_PORTS``: (ROM, port prefix) pairs it reads parameters through; ``params``: the name of its list of
    parameter words in ``Design.params``; ``REGISTERED_READS``: the top level registers the data of its
    ``rd`` ports at each memory before choosing among them, so they arrive two cycles after the address,
    not one (for a unit whose nodes read many memories through one port).
    """

    kind = None
    RESCALE_DSPS = 0
    # Whether the unit can build its rescale products in fabric (``hwgen.hw.shiftadd``) instead of DSP48E1
    # (``Design.fabric`` lists the units that do).
    FABRIC_CAPABLE = False
    CHAINED_CYCLES: int | None = None
    ROM_PORTS: tuple[tuple[str, str], ...] = ()
    REGISTERED_READS = False
    # The unit can start with its producer's node and read the producer's output as it is written (it sees
    # the producer's writes on ``in_valid``/``in_data``; ``overlapped_cycles``); the producer's unit must
    # declare ``write_times``.
    OVERLAPS_PRODUCER = False
    WRITES_IN_ORDER = False  # ``write_times`` gives the cycle of each output write (in address order)
    GATED_OPS: tuple[str, ...] = ()  # ops whose operand reads can wait for their elements (``gated_times``)

    @classmethod
    def write_times(cls, design, prog) -> list[int]:
        """Cycle (from ``start``) at which the unit writes each output element of node program ``prog``."""
        raise NotImplementedError

    @classmethod
    def overlapped_cycles(cls, design, prog, writes: list[int]) -> int:
        """Cycles from ``start`` to ``done`` of one node started together with its producer, whose k-th
        output element is written at cycle ``writes[k]``."""
        raise NotImplementedError

    @classmethod
    def program(cls, design, index: int, node, wd: dict[str, int], q: dict[str, int]):
        """The unit's program for node ``index``, a frozen dataclass of its settings (e.g. ``AddProgram``),
        and its parameter words appended to ``design.params``."""
        raise NotImplementedError

    @classmethod
    def arrange(cls, design) -> None:
        """After every node's program, with or without ROM images: settle what depends on all of the
        unit's programs together (``MatmulUnit``: which products run two rows at a time)."""

    @classmethod
    def finish(cls, design) -> None:
        """After every node: pack the unit's parameter ROMs into ``design.roms`` (and their widths)."""

    @classmethod
    def make(cls, design, programs: list, addr_width: int):
        """The component for ``design``'s nodes of this kind."""
        raise NotImplementedError

    @classmethod
    def cycles(cls, design, prog) -> int:
        """Cycles from ``start`` to ``done`` of one node (no stalls)."""
        raise NotImplementedError

    @classmethod
    def dsps(cls, design) -> int:
        """DSP48E1 slices the unit takes besides the MAC lanes (none when its products are in fabric)."""
        return 0 if cls.kind in design.fabric else cls.RESCALE_DSPS

    @classmethod
    def extra_logic(cls, design) -> tuple[float, float]:
        """(LUTs, flip-flops) of logic the unit builds only for some graphs, beyond what the resource model's
        structural terms (``resource_terms``) do not count: none unless the unit says so."""
        return 0.0, 0.0

    @classmethod
    def dsp48(cls, design) -> int:
        """DSP48E1 slices Yosys maps the unit's rescale products onto, for the resource estimate (``dsps``,
        which decides what moves into fabric, unless a unit counts more exactly here)."""
        return cls.dsps(design)

    @classmethod
    def fabric_products(cls, design) -> list[tuple[int, int]]:
        """(a bits, b bits) of each rescale product, for the LUT estimate of building them in fabric."""
        return []

    @classmethod
    def rescale_delay(cls, design) -> int:
        """Cycles the unit's rescale products in fabric add over DSP48E1 ones (0 when in DSPs)."""
        from hwgen.hw.shiftadd import rescale_stages

        return rescale_stages() - 1 if cls.kind in design.fabric else 0

    @classmethod
    def chained_cycles(cls, design) -> int:
        """When chained onto its producer, the cycles the unit ends after it."""
        return cls.CHAINED_CYCLES + cls.rescale_delay(design)

    @classmethod
    def resource_terms(cls, design) -> dict[str, float]:
        """The unit's structure as the resource model prices it (``hwgen.hw.costs``): bits of datapath registers ("reg"),
        adders and comparators ("arith"), variable shifters ("shift"), multiplexer inputs ("mux"),
        counters ("count"), the node-program table (``program_terms``) and its rescale products in fabric
        ("fabric", a x b bits each), from the unit's widths, lanes and programs. Memories are priced
        separately (``hwgen.estimate.memmap``)."""
        terms = program_terms(design.programs.get(cls.kind, []))
        if cls.kind in design.fabric:
            terms["fabric"] = sum(a * b for a, b in cls.fabric_products(design))
        return terms

    @classmethod
    def resources(cls, design) -> dict[str, float]:
        """Predicted LUTs and flip-flops of the unit (``resource_terms`` priced by the model)."""
        from hwgen.hw.costs import price

        return price(cls.resource_terms(design), cls.kind)

    @classmethod
    def memories(cls, design) -> list[tuple[str, int, int]]:
        """(name, depth, bits) of the memories inside the unit (one write and one read port each, in
        distributed RAM: ``ram_style = "distributed"``), which the resource model maps as Yosys does
        (``hwgen.estimate.memmap``); small tables it prices among its ``resource_terms`` are not listed."""
        return []

    @staticmethod
    def second_read(node, streamed: int | None) -> tuple[str, int] | None:
        """The value the unit's ``rd1`` port reads in this node's step, and which read port of that
        value's memory (0 or 1); None when the unit has no second read."""
        return None


def count_writes(m, unit, total, written) -> None:
    """Pulse ``unit.done`` one cycle after the ``total``-th element written (``unit.w_valid``); ``written``
    is the counter register, wide enough for ``total``. ``unit.start`` clears it."""
    m.d.sync += unit.done.eq(0)
    with m.If(unit.start):
        m.d.sync += written.eq(0)
    with m.Elif(unit.w_valid):
        m.d.sync += written.eq(written + 1)
        with m.If(written == total - 1):
            m.d.sync += unit.done.eq(1)
