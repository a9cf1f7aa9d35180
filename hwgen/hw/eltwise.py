"""Element-wise units: add (residual and positional encoding), affine (folded BatchNorm), avgpool.

Each unit is shared by every node of its op kind, reads one element per cycle from flat buffers (or
constant ROMs) and emits its output elements in row-major order, pipelined at one element per cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hwgen.hw.memory import view
from hwgen.hw.program import ELEMENT_TAIL, Lowered, config_registers, count_writes, counter_bits, signed_width
from hwgen.hw.requant import ROUND_STAGES, Requantizer, clamp, round_shift_stages
from hwgen.hw.shiftadd import delayed, rescale_product, rescale_stages
from hwgen.hw.vendor import rescale_product_attrs
from hwgen.ops import Unit


def _ports(n_nodes: int, addr_width: int, in_width: int, out_width: int, reads: int) -> dict:
    ports = {"start": In(1), "sel": In(range(n_nodes)), "done": Out(1),
             "w_valid": Out(1), "w_data": Out(signed(out_width + 1)),
             "in_valid": In(1), "in_data": In(signed(in_width))}
    for r in range(reads):
        ports[f"rd{r}_addr"] = Out(addr_width)
        ports[f"rd{r}_data"] = In(signed(in_width))
    return ports


def _issue(m, unit, cfg, total, extra_reset=(), extra_step=(), read_latency=1):
    """The element loop. A chained node (program field ``chained``) takes its first operand from the
    producing unit's output stream (``in_valid``/``in_data``) instead of memory, so it runs concurrently
    with its producer; otherwise one element is read per cycle. Returns (go, index, first operand).

    When every node of the unit is chained (or none is), the choice is made here rather than by the
    ``chained`` register, so no multiplexer lies between the memory (or stream) and the operand.
    ``read_latency``: cycles from address to data of the unit's reads (the streamed operand is delayed as
    much)."""
    idx, running, go = Signal.like(total), Signal(), Signal()
    in_reg = Signal.like(unit.in_data)
    kinds = {int(p.chained) for p in getattr(unit, "programs", [])}
    chained = kinds.pop() if len(kinds) == 1 else cfg["chained"]
    m.d.comb += go.eq(Mux(chained, unit.in_valid, running))
    m.d.sync += in_reg.eq(unit.in_data)  # aligns with the other operand's memory read
    in_reg = delayed(m, in_reg, read_latency - 1, "in_reg")
    with m.If(unit.start):
        m.d.sync += [idx.eq(0), running.eq(1), *extra_reset]
    with m.Elif(go):
        m.d.sync += [idx.eq(idx + 1), *extra_step]
        with m.If(idx == total - 1):
            m.d.sync += running.eq(0)
    return go, idx, Mux(chained, in_reg, unit.rd0_data)


def _out_stage(m, unit, value, valid, cfg):
    """Final stage shared by the element-wise units: add the zero point, saturate, register."""
    m.d.sync += [unit.w_data.eq(clamp(value + cfg["zp"], cfg["qmin"], cfg["qmax"])), unit.w_valid.eq(valid)]


@dataclass(frozen=True)
class AddProgram:
    """One add node: ``numel`` elements, multipliers ``ma``/``mb`` of its operands, ``bias`` and ``shift``
    of the rounding, the output's ``zp``/``qmin``/``qmax``; ``chained``: ``a`` is the producer's stream."""

    numel: int
    ma: int
    mb: int
    bias: int
    shift: int
    chained: bool
    zp: int
    qmin: int
    qmax: int


@dataclass(frozen=True)
class AffineProgram:
    """One affine node: ``numel`` elements of ``channels`` channels, its {mul, bias, shift} words from
    ``p_base`` of the parameter ROM, the output's ``zp``/``qmin``/``qmax``; ``chained``: ``x`` is the
    producer's stream."""

    numel: int
    channels: int
    p_base: int
    chained: bool
    zp: int
    qmin: int
    qmax: int


@dataclass(frozen=True)
class AvgPoolProgram:
    """One avgpool node: ``numel`` = ``rows`` x ``channels`` input elements, the requantizer's ``m0``,
    ``shift`` and ``bias``, the output's ``zp``/``qmin``/``qmax``; ``chained``: ``x`` is the producer's
    stream."""

    numel: int
    rows: int
    channels: int
    m0: int
    shift: int
    bias: int
    chained: bool
    zp: int
    qmin: int
    qmax: int


class AddUnit(Lowered, wiring.Component):
    """``y = clamp(round_shift(a * ma + b * mb + bias, shift) + zp)`` over ``numel`` elements.

    ``programs``: one ``AddProgram`` per node (``a`` arrives on the ``in_valid``/``in_data`` stream from
    the producing unit when ``chained``). Latency 9 cycles: reads (2, registered at
    each memory by the top level), operand registers, products, sum, rounding (2), saturation.
    """

    kind = Unit.ADD
    RESCALE_DSPS = 2  # a * ma and b * mb
    FABRIC_CAPABLE = True
    CHAINED_CYCLES = 8
    EXTRA = 3  # stages beyond ELEMENT_TAIL's: the read register, the operand registers, the second rounding stage
    REGISTERED_READS = True

    @classmethod
    def fabric_products(cls, design):
        return [(design.widths[cls.kind]["in"], 16)] * 2

    @classmethod
    def program(cls, design, index, node, wd, q):
        a = node.attrs
        ma, mb = (a["mb"], a["ma"]) if design.streamed.get(index) == 1 else (a["ma"], a["mb"])
        return AddProgram(numel=math.prod(view(node.out)), ma=ma, mb=mb, bias=a["bias"], shift=a["shift"],
                          chained=index in design.streamed, **q)

    @classmethod
    def make(cls, design, programs, addr_width):
        u = design.widths[cls.kind]
        return cls(programs, in_width=u["in"], acc_width=u["acc"], out_width=u["out"], addr_width=addr_width,
                   fabric=cls.kind in design.fabric)

    @classmethod
    def cycles(cls, design, prog):
        return prog.numel + ELEMENT_TAIL + cls.EXTRA + cls.rescale_delay(design)

    @staticmethod
    def second_read(node, streamed):
        other = node.inputs[0] if streamed == 1 else node.inputs[1]
        same = streamed is None and node.inputs[1] == node.inputs[0]
        return other, 1 if same else 0

    @classmethod
    def resource_terms(cls, design):
        # two products summed with the bias, round, zero point and clamp; element and write counters
        t = super().resource_terms(design)
        w = design.widths[cls.kind]
        n = max(p.numel for p in design.programs[cls.kind])
        t.update(reg=2 * w["acc"] + w["out"] + w["in"], arith=3 * w["acc"] + 3 * w["out"], shift=w["acc"],
                 count=2 * counter_bits(n))
        return t

    def __init__(self, programs: list[AddProgram], *, in_width: int, acc_width: int, out_width: int,
                 addr_width: int, fabric: bool = False):
        self.programs, self.acc_width, self.out_width, self.fabric = programs, acc_width, out_width, fabric
        super().__init__(_ports(len(programs), addr_width, in_width, out_width, 2))

    def elaborate(self, platform):
        m = Module()
        ps = self.programs
        mw = signed_width(*[v for p in ps for v in (p.ma, p.mb)])
        n = max(p.numel for p in ps)
        cfg = config_registers(m, self.start, self.sel, ps, {
            "numel": unsigned(n.bit_length() + 1), "ma": signed(mw), "mb": signed(mw),
            "bias": signed(signed_width(*[p.bias for p in ps])), "shift": unsigned(8),
            "zp": signed(self.out_width + 1), "qmin": signed(self.out_width + 1), "qmax": signed(self.out_width + 1),
            "chained": unsigned(1)})
        go, idx, a = _issue(m, self, cfg, cfg["numel"], read_latency=2)
        m.d.comb += [self.rd0_addr.eq(idx), self.rd1_addr.eq(idx)]
        acc = Signal(signed(self.acc_width + 1))
        # Both operands are registered as they leave memory (or the producer's stream), so the products
        # start from flip-flops.
        a_r, b_r = Signal.like(a, name="a_r"), Signal.like(self.rd1_data, name="b_r")
        m.d.sync += [a_r.eq(a), b_r.eq(self.rd1_data)]
        if self.fabric:
            pa, pb = rescale_product(m, a_r, cfg["ma"], "mul_a"), rescale_product(m, b_r, cfg["mb"], "mul_b")
        else:
            pa, pb = (Signal(signed(self.acc_width), attrs=rescale_product_attrs()) for _ in range(2))
            m.d.sync += [pa.eq(a_r * cfg["ma"]), pb.eq(b_r * cfg["mb"])]
        m.d.sync += acc.eq(pa + pb + cfg["bias"])
        rnd = round_shift_stages(m, acc, cfg["shift"], "rs")
        stages = 5 + ROUND_STAGES + (rescale_stages() - 1 if self.fabric else 0)
        _out_stage(m, self, rnd, delayed(m, go, stages, "valid"), cfg)
        count_writes(m, self, cfg["numel"], Signal.like(cfg["numel"]))
        return m


class AffineUnit(Lowered, wiring.Component):
    """``y[r, c] = clamp(round_shift(x * mul[c] + bias[c], shift[c]) + zp)`` (a folded BatchNorm).

    ``programs``: one ``AffineProgram`` per node (its {shift, bias, mul} words read through
    ``p_addr``/``p_data``; ``x`` arrives on ``in_valid``/``in_data`` when ``chained``).
    Latency 8 cycles: operand registers, product, bias, rounding (2), saturation.
    """

    kind = Unit.AFFINE
    RESCALE_DSPS = 1  # x * mul
    FABRIC_CAPABLE = True
    CHAINED_CYCLES = 7
    EXTRA = 2  # stages beyond ELEMENT_TAIL's: the operand registers and the second rounding stage
    ROM_PORTS = (("aff_params", "p"),)

    @classmethod
    def program(cls, design, index, node, wd, q):
        rows, cols = view(node.out)
        consts = design.graph.consts
        mul, bias, sh = (consts[node.attrs[k]].value.reshape(-1) for k in ("mul", "bias", "shift"))
        params = design.params.setdefault("aff_params", [])
        prog = AffineProgram(numel=rows * cols, channels=cols, p_base=len(params),
                             chained=index in design.streamed, **q)
        params += [(int(mul[c % mul.size]), int(bias[c % bias.size]), int(sh[c % sh.size])) for c in range(cols)]
        return prog

    @classmethod
    def finish(cls, design):
        design.param_rom("aff_params", cls.kind, ("mul", "bias"), tail=(8,))  # {mul, bias, shift}

    @classmethod
    def make(cls, design, programs, addr_width):
        u = design.widths[cls.kind]
        return cls(programs, in_width=u["in"], mul_width=u["mul"], bias_width=u["bias"], acc_width=u["acc"],
                   out_width=u["out"], addr_width=addr_width, fabric=cls.kind in design.fabric)

    @classmethod
    def cycles(cls, design, prog):
        return prog.numel + ELEMENT_TAIL + cls.EXTRA + cls.rescale_delay(design)

    @classmethod
    def fabric_products(cls, design):
        return [(design.widths[cls.kind]["in"], 16)]

    @classmethod
    def resource_terms(cls, design):
        # product, bias and shift delayed to it, round, zero point and clamp; element, channel, write counters
        t = super().resource_terms(design)
        w = design.widths[cls.kind]
        n = max(p.numel for p in design.programs[cls.kind])
        t.update(reg=2 * w["acc"] + w["out"] + w["in"] + w.get("bias", 2) + 16, arith=2 * w["acc"] + 3 * w["out"],
                 shift=w["acc"], count=3 * counter_bits(n))
        return t

    def __init__(self, programs: list[AffineProgram], *, in_width: int, mul_width: int, bias_width: int,
                 acc_width: int, out_width: int, addr_width: int, fabric: bool = False):
        self.programs, self.out_width, self.acc_width, self.fabric = programs, out_width, acc_width, fabric
        self.mul_width, self.bias_width = mul_width, bias_width
        ports = _ports(len(programs), addr_width, in_width, out_width, 1)
        ports.update({"p_addr": Out(addr_width), "p_data": In(unsigned(mul_width + bias_width + 8))})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        ps = self.programs
        n = max(p.numel for p in ps)
        cfg = config_registers(m, self.start, self.sel, ps, {
            "numel": unsigned(n.bit_length() + 1), "channels": unsigned(n.bit_length() + 1),
            "p_base": unsigned(len(self.p_addr)), "zp": signed(self.out_width + 1),
            "qmin": signed(self.out_width + 1), "qmax": signed(self.out_width + 1), "chained": unsigned(1)})
        c = Signal(range(n + 1))
        go, idx, x = _issue(m, self, cfg, cfg["numel"], [c.eq(0)],
                            [c.eq(Mux(c == cfg["channels"] - 1, 0, c + 1))])
        m.d.comb += [self.rd0_addr.eq(idx), self.p_addr.eq(cfg["p_base"] + c)]
        mul = self.p_data[:self.mul_width].as_signed()
        bias = self.p_data[self.mul_width:self.mul_width + self.bias_width].as_signed()
        shift = self.p_data[self.mul_width + self.bias_width:]
        acc = Signal(signed(self.acc_width + 1))
        shift_dd = Signal(8)
        # The element and its parameter word are registered as they leave memory, so the product starts
        # from flip-flops.
        x_r, mul_r = Signal.like(x, name="x_r"), Signal.like(mul, name="mul_r")
        m.d.sync += [x_r.eq(x), mul_r.eq(mul)]
        bias, shift = delayed(m, bias, 1, "bias_in"), delayed(m, shift, 1, "shift_in")
        if self.fabric:
            stages = rescale_stages()
            prod = rescale_product(m, x_r, mul_r, "mul")
        else:
            stages = 1
            prod = Signal(signed(self.acc_width + 1), attrs=rescale_product_attrs())
            m.d.sync += prod.eq(x_r * mul_r)
        bias_d, shift_d = delayed(m, bias, stages, "bias"), delayed(m, shift, stages, "shift")
        m.d.sync += [acc.eq(prod + bias_d), shift_dd.eq(shift_d)]
        rnd = round_shift_stages(m, acc, shift_dd, "rs")
        _out_stage(m, self, rnd, delayed(m, go, 4 + ROUND_STAGES + stages - 1, "valid"), cfg)
        count_writes(m, self, cfg["numel"], Signal.like(cfg["numel"]))
        return m


class AvgpoolUnit(Lowered, wiring.Component):
    """``y[0, c] = requantize(sum_r x[r, c] + bias, m0, shift) + zp``, reading row-major into one
    accumulator per channel, so it can also be chained onto its producer (program field ``chained``).

    ``programs``: one ``AvgPoolProgram`` per node. Each channel is requantized
    as its last row arrives; ``done`` follows the last channel.
    """

    kind = Unit.AVGPOOL
    RESCALE_DSPS = 1  # the requantizer
    FABRIC_CAPABLE = True
    CHAINED_CYCLES = 6
    EXTRA = 2  # beyond ELEMENT_TAIL - 1: the requantizer's input register and its second rounding stage

    @classmethod
    def program(cls, design, index, node, wd, q):
        a = node.attrs
        rows, cols = view(design.graph.value_type(node.inputs[0]))
        design.wmax(cls.kind, "m0", signed_width(a["m0"]))
        return AvgPoolProgram(numel=rows * cols, rows=rows, channels=cols, m0=a["m0"], shift=a["shift"],
                              bias=a["bias"], chained=index in design.streamed, **q)

    @classmethod
    def make(cls, design, programs, addr_width):
        u = design.widths[cls.kind]
        return cls(programs, in_width=u["in"], acc_width=u["acc"], out_width=u["out"], addr_width=addr_width,
                   fabric=cls.kind in design.fabric)

    @classmethod
    def cycles(cls, design, prog):
        return prog.numel + ELEMENT_TAIL - 1 + cls.EXTRA + cls.rescale_delay(design)

    @classmethod
    def fabric_products(cls, design):
        return [(design.widths[cls.kind]["acc"] + 1, 16)]

    @classmethod
    def resource_terms(cls, design):
        # one accumulator per channel (written and read through a channel multiplexer), the requantizer
        t = super().resource_terms(design)
        w, ps = design.widths[cls.kind], design.programs[cls.kind]
        ch, n, m0 = max(p.channels for p in ps), max(p.numel for p in ps), w.get("m0", 2)
        t.update(reg=ch * (w["acc"] + 1) + w["acc"] + m0 + w["out"], mux=ch * (w["acc"] + 1),
                 arith=2 * w["acc"] + 3 * w["out"], shift=w["acc"] + m0, count=4 * counter_bits(n))
        return t

    def __init__(self, programs: list[AvgPoolProgram], *, in_width: int, acc_width: int, out_width: int,
                 addr_width: int, fabric: bool = False):
        self.programs, self.acc_width, self.out_width, self.fabric = programs, acc_width, out_width, fabric
        super().__init__(_ports(len(programs), addr_width, in_width, out_width, 1))

    def elaborate(self, platform):
        m = Module()
        ps = self.programs
        n = max(p.numel for p in ps)
        mw = signed_width(*[p.m0 for p in ps])
        cfg = config_registers(m, self.start, self.sel, ps, {
            "numel": unsigned(n.bit_length() + 1), "rows": unsigned(n.bit_length() + 1),
            "channels": unsigned(n.bit_length() + 1), "m0": signed(mw), "shift": unsigned(8),
            "bias": signed(signed_width(*[p.bias for p in ps])), "zp": signed(self.out_width + 1),
            "qmin": signed(self.out_width + 1), "qmax": signed(self.out_width + 1), "chained": unsigned(1)})
        r, c = Signal(range(n + 1)), Signal(range(n + 1))
        last_c = c == cfg["channels"] - 1
        go, idx, x = _issue(m, self, cfg, cfg["numel"], [r.eq(0), c.eq(0)],
                            [c.eq(Mux(last_c, 0, c + 1)), r.eq(Mux(last_c, r + 1, r))])
        m.d.comb += self.rd0_addr.eq(idx)
        # One accumulator per channel, rotating by one per element: accs[0] always holds the sum of the
        # element's channel (the elements arrive row-major), so no channel-indexed multiplexer lies in the
        # loop; the finished sum goes to accs[channels - 1].
        nch = max(p.channels for p in ps)
        accs = [Signal(signed(self.acc_width + 1), name=f"acc{i}") for i in range(nch)]
        at_end = [Signal(name=f"acc{i}_end") for i in range(nch)]
        m.d.sync += [e.eq(cfg["channels"] == i + 1) for i, e in enumerate(at_end)]
        v1, f1, l1 = Signal(), Signal(), Signal()
        m.d.sync += [v1.eq(go), f1.eq(r == 0), l1.eq(r == cfg["rows"] - 1)]
        total = Signal(signed(self.acc_width + 1))
        m.d.comb += total.eq(Mux(f1, x, accs[0] + x))
        with m.If(v1):
            m.d.sync += [a.eq(Mux(at_end[i], total, accs[i + 1] if i + 1 < nch else total))
                         for i, a in enumerate(accs)]
        m.submodules.rq = rq = Requantizer(self.acc_width + 1, mw, 8, self.out_width, fabric=self.fabric)
        # The finished sum plus bias is registered before the requantizer's multiplier.
        rq_acc, rq_valid = Signal(signed(self.acc_width + 1)), Signal()
        m.d.sync += [rq_acc.eq(total + cfg["bias"]), rq_valid.eq(v1 & l1)]
        m.d.comb += [rq.i_valid.eq(rq_valid), rq.acc.eq(rq_acc), rq.m0.eq(cfg["m0"]),
                     rq.shift.eq(cfg["shift"]), rq.zp.eq(cfg["zp"]), rq.qmin.eq(cfg["qmin"]),
                     rq.qmax.eq(cfg["qmax"]), rq.relu.eq(0), self.w_valid.eq(rq.o_valid), self.w_data.eq(rq.y)]
        count_writes(m, self, cfg["channels"], Signal.like(cfg["channels"]))
        return m
