# amaranth: UnusedElaboratable=no
"""SpiHostLink in Amaranth's simulator around a small stand-in core, driven through the host driver.

The stand-in core has the real core's stream contract (take ``n_in`` elements, compute, send ``n_out``) with
element widths the synthetic graphs do not use (multi-byte and unsigned elements), so the byte packing of
the link is covered here; ``test_spi_sim.py`` runs the real lowered core on Verilator.
"""

from __future__ import annotations

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hwgen.errors import HwgenError
from hwgen.host import driver
from hwgen.host.driver import HwgenSpi, run_async
from hwgen.hw.spi import SpiHostLink


class SumCore(wiring.Component):
    """Stand-in core: after ``n_in`` inputs and ``delay`` cycles, sends ``y[j] = sum(x) * (j + 1) + j`` (wrapped
    to the output shape) for j < ``n_out``."""

    def __init__(self, in_shape, out_shape, n_in: int, n_out: int, delay: int = 40):
        self.n_in, self.n_out, self.delay = n_in, n_out, delay
        super().__init__({"x": In(stream.Signature(in_shape)), "y": Out(stream.Signature(out_shape))})

    def elaborate(self, platform):
        m = Module()
        acc = Signal(signed(48))
        idx = Signal(range(max(self.n_in, self.n_out, self.delay) + 1))
        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.x.ready.eq(1)
                with m.If(self.x.valid):
                    m.d.sync += [acc.eq(acc + self.x.payload), idx.eq(idx + 1)]
                    with m.If(idx == self.n_in - 1):
                        m.d.sync += idx.eq(0)
                        m.next = "WAIT"
            with m.State("WAIT"):
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == self.delay - 1):
                    m.d.sync += idx.eq(0)
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.y.valid.eq(1), self.y.payload.eq(acc * (idx + 1) + idx)]
                with m.If(self.y.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == self.n_out - 1):
                        m.d.sync += [idx.eq(0), acc.eq(0)]
                        m.next = "LOAD"
        return m


def model(window: list[int], out_bits: int, out_signed: bool, n_out: int) -> list[int]:
    s = sum(window)
    out = []
    for j in range(n_out):
        v = (s * (j + 1) + j) & ((1 << out_bits) - 1)
        out.append(v - (1 << out_bits) if out_signed and v >> (out_bits - 1) else v)
    return out


def simulate_link(in_shape, out_shape, n_in: int, n_out: int, windows: list[list[int]], divider: int = 8):
    """Every window through ``HwgenSpi.infer`` on the pins of SpiHostLink(SumCore); (outputs, info, busy
    pin samples taken right after each START, status after the last window)."""
    link = SpiHostLink(SumCore(in_shape, out_shape, n_in, n_out), n_in=n_in, n_out=n_out, heartbeat_bits=4)
    drv = HwgenSpi(None, in_shape.width, out_shape.width, n_in, n_out, in_shape.signed, out_shape.signed)
    got = {"outputs": [], "busy_after_start": []}
    half = divider // 2

    async def bench(ctx):
        async def transfer(tx: bytes) -> bytes:
            ctx.set(link.spi_cs_n, 0)
            await ctx.tick().repeat(half)
            rx = bytearray()
            for byte in tx:
                bits = 0
                for k in range(7, -1, -1):
                    ctx.set(link.spi_mosi, (byte >> k) & 1)
                    await ctx.tick().repeat(half)
                    bits = (bits << 1) | ctx.get(link.spi_miso)
                    ctx.set(link.spi_sclk, 1)
                    await ctx.tick().repeat(half)
                    ctx.set(link.spi_sclk, 0)
                rx.append(bits)
            await ctx.tick().repeat(half)
            ctx.set(link.spi_cs_n, 1)
            await ctx.tick().repeat(half)
            if tx[0] == driver.START:
                got["busy_after_start"].append(ctx.get(link.busy))
            return bytes(rx)

        async def wait():
            await ctx.tick().until(~link.busy)

        got["info"] = await run_async(drv.txn_check_info(), transfer, wait)
        for window in windows:
            got["outputs"].append(await run_async(drv.txn_infer(window), transfer, wait))
        got["status"] = await run_async(drv.txn_status(), transfer, wait)
        got["leds"] = ctx.get(link.led)

    sim = Simulator(link)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("in_shape,out_shape,n_in,n_out", [
    (signed(8), signed(16), 6, 2),     # the synthetic graphs' widths
    (signed(12), unsigned(20), 5, 3),  # 2-byte signed in, 3-byte unsigned out
    (unsigned(3), signed(9), 4, 1),    # a short unsigned in, 2-byte signed out
], ids=["s8-s16", "s12-u20", "u3-s9"])
def test_link_round_trips_windows_through_the_driver(in_shape, out_shape, n_in, n_out):
    lo = -(1 << (in_shape.width - 1)) if in_shape.signed else 0
    hi = (1 << (in_shape.width - 1)) - 1 if in_shape.signed else (1 << in_shape.width) - 1
    windows = [[lo] * n_in, [hi] * n_in, [(i * 37) % (hi - lo + 1) + lo for i in range(n_in)]]
    got = simulate_link(in_shape, out_shape, n_in, n_out, windows)
    assert got["info"] == {"in_bits": in_shape.width, "in_signed": in_shape.signed, "out_bits": out_shape.width,
                           "out_signed": out_shape.signed, "n_in": n_in, "n_out": n_out}
    want = [model(w, out_shape.width, out_shape.signed, n_out) for w in windows]
    assert got["outputs"] == want
    assert got["busy_after_start"] == [1] * len(windows)
    assert got["status"] == driver.STATUS_MARK | driver.STATUS_DONE | driver.STATUS_INPUT_READY
    assert got["leds"] & 0b111 == 0b010


def test_link_fails_at_sclk_faster_than_the_stated_limit():
    """At clk/4 MISO arrives after the host samples it: the driver's link check must notice."""
    with pytest.raises(driver.HwgenSpiError, match="no hwgen link"):
        simulate_link(signed(8), signed(16), 2, 1, [[1, 2]], divider=4)


def test_link_constructor_rejects_bad_arguments():
    core = SumCore(signed(8), signed(16), 2, 1)
    with pytest.raises(HwgenError, match="give n_in and n_out"):
        SpiHostLink(core)
    with pytest.raises(HwgenError, match="n_out must be"):
        SpiHostLink(core, n_in=2, n_out=0)
    with pytest.raises(HwgenError, match="x and y streams"):
        SpiHostLink(object(), n_in=2, n_out=1)
