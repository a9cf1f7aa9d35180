"""The lookup-table unit: ``y = table[x - qmin]`` element-wise (the ``lut`` op), every lut node's table in
one ROM. One element per cycle, read from a flat buffer or, chained, taken from the producing unit's
output stream."""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hwgen.hw.eltwise import _issue, _ports
from hwgen.hw.memory import view
from hwgen.hw.program import Lowered, config_registers, count_writes, counter_bits
from hwgen.ops import Unit

ROM = "act_lut"


@dataclass(frozen=True)
class LutProgram:
    """One lut node: ``numel`` elements, ``offset`` (table base - input qmin); ``chained``: x is streamed."""

    numel: int
    offset: int
    chained: bool


class LutUnit(Lowered, wiring.Component):
    """``y = table[x - qmin]`` over ``numel`` elements: the element's address in the table ROM
    (``p_addr``/``p_data``, the tables of all lut nodes one after another) is ``x + offset`` with
    ``offset`` = the node's table base minus its input type's qmin.

    ``programs``: one ``LutProgram`` per node (``x`` arrives on ``in_valid``/``in_data`` when ``chained``).
    ``numel + 5`` cycles from ``start`` to ``done``; chained, it ends 3 cycles after its producer. No
    multiplier.
    """

    kind = Unit.LUT
    CHAINED_CYCLES = 3
    TAIL = 5  # start, read, address, table read, done
    ROM_PORTS = ((ROM, "p"),)

    @classmethod
    def program(cls, design, index, node, wd, q):
        graph = design.graph
        table = [int(v) for v in graph.consts[node.attrs["table"]].value.reshape(-1)]
        tables = design.params.setdefault(ROM, [])
        prog = LutProgram(numel=math.prod(view(node.out)),
                          offset=len(tables) - graph.value_type(node.inputs[0]).dtype.qmin,
                          chained=index in design.streamed)
        tables += table
        return prog

    @classmethod
    def finish(cls, design):
        bits = design.widths[cls.kind]["out"]
        design.roms[ROM] = (bits, [v & ((1 << bits) - 1) for v in design.params[ROM]])

    @classmethod
    def make(cls, design, programs, addr_width):
        u = design.widths[cls.kind]
        return cls(programs, in_width=u["in"], out_width=u["out"], addr_width=addr_width)

    @classmethod
    def cycles(cls, design, prog):
        return prog.numel + cls.TAIL

    @classmethod
    def resource_terms(cls, design):
        # the table address (element + offset) and the element and write counters
        t = super().resource_terms(design)
        w, n = design.widths[cls.kind], max(p.numel for p in design.programs[cls.kind])
        t.update(reg=w["in"] + 2 * counter_bits(len(design.params.get(ROM, [])) + 1), arith=w["in"] + 4,
                 count=2 * counter_bits(n))
        return t

    def __init__(self, programs: list[LutProgram], *, in_width: int, out_width: int, addr_width: int):
        self.programs, self.in_width, self.out_width = programs, in_width, out_width
        ports = _ports(len(programs), addr_width, in_width, out_width, 1)
        ports.update({"p_addr": Out(addr_width), "p_data": In(unsigned(out_width))})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        ps = self.programs
        n = max(p.numel for p in ps)
        ow = max(max(abs(p.offset) for p in ps).bit_length() + 2, len(self.p_addr) + 1)
        cfg = config_registers(m, self.start, self.sel, ps, {
            "numel": unsigned(n.bit_length() + 1), "offset": signed(ow), "chained": unsigned(1)})
        go, idx, x = _issue(m, self, cfg, cfg["numel"])
        m.d.comb += self.rd0_addr.eq(idx)
        v0, v1, v2, addr = Signal(), Signal(), Signal(), Signal(len(self.p_addr))
        # go -> the element (v0) -> its table address registered (v1) -> the ROM's word (v2)
        m.d.sync += [v0.eq(go), v1.eq(v0), v2.eq(v1), addr.eq(x + cfg["offset"])]
        m.d.comb += [self.p_addr.eq(addr), self.w_valid.eq(v2), self.w_data.eq(self.p_data.as_signed())]
        count_writes(m, self, cfg["numel"], Signal.like(cfg["numel"]))
        return m
