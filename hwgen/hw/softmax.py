"""The softmax unit: row max, exp table and row sum, one reciprocal per row, multiply and round.

Per row of ``cols`` elements (three passes over the row, one element per cycle):
  max pass  m = max(x);   sum pass  s = sum(lut[m - x]);   r = 2**recip_bits // s (sequential divider);
  out pass  y = clamp(round_shift(lut[m - x] * r, recip_bits - bits)) -- exactly hwgen.golden.ops.softmax.
The max pass of the next row runs while the divider works on this row (two max registers, by row parity).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hwgen.hw.program import config_registers
from hwgen.hw.requant import Divider, clamp, round_shift
from hwgen.hw.vendor import rescale_product_attrs

MAX, SUM, OUT = 1, 2, 3


class SoftmaxUnit(wiring.Component):
    """Per node program: rows, cols, lut_base, recip_bits, out_shift, q_bits, qmax.

    Reads ``rd0`` (the scores, flat) and ``lut_addr``/``lut_data`` (the exp tables of all softmax nodes,
    concatenated). Emits the probabilities in row-major order on ``w_valid``/``w_data``.
    """

    def __init__(self, programs: list[dict], in_width: int, lut_width: int, sum_width: int, recip_width: int,
                 out_width: int, addr_width: int):
        self.programs, self.in_width, self.lut_width = programs, in_width, lut_width
        self.sum_width, self.recip_width, self.out_width = sum_width, recip_width, out_width
        super().__init__({
            "start": In(1), "sel": In(range(len(programs))), "done": Out(1),
            "rd0_addr": Out(addr_width), "rd0_data": In(signed(in_width)),
            "lut_addr": Out(addr_width), "lut_data": In(unsigned(lut_width)),
            "w_valid": Out(1), "w_data": Out(signed(out_width + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        ps = self.programs
        n = max(p["rows"] * p["cols"] for p in ps)
        rb = max(p["recip_bits"] for p in ps)
        cfg = config_registers(m, self.start, self.sel, ps, {
            "rows": unsigned(n.bit_length() + 1), "cols": unsigned(n.bit_length() + 1),
            "lut_base": unsigned(len(self.lut_addr)), "recip_bits": unsigned(8), "out_shift": unsigned(8),
            "q_bits": unsigned(8), "qmax": signed(self.out_width + 1)})
        m.submodules.div = div = Divider(rb + 1, self.sum_width, self.recip_width)
        j, row, base = Signal(range(n + 1)), Signal(range(n + 1)), Signal(range(2 * n + 1))
        phase, wait, parity = Signal(2), Signal(2), Signal()
        mx = [Signal(signed(self.in_width), name=f"mx{i}") for i in range(2)]  # by row parity
        s = Signal(unsigned(self.sum_width))
        r = Signal(unsigned(self.recip_width))
        have_r, max_done = Signal(), Signal()
        more = row != cfg["rows"] - 1
        m.d.comb += [div.num.eq(1 << rb), div.den.eq(s), div.q_bits.eq(cfg["q_bits"])]
        m.d.comb += [self.rd0_addr.eq(base + j), parity.eq(row[0])]
        last_j = j == cfg["cols"] - 1
        m.d.sync += div.start.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [j.eq(0), row.eq(0), base.eq(0)]
                    m.next = "MAX"
            for state, nxt in (("MAX", "SUM"), ("SUM", "WAIT"), ("OUT", "SUM")):
                with m.State(state):
                    m.d.comb += phase.eq({"MAX": MAX, "SUM": SUM, "OUT": OUT}[state])
                    m.d.sync += j.eq(j + 1)
                    with m.If(last_j):
                        m.d.sync += [j.eq(0), wait.eq(2)]
                        m.next = nxt
                        if state == "OUT":
                            m.d.sync += [row.eq(row + 1), base.eq(base + cfg["cols"])]
                            with m.If(~more):
                                m.next = "IDLE"
            with m.State("WAIT"):  # the last exp value reaches the sum two cycles after its read
                m.d.sync += [wait.eq(wait - 1), have_r.eq(0), max_done.eq(~more)]
                with m.If(wait == 1):
                    m.d.sync += div.start.eq(1)
                    m.next = "DIV"
            with m.State("DIV"):
                # While the divider works, the max pass of the next row runs (into the other mx register).
                with m.If(~max_done):
                    m.d.comb += [phase.eq(MAX), self.rd0_addr.eq(base + cfg["cols"] + j), parity.eq(~row[0])]
                    m.d.sync += j.eq(j + 1)
                    with m.If(last_j):
                        m.d.sync += [j.eq(0), max_done.eq(1)]
                with m.If(div.done):
                    m.d.sync += [r.eq(div.quotient), have_r.eq(1)]
                with m.If((have_r | div.done) & (max_done | last_j)):
                    m.d.sync += j.eq(0)
                    m.next = "OUT"
        # Datapath: the read's phase travels with it (d1: element, d2: exp value, d3..: output stages).
        ph1, ph2, ph3, ph4, f1, f2, p1 = Signal(2), Signal(2), Signal(2), Signal(2), Signal(), Signal(), Signal()
        m.d.sync += [ph1.eq(phase), ph2.eq(ph1), ph3.eq(ph2), ph4.eq(ph3), f1.eq(j == 0), f2.eq(f1), p1.eq(parity)]
        x = self.rd0_data
        with m.If(ph1 == MAX):
            with m.Switch(p1):
                for i in range(2):
                    with m.Case(i):
                        m.d.sync += mx[i].eq(Mux(f1 | (x > mx[i]), x, mx[i]))
        m.d.comb += self.lut_addr.eq(cfg["lut_base"] + (Mux(p1, mx[1], mx[0]) - x)[:len(self.lut_addr)])
        with m.If(ph2 == SUM):
            m.d.sync += s.eq(Mux(f2, self.lut_data, s + self.lut_data))
        prod = Signal(unsigned(self.lut_width + self.recip_width), attrs=rescale_product_attrs())
        rnd = Signal(signed(len(prod) + 2))
        m.d.sync += [prod.eq(self.lut_data * r), rnd.eq(round_shift(prod, cfg["out_shift"]))]
        m.d.sync += [self.w_data.eq(clamp(rnd, 0, cfg["qmax"])), self.w_valid.eq(ph4 == OUT)]
        written = Signal(range(n + 1))
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += written.eq(0)
        with m.Elif(self.w_valid):
            m.d.sync += written.eq(written + 1)
            with m.If(written == cfg["rows"] * cfg["cols"] - 1):
                m.d.sync += self.done.eq(1)
        return m
