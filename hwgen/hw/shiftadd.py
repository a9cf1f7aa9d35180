"""A multiplier built from shifts and adds, so synthesis sees no ``$mul`` and maps no DSP48E1.

Yosys 0.70 ``synth_xilinx`` maps every multiplier of at least 2 x 2 bits onto DSP48E1 slices and ignores
``use_dsp = "no"`` (``hwgen.hw.vendor``); only ``-nodsp`` keeps them out, for the whole design, and its LUT
multipliers use no carry chains (a 26 x 17 product took 966 LUTs). Written as partial products selected by
the bits of one operand and summed in a pipelined tree of two-input adders, each adder maps onto a CARRY4
chain with the AND gate of its partial products folded into the LUT in front of it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

# Adder levels between two pipeline registers: two levels of ~30-40-bit carry chains stay well inside the
# 10 ns cycle (Yosys sta, routing excluded).
LEVELS_PER_STAGE = 2
# The widest selecting operand a rescale product has (a 15-bit-normalised m0, plus sign and the
# Requantizer's extra bit) and the stages it takes: every rescale product in fabric takes exactly this
# many cycles, whatever the widths of a given model, so the latency model needs no widths.
RESCALE_B_BITS = 17


def product_stages(b_width: int, levels_per_stage: int = LEVELS_PER_STAGE) -> int:
    """Register stages of :class:`ShiftAddMul` (cycles from ``a``/``b`` to ``p``) for a ``b_width``-bit
    selecting operand: the partial products are registered, then every ``levels_per_stage`` levels of the
    adder tree and its last level."""
    levels, n = 0, b_width
    while n > 1:
        n, levels = (n + 1) // 2, levels + 1
    return 1 + -(-levels // levels_per_stage)


class ShiftAddMul(wiring.Component):
    """``p = a * b`` (both two's complement unless declared unsigned), ``stages`` cycles after ``a`` and
    ``b`` (at least, and by default, :func:`product_stages`), one product per cycle; no ``*`` anywhere.

    Partial product ``i`` is ``a << i`` where bit ``i`` of ``b`` is set, negated for the sign bit of a
    signed ``b``; ``b`` should be the narrower operand (it sets the number of partial products).
    """

    def __init__(self, a_shape: Shape, b_shape: Shape, levels_per_stage: int = LEVELS_PER_STAGE,
                 stages: int | None = None):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        if a_shape.width < 1 or b_shape.width < 1:
            raise ValueError(f"operand widths must be positive, not {a_shape.width} and {b_shape.width}")
        if levels_per_stage < 1:
            raise ValueError(f"levels_per_stage must be >= 1, not {levels_per_stage!r}")
        self.levels_per_stage = levels_per_stage
        need = product_stages(b_shape.width, levels_per_stage)
        if stages is not None and stages < need:
            raise ValueError(f"a {b_shape.width}-bit selecting operand needs {need} stages, not {stages}")
        self.stages = need if stages is None else stages  # extra stages: registers after the tree
        width = a_shape.width + b_shape.width
        self.p_shape = signed(width) if (a_shape.signed or b_shape.signed) else Shape(width)
        super().__init__({"a": In(a_shape), "b": In(b_shape), "p": Out(self.p_shape)})

    def elaborate(self, platform):
        m = Module()
        a, b = self.a, self.b
        wa, wb = len(a), len(b)
        a_s = a.shape().signed
        # A term is (signal, weight): its value times 2**weight. Sums are sized to their operands, and the
        # low bits of the lighter term below the heavier one's weight bypass the adder.
        terms = []
        for i in range(wb):
            negate = b.shape().signed and i == wb - 1
            pp = Signal(signed(wa + 1) if (a_s or negate) else wa, name=f"pp{i}")
            # Registered: the AND maps onto the flip-flops' synchronous reset (measured: fewer LUTs than
            # folding it into the first adder's LUTs).
            m.d.sync += pp.eq(Mux(b[i], -a if negate else a, 0))
            terms.append((pp, i))
        level = 0
        while len(terms) > 1:
            level += 1
            registered = level % self.levels_per_stage == 0 or len(terms) <= 2
            nxt = []
            for j in range(0, len(terms), 2):
                pair = terms[j:j + 2]
                if len(pair) == 1:
                    v, w = pair[0]
                    if registered:
                        r = Signal(v.shape(), name=f"s{level}_{j // 2}")
                        m.d.sync += r.eq(v)
                        v = r
                    nxt.append((v, w))
                    continue
                (v1, w1), (v2, w2) = pair
                d = w2 - w1
                hi_width = max(len(v1) - d, len(v2)) + 1
                signed_sum = v1.shape().signed or v2.shape().signed
                hi = Signal(signed(hi_width) if signed_sum else hi_width, name=f"h{level}_{j // 2}")
                lo = Signal(d, name=f"l{level}_{j // 2}") if d else None
                if d >= len(v1):  # the lighter term lies wholly below: only its sign reaches the sum
                    upper = v1[-1].as_signed() if v1.shape().signed else 0
                else:
                    upper = v1[d:].as_signed() if v1.shape().signed else v1[d:]
                dom = m.d.sync if registered else m.d.comb
                dom += hi.eq(upper + v2)
                if lo is not None:
                    dom += lo.eq(v1)  # its low d bits (sign-extended if it is shorter)
                out = Signal(signed(d + hi_width) if signed_sum else d + hi_width, name=f"s{level}_{j // 2}")
                m.d.comb += out.eq(hi if lo is None else Cat(lo, hi))
                nxt.append((out, w1))
            terms = nxt
        v, w = terms[0]
        for k in range(self.stages - product_stages(wb, self.levels_per_stage)):
            r = Signal(v.shape(), name=f"pad{k}")
            m.d.sync += r.eq(v)
            v = r
        m.d.comb += self.p.eq(v << w if w else v)
        return m


def rescale_stages() -> int:
    """Cycles of every rescale product built in fabric (``RESCALE_B_BITS``-bit selecting operand)."""
    return product_stages(RESCALE_B_BITS)


def rescale_product(m, a, b, name: str):
    """A registered ``a * b`` in fabric (``b`` the narrower operand, at most ``RESCALE_B_BITS`` bits),
    ``rescale_stages()`` cycles after ``a`` and ``b``; returns the product."""
    if len(b) > len(a):
        a, b = b, a
    mul = ShiftAddMul(a.shape(), b.shape(), stages=rescale_stages())
    m.submodules[name] = mul
    m.d.comb += [mul.a.eq(a), mul.b.eq(b)]
    return mul.p


def delayed(m, value, cycles: int, name: str):
    """``value`` delayed by ``cycles`` registers (itself when 0)."""
    for k in range(cycles):
        r = Signal.like(value, name=f"{name}_d{k}")
        m.d.sync += r.eq(value)
        value = r
    return value
