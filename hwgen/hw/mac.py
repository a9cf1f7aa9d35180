"""The MAC array: P multiply-accumulate lanes sharing one broadcast operand."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hwgen.hw import ecp5
from hwgen.hw.vendor import MAC_MULTIPLIERS, mac_product_attrs


class MacArray(wiring.Component):
    """``lanes`` multiply-accumulators: ``acc[l] += a * b[l]`` for one beat per cycle.

    A beat (``valid``) carries the broadcast operand ``a``, one operand per lane ``b``, ``first`` (start a
    new sum) and ``last`` (the sum is complete) and a ``tag``. ``LATENCY`` (6) cycles after a ``last`` beat the
    finished sums appear in ``hold`` with ``hold_valid`` for one cycle and that beat's ``tag``; ``hold``
    keeps them until the next sum completes, so they can be drained while the next sum accumulates.
    ``pre_valid`` and ``pre_tag`` announce ``hold_valid`` and ``hold_tag`` one cycle ahead. ``shift`` moves
    every held sum down one lane (``hold[l] <- hold[l + 1]``), so a drain reads lane 0 only and each lane's
    registers connect to their neighbours, not to one wide multiplexer; a completing sum takes precedence.

    Each lane is operands registered twice -> registered product, registered again -> accumulator: the
    first operand registers take the block-RAM outputs, the second and the first product register can
    sit at the multiplier (a DSP48E1's AREG/BREG and MREG under Yosys 0.70 synth_xilinx, for operands up
    to 25 x 18 bits; on an ECP5 the flip-flops beside the MULT18X18D, whose own registers Yosys leaves
    off), and the second product register takes the route back to the accumulator
    (``Mux(first, prod, acc + prod)``, in fabric, not in the DSP's P register).

    ``multiplier`` "ecp5": each lane's operand register at the multiplier and both product registers are
    those of an ECP5 MULT18X18D (``hwgen.hw.ecp5``, same latency), when the operands fit one cell.

    ``pack`` S > 0: row pairs. With ``pair`` high each beat also carries ``a2`` (the same column of the next
    row), and each lane's one multiplier forms both products of its operand ``b``: the packed operand
    ``a + a2 * 2**S`` (``PACKED_BITS`` = 25 bits, the DSP48E1's A port) times ``b`` is
    ``a * b + (a2 * b) * 2**S``. With ``|a * b| < 2**(S - 1)`` the low S bits, sign-extended, are ``a * b``
    exactly, and ``a2 * b`` is the rest, ``p[S:] + p[S - 1]`` (the borrow of a negative low product, taken
    as the carry into the second accumulator). Every product is split so, paired or not (``p`` = low +
    high * 2**S holds for any product): ``hold`` sums the low parts and ``hold2`` (``acc2_width`` bits, at
    least ``acc_width - S``) the high parts, so without ``pair`` a lane's sum is ``hold + hold2 * 2**S``
    modulo 2**acc_width (one adder where the sums are drained, no multiplexer per lane), and with it ``hold``
    is the first row's sum and ``hold2`` the second's. ``hold2`` shifts down on ``shift2``. ``pair_fits``
    says which operand ranges may pair for a given S.
    """

    LATENCY = 6
    PACKED_BITS = 25  # the packed operand: the A port of one DSP48E1 (25 x 18 signed)

    @classmethod
    def pair_fits(cls, pack: int, a_range: tuple[int, int], b_range: tuple[int, int]) -> bool:
        """Whether rows whose operands lie in ``a_range`` x ``b_range`` (inclusive) pair exactly at ``pack``
        = S: every product within S-bit signed, the packed operand within ``PACKED_BITS`` signed and ``b`` within
        the 18-bit B port (and ``a`` itself within S bits)."""
        (alo, ahi), (blo, bhi) = a_range, b_range
        prods = [x * y for x in (alo, ahi) for y in (blo, bhi)]
        half, top = 1 << (pack - 1), 1 << (cls.PACKED_BITS - 1)
        packed = [x2 * (1 << pack) + x for x2 in (alo, ahi) for x in (alo, ahi)]
        return (pack >= 2 and -half <= min(prods) and max(prods) < half and -half <= alo and ahi < half
                and -top <= min(packed)
                and max(packed) < top and -(1 << 17) <= blo and bhi < (1 << 17))

    def __init__(self, lanes: int, a_width: int, b_width: int, acc_width: int, tag_width: int = 1, *,
                 multiplier: str = "generic", pack: int = 0, acc2_width: int = 0):
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        for name, w in (("a_width", a_width), ("b_width", b_width), ("acc_width", acc_width),
                        ("tag_width", tag_width)):
            if not isinstance(w, int) or w < 1:
                raise ValueError(f"{name} must be a positive integer, not {w!r}")
        if multiplier not in MAC_MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {', '.join(MAC_MULTIPLIERS)}, not {multiplier!r}")
        if not isinstance(pack, int) or pack < 0 or pack >= self.PACKED_BITS - 1:
            raise ValueError(f"pack must be 0 or a bit position below {self.PACKED_BITS - 1}, not {pack!r}")
        if pack and (multiplier != "generic" or b_width > 18):
            raise ValueError("row pairs need the generic multiplier and a B operand of at most 18 bits")
        if pack and not acc_width - pack <= acc2_width <= acc_width:
            raise ValueError(f"acc2_width must lie in acc_width - pack .. acc_width, not {acc2_width!r}")
        self.lanes, self.pack = lanes, pack
        # an ECP5 MULT18X18D with its own registers where the operands fit one cell (``hwgen.hw.ecp5``)
        self.cell = multiplier == "ecp5" and ecp5.fits(a_width, b_width)
        super().__init__({
            "valid": In(1), "first": In(1), "last": In(1), "tag": In(unsigned(tag_width)),
            "a": In(signed(a_width)), "b": In(data.ArrayLayout(signed(b_width), lanes)),
            "hold": Out(data.ArrayLayout(signed(acc_width), lanes)), "hold_valid": Out(1),
            "hold_tag": Out(unsigned(tag_width)), "pre_valid": Out(1), "pre_tag": Out(unsigned(tag_width)),
            "shift": In(1),
            **({"a2": In(signed(a_width)), "pair": In(1), "hold2": Out(data.ArrayLayout(signed(acc2_width), lanes)),
                "shift2": In(1)} if pack else {}),
        })

    def elaborate(self, platform):
        m = Module()
        S = self.pack
        a_r = Signal.like(self.a, name="a_r")
        a_r2 = Signal(signed(max(len(self.a), self.PACKED_BITS)) if S else self.a.shape(), name="a_r2")
        b_r, b_r2 = Signal.like(self.b, name="b_r"), Signal.like(self.b, name="b_r2")
        acc = Signal.like(self.hold)
        # beat control, delayed alongside the data: stage 1 operands, 2 operands at the multiplier,
        # 3 product, 4 product at the accumulator, 5 sums complete
        v = [Signal(name=f"v{i}") for i in range(1, 5)]
        f = [Signal(name=f"f{i}") for i in range(1, 5)]
        last = [Signal(name=f"l{i}") for i in range(1, 6)]
        t = [Signal.like(self.tag, name=f"t{i}") for i in range(1, 6)]
        # (with the ECP5 cells the second operand registers are the cells' own)
        if S:  # the packed operand a + a2 * 2**S: a's low S bits (sign-extended), above them a2 - (a < 0)
            a2_r = Signal.like(self.a2, name="a2_r")
            m.d.sync += a2_r.eq(self.a2)
            low = Cat(a_r, *[a_r[-1]] * max(S - len(a_r), 0))[:S]
            high = (a2_r - a_r[-1])[:self.PACKED_BITS - S]
            a_mul = Mux(self.pair, Cat(low, high).as_signed(), a_r)
        else:
            a_mul = a_r
        second = [] if self.cell else [a_r2.eq(a_mul), b_r2.eq(b_r)]
        m.d.sync += [a_r.eq(self.a), b_r.eq(self.b), *second, v[0].eq(self.valid),
                     f[0].eq(self.first), last[0].eq(self.last & self.valid), t[0].eq(self.tag)]
        m.d.sync += [x.eq(y) for xs in (v, f, last[:4], t) for x, y in zip(xs[1:], xs[:-1])]
        m.d.sync += [last[4].eq(last[3] & v[3]), t[4].eq(t[3]), self.hold_valid.eq(last[4])]
        m.d.comb += [self.pre_valid.eq(last[4]), self.pre_tag.eq(t[4])]
        with m.If(last[4]):
            m.d.sync += [self.hold.eq(acc), self.hold_tag.eq(t[4])]
        with m.Elif(self.shift):
            m.d.sync += [self.hold[lane].eq(self.hold[lane + 1]) for lane in range(self.lanes - 1)]
        if S:
            acc2 = Signal.like(self.hold2)
            with m.If(last[4]):
                m.d.sync += self.hold2.eq(acc2)
            with m.Elif(self.shift2):
                m.d.sync += [self.hold2[lane].eq(self.hold2[lane + 1]) for lane in range(self.lanes - 1)]
        for lane in range(self.lanes):
            width = len(a_r2) + len(self.b[lane])
            prod_r = Signal(signed(width), name=f"prod{lane}_r")
            if self.cell:  # a_r -> cell input registers -> pipeline register -> output register = prod_r
                ecp5.mult18x18d(m, f"mul{lane}", a_r, b_r[lane], prod_r)
            else:
                prod = Signal(signed(width), name=f"prod{lane}", attrs=mac_product_attrs())
                m.d.sync += [prod.eq(a_r2 * b_r2[lane]), prod_r.eq(prod)]
            term = prod_r[:S].as_signed() if S else prod_r  # the low part: the first row's product
            with m.If(v[3]):
                m.d.sync += acc[lane].eq(Mux(f[3], term, acc[lane] + term))
            if S:  # acc2 (+)= p[S:] + p[S - 1], one adder: (2 * acc2 + 1 + 2 * p[S:] + p[S - 1]) >> 1
                base = Mux(f[3], 0, acc2[lane])
                total = Cat(Const(1, 1), base).as_signed() + Cat(prod_r[S - 1], prod_r[S:]).as_signed()
                with m.If(v[3]):
                    m.d.sync += acc2[lane].eq(total[1:])
        return m
