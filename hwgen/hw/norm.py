"""The LayerNorm unit: hwgen.golden.ops.layernorm_parts and layernorm, one row at a time.

Per row of C channels: a sum pass (sx), a square pass (q = sum((C*x - sx)**2)), then t = q // C and
r = 2**recip_bits // max(isqrt(t), 1) on a shared sequential divider and the digit-by-digit square root,
then an output pass: n = round_shift((C*x - sx) * r, recip_bits - norm_bits),
y = clamp(round_shift(n * gamma[c] + beta[c], shift) + zp). (BatchNorm is folded into AffineUnit.)
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hwgen.errors import HwgenError
from hwgen.hw.memory import view
from hwgen.hw.program import ELEMENT_TAIL, Lowered, config_registers, count_writes, counter_bits
from hwgen.hw.requant import Divider, Isqrt, clamp, round_shift
from hwgen.hw.vendor import rescale_product_attrs
from hwgen.ops import Unit

SUM, SQ, OUT = 1, 2, 3


@dataclass(frozen=True)
class LayerNormProgram:
    """One layernorm node: ``rows`` x ``cols``, its {gamma, beta} words from ``p_base`` of the parameter
    ROM, ``recip_bits``, ``n_shift`` (recip_bits - norm_bits), the output ``shift``, ``q1_bits`` (quotient
    bits of q // C) and the output's ``zp``/``qmin``/``qmax``."""

    rows: int
    cols: int
    p_base: int
    recip_bits: int
    n_shift: int
    shift: int
    q1_bits: int
    zp: int
    qmin: int
    qmax: int

    @property
    def numel(self) -> int:
        return self.rows * self.cols


class LayerNormUnit(Lowered, wiring.Component):
    """Runs layernorm node ``sel`` of ``programs`` (``LayerNormProgram``) on ``start``."""

    kind = Unit.LAYERNORM
    RESCALE_DSPS = 5  # C*x, xc*xc, xc*r (two DSPs: wider than 25 x 18) and n*gamma
    ROW = 10  # cycles per row: square->divider wait (4) and three handshakes (2 each)
    ROM_PORTS = (("ln_params", "p"),)

    @classmethod
    def program(cls, design, index, node, wd, q):
        a, consts = node.attrs, design.graph.consts
        rows, cols = view(node.out)
        if a["recip_bits"] < a["norm_bits"]:
            raise HwgenError(f"node {node.name!r} (layernorm): recip_bits < norm_bits")
        gamma, beta = (consts[a[k]].value.reshape(-1) for k in ("gamma", "beta"))
        params = design.params.setdefault("ln_params", [])
        prog = LayerNormProgram(rows=rows, cols=cols, p_base=len(params), recip_bits=a["recip_bits"],
                                n_shift=a["recip_bits"] - a["norm_bits"], shift=a["shift"],
                                q1_bits=wd["sumsq"], **q)
        params += [(int(gamma[c % gamma.size]), int(beta[c % beta.size])) for c in range(cols)]
        design.wmax(cls.kind, "recip_bits", a["recip_bits"])
        return prog

    @classmethod
    def finish(cls, design):
        design.param_rom("ln_params", cls.kind, ("gamma", "beta"))

    @classmethod
    def make(cls, design, programs, addr_width):
        u = design.widths[cls.kind]
        return cls(programs, in_width=u["in"], w=u, gamma_width=u["gamma"], beta_width=u["beta"],
                   out_width=u["out"], addr_width=addr_width)

    @classmethod
    def cycles(cls, design, prog):
        w = design.widths[cls.kind]["sumsq"]
        sqrt_steps = (w + (w & 1)) // 2
        per_row = 3 * prog.cols + prog.q1_bits + sqrt_steps + prog.recip_bits + 1 + cls.ROW
        return prog.rows * per_row + ELEMENT_TAIL + 2

    @classmethod
    def dsp48(cls, design):
        # C*x and n*gamma (+ beta) one each, xc*xc and xc*r split as Yosys splits them (the element count
        # is the program's, a settings register, not a product of two: no DSP48E1). With xc*xc split (xc
        # wider than 17 bits) Yosys drops one of the split products' DSP48E1 after packing: measured on
        # every such design (6, 8 and 9 DSP48E1 for 17-, 19- and 18-bit xc with four, two and four
        # programs); RESCALE_DSPS, which lowering's DSP budget uses, counts 5.
        from hwgen.hw.vendor import dsp48_for_product

        w = design.widths[cls.kind]
        xc = w["xc"] + 1
        square = dsp48_for_product(xc, xc)
        return 2 + square - (square > 1) + dsp48_for_product(xc, w["recip"] + 1)

    @classmethod
    def resource_terms(cls, design):
        # the row sum and sum of squares, the divider and square root, the centred value, normalised value
        # and the affine output with its gamma/beta delay line; element, row and write counters
        t = super().resource_terms(design)
        w, ps = design.widths[cls.kind], design.programs[cls.kind]
        n, rb = max(p.numel for p in ps), w.get("recip_bits", max(p.recip_bits for p in ps))
        xc, sq, acc, gb = w["xc"], w["sumsq"], w["acc"], max(w.get("gamma", 2), w.get("beta", 2))
        qw, den, qb = max(sq, rb + 2), sq + rb, max(sq, rb + 1)
        t.update(reg=2 * xc + sq + w["recip"] + w["norm"] + acc + 6 * gb + w["out"] + qw + den + qb + qb + 3 * sq // 2,
                 arith=2 * xc + sq + 2 * qw + 3 * sq // 2 + acc + 3 * w["out"], shift=w["prod"] + acc,
                 count=5 * counter_bits(2 * n))
        return t

    def __init__(self, programs: list[LayerNormProgram], *, in_width: int, w: dict[str, int],
                 gamma_width: int, beta_width: int, out_width: int, addr_width: int):
        self.programs, self.in_width, self.w = programs, in_width, w
        self.gamma_width, self.beta_width, self.out_width = gamma_width, beta_width, out_width
        super().__init__({
            "start": In(1), "sel": In(range(len(programs))), "done": Out(1),
            "rd0_addr": Out(addr_width), "rd0_data": In(signed(in_width)),
            "p_addr": Out(addr_width), "p_data": In(unsigned(gamma_width + beta_width)),
            "w_valid": Out(1), "w_data": Out(signed(out_width + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        ps, w = self.programs, self.w
        n = max(p.numel for p in ps)
        rb = max(p.recip_bits for p in ps)
        ow = self.out_width + 1
        cfg = config_registers(m, self.start, self.sel, ps, {
            "numel": unsigned(n.bit_length() + 1),
            "rows": unsigned(n.bit_length() + 1), "cols": unsigned(n.bit_length() + 1),
            "p_base": unsigned(len(self.p_addr)), "recip_bits": unsigned(8), "n_shift": unsigned(8),
            "shift": unsigned(8), "zp": signed(ow), "qmin": signed(ow), "qmax": signed(ow), "q1_bits": unsigned(8)})
        qw = max(w["sumsq"], rb + 2)
        m.submodules.div = div = Divider(qw, max(w["sumsq"] + rb, len(cfg["cols"])), max(w["sumsq"], rb + 1))
        m.submodules.sqrt = sqrt = Isqrt(w["sumsq"])
        j, row, base, c = (Signal(range(2 * n + 1)) for _ in range(4))
        phase, wait = Signal(2), Signal(3)
        sx = Signal(signed(w["xc"]))
        q = Signal(unsigned(w["sumsq"]))
        r = Signal(unsigned(w["recip"]))
        m.d.comb += [self.rd0_addr.eq(base + j), self.p_addr.eq(cfg["p_base"] + j)]
        last_j = j == cfg["cols"] - 1
        m.d.sync += [div.start.eq(0), sqrt.start.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [j.eq(0), row.eq(0), base.eq(0)]
                    m.next = "SUM"
            for state, nxt in (("SUM", "SQ"), ("SQ", "WAIT"), ("OUT", "SUM")):
                with m.State(state):
                    m.d.comb += phase.eq({"SUM": SUM, "SQ": SQ, "OUT": OUT}[state])
                    m.d.sync += j.eq(j + 1)
                    with m.If(last_j):
                        m.d.sync += [j.eq(0), wait.eq(4)]
                        m.next = nxt
                        if state == "OUT":
                            m.d.sync += [row.eq(row + 1), base.eq(base + cfg["cols"])]
                            with m.If(row == cfg["rows"] - 1):
                                m.next = "IDLE"
            with m.State("WAIT"):  # the last square reaches q four cycles after its read
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 1):
                    m.d.sync += [div.start.eq(1), div.num.eq(q), div.den.eq(cfg["cols"]),
                                 div.q_bits.eq(cfg["q1_bits"])]
                    m.next = "DIV1"
            with m.State("DIV1"):
                with m.If(div.done):
                    m.d.sync += [sqrt.n.eq(div.quotient), sqrt.start.eq(1)]
                    m.next = "SQRT"
            with m.State("SQRT"):
                with m.If(sqrt.done):
                    m.d.sync += [div.start.eq(1), div.num.eq(1 << rb), div.q_bits.eq(cfg["recip_bits"] + 1),
                                 div.den.eq(Mux(sqrt.root == 0, 1, sqrt.root) << (rb - cfg["recip_bits"])[:8])]
                    m.next = "DIV2"
            with m.State("DIV2"):
                with m.If(div.done):
                    m.d.sync += r.eq(div.quotient)
                    m.next = "OUT"
        # Datapath, phase-tagged like the softmax: d1 element, d2 xc, d3 xc*xc or xc*r, ...
        ph = [Signal(2, name=f"ph{i}") for i in range(7)]
        f = [Signal(name=f"f{i}") for i in range(4)]
        m.d.sync += [ph[0].eq(phase), f[0].eq(j == 0)] + [ph[i].eq(ph[i - 1]) for i in range(1, 7)]
        m.d.sync += [f[i].eq(f[i - 1]) for i in range(1, 4)]
        x = self.rd0_data
        with m.If(ph[0] == SUM):
            m.d.sync += sx.eq(Mux(f[0], x, sx + x))
        xc = Signal(signed(w["xc"] + 1))
        sq = Signal(unsigned(2 * w["xc"]), attrs=rescale_product_attrs())
        prod = Signal(signed(w["prod"] + 1), attrs=rescale_product_attrs())
        nrm = Signal(signed(w["norm"] + 1))
        acc = Signal(signed(w["acc"] + 1), attrs=rescale_product_attrs())
        rnd = Signal(signed(w["acc"] + 1))
        gamma = self.p_data[:self.gamma_width].as_signed()
        beta = self.p_data[self.gamma_width:].as_signed()
        g1, g2, g3, b1, b2, b3 = (Signal(signed(max(self.gamma_width, self.beta_width))) for _ in range(6))
        m.d.sync += [xc.eq(x * cfg["cols"] - sx), g1.eq(gamma), b1.eq(beta)]  # d2
        m.d.sync += [sq.eq((xc * xc).as_unsigned()), prod.eq(xc * r), g2.eq(g1), b2.eq(b1)]  # d3
        with m.If(ph[2] == SQ):
            m.d.sync += q.eq(Mux(f[2], sq, q + sq))  # d4
        m.d.sync += [nrm.eq(round_shift(prod, cfg["n_shift"])), g3.eq(g2), b3.eq(b2)]  # d4
        m.d.sync += acc.eq(nrm * g3 + b3)  # d5
        m.d.sync += rnd.eq(round_shift(acc, cfg["shift"]))  # d6
        m.d.sync += [self.w_data.eq(clamp(rnd + cfg["zp"], cfg["qmin"], cfg["qmax"])), self.w_valid.eq(ph[5] == OUT)]
        count_writes(m, self, cfg["numel"], Signal(range(n + 1)))  # rows * cols, from the program
        return m
