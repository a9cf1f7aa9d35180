"""The concatenation unit: two flat buffers side by side along channels (the ``concat`` op), one output
element per cycle, each read from the operand it belongs to."""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import wiring

from hwgen.hw.eltwise import _issue, _ports
from hwgen.hw.memory import view
from hwgen.hw.program import Lowered, config_registers, count_writes, counter_bits
from hwgen.ops import Unit


@dataclass(frozen=True)
class ConcatProgram:
    """One concat node: ``numel`` output elements, rows of ``ca`` from a then ``width - ca`` from b."""

    numel: int
    ca: int
    width: int
    chained: bool = False


class ConcatUnit(Lowered, wiring.Component):
    """Writes row by row the ``ca`` elements of the row of ``a`` (``rd0``) then the ``cb`` of ``b``
    (``rd1``): two read pointers, one advancing per element.

    ``programs``: one ``ConcatProgram`` per node. ``numel + 4`` cycles from ``start`` to ``done``.
    Never chained (its output interleaves both operands).
    """

    kind = Unit.CONCAT
    TAIL = 4  # start, read, select and write, done

    @classmethod
    def program(cls, design, index, node, wd, q):
        graph = design.graph
        ca, cb = (view(graph.value_type(i))[1] for i in node.inputs)
        return ConcatProgram(numel=math.prod(view(node.out)), ca=ca, width=ca + cb)

    @classmethod
    def make(cls, design, programs, addr_width):
        u = design.widths[cls.kind]
        return cls(programs, in_width=u["in"], out_width=u["out"], addr_width=addr_width)

    @classmethod
    def cycles(cls, design, prog):
        return prog.numel + cls.TAIL

    @staticmethod
    def second_read(node, streamed):
        return node.inputs[1], 1 if node.inputs[1] == node.inputs[0] else 0

    @classmethod
    def resource_terms(cls, design):
        # the output channel and two read pointers, a channel comparison and the operand select
        t = super().resource_terms(design)
        w, n = design.widths[cls.kind], max(p.numel for p in design.programs[cls.kind])
        t.update(reg=w["out"] + 1, mux=w["in"], arith=counter_bits(n), count=4 * counter_bits(n))
        return t

    def __init__(self, programs: list[ConcatProgram], *, in_width: int, out_width: int, addr_width: int):
        self.programs, self.out_width = programs, out_width
        super().__init__(_ports(len(programs), addr_width, in_width, out_width, 2))

    def elaborate(self, platform):
        m = Module()
        ps = self.programs
        n = max(p.numel for p in ps)
        u = unsigned(n.bit_length() + 1)
        cfg = config_registers(m, self.start, self.sel, ps, {"numel": u, "ca": u, "width": u, "chained": unsigned(1)})
        c, pa, pb = Signal(u), Signal(u), Signal(u)  # channel in the output row, read pointers into a and b
        from_a = c < cfg["ca"]
        go, _, _ = _issue(m, self, cfg, cfg["numel"], [c.eq(0), pa.eq(0), pb.eq(0)], [
            c.eq(Mux(c == cfg["width"] - 1, 0, c + 1)), pa.eq(pa + from_a), pb.eq(pb + ~from_a)])
        m.d.comb += [self.rd0_addr.eq(pa), self.rd1_addr.eq(pb)]
        v1, a1 = Signal(), Signal()
        m.d.sync += [v1.eq(go), a1.eq(from_a)]
        m.d.sync += [self.w_valid.eq(v1), self.w_data.eq(Mux(a1, self.rd0_data, self.rd1_data))]
        count_writes(m, self, cfg["numel"], Signal.like(cfg["numel"]))
        return m
