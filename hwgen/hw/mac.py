"""The MAC array: P multiply-accumulate lanes sharing one broadcast operand."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hwgen.hw.vendor import mac_product_attrs


class MacArray(wiring.Component):
    """``lanes`` multiply-accumulators: ``acc[l] += a * b[l]`` for one beat per cycle.

    A beat (``valid``) carries the broadcast operand ``a``, one operand per lane ``b``, ``first`` (start a
    new sum) and ``last`` (the sum is complete) and a ``tag``. Four cycles after a ``last`` beat the
    finished sums appear in ``hold`` with ``hold_valid`` for one cycle and that beat's ``tag``; ``hold``
    keeps them until the next sum completes, so they can be drained while the next sum accumulates.

    Each lane is registered operands -> registered product -> accumulator. Yosys 0.70 synth_xilinx maps the
    operand and product registers into one DSP48E1 per lane (AREG/BREG, MREG) for operands up to 25 x 18
    bits, but keeps the accumulator (``Mux(first, prod, acc + prod)``) in fabric, not in the DSP's P
    register.
    """

    def __init__(self, lanes: int, a_width: int, b_width: int, acc_width: int, tag_width: int = 1):
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        for name, w in (("a_width", a_width), ("b_width", b_width), ("acc_width", acc_width),
                        ("tag_width", tag_width)):
            if not isinstance(w, int) or w < 1:
                raise ValueError(f"{name} must be a positive integer, not {w!r}")
        self.lanes = lanes
        super().__init__({
            "valid": In(1), "first": In(1), "last": In(1), "tag": In(unsigned(tag_width)),
            "a": In(signed(a_width)), "b": In(data.ArrayLayout(signed(b_width), lanes)),
            "hold": Out(data.ArrayLayout(signed(acc_width), lanes)), "hold_valid": Out(1),
            "hold_tag": Out(unsigned(tag_width)),
        })

    def elaborate(self, platform):
        m = Module()
        a_r = Signal.like(self.a)
        b_r = Signal.like(self.b)
        acc = Signal.like(self.hold)
        v1, f1, l1, v2, f2, l2, l3 = (Signal() for _ in range(7))
        t1, t2, t3 = (Signal.like(self.tag) for _ in range(3))
        m.d.sync += [a_r.eq(self.a), b_r.eq(self.b), v1.eq(self.valid), f1.eq(self.first),
                     l1.eq(self.last & self.valid), t1.eq(self.tag)]
        m.d.sync += [v2.eq(v1), f2.eq(f1), l2.eq(l1), t2.eq(t1)]
        m.d.sync += [l3.eq(l2 & v2), t3.eq(t2), self.hold_valid.eq(l3)]
        with m.If(l3):
            m.d.sync += [self.hold.eq(acc), self.hold_tag.eq(t3)]
        for lane in range(self.lanes):
            prod = Signal(signed(len(a_r) + len(self.b[lane])), name=f"prod{lane}", attrs=mac_product_attrs())
            m.d.sync += prod.eq(a_r * b_r[lane])
            with m.If(v2):
                m.d.sync += acc[lane].eq(Mux(f2, prod, acc[lane] + prod))
        return m
