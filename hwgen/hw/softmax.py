"""The softmax unit: row max, exp table and row sum, one reciprocal per row, multiply and round.

Per row of ``cols`` elements, one element per cycle per pass:
  max pass  m = max(x);   sum pass  s = sum(lut[m - x]);   r = 2**recip_bits // s (sequential divider);
  out pass  y = clamp(round_shift(lut[m - x] * r, recip_bits - bits)) -- exactly hwgen.golden.ops.softmax.
Two read pipelines overlap the rows: pipeline A runs the max and sum passes, pipeline B the output pass.
While row r's last exp values reach its sum and the divider works on it, A runs the max pass of row
r + 1; then B's output pass of row r runs alongside A's sum pass of row r + 1. The two row maxima live in two registers, chosen by row parity.

Overlapped with its producer (``overlap``: the product node before it, in the same controller step), the
unit starts with it and its max passes wait for the elements: with ``gated`` high, the max pass reads
address a only once ``avail`` (the producer's write count; it writes its elements in address order)
exceeds a. The sum and output passes read rows the max pass has already read.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hwgen.errors import HwgenError
from hwgen.hw.memory import view
from hwgen.hw.program import ELEMENT_TAIL, Lowered, config_registers, count_writes, counter_bits
from hwgen.hw.requant import Divider, clamp, round_shift_stages
from hwgen.hw.shiftadd import delayed, rescale_product, rescale_stages
from hwgen.hw.vendor import rescale_product_attrs
from hwgen.ops import Unit

MAX, SUM = 1, 2


class SoftmaxUnit(Lowered, wiring.Component):
    """Per node program: rows, cols, lut_base, recip_bits, out_shift, q_bits, qmax.

    Reads the scores (flat) through two ports, ``rd0`` (max and sum passes) and ``rd1`` (output pass), and
    the exp tables of all softmax nodes, concatenated, through ``lut``/``lut1``. Emits the probabilities
    in row-major order on ``w_valid``/``w_data``.
    """

    kind = Unit.SOFTMAX
    RESCALE_DSPS = 1  # e * r
    FABRIC_CAPABLE = True
    ROW = 4  # cycles per row from the last sum read to the divider's start (the next max pass overlaps)
    OUT_EXTRA = 3  # output pass stages beyond ELEMENT_TAIL's: element, exp value, second rounding stage
    ROM_PORTS = (("lut", "lut"), ("lut1", "lut1"))  # the exp table, read in two pipelines

    @classmethod
    def program(cls, design, index, node, wd, q):
        a, graph, out = node.attrs, design.graph, node.out.dtype
        rows, cols = view(node.out)
        lut = [int(v) for v in graph.consts[a["lut"]].value.reshape(-1)]
        in_t = graph.value_type(node.inputs[0]).dtype
        if len(lut) < in_t.qmax - in_t.qmin + 1:
            # max(x) - x can reach qmax - qmin; a shorter table would be read past its end.
            raise HwgenError(f"node {node.name!r} (softmax): exp table has {len(lut)} entries, the {in_t} "
                             f"input needs {in_t.qmax - in_t.qmin + 1}")
        out_shift = a["recip_bits"] - out.bits
        if out_shift < 0 or a["recip_bits"] > 62:
            raise HwgenError(f"node {node.name!r} (softmax): recip_bits {a['recip_bits']} must lie in "
                             f"[{out.bits}, 62]")
        luts = design.params.setdefault("lut", [])
        prog = {"rows": rows, "cols": cols, "lut_base": len(luts), "recip_bits": a["recip_bits"],
                "out_shift": out_shift, "q_bits": max(wd["recip"] - 1, 1), "qmax": out.qmax}
        luts += lut
        design.wmax(cls.kind, "lut", max(max(lut).bit_length(), 1))
        return prog

    @classmethod
    def finish(cls, design):
        if design.params.get("lut"):
            design.roms["lut"] = (design.widths[cls.kind]["lut"], design.params["lut"])

    @classmethod
    def make(cls, design, programs, addr_width):
        u = design.widths[cls.kind]
        return cls(programs, u["in"], u["lut"], u["sum"], u["recip"], u["out"], addr_width,
                   fabric=cls.kind in design.fabric)

    @classmethod
    def fabric_products(cls, design):
        u = design.widths[cls.kind]
        return [(max(u["recip"], u.get("lut", 16)), min(u["recip"], u.get("lut", 16)))]

    @classmethod
    def cycles(cls, design, prog):
        # Max and sum passes of row 0, then per row: wait for the last sum and divide (alongside the next
        # row's max pass), output pass (alongside the next row's sum pass).
        length, rows, div = prog["cols"], prog["rows"], cls.ROW + prog["q_bits"] + 2
        per_row = [(max(div, length) if r + 1 < rows else div) + length for r in range(rows)]
        return 2 * length + sum(per_row) + ELEMENT_TAIL + cls.OUT_EXTRA + cls.rescale_delay(design)

    OVERLAPS_PRODUCER = True

    @classmethod
    def overlapped_cycles(cls, design, prog, writes):
        # as ``cycles``, but each max-pass read of address a waits until cycle writes[a] + 1
        length, rows, div = prog["cols"], prog["rows"], cls.ROW + prog["q_bits"] + 2

        def max_pass(row, t):  # the cycle of the row's last max-pass read, its first read no sooner than t
            for a in range(row * length, (row + 1) * length):
                t = max(t, writes[a] + 1) + 1
            return t - 1

        t = max_pass(0, 1) + length + 1  # the first WAIT cycle, after row 0's max and sum passes
        for r in range(rows):
            span = max(div, max_pass(r + 1, t) - t + 1) if r + 1 < rows else div
            t += span + length
        return t - 1 + ELEMENT_TAIL + cls.OUT_EXTRA + cls.rescale_delay(design)

    @staticmethod
    def second_read(node, streamed):  # the output pass reads the scores again through a second port
        return node.inputs[0], 1

    @classmethod
    def dsp48(cls, design):
        # e * r, and the write count rows*cols unless Yosys folds it (as in LayerNormUnit.dsp48)
        ps = design.programs[cls.kind]
        return cls.dsps(design) + int(len(ps) > 2 or len({(p["rows"], p["cols"]) for p in ps}) > 1)

    @classmethod
    def resource_terms(cls, design):
        # two row maxima, the exp-table addresses, the row sum, the sequential divider (remainder, shifted
        # divisor, quotient), the product's round and clamp; element, row and write counters
        t = super().resource_terms(design)
        w, ps = design.widths[cls.kind], design.programs[cls.kind]
        n, rb = max(p["rows"] * p["cols"] for p in ps), max(p["recip_bits"] for p in ps)
        i, lut, s, r, o = w["in"], w.get("lut", 16), w["sum"], w["recip"], w["out"]
        t.update(reg=2 * i + s + 2 * r + (rb + 1) + (s + r) + (lut + r + 2) + o,
                 arith=3 * i + s + 2 * (rb + 1) + (s + r) + 2 * o, shift=lut + r, count=4 * counter_bits(n))
        return t

    def __init__(self, programs: list[dict], in_width: int, lut_width: int, sum_width: int, recip_width: int,
                 out_width: int, addr_width: int, fabric: bool = False):
        self.programs, self.in_width, self.lut_width, self.fabric = programs, in_width, lut_width, fabric
        self.sum_width, self.recip_width, self.out_width = sum_width, recip_width, out_width
        super().__init__({
            "start": In(1), "sel": In(range(len(programs))), "done": Out(1),
            "rd0_addr": Out(addr_width), "rd0_data": In(signed(in_width)),
            "rd1_addr": Out(addr_width), "rd1_data": In(signed(in_width)),
            "lut_addr": Out(addr_width), "lut_data": In(unsigned(lut_width)),
            "lut1_addr": Out(addr_width), "lut1_data": In(unsigned(lut_width)),
            "w_valid": Out(1), "w_data": Out(signed(out_width + 1)),
            "gated": In(1), "avail": In(addr_width),
        })

    def elaborate(self, platform):
        m = Module()
        ps = self.programs
        n = max(p["rows"] * p["cols"] for p in ps)
        rb = max(p["recip_bits"] for p in ps)
        cfg = config_registers(m, self.start, self.sel, [{**p, "numel": p["rows"] * p["cols"]} for p in ps], {
            "numel": unsigned(n.bit_length() + 1),
            "rows": unsigned(n.bit_length() + 1), "cols": unsigned(n.bit_length() + 1),
            "lut_base": unsigned(len(self.lut_addr)), "recip_bits": unsigned(8), "out_shift": unsigned(8),
            "q_bits": unsigned(8), "qmax": signed(self.out_width + 1)})
        m.submodules.div = div = Divider(rb + 1, self.sum_width, self.recip_width)
        j, row, base = Signal(range(n + 1)), Signal(range(n + 1)), Signal(range(2 * n + 1))
        phase_a, par_a, out_b, wait = Signal(2), Signal(), Signal(), Signal(3)
        mx = [Signal(signed(self.in_width), name=f"mx{i}") for i in range(2)]  # by row parity
        s = Signal(unsigned(self.sum_width))
        r = Signal(unsigned(self.recip_width))
        have_r, max_done = Signal(), Signal()
        more = row != cfg["rows"] - 1
        last_j = j == cfg["cols"] - 1
        m.d.comb += [div.num.eq(1 << rb), div.den.eq(s), div.q_bits.eq(cfg["q_bits"])]
        # Pipeline A reads row `row` in the first passes, row `row + 1` once row `row` is being divided.
        m.d.comb += [self.rd1_addr.eq(base + j), self.rd0_addr.eq(base + cfg["cols"] + j), par_a.eq(~row[0])]
        m.d.sync += div.start.eq(0)
        cls_row = self.ROW

        # the max pass's read may go ahead: ungated, or the element at its address already written
        ok = ~self.gated | (self.rd0_addr < self.avail)

        def next_max():
            with m.If(~max_done & ok):
                m.d.comb += phase_a.eq(MAX)
                m.d.sync += j.eq(j + 1)
                with m.If(last_j):
                    m.d.sync += [j.eq(0), max_done.eq(1)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [j.eq(0), row.eq(0), base.eq(0)]
                    m.next = "MAX0"
            with m.State("MAX0"):
                m.d.comb += [self.rd0_addr.eq(base + j), par_a.eq(row[0])]
                with m.If(ok):
                    m.d.comb += phase_a.eq(MAX)
                    m.d.sync += j.eq(j + 1)
                    with m.If(last_j):
                        m.d.sync += j.eq(0)
                        m.next = "SUM0"
            with m.State("SUM0"):
                m.d.comb += [phase_a.eq(SUM), self.rd0_addr.eq(base + j), par_a.eq(row[0])]
                m.d.sync += j.eq(j + 1)
                with m.If(last_j):
                    m.d.sync += [j.eq(0), wait.eq(cls_row), max_done.eq(~more)]
                    m.next = "WAIT"
            # While the last exp values of a row travel to its sum (WAIT) and the divider works on it
            # (DIV), pipeline A already runs the next row's max pass.
            with m.State("WAIT"):  # the last exp value reaches the sum four cycles after its read
                m.d.sync += [wait.eq(wait - 1), have_r.eq(0)]
                next_max()
                with m.If(wait == 1):
                    m.d.sync += div.start.eq(1)
                    m.next = "DIV"
            with m.State("DIV"):
                next_max()
                with m.If(div.done):
                    m.d.sync += [r.eq(div.quotient), have_r.eq(1)]
                with m.If((have_r | div.done) & (max_done | (last_j & ok))):
                    m.d.sync += j.eq(0)
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [out_b.eq(1), phase_a.eq(Mux(more, SUM, 0))]
                m.d.sync += j.eq(j + 1)
                with m.If(last_j):
                    m.d.sync += [j.eq(0), wait.eq(cls_row), row.eq(row + 1), base.eq(base + cfg["cols"]),
                                 max_done.eq(row + 2 == cfg["rows"])]
                    m.next = "WAIT"
                    with m.If(~more):
                        m.next = "IDLE"
        # Pipeline A: d1 element (registered); d2 -> max, or exp-table address; d3 exp value (registered);
        # d4 -> sum. Block-RAM outputs go straight into registers (their clock-to-out is most of a cycle).
        ph1, ph2, ph3, ph4 = (Signal(2, name=f"ph{i}") for i in range(1, 5))
        f1, f2, f3, f4, p1, p2 = (Signal(name=n) for n in ("f1", "f2", "f3", "f4", "p1", "p2"))
        m.d.sync += [ph1.eq(phase_a), ph2.eq(ph1), ph3.eq(ph2), ph4.eq(ph3), f1.eq(j == 0), f2.eq(f1), f3.eq(f2),
                     f4.eq(f3), p1.eq(par_a), p2.eq(p1)]
        xa = Signal.like(self.rd0_data, name="xa")
        m.d.sync += xa.eq(self.rd0_data)
        with m.If(ph2 == MAX):
            with m.Switch(p2):
                for i in range(2):
                    with m.Case(i):
                        m.d.sync += mx[i].eq(Mux(f2 | (xa > mx[i]), xa, mx[i]))
        m.d.comb += self.lut_addr.eq(cfg["lut_base"] + (Mux(p2, mx[1], mx[0]) - xa)[:len(self.lut_addr)])
        e_a = Signal.like(self.lut_data, name="e_a")
        m.d.sync += e_a.eq(self.lut_data)
        with m.If(ph4 == SUM):
            m.d.sync += s.eq(Mux(f4, e_a, s + e_a))
        # Pipeline B: d1 element (registered); d2 exp-table address; d3 exp value and r registered; d4
        # e * r; d5, d6 rounded; d7 saturated output.
        b = [Signal(name=f"b{i}") for i in range(1, 8)]
        q1, q2 = Signal(), Signal()
        m.d.sync += [b[0].eq(out_b), q1.eq(row[0]), q2.eq(q1)] + [b[i].eq(b[i - 1]) for i in range(1, 7)]
        xb = Signal.like(self.rd1_data, name="xb")
        m.d.sync += xb.eq(self.rd1_data)
        m.d.comb += self.lut1_addr.eq(cfg["lut_base"] + (Mux(q2, mx[1], mx[0]) - xb)[:len(self.lut1_addr)])
        e_r, r_r = Signal.like(self.lut1_data, name="e_r"), Signal.like(r, name="r_r")
        m.d.sync += [e_r.eq(self.lut1_data), r_r.eq(r)]
        if self.fabric:
            prod = rescale_product(m, e_r, r_r, "mul")
        else:
            prod = Signal(unsigned(self.lut_width + self.recip_width), attrs=rescale_product_attrs())
            m.d.sync += prod.eq(e_r * r_r)
        rnd = round_shift_stages(m, prod, cfg["out_shift"], "rs")
        valid = delayed(m, b[6], rescale_stages() - 1 if self.fabric else 0, "valid")
        m.d.sync += [self.w_data.eq(clamp(rnd, 0, cfg["qmax"])), self.w_valid.eq(valid)]
        count_writes(m, self, cfg["numel"], Signal(range(n + 1)))  # rows * cols, from the program
        return m
