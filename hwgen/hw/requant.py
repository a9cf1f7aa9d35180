"""The one rounding rule in hardware, plus the sequential integer dividers the norms and softmax need.

``round_shift`` and ``clamp`` are expression builders shared by every unit, so the rounding rule of
``hwgen.golden.ops.requantize`` is written once here: ``clamp(((v * m0) + (1 << (s - 1))) >> s + zp)``
with no rounding term when ``s == 0`` and ``>>`` arithmetic (Amaranth's ``>>`` on a signed value).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hwgen.hw.shiftadd import delayed, rescale_product, rescale_stages
from hwgen.hw.vendor import rescale_product_attrs


def round_shift(value, shift):
    """``(value + (1 << (shift - 1))) >> shift`` (no rounding term when shift == 0), value signed.

    Sized to the value, not to the largest shift: for shift > len(value) the exact result is 0 (|value| is
    below half of 2**shift), so the rounding term never needs more than len(value) + 1 bits.
    """
    w = len(value)
    half = (Const(1, w + 2) << shift)[1:w + 2]  # 1 << (shift - 1), or 0 when shift == 0
    return Mux(shift > w, 0, (value + half) >> shift)


def clamp(value, qmin, qmax):
    """Saturate ``value`` into [qmin, qmax]."""
    return Mux(value < qmin, qmin, Mux(value > qmax, qmax, value))


# Cycles of :func:`round_shift_stages` (one more than the single-cycle ``round_shift`` expression).
ROUND_STAGES = 2


def round_shift_stages(m, value, shift, name: str):
    """:func:`round_shift` of ``value`` by ``shift`` in two register stages: the rounding term added,
    then the shift. ``value`` and ``shift`` are sampled together; the result is registered
    ``ROUND_STAGES`` cycles later. The shift amount is cut to the bits a shift of at most ``len(value)``
    needs (a larger one gives 0), so the barrel shifter has as few levels as the value allows."""
    w = len(value)
    half = (Const(1, w + 2) << shift)[1:w + 2]  # 1 << (shift - 1), or 0 when shift == 0
    total = Signal(signed(w + 3), name=f"{name}_half")
    big = Signal(name=f"{name}_big")
    sh = Signal(max(w.bit_length(), 1), name=f"{name}_sh")
    out = Signal(signed(w + 3), name=f"{name}_rnd")
    m.d.sync += [total.eq(value + half), big.eq(shift > w), sh.eq(shift[:len(sh)])]
    m.d.sync += out.eq(Mux(big, 0, total >> sh))
    return out


class Requantizer(wiring.Component):
    """Pipelined requantizer: ``y = clamp(round_shift(acc * m0, shift) + zp, qmin, qmax)``, then
    ``max(y, zp)`` when ``relu``. ``latency`` cycles from ``i_valid`` to ``o_valid``: 4, or with ``fabric``
    (the product as shift-add in LUTs, ``hwgen.hw.shiftadd``, not a DSP48E1) ``3 + rescale_stages()``.

    ``acc``, ``m0`` and ``shift`` are sampled with ``i_valid`` and must come from registers (they drive
    the multiplier directly); ``zp``, ``qmin``, ``qmax`` and ``relu`` are per-node settings that must stay
    constant while data is in flight.
    """

    def __init__(self, acc_width: int, m0_width: int, shift_width: int, out_width: int, fabric: bool = False):
        for name, w in (("acc_width", acc_width), ("m0_width", m0_width), ("shift_width", shift_width),
                        ("out_width", out_width)):
            if not isinstance(w, int) or w < 1:
                raise ValueError(f"{name} must be a positive integer, not {w!r}")
        self.prod_width = acc_width + m0_width
        self.fabric = bool(fabric)
        self.latency = 1 + ROUND_STAGES + (rescale_stages() if self.fabric else 1)
        super().__init__({
            "i_valid": In(1), "acc": In(signed(acc_width)), "m0": In(signed(m0_width)),
            "shift": In(unsigned(shift_width)), "zp": In(signed(out_width + 1)),
            "qmin": In(signed(out_width + 1)), "qmax": In(signed(out_width + 1)), "relu": In(1),
            "o_valid": Out(1), "y": Out(signed(out_width + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        # The product gets its own register so the multiplier can be a DSP (or a LUT multiplier) with an
        # output register; the rounding takes two stages (round_shift_stages) and the clamp one.
        if self.fabric:
            prod = rescale_product(m, self.acc, self.m0, "mul")
            sh = delayed(m, self.shift, rescale_stages(), "shift")
            v1 = delayed(m, self.i_valid, rescale_stages(), "valid")
        else:
            prod = Signal(signed(self.prod_width), attrs=rescale_product_attrs())
            sh = Signal.like(self.shift)
            v1 = Signal()
            m.d.sync += [prod.eq(self.acc * self.m0), sh.eq(self.shift), v1.eq(self.i_valid)]
        rnd = round_shift_stages(m, prod, sh, "rs")
        v2 = delayed(m, v1, ROUND_STAGES, "valid_rs")
        # max(clamp(v, qmin, qmax), zp) == clamp(v, lo, hi) with lo = max(qmin, zp), hi = max(qmax, zp) under
        # ReLU: one saturation, its bounds registered from the settings.
        lo, hi = Signal.like(self.qmin, name="lo"), Signal.like(self.qmax, name="hi")
        use_zp = self.relu & (self.zp > self.qmin)
        m.d.sync += [lo.eq(Mux(use_zp, self.zp, self.qmin)),
                     hi.eq(Mux(self.relu & (self.zp > self.qmax), self.zp, self.qmax))]
        m.d.sync += [self.y.eq(clamp(rnd + self.zp, lo, hi)), self.o_valid.eq(v2)]
        return m


class Divider(wiring.Component):
    """Unsigned restoring divider: ``quotient = num // den``, one quotient bit per cycle.

    ``q_bits`` (sampled with ``start``) is how many quotient bits to produce; the caller guarantees
    ``num < den << q_bits`` (the declared widths of the op bound the quotient). ``done`` pulses when
    ``quotient`` is valid, ``q_bits + 1`` cycles after ``start``.
    """

    def __init__(self, num_width: int, den_width: int, max_q_bits: int):
        for name, w in (("num_width", num_width), ("den_width", den_width), ("max_q_bits", max_q_bits)):
            if not isinstance(w, int) or w < 1:
                raise ValueError(f"{name} must be a positive integer, not {w!r}")
        self.num_width, self.den_width, self.max_q_bits = num_width, den_width, max_q_bits
        super().__init__({
            "start": In(1), "num": In(unsigned(num_width)), "den": In(unsigned(den_width)),
            "q_bits": In(range(max_q_bits + 1)), "done": Out(1), "quotient": Out(unsigned(max_q_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        rem = Signal(self.num_width)
        dsh = Signal(self.den_width + self.max_q_bits)
        left = Signal(range(self.max_q_bits + 1))
        busy = Signal()
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [rem.eq(self.num), dsh.eq((self.den << self.q_bits) >> 1), left.eq(self.q_bits),
                         self.quotient.eq(0), busy.eq(1)]
        with m.Elif(busy):
            fits = rem >= dsh
            m.d.sync += [self.quotient.eq(Mux(fits, (self.quotient << 1) | 1, self.quotient << 1)),
                         dsh.eq(dsh >> 1), left.eq(left - 1)]
            with m.If(fits):
                m.d.sync += rem.eq(rem - dsh)
            with m.If(left == 1):
                m.d.sync += [busy.eq(0), self.done.eq(1)]
        return m


class Isqrt(wiring.Component):
    """``root = floor(sqrt(n))`` by the digit-by-digit method, two bits of ``n`` per cycle.

    Equal to the Newton iteration of ``hwgen.golden.ops.isqrt`` (both give the exact floor). ``done``
    pulses ``ceil(width / 2) + 1`` cycles after ``start``.
    """

    def __init__(self, width: int):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        self.width = width + (width & 1)
        super().__init__({"start": In(1), "n": In(unsigned(width)), "done": Out(1),
                          "root": Out(unsigned((self.width + 1) // 2 + 1))})

    def elaborate(self, platform):
        m = Module()
        w = self.width
        rem = Signal(w + 1)
        res = Signal(w + 1)
        bit = Signal(w)
        busy = Signal()
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [rem.eq(self.n), res.eq(0), bit.eq(1 << (w - 2)), busy.eq(1)]
        with m.Elif(busy):
            trial = res + bit
            with m.If(rem >= trial):
                m.d.sync += [rem.eq(rem - trial), res.eq((res >> 1) + bit)]
            with m.Else():
                m.d.sync += res.eq(res >> 1)
            m.d.sync += bit.eq(bit >> 2)
            with m.If(bit == 1):
                m.d.sync += [busy.eq(0), self.done.eq(1)]
        m.d.comb += self.root.eq(res)
        return m
