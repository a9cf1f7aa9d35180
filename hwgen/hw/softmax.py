"""The softmax unit: row max, exp table and row sum, one reciprocal per row, multiply and round.

Per row of ``cols`` elements:
  m = max(x);   s = sum(lut[m - x]);   r = 2**recip_bits // s (sequential divider);
  y = clamp(round_shift(lut[m - x] * r, recip_bits - bits)) -- exactly hwgen.golden.ops.softmax.
The rows run through three stages in periods of ``period`` cycles: in period k pipeline A reads row k
(its max pass, then its sum pass), the divider works on row k - 1's sum and pipeline B runs the output
pass of row k - 2. So a row costs max(2 * cols, divider) cycles, and the whole node about rows + 2 periods.
The sum pass also keeps its exp values in a ring of three rows (``ring``, inside the unit), where pipeline B
reads them: the scores are read by one port only and the exp table by one pipeline only.

Overlapped with its producer (``stream``: the attention scores just before it, started in the same
controller step) the unit takes each row's maximum from the producer's output stream as the elements are
written (``in_valid``/``in_data``, into a small table by row), so pipeline A reads each row once (its sum
pass, no sooner than the whole row is written) and a period is max(cols, divider) cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hwgen.errors import HwgenError
from hwgen.hw.memory import view
from hwgen.hw.program import ELEMENT_TAIL, Lowered, config_registers, count_writes, counter_bits
from hwgen.hw.requant import Divider, clamp, round_shift_stages
from hwgen.hw.shiftadd import delayed, rescale_product, rescale_stages
from hwgen.hw.vendor import rescale_product_attrs
from hwgen.ops import Unit

MAX, SUM = 1, 2


@dataclass(frozen=True)
class SoftmaxProgram:
    """One softmax node: ``rows`` x ``cols`` scores; its exp table at ``lut_base`` of the unit's table ROM;
    the reciprocal's ``recip_bits`` and quotient bits ``q_bits``; the output shift and ``qmax``; ``stream``:
    the row maxima come from the producer's stream; ``period``: cycles per row."""

    rows: int
    cols: int
    lut_base: int
    recip_bits: int
    out_shift: int
    q_bits: int
    qmax: int
    stream: bool
    period: int

    @property
    def numel(self) -> int:
        return self.rows * self.cols


class SoftmaxUnit(Lowered, wiring.Component):
    """Runs softmax node ``sel`` of ``programs`` (``SoftmaxProgram``) on ``start``; ``done`` after its last write.

    Reads the scores (flat) through one port, ``rd0`` (pipeline A: max and sum passes), and the exp
    tables of all softmax nodes, concatenated, through ``lut``; the output pass (pipeline B) reads the exp
    values pipeline A left in the ring. A ``stream`` node also watches its producer's writes on
    ``in_valid``/``in_data``.
    Emits the probabilities in row-major order on ``w_valid``/``w_data``.
    """

    kind = Unit.SOFTMAX
    RESCALE_DSPS = 1  # e * r
    FABRIC_CAPABLE = True
    ROW = 4  # cycles from a row's last sum read to its sum (the divider starts then)
    START = 2  # cycles from start to the first period (the settings, then the first period's set-up)
    OUT_EXTRA = 3  # output pass stages from its last read to done beyond ELEMENT_TAIL's
    ROM_PORTS = (("lut", "lut"),)  # the exp table, read by pipeline A
    OVERLAPS_PRODUCER = True

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
        q_bits = max(wd["recip"] - 1, 1)
        stream = index in design.overlapped
        # pipeline A's passes, and the divider: started ROW cycles into the period, done q_bits + 1 later,
        # its quotient registered before the next period
        period = max(cols if stream else 2 * cols, cls.ROW + q_bits + 2)
        prog = SoftmaxProgram(rows=rows, cols=cols, lut_base=len(luts), recip_bits=a["recip_bits"],
                              out_shift=out_shift, q_bits=q_bits, qmax=out.qmax, stream=stream, period=period)
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
        return cls(programs, in_width=u["in"], lut_width=u["lut"], sum_width=u["sum"], recip_width=u["recip"],
                   out_width=u["out"], addr_width=addr_width, fabric=cls.kind in design.fabric,
                   lutram=design.lutram)

    @classmethod
    def fabric_products(cls, design):
        u = design.widths[cls.kind]
        return [(max(u["recip"], u.get("lut", 16)), min(u["recip"], u.get("lut", 16)))]

    @classmethod
    def _periods(cls, prog, ready=None) -> list[int]:
        """The first cycle of every period (rows + 2 of them); ``ready[k]``: the first cycle in which row
        k's maximum is known (a stream node), else no wait."""
        starts, t = [], cls.START
        for k in range(prog.rows + 2):
            if starts:
                t = starts[-1] + prog.period
            if ready is not None and k < prog.rows:
                t = max(t, ready[k] + 1)  # the period's set-up in the cycle the maximum is known
            starts.append(t)
        return starts

    @classmethod
    def _end(cls, design, prog, starts) -> int:
        # the last output pass (period rows + 1), its last read, the output pipeline, done
        return starts[-1] + prog.cols + ELEMENT_TAIL + cls.OUT_EXTRA + cls.rescale_delay(design) - 1

    @classmethod
    def cycles(cls, design, prog):
        if prog.stream:
            raise HwgenError("a stream softmax node runs with its producer (overlapped_cycles)")
        return cls._end(design, prog, cls._periods(prog))

    @classmethod
    def overlapped_cycles(cls, design, prog, writes):
        # row k's maximum is known two cycles after its last element is written (the write is registered)
        ready = [writes[(k + 1) * prog.cols - 1] + 2 for k in range(prog.rows)]
        return cls._end(design, prog, cls._periods(prog, ready))

    @staticmethod
    def ring_depth(programs) -> int:
        """Words of the exp-value ring: three rows of the widest node."""
        return 3 * max(p.cols for p in programs)

    @classmethod
    def memories(cls, design):
        # the exp-value ring, of exp-table values
        return [("ring", cls.ring_depth(design.programs[cls.kind]), design.widths[cls.kind]["lut"])]

    @classmethod
    def dsp48(cls, design):
        # e * r (the element count is the program's, a settings register, not a product of two)
        return cls.dsps(design)

    @classmethod
    def resource_terms(cls, design):
        # the row maximum, the exp-table address, the row sum, the sequential divider
        # (remainder, shifted divisor, quotient), two reciprocals, the product's round and clamp; the
        # stream's running maximum and table of row maxima; element, row, period and write counters
        t = super().resource_terms(design)
        w, ps = design.widths[cls.kind], design.programs[cls.kind]
        n, rb = max(p.numel for p in ps), max(p.recip_bits for p in ps)
        i, lut, s, r, o = w["in"], w.get("lut", 16), w["sum"], w["recip"], w["out"]
        stream = any(p.stream for p in ps)
        rows = max(p.rows for p in ps)
        ring = counter_bits(cls.ring_depth(ps))
        # the ring's slot addresses: two bases, four write and two read stages; base + element, the wrap
        t.update(reg=(1 + stream) * i + s + 3 * r + (rb + 1) + (s + r) + (lut + r + 2) + o + 8 * ring,
                 arith=2 * i + s + 2 * (rb + 1) + (s + r) + 2 * o + stream * i + 4 * ring,
                 shift=lut + r, count=(4 + 3 * stream) * counter_bits(n))
        if stream:
            t["mux"] = t.get("mux", 0) + rows * i // 16 + i  # the row-maxima table (distributed RAM)
        return t

    def __init__(self, programs: list[SoftmaxProgram], *, in_width: int, lut_width: int, sum_width: int,
                 recip_width: int, out_width: int, addr_width: int, fabric: bool = False, lutram: bool = True):
        self.programs, self.in_width, self.lut_width, self.fabric = programs, in_width, lut_width, fabric
        self.lutram = lutram
        self.sum_width, self.recip_width, self.out_width = sum_width, recip_width, out_width
        super().__init__({
            "start": In(1), "sel": In(range(len(programs))), "done": Out(1),
            "rd0_addr": Out(addr_width), "rd0_data": In(signed(in_width)),
            "lut_addr": Out(addr_width), "lut_data": In(unsigned(lut_width)),
            "w_valid": Out(1), "w_data": Out(signed(out_width + 1)),
            "in_valid": In(1), "in_data": In(signed(in_width)),
        })

    def elaborate(self, platform):
        m = Module()
        ps = self.programs
        n = max(p.numel for p in ps)
        rows_max = max(p.rows for p in ps)
        stream_any = any(p.stream for p in ps)
        rb = max(p.recip_bits for p in ps)
        big = unsigned(n.bit_length() + 1)
        table = [{"numel": p.numel, "rows": p.rows, "cols": p.cols, "lut_base": p.lut_base,
                  "recip_bits": p.recip_bits, "out_shift": p.out_shift, "q_bits": p.q_bits, "qmax": p.qmax,
                  "stream": int(p.stream), "cols_m1": p.cols - 1, "period_m1": p.period - 1,
                  "rows_p1": p.rows + 1, "ring_wrap": 2 * p.cols} for p in ps]
        period_w = unsigned(max(p.period for p in ps).bit_length())
        cfg = config_registers(m, self.start, self.sel, table, {
            "numel": big, "rows": big, "cols": big, "cols_m1": big, "rows_p1": big,
            "lut_base": unsigned(len(self.lut_addr)), "recip_bits": unsigned(8), "out_shift": unsigned(8),
            "q_bits": unsigned(8), "qmax": signed(self.out_width + 1), "stream": unsigned(1),
            "period_m1": period_w, "ring_wrap": big})
        m.submodules.div = div = Divider(rb + 1, self.sum_width, self.recip_width)

        # ---- the period schedule ------------------------------------------------------------------------
        k = Signal(range(rows_max + 3))  # the period (row k in A, k - 1 in the divider, k - 2 in B)
        c = Signal(period_w)  # cycle in the period
        ja, jb = Signal(range(n + 1)), Signal(range(n + 1))  # element of A's and B's pass
        a_ph, b_on = Signal(2), Signal()  # A's pass (MAX, SUM or none), B's output pass on
        base_a, next_a = (Signal(range(2 * n + 1), name=x) for x in ("base_a", "next_a"))
        known = Signal(range(rows_max + 1))  # rows whose maximum the stream has seen
        s = Signal(unsigned(self.sum_width))
        r_next, r_cur = Signal(unsigned(self.recip_width)), Signal(unsigned(self.recip_width))
        mx_s = Signal(signed(self.in_width), name="mx_s")
        ring_words = self.ring_depth(ps)
        # the exp-value ring: row r's values at (r mod 3) * cols; A writes the row of its period, B reads the
        # row two periods older (so never the slot A writes: A's row k + 1 takes row k - 2's slot only in the
        # period after B's pass over it)
        ring_a, ring_b = Signal(range(ring_words), name="ring_a"), Signal(range(ring_words), name="ring_b")

        def ring_next(base):  # the next row's slot: base + cols, wrapping after the third
            return Mux(base >= cfg["ring_wrap"], 0, base + cfg["cols"])

        def set_up(x, first):
            """Set up period ``x`` (its first cycle follows)."""
            on_a = x < cfg["rows"]
            m.d.sync += [k.eq(x), c.eq(0), ja.eq(0), jb.eq(0),
                         a_ph.eq(Mux(on_a, Mux(cfg["stream"][0], SUM, MAX), 0)), b_on.eq(x >= 2)]
            m.d.sync += [base_a.eq(Mux(first, 0, next_a)), next_a.eq(Mux(first, cfg["cols"], next_a + cfg["cols"])),
                         ring_a.eq(Mux(first, 0, ring_next(ring_a)))]
            with m.If(x >= 2):
                m.d.sync += ring_b.eq(Mux(x == 2, 0, ring_next(ring_b)))

        def ready(x):  # period x may start: its row's maximum is known (a stream node), or it has no row
            if not stream_any:
                return 1
            return ~cfg["stream"][0] | (x >= cfg["rows"]) | (known > x)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += k.eq(0)
                    m.next = "SETUP"
            with m.State("SETUP"):  # wait for the row's maximum, then set the period up
                with m.If(ready(k)):
                    set_up(k, k == 0)
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.sync += c.eq(c + 1)
                # A: the max pass (not for a stream node), then the sum pass
                with m.If(a_ph != 0):
                    m.d.sync += ja.eq(ja + 1)
                    with m.If(ja == cfg["cols_m1"]):
                        m.d.sync += [ja.eq(0), a_ph.eq(Mux(a_ph == MAX, SUM, 0))]
                with m.If(b_on):
                    m.d.sync += jb.eq(jb + 1)
                    with m.If(jb == cfg["cols_m1"]):
                        m.d.sync += b_on.eq(0)
                # the reciprocal hands over two cycles into the period, when the old output pass's last
                # element is past it
                with m.If(c == 2):
                    m.d.sync += r_cur.eq(r_next)
                # the period's end, after the passes: setting up the next period overrides their ends
                with m.If((k == cfg["rows_p1"]) & (c >= 2) & (~b_on | (jb == cfg["cols_m1"]))):
                    m.next = "IDLE"  # the last output pass has read its last element (and has its settings)
                with m.Elif(c == cfg["period_m1"]):
                    with m.If(ready(k + 1)):
                        set_up(k + 1, False)
                    with m.Else():
                        m.d.sync += k.eq(k + 1)
                        m.next = "SETUP"
        # the divider: row k - 1's sum, ROW cycles into the period (its last exp value has just reached s)
        # (the start registered from the cycle before: c steps by one there and k holds, so it is the same
        # condition, and the period counters reach no reset or enable inside the divider in one cycle)
        div_go = Signal(name="div_go")
        m.d.sync += div_go.eq((c == self.ROW - 1) & (k >= 1) & (k <= cfg["rows"]))
        m.d.comb += [div.num.eq(1 << rb), div.den.eq(s), div.q_bits.eq(cfg["q_bits"]), div.start.eq(div_go)]
        with m.If(div.done):
            m.d.sync += r_next.eq(div.quotient)
        m.d.comb += self.rd0_addr.eq(base_a + ja)

        # ---- the stream: row maxima of the producer's writes, into a table by row --------------------------
        if stream_any:
            maxima = Memory(shape=signed(self.in_width), depth=rows_max, init=[])
            m.submodules.maxima = maxima
            mw, mr = maxima.write_port(), maxima.read_port()
            sc = Signal(range(n + 1))
            run_max = Signal(signed(self.in_width))
            # the producer's writes, registered first: its output path (the requantizer's clamp and the
            # top's write multiplexer) ends in a flip-flop here, not in the running maximum and the table
            v, v_valid = Signal.like(self.in_data, name="in_r"), Signal(name="in_valid_r")
            m.d.sync += [v.eq(self.in_data), v_valid.eq(self.in_valid)]
            new = Mux((sc == 0) | (v > run_max), v, run_max)
            with m.If(self.start):
                m.d.sync += [sc.eq(0), known.eq(0)]
            with m.Elif(v_valid):
                m.d.sync += [run_max.eq(new), sc.eq(sc + 1)]
                with m.If(sc == cfg["cols_m1"]):
                    m.d.sync += [sc.eq(0), known.eq(known + 1)]
            m.d.comb += [mw.addr.eq(known), mw.data.eq(new), mw.en.eq(v_valid & (sc == cfg["cols_m1"]))]
            m.d.comb += mr.addr.eq(k)  # read in the period's first cycle, taken in its second
            with m.If((c == 1) & cfg["stream"][0]):
                m.d.sync += mx_s.eq(mr.data)

        # ---- pipeline A: d1 element (registered); d2 -> max, or exp-table address; d3 exp value
        # (registered); d4 -> sum. Block-RAM outputs go straight into registers.
        ph1, ph2, ph3, ph4 = (Signal(2, name=f"ph{i}") for i in range(1, 5))
        f1, f2, f3, f4 = (Signal(name=x) for x in ("f1", "f2", "f3", "f4"))
        m.d.sync += [ph1.eq(a_ph), ph2.eq(ph1), ph3.eq(ph2), ph4.eq(ph3), f1.eq(ja == 0), f2.eq(f1), f3.eq(f2),
                     f4.eq(f3)]
        xa = Signal.like(self.rd0_data, name="xa")
        m.d.sync += xa.eq(self.rd0_data)
        with m.If(ph2 == MAX):
            m.d.sync += mx_s.eq(Mux(f2 | (xa > mx_s), xa, mx_s))
        m.d.comb += self.lut_addr.eq(cfg["lut_base"] + (mx_s - xa)[:len(self.lut_addr)])
        e_a = Signal.like(self.lut_data, name="e_a")
        m.d.sync += e_a.eq(self.lut_data)
        with m.If(ph4 == SUM):
            m.d.sync += s.eq(Mux(f4, e_a, s + e_a))
        # in distributed RAM (a few dozen LUTs), not half a block RAM: block RAM is what larger models run out of
        m.submodules.ring = ring = Memory(shape=unsigned(self.lut_width), depth=ring_words, init=[],
                                          attrs={"ram_style": "distributed"} if self.lutram else {})
        ring_w, ring_r = ring.write_port(), ring.read_port()
        wa = [Signal(range(ring_words), name=f"ring_wa{i}") for i in range(1, 5)]  # the element's slot, d1..d4
        m.d.sync += [wa[0].eq(ring_a + ja)] + [wa[i].eq(wa[i - 1]) for i in range(1, 4)]
        m.d.comb += [ring_w.addr.eq(wa[3]), ring_w.data.eq(e_a), ring_w.en.eq(ph4 == SUM)]
        # ---- pipeline B: d1, d2 the element's slot (registered); d3 exp value and r registered (the ring's
        # read); d4 e * r; d5, d6 rounded; d7 saturated output.
        b = [Signal(name=f"b{i}") for i in range(1, 8)]
        m.d.sync += [b[0].eq(b_on)] + [b[i].eq(b[i - 1]) for i in range(1, 7)]
        ra = [Signal(range(ring_words), name=f"ring_ra{i}") for i in range(1, 3)]
        m.d.sync += [ra[0].eq(ring_b + jb), ra[1].eq(ra[0])]
        m.d.comb += ring_r.addr.eq(ra[1])
        e_r, r_r = Signal.like(self.lut_data, name="e_r"), Signal.like(r_cur, name="r_r")
        m.d.sync += [e_r.eq(ring_r.data), r_r.eq(r_cur)]
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
