"""Task-head units: the classifier's argmax and the anomaly detector's reconstruction score.

Both read their operands one element per cycle from flat buffers (like the element-wise units) and write
their few output elements in order; ``done`` follows the last one. Their arithmetic is that of
``hwgen.golden.ops.argmax`` and ``hwgen.golden.ops.anomaly_score``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring

from hwgen.hw.eltwise import _ports
from hwgen.hw.memory import view
from hwgen.hw.program import Lowered, config_registers, count_writes, counter_bits, signed_width
from hwgen.hw.requant import clamp, round_shift
from hwgen.ops import Unit


@dataclass(frozen=True)
class ArgmaxProgram:
    """One argmax node: ``cols`` scores; ``scores``: write them after the index; ``total``: writes."""

    cols: int
    scores: bool
    total: int


@dataclass(frozen=True)
class AnomalyScoreProgram:
    """One anomaly-score node: ``numel`` elements of rec, read from element ``offset`` of x; ``features`` per
    row with multipliers ``mx``/``mr`` (one each per feature); ``shift``, ``threshold`` and ``qmax``."""

    numel: int
    offset: int
    features: int
    mx: tuple[int, ...]
    mr: tuple[int, ...]
    shift: int
    threshold: int
    qmax: int


class ArgmaxUnit(Lowered, wiring.Component):
    """Writes the index of the largest of ``cols`` scores (a strict ``>`` keeps the lowest index of equal
    maxima), then, when the program's ``scores`` is set, the scores themselves.

    ``programs``: one ``ArgmaxProgram`` per node. ``cols + 3`` cycles from ``start`` to the index,
    ``2 cols + 4`` to ``done`` with the scores.
    """

    kind = Unit.ARGMAX
    # It only compares, yet Yosys 0.70 maps one more DSP48E1 in the classifier's design than the other units
    # account for (measured: BasicMotions W8, 21 at P=13, 20 at P=12).
    RESCALE_DSPS = 1
    TAIL = 4  # start, read, compare, write, done

    @classmethod
    def program(cls, design, index, node, wd, q):
        cols = design.graph.value_type(node.inputs[0]).shape[-1]
        scores = bool(node.attrs.get("scores"))
        return ArgmaxProgram(cols=cols, scores=scores, total=1 + cols * scores)

    @classmethod
    def make(cls, design, programs, addr_width):
        u = design.widths[cls.kind]
        return cls(programs, in_width=u["in"], out_width=u["out"], addr_width=addr_width)

    @classmethod
    def cycles(cls, design, prog):  # scan, then the scores read out again
        return prog.cols * (1 + prog.scores) + cls.TAIL

    @classmethod
    def resource_terms(cls, design):
        # the best score and its index, one comparison; index and write counters
        t = super().resource_terms(design)
        w, cw = design.widths[cls.kind], counter_bits(max(p.total + p.cols for p in design.programs[cls.kind]))
        t.update(reg=2 * w["in"] + w["out"] + 2 * cw, arith=w["in"] + cw, count=2 * cw)
        return t

    def __init__(self, programs: list[ArgmaxProgram], *, in_width: int, out_width: int, addr_width: int):
        self.programs, self.out_width = programs, out_width
        super().__init__(_ports(len(programs), addr_width, in_width, out_width, 1))

    def elaborate(self, platform):
        m = Module()
        ps = self.programs
        n = max(max(p.total, p.cols) for p in ps)
        cfg = config_registers(m, self.start, self.sel, ps, {
            "cols": unsigned(n.bit_length() + 1), "scores": unsigned(1), "total": unsigned(n.bit_length() + 1)})
        idx = Signal(range(n + 1))
        phase = Signal(2)  # 0 idle, 1 scan for the maximum, 2 read the scores out
        with m.If(self.start):
            m.d.sync += [idx.eq(0), phase.eq(1)]
        with m.Elif(phase != 0):
            m.d.sync += idx.eq(idx + 1)
            with m.If(idx == cfg["cols"] - 1):
                m.d.sync += [idx.eq(0), phase.eq(Mux((phase == 1) & cfg["scores"], 2, 0))]
        m.d.comb += self.rd0_addr.eq(idx)
        # one cycle later the memory holds the element read at idx
        v1, p1, i1, last1 = Signal(), Signal(2), Signal.like(idx), Signal()
        m.d.sync += [v1.eq((phase != 0) & ~self.start), p1.eq(phase), i1.eq(idx), last1.eq(idx == cfg["cols"] - 1)]
        best, best_i = Signal(signed(len(self.rd0_data))), Signal.like(idx)
        better = (i1 == 0) | (self.rd0_data > best)
        with m.If(v1 & (p1 == 1) & better):
            m.d.sync += [best.eq(self.rd0_data), best_i.eq(i1)]
        scan_out = v1 & (p1 == 1) & last1
        m.d.sync += [self.w_valid.eq(scan_out | (v1 & (p1 == 2))),
                     self.w_data.eq(Mux(p1 == 1, Mux(better, i1, best_i), self.rd0_data))]
        count_writes(m, self, cfg["total"], Signal.like(cfg["total"]))
        return m


class AnomalyScoreUnit(Lowered, wiring.Component):
    """``score = clamp(round_shift(sum |x * mx[f] - rec * mr[f]|, shift), 0, qmax)``, then
    ``flag = score > threshold``: reads the window x (``rd0``, from element ``offset`` on) and its
    reconstruction or forecast (``rd1``) together, one element per cycle, feature f = element index mod
    ``features`` (``offset`` is a whole number of rows).

    ``programs``: one ``AnomalyScoreProgram`` per node. The multipliers of all nodes sit in one constant
    table. ``numel + 8`` cycles from ``start`` to ``done``.
    """

    kind = Unit.ANOMALY
    RESCALE_DSPS = 2  # x * mx and rec * mr
    TAIL = 9  # start, read, products, difference, sum, round, clamp, score and flag writes, done

    @classmethod
    def program(cls, design, index, node, wd, q):
        a, graph = node.attrs, design.graph
        cols = view(graph.value_type(node.inputs[0]))[1]
        mx, mr = ([int(v) for v in graph.consts[a[k]].value.reshape(-1)] for k in ("mx", "mr"))
        return AnomalyScoreProgram(numel=math.prod(view(graph.value_type(node.inputs[1]))),
                                   offset=a.get("offset") or 0, features=cols,
                                   mx=tuple(mx[f % len(mx)] for f in range(cols)),
                                   mr=tuple(mr[f % len(mr)] for f in range(cols)), shift=a["shift"],
                                   threshold=a["threshold"], qmax=node.out.dtype.qmax)

    @classmethod
    def make(cls, design, programs, addr_width):
        u = design.widths[cls.kind]
        return cls(programs, in_width=u["in"], diff_width=u["diff"], acc_width=u["acc"], out_width=u["out"],
                   addr_width=addr_width)

    @classmethod
    def cycles(cls, design, prog):
        return prog.numel + cls.TAIL

    @staticmethod
    def second_read(node, streamed):  # the reconstruction, read alongside the window
        return node.inputs[1], 0

    @classmethod
    def resource_terms(cls, design):
        # two scaled operands, their difference, the absolute-value accumulator, round and clamp; the
        # per-feature multiplier tables
        t = super().resource_terms(design)
        w, ps = design.widths[cls.kind], design.programs[cls.kind]
        feats = sum(len(p.mx) for p in ps)
        d, a, o = w["diff"], w["acc"], w["out"]
        t.update(reg=3 * d + 2 * a + 2 * o, arith=2 * d + 2 * a + 2 * o, shift=a, mux=2 * feats * 16,
                 count=3 * counter_bits(max(p.numel + p.offset for p in ps)))
        return t

    def __init__(self, programs: list[AnomalyScoreProgram], *, in_width: int, diff_width: int, acc_width: int,
                 out_width: int, addr_width: int):
        self.programs, self.diff_width, self.acc_width, self.out_width = programs, diff_width, acc_width, out_width
        super().__init__(_ports(len(programs), addr_width, in_width, out_width, 2))

    def elaborate(self, platform):
        m = Module()
        ps = self.programs
        n = max(p.numel + p.offset for p in ps)
        mx_all = [v for p in ps for v in p.mx]
        mr_all = [v for p in ps for v in p.mr]
        mw = signed_width(*mx_all, *mr_all)
        # each node's multipliers start at p_base of the constant tables (a setting derived from the programs)
        bases = [sum(len(q.mx) for q in ps[:i]) for i in range(len(ps))]
        names = ("numel", "features", "offset", "shift", "threshold", "qmax")
        table = [{k: getattr(p, k) for k in names} | {"p_base": b} for p, b in zip(ps, bases)]
        cfg = config_registers(m, self.start, self.sel, table, {
            "numel": unsigned(n.bit_length() + 1), "features": unsigned(n.bit_length() + 1),
            "offset": unsigned(n.bit_length() + 1),
            "p_base": unsigned(max(len(mx_all), 2).bit_length()), "shift": unsigned(8),
            "threshold": signed(self.out_width + 1), "qmax": signed(self.out_width + 1)})
        idx, f, running = Signal(range(n + 1)), Signal(range(n + 1)), Signal()
        with m.If(self.start):
            m.d.sync += [idx.eq(0), f.eq(0), running.eq(1)]
        with m.Elif(running):
            m.d.sync += [idx.eq(idx + 1), f.eq(Mux(f == cfg["features"] - 1, 0, f + 1))]
            with m.If(idx == cfg["numel"] - 1):
                m.d.sync += running.eq(0)
        m.d.comb += [self.rd0_addr.eq(idx + cfg["offset"]), self.rd1_addr.eq(idx)]
        mx_t = Array(Const(v, signed(mw)) for v in mx_all)
        mr_t = Array(Const(v, signed(mw)) for v in mr_all)
        # stage 1: the memories answer; the multipliers are looked up for the element's feature
        v1, l1, k1 = Signal(), Signal(), Signal(range(len(mx_all) + 1))
        m.d.sync += [v1.eq(running & ~self.start), l1.eq(idx == cfg["numel"] - 1), k1.eq(cfg["p_base"] + f)]
        px, pr = Signal(signed(self.diff_width)), Signal(signed(self.diff_width))
        v2, l2 = Signal(), Signal()
        m.d.sync += [px.eq(self.rd0_data * mx_t[k1]), pr.eq(self.rd1_data * mr_t[k1]), v2.eq(v1), l2.eq(v1 & l1)]
        d = Signal(signed(self.diff_width))
        v3, l3 = Signal(), Signal()
        m.d.sync += [d.eq(px - pr), v3.eq(v2), l3.eq(l2)]
        acc = Signal(signed(self.acc_width))
        with m.If(self.start):
            m.d.sync += acc.eq(0)
        with m.Elif(v3):
            m.d.sync += acc.eq(acc + Mux(d < 0, -d, d))
        v4, rnd = Signal(), Signal(signed(self.acc_width + 1))
        m.d.sync += v4.eq(l3)
        v5 = Signal()
        m.d.sync += [rnd.eq(round_shift(acc, cfg["shift"])), v5.eq(v4)]
        score = Signal(signed(self.out_width + 1))
        v6 = Signal()
        m.d.sync += [score.eq(clamp(rnd, 0, cfg["qmax"])), v6.eq(v5)]
        m.d.sync += [self.w_valid.eq(v5 | v6),
                     self.w_data.eq(Mux(v6, score > cfg["threshold"], clamp(rnd, 0, cfg["qmax"])))]
        count_writes(m, self, 2, Signal(2))
        return m
