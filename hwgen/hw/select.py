"""The row-selection unit: ``maxpool`` (the maximum over windows of rows) and ``select_rows`` (a range of
rows, e.g. the last step), one element per cycle, read from a flat buffer or, chained, taken from the
producing unit's output stream. No arithmetic besides one comparison per element."""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring

from hwgen.hw.eltwise import _issue, _ports
from hwgen.hw.memory import view
from hwgen.hw.program import Lowered, config_registers, counter_bits
from hwgen.ops import Unit


@dataclass(frozen=True)
class SelectProgram:
    """One maxpool or select_rows node: ``n_iter`` elements visited from ``base``, ``channels`` per row,
    windows of ``kernel`` rows, written rows ``r_lo`` .. ``r_hi`` - 1; ``chained``: the producer's stream."""

    n_iter: int
    base: int
    channels: int
    kernel: int
    r_lo: int
    r_hi: int
    chained: bool


class SelectUnit(Lowered, wiring.Component):
    """Visits ``n_iter`` input elements row-major from element ``base``, keeps per channel
    the maximum over the current window of ``kernel`` rows and writes it at the window's last row when that
    row lies in ``r_lo .. r_hi - 1``. ``select_rows`` is ``kernel`` 1 with its rows as that range (alone it
    reads only those rows); ``maxpool`` keeps the rows of whole windows. Chained, it takes every element of
    its producer's stream (``n_iter`` = the input's elements) and ``done`` follows the last of them, so a
    chain never ends before its producer.

    ``programs``: one ``SelectProgram`` per node (rows counted from the first visited). ``n_iter + 4`` cycles
    from ``start`` to ``done``; chained, it ends 2 cycles after its producer.
    """

    kind = Unit.SELECT
    CHAINED_CYCLES = 2
    TAIL = 4  # start, read, compare and write, done

    @classmethod
    def program(cls, design, index, node, wd, q):
        rows, cols = view(design.graph.value_type(node.inputs[0]))
        chained = index in design.streamed
        if node.op == "select_rows":
            lo, hi, kernel = node.attrs["start"], node.attrs["start"] + node.attrs["count"], 1
        else:
            kernel = rows if node.attrs.get("kernel") is None else node.attrs["kernel"]
            lo, hi = 0, rows // kernel * kernel
        first = 0 if chained else lo // kernel * kernel
        # rows count from the first one visited (a window's first row: the row counter starts at 0)
        return SelectProgram(n_iter=rows * cols if chained else (hi - first) * cols, base=first * cols,
                             channels=cols, kernel=kernel, r_lo=lo - first, r_hi=hi - first, chained=chained)

    @classmethod
    def make(cls, design, programs, addr_width):
        u = design.widths[cls.kind]
        return cls(programs, in_width=u["in"], out_width=u["out"], addr_width=addr_width)

    @classmethod
    def cycles(cls, design, prog):
        return prog.n_iter + cls.TAIL

    @classmethod
    def resource_terms(cls, design):
        # one running maximum per channel behind a channel multiplexer; row, channel, window counters
        t = super().resource_terms(design)
        w, ps = design.widths[cls.kind], design.programs[cls.kind]
        ch, n = max(p.channels for p in ps), max(p.n_iter + p.base for p in ps)
        t.update(reg=ch * w["in"] + w["out"], mux=ch * w["in"], arith=w["in"] + 3 * counter_bits(n),
                 count=4 * counter_bits(n))
        return t

    def __init__(self, programs: list[SelectProgram], *, in_width: int, out_width: int, addr_width: int):
        self.programs, self.in_width, self.out_width = programs, in_width, out_width
        super().__init__(_ports(len(programs), addr_width, in_width, out_width, 1))

    def elaborate(self, platform):
        m = Module()
        ps = self.programs
        n = max(max(p.n_iter + p.base, p.r_hi + 1) for p in ps)
        u = unsigned(n.bit_length() + 1)
        cfg = config_registers(m, self.start, self.sel, ps, {name: u for name in (
            "n_iter", "base", "channels", "kernel", "r_lo", "r_hi")} | {"chained": unsigned(1)})
        r, c, j = Signal(u), Signal(u), Signal(u)  # row, channel, row within the window
        last_c = c == cfg["channels"] - 1
        go, idx, x = _issue(m, self, cfg, cfg["n_iter"], [r.eq(0), c.eq(0), j.eq(0)], [
            c.eq(Mux(last_c, 0, c + 1)), r.eq(Mux(last_c, r + 1, r)),
            j.eq(Mux(last_c, Mux(j == cfg["kernel"] - 1, 0, j + 1), j))])
        m.d.comb += self.rd0_addr.eq(idx + cfg["base"])
        v1, first1, emit1, last1, c1 = Signal(), Signal(), Signal(), Signal(), Signal.like(c)
        m.d.sync += [v1.eq(go), first1.eq(j == 0), c1.eq(c), last1.eq(go & (idx == cfg["n_iter"] - 1)),
                     emit1.eq((j == cfg["kernel"] - 1) & (r >= cfg["r_lo"]) & (r < cfg["r_hi"]))]
        best = Array(Signal(signed(self.in_width), name=f"best{i}") for i in range(max(p.channels for p in ps)))
        total = Signal(signed(self.in_width))
        m.d.comb += total.eq(Mux(first1 | (x > best[c1]), x, best[c1]))
        with m.If(v1):
            m.d.sync += best[c1].eq(total)
        last2 = Signal()
        m.d.sync += [self.w_valid.eq(v1 & emit1), self.w_data.eq(total), last2.eq(v1 & last1), self.done.eq(last2)]
        return m
