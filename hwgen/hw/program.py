"""Per-node settings of a shared unit: registers loaded from a table when the unit starts a node."""

from __future__ import annotations

from amaranth.hdl import Shape, Signal


def config_registers(m, start, sel, programs: list[dict[str, int]], shapes: dict[str, Shape]) -> dict:
    """Registers named like ``shapes``' keys, loaded with ``programs[sel][name]`` when ``start`` is high.

    Units are shared by every node of their op kind; the table is the only per-node state they hold, so
    one unit serves all layers.
    """
    if not programs:
        raise ValueError("a shared unit needs at least one node program, not an empty list")
    regs = {name: Signal(shape, name=f"cfg_{name}") for name, shape in shapes.items()}
    with m.If(start):
        with m.Switch(sel):
            for idx, prog in enumerate(programs):
                with m.Case(idx):
                    m.d.sync += [regs[name].eq(int(prog[name])) for name in shapes]
    return regs


def signed_width(*values: int) -> int:
    """Bits of the narrowest signed type holding every value (at least 2)."""
    bits = 2
    for v in values:
        while not -(1 << (bits - 1)) <= int(v) < (1 << (bits - 1)):
            bits += 1
    return bits


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
