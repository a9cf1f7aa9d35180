"""SPI host link: the accelerator core behind an SPI slave, for a microcontroller host (Elastic Node: RP2040).

``SpiHostLink(core)`` wraps a core with ``x``/``y`` element streams (``hwgen.hw.lower``'s ``Top``). The host
writes one input window over SPI, starts the core, polls the busy pin or the status byte, and reads the result.

Electrical
----------
- SPI mode 0 (CPOL=0, CPHA=0), MSB first; ``spi_cs_n`` active low. SCLK, CS_n and MOSI enter on plain I/O pins
  and are sampled in the system clock domain (2-flop synchronisers, then edge detection): no logic runs on
  SCLK, so no clock constraint or ``CLOCK_DEDICATED_ROUTE`` is needed for it.
- MOSI is sampled on the (synchronised) SCLK rising edge; MISO is a register of the system domain, updated
  after the synchronised SCLK falling edge, at most 3 system clocks after the pin's edge. The host samples
  MISO at its next rising edge, half an SCLK period later: SCLK must stay at or below clk/8 (12.5 MHz at
  100 MHz; simulated at exactly clk/8 with a random phase). On the board, leave margin for pad and trace
  delays: use at most 10 MHz.
- CS_n high between transactions for at least 3 system clocks, and at least 3 system clocks from CS_n
  falling to the first SCLK rising edge and from the last SCLK falling edge to CS_n rising.
- MISO is always driven (the link is point to point); it is 0 during the command byte and while CS_n is high.
- ``busy`` pin: high from an accepted START until the last output element is in the output buffer.
- ``led``: 0 = busy, 1 = result ready (DONE), 2 = error (sticky), 3 = heartbeat (about 1.5 Hz at 100 MHz).

Protocol
--------
Every transaction (CS_n low ... high) starts with one command byte; the bytes after it depend on the command.
A command acts when its 8th bit has arrived. Element sizes: ``B_in = ceil(in_bits / 8)`` and
``B_out = ceil(out_bits / 8)`` bytes per element, two's complement (zero-extended if unsigned) in
``8 * B`` bits, most significant byte first. ``N_in`` = window x features (row-major), ``N_out`` = the output
tensor's element count (row-major).

======  ===========  ================================================================================
code    command      bytes after the command byte
======  ===========  ================================================================================
0x01    WRITE_INPUT  MOSI: ``N_in * B_in`` bytes, element 0 first. Writes from element 0; INPUT_READY once
                     all ``N_in`` elements arrived. Rejected while BUSY; bytes past ``N_in`` elements are
                     dropped. Either sets ERROR.
0x02    START        none. Clears DONE, sets BUSY and streams the input buffer into the core. Rejected
                     (ERROR, nothing starts) while BUSY or without INPUT_READY. The input buffer keeps its
                     contents: START again runs the same window again.
0x03    STATUS       MISO: the status byte, repeated (live) for every further byte.
0x04    READ_OUTPUT  MISO: ``N_out * B_out`` bytes, element 0 first (then 0x00). Sets ERROR while BUSY.
0x05    INFO         MISO: ``0x68 0x01 IN OUT n_in_hi n_in_lo n_out_hi n_out_lo`` (then 0x00): magic, protocol
                     version, then input and output element widths in bits (bit 7 set when signed) and the
                     element counts, big-endian.
0x06    RESET        none. Aborts a running inference (resets the core), clears BUSY, DONE, ERROR and
                     INPUT_READY.
0x00    NOP          (as is 0xFF: an idle MOSI line is harmless). Any other code sets ERROR.
======  ===========  ================================================================================

Status byte: bit 0 BUSY, bit 1 DONE (the output buffer holds the result of the last START), bit 2 ERROR
(sticky until RESET), bit 3 INPUT_READY, bits 7..4 = 0b1010 (so a stuck MISO line, reading 0x00 or 0xFF, is
never taken for a status). One inference: WRITE_INPUT, START, STATUS until BUSY is clear (or wait for the
busy pin to fall), check DONE and not ERROR, READ_OUTPUT. ``hwgen.host.driver.HwgenSpi`` implements this.
"""

from __future__ import annotations

import math

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hwgen.errors import HwgenError

WRITE_INPUT, START, STATUS, READ_OUTPUT, INFO, RESET = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
NOPS = (0x00, 0xFF)
STATUS_BUSY, STATUS_DONE, STATUS_ERROR, STATUS_INPUT_READY = 0x01, 0x02, 0x04, 0x08
STATUS_MARK = 0xA0  # bits 7..4 of every status byte
INFO_MAGIC, PROTOCOL_VERSION = 0x68, 0x01
SCLK_MAX_DIVIDER = 8  # SCLK <= clk / SCLK_MAX_DIVIDER


def element_bytes(bits: int) -> int:
    """Bytes per element on the link for an element of ``bits`` bits."""
    return (bits + 7) // 8


def info_bytes(in_bits: int, in_signed: bool, out_bits: int, out_signed: bool, n_in: int, n_out: int) -> list[int]:
    """The INFO reply (see the module docstring)."""
    return [INFO_MAGIC, PROTOCOL_VERSION, in_bits | (0x80 if in_signed else 0), out_bits | (0x80 if out_signed else 0),
            n_in >> 8, n_in & 0xFF, n_out >> 8, n_out & 0xFF]


class SpiHostLink(wiring.Component):
    """``core`` (streams ``x`` in, ``y`` out, one element per beat) behind an SPI slave with input and output
    buffers, a busy pin and four LEDs; the protocol is in the module docstring.

    ``n_in``/``n_out`` (elements per window / per result) default to the element counts of
    ``core.design.graph`` (a ``hwgen.hw.Top``). ``heartbeat_bits``: width of the LED3 blink counter.
    """

    def __init__(self, core: wiring.Component, n_in: int | None = None, n_out: int | None = None,
                 heartbeat_bits: int = 26):
        members = getattr(getattr(core, "signature", None), "members", {})
        if "x" not in members or "y" not in members:
            raise HwgenError(f"SpiHostLink needs a core with x and y streams, not {core!r}")
        graph = getattr(getattr(core, "design", None), "graph", None)
        if n_in is None or n_out is None:
            if graph is None:
                raise HwgenError("SpiHostLink: give n_in and n_out for a core without design.graph")
            n_in = n_in if n_in is not None else math.prod(graph.input_type.shape)
            n_out = n_out if n_out is not None else math.prod(graph.output_type.shape)
        for name, value in (("n_in", n_in), ("n_out", n_out)):
            if not isinstance(value, int) or not 1 <= value < 1 << 16:
                raise HwgenError(f"{name} must be an int in [1, 65535], not {value!r}")
        if not isinstance(heartbeat_bits, int) or heartbeat_bits < 1:
            raise HwgenError(f"heartbeat_bits must be a positive int, not {heartbeat_bits!r}")
        self.core = core
        self.n_in, self.n_out = n_in, n_out
        self.in_shape, self.out_shape = core.x.payload.shape(), core.y.payload.shape()
        for name, shape in (("input", self.in_shape), ("output", self.out_shape)):
            if shape.width > 127:
                raise HwgenError(f"{name} elements of {shape.width} bits do not fit the INFO reply (max 127)")
        self.b_in, self.b_out = element_bytes(self.in_shape.width), element_bytes(self.out_shape.width)
        self.heartbeat_bits = heartbeat_bits
        super().__init__({"spi_sclk": In(1), "spi_cs_n": In(1, init=1), "spi_mosi": In(1), "spi_miso": Out(1),
                          "busy": Out(1), "led": Out(4)})

    def info(self) -> list[int]:
        """The INFO reply of this link."""
        return info_bytes(self.in_shape.width, self.in_shape.signed, self.out_shape.width, self.out_shape.signed,
                          self.n_in, self.n_out)

    def elaborate(self, platform):
        m = Module()
        n_in, n_out, b_in, b_out = self.n_in, self.n_out, self.b_in, self.b_out
        # The core's synchronous reset is a register (set by the RESET command, one cycle later), so the
        # command decode does not lie in front of every flip-flop's reset.
        core_rst, core_rst_next = Signal(), Signal()
        m.d.sync += core_rst.eq(core_rst_next)
        m.submodules.core = ResetInserter(core_rst)(self.core)
        x, y = self.core.x, self.core.y

        # ---- pins into the system domain ----------------------------------------------------------------
        sclk, cs_n, mosi, sclk_prev = Signal(), Signal(init=1), Signal(), Signal()
        m.submodules.sync_sclk = FFSynchronizer(self.spi_sclk, sclk)
        m.submodules.sync_cs_n = FFSynchronizer(self.spi_cs_n, cs_n, init=1)
        m.submodules.sync_mosi = FFSynchronizer(self.spi_mosi, mosi)
        m.d.sync += sclk_prev.eq(sclk)
        rise = Signal()
        fall = Signal()
        m.d.comb += [rise.eq(sclk & ~sclk_prev & ~cs_n), fall.eq(~sclk & sclk_prev & ~cs_n)]

        # ---- buffers and state ---------------------------------------------------------------------------
        m.submodules.in_mem = in_mem = Memory(shape=self.in_shape, depth=n_in, init=[])
        m.submodules.out_mem = out_mem = Memory(shape=self.out_shape, depth=n_out, init=[])
        in_wr, in_rd = in_mem.write_port(), in_mem.read_port()
        out_wr, out_rd = out_mem.write_port(), out_mem.read_port()
        busy, done, error = Signal(), Signal(), Signal()
        in_count = Signal(range(n_in + 1))
        in_ready = Signal()
        m.d.comb += in_ready.eq(in_count == n_in)
        status = Cat(busy, done, error, in_ready, Const(STATUS_MARK >> 4, 4))

        # ---- feed: input buffer -> core.x (the registered-valid stage of hwgen.hw.top's SEND) -------------
        feed_idx = Signal(range(n_in + 1), init=n_in)  # n_in: idle
        m.d.comb += [in_rd.addr.eq(feed_idx), x.payload.eq(in_rd.data)]
        with m.If(~x.valid | x.ready):
            m.d.comb += in_rd.en.eq(1)
            m.d.sync += x.valid.eq(feed_idx < n_in)
            with m.If(feed_idx < n_in):
                m.d.sync += feed_idx.eq(feed_idx + 1)
        with m.Else():
            m.d.comb += in_rd.en.eq(0)

        # ---- capture: core.y -> output buffer --------------------------------------------------------------
        cap_idx = Signal(range(n_out + 1))
        m.d.comb += [y.ready.eq(1), out_wr.addr.eq(cap_idx), out_wr.data.eq(y.payload),
                     out_wr.en.eq(y.valid & busy & (cap_idx < n_out))]
        with m.If(y.valid & busy):
            m.d.sync += cap_idx.eq(cap_idx + 1)
            with m.If(cap_idx == n_out - 1):
                m.d.sync += [busy.eq(0), done.eq(1)]

        # ---- SPI bytes -----------------------------------------------------------------------------------
        bit_cnt = Signal(3)
        shift_in, tx, miso = Signal(8), Signal(8), Signal()
        rx_byte = Cat(mosi, shift_in[:7])  # the byte completed by this rising edge, MSB first
        have_cmd, cmd = Signal(), Signal(8)
        n_info = len(self.info())
        elem = Signal(range(max(n_in, n_out, n_info) + 1))
        sub = Signal(range(max(b_in, b_out)))  # byte within the element, counting down to 0 (the LSB)
        acc = Signal(8 * b_in)
        new_acc = Cat(rx_byte, acc)[: 8 * b_in]
        m.d.comb += self.spi_miso.eq(miso)

        # The reply byte for the position (elem, sub): loaded into tx at the byte boundary, one SCLK half
        # period before the host samples its MSB. out_rd.addr follows elem with two clocks of latency (the
        # block RAM, then a register on its output), well inside the SCLK period.
        reply = Signal(8)
        out_ext = out_rd.data.as_signed() if self.out_shape.signed else out_rd.data.as_unsigned()
        out_word = Signal(8 * b_out)
        m.d.comb += out_rd.addr.eq(elem)
        m.d.sync += out_word.eq(out_ext)
        with m.Switch(cmd):
            with m.Case(STATUS):
                m.d.comb += reply.eq(status)
            with m.Case(READ_OUTPUT):
                m.d.comb += reply.eq(Mux(elem < n_out, out_word.word_select(sub, 8), 0))
            with m.Case(INFO):  # elem stops at n_info during INFO: the 0 after the reply
                m.d.comb += reply.eq(Array(Const(b, 8) for b in [*self.info(), 0])[elem])

        with m.If(cs_n):
            m.d.sync += [bit_cnt.eq(0), have_cmd.eq(0), cmd.eq(0), miso.eq(0), tx.eq(0), elem.eq(0),
                         sub.eq(b_out - 1)]
        with m.If(rise):
            m.d.sync += [shift_in.eq(rx_byte), bit_cnt.eq(bit_cnt + 1)]
        with m.If(fall):
            with m.If((bit_cnt == 0) & have_cmd):  # a byte boundary: the next reply byte
                m.d.sync += [miso.eq(reply[7]), tx.eq(reply << 1)]
                with m.If((cmd == INFO) & (elem < n_info)):
                    m.d.sync += elem.eq(elem + 1)
                with m.Elif((cmd == READ_OUTPUT) & (elem < n_out)):
                    with m.If(sub == 0):
                        m.d.sync += [sub.eq(b_out - 1), elem.eq(elem + 1)]
                    with m.Else():
                        m.d.sync += sub.eq(sub - 1)
            with m.Else():
                m.d.sync += [miso.eq(tx[7]), tx.eq(tx << 1)]

        with m.If(rise & (bit_cnt == 7) & ~have_cmd):  # the command byte
            m.d.sync += [have_cmd.eq(1), cmd.eq(rx_byte)]
            with m.Switch(rx_byte):
                with m.Case(WRITE_INPUT):
                    with m.If(busy):
                        m.d.sync += [error.eq(1), cmd.eq(0)]
                    with m.Else():
                        m.d.sync += [in_count.eq(0), sub.eq(b_in - 1)]
                with m.Case(START):
                    with m.If(busy | ~in_ready):
                        m.d.sync += error.eq(1)
                    with m.Else():
                        m.d.sync += [busy.eq(1), done.eq(0), feed_idx.eq(0), cap_idx.eq(0)]
                with m.Case(READ_OUTPUT):
                    m.d.sync += error.eq(error | busy)
                with m.Case(RESET):
                    m.d.comb += core_rst_next.eq(1)
                    m.d.sync += [busy.eq(0), done.eq(0), error.eq(0), in_count.eq(0), feed_idx.eq(n_in),
                                 x.valid.eq(0), cap_idx.eq(0)]
                with m.Case(STATUS, INFO, *NOPS):
                    pass
                with m.Default():
                    m.d.sync += error.eq(1)
        with m.If(rise & (bit_cnt == 7) & have_cmd & (cmd == WRITE_INPUT)):  # a data byte of WRITE_INPUT
            m.d.sync += acc.eq(new_acc)
            with m.If(sub == 0):
                m.d.sync += sub.eq(b_in - 1)
                with m.If(elem < n_in):
                    m.d.comb += [in_wr.addr.eq(elem), in_wr.data.eq(new_acc[: self.in_shape.width]),
                                 in_wr.en.eq(1)]
                    m.d.sync += [elem.eq(elem + 1), in_count.eq(elem + 1)]
                with m.Else():
                    m.d.sync += error.eq(1)
            with m.Else():
                m.d.sync += sub.eq(sub - 1)

        # ---- pins out ------------------------------------------------------------------------------------
        heartbeat = Signal(self.heartbeat_bits)
        m.d.sync += heartbeat.eq(heartbeat + 1)
        m.d.comb += [self.busy.eq(busy), self.led.eq(Cat(busy, done, error, heartbeat[-1]))]
        return m
