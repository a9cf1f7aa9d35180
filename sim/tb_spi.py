"""cocotb testbench for ``hwgen_spi_top`` (``hwgen.hw.spi.SpiHostLink`` around a lowered graph).

Run by :func:`hwgen.sim.spi_runner.simulate_spi`, never collected by pytest. The host side is the reference
driver itself: the transaction generators of :class:`hwgen.host.driver.HwgenSpi` run here, each transaction
bit-banged on the pins by :class:`SpiMaster` (mode 0, SCLK = clk / ``sclk_divider``, every transaction at a
random phase to the system clock), each ``WAIT`` waiting for the busy pin to fall.

The case (``HWGEN_SIM_CASE``, an ``.npz``): inputs, golden outputs, widths, counts, seed, SCLK divider. The
results JSON (``HWGEN_SIM_RESULTS``) gets one entry per test.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.triggers import Timer
from cocotb.utils import get_sim_steps

from hwgen.host import driver
from hwgen.host.driver import HwgenSpi, HwgenSpiError, run_async
from hwgen.testbenches.tb_top import CLOCK_NS, load_case, score, start_clock_and_reset

BUSY_TIMEOUT_CYCLES = 200_000


class SpiMaster:
    """Bit-bangs SPI mode 0 transactions on the pins; records (command byte, start, end) of each one."""

    def __init__(self, dut, period: int, divider: int, rng: np.random.Generator) -> None:
        if divider < 2 or divider % 2:
            raise ValueError(f"sclk_divider must be an even number >= 2, not {divider!r}")
        self.dut = dut
        self.period = period
        self.half = divider * period // 2
        self.rng = rng
        self.log: list[tuple[int, int, int]] = []  # (command byte, CS_n fall, CS_n rise) in sim steps
        self.bytes = 0
        dut.spi_cs_n.value = 1
        dut.spi_sclk.value = 0
        dut.spi_mosi.value = 0

    async def transfer(self, tx: bytes) -> bytes:
        """One transaction: CS_n low, ``tx`` out on MOSI while MISO is sampled at each SCLK rising edge."""
        dut = self.dut
        await Timer(int(self.rng.integers(1, self.period)), "step")  # a random phase to clk
        t0 = get_sim_time()
        dut.spi_cs_n.value = 0
        rx = bytearray()
        for byte in tx:
            got = 0
            for bit in range(7, -1, -1):
                dut.spi_mosi.value = (byte >> bit) & 1
                await Timer(self.half, "step")
                got = (got << 1) | int(dut.spi_miso.value)  # the host samples MISO at its rising edge
                dut.spi_sclk.value = 1
                await Timer(self.half, "step")
                dut.spi_sclk.value = 0
            rx.append(got)
        await Timer(self.half, "step")
        dut.spi_cs_n.value = 1
        self.log.append((tx[0], t0, get_sim_time()))
        self.bytes += len(tx)
        await Timer(self.half, "step")
        return bytes(rx)


class TB:
    """Clock, reset, the SPI master, a busy-pin monitor and the driver for one ``hwgen_spi_top``."""

    def __init__(self, dut, case: dict) -> None:
        self.dut = dut
        self.case = case
        self.period = int(get_sim_steps(CLOCK_NS, "ns"))
        self.master = SpiMaster(dut, self.period, int(case["sclk_divider"]), np.random.default_rng(int(case["seed"])))
        self.driver = HwgenSpi(None, int(case["in_bits"]), int(case["out_bits"]), int(case["n_in"]),
                               int(case["n_out"]), bool(case["in_signed"]), bool(case["out_signed"]))
        self.busy_edges: list[tuple[int, int]] = []  # (time, new value)

    async def reset(self) -> None:
        await start_clock_and_reset(self.dut)
        cocotb.start_soon(self._watch_busy())

    async def _watch_busy(self) -> None:
        while True:
            await self.dut.busy.value_change
            self.busy_edges.append((get_sim_time(), int(self.dut.busy.value)))

    async def wait_not_busy(self) -> None:
        """A ``WAIT`` of the driver: return once the busy pin is low (as a host polling the pin would)."""
        deadline = get_sim_time() + BUSY_TIMEOUT_CYCLES * self.period
        while int(self.dut.busy.value):
            if get_sim_time() > deadline:
                raise HwgenSpiError(f"busy pin still high after {BUSY_TIMEOUT_CYCLES} cycles")
            await Timer(self.master.half * 2, "step")

    async def run(self, txn):
        """Run a driver transaction generator on the pins; its return value."""
        return await run_async(txn, self.master.transfer, self.wait_not_busy)

    async def raw(self, command: int, payload: bytes = b"") -> bytes:
        """One transaction outside the driver (for the protocol's error cases); the bytes after the command."""
        return (await self.master.transfer(bytes([command]) + payload))[1:]

    async def status(self) -> int:
        return await self.run(self.driver.txn_status())

    def leds(self) -> int:
        return int(self.dut.led.value) & 0b0111


def write_results(name: str, entry: dict) -> None:
    path = Path(os.environ["HWGEN_SIM_RESULTS"])
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[name] = entry
    path.write_text(json.dumps(results, indent=1))


async def recorded(name: str, entry: dict, body) -> None:
    """Run ``body`` (a coroutine); an exception it raises goes into the results entry's ``error``, then on."""
    write_results(name, entry)
    try:
        await body
    except Exception as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
        write_results(name, entry)
        raise


@cocotb.test()
async def spi_inference_all_windows(dut) -> None:
    """Every window through the driver's infer(): outputs == golden, busy high from START until done."""
    case = load_case(os.environ["HWGEN_SIM_CASE"])
    entry: dict = {"windows": int(case["inputs"].shape[0]), "error": None}
    await recorded("inference", entry, _inference(dut, case, entry))


async def _inference(dut, case: dict, entry: dict) -> None:
    inputs, expected = case["inputs"], case["expected"]
    tb = TB(dut, case)
    await tb.reset()
    wall0, sim0 = time.perf_counter(), get_sim_time()
    entry["info"] = await tb.run(tb.driver.txn_check_info())

    got: list[int] = []
    per_window = []
    for window in inputs:
        first_txn, bytes0 = len(tb.master.log), tb.master.bytes
        got += await tb.run(tb.driver.txn_infer([int(v) for v in window]))
        txns = tb.master.log[first_txn:]
        cmds = [c for c, _, _ in txns]
        t_start, t_start_end = next((t0, end) for c, t0, end in txns if c == driver.START)
        t_read = next(t0 for c, t0, _ in txns if c == driver.READ_OUTPUT)
        edges = [(t, v) for t, v in tb.busy_edges if txns[0][1] <= t <= txns[-1][2]]
        per_window.append({
            "commands": cmds,
            "spi_cycles": (txns[-1][2] - txns[0][1]) // tb.period,
            "spi_bytes": tb.master.bytes - bytes0,
            "busy_edges": [((t - t_start_end) // tb.period, v) for t, v in edges],
            # busy rises after START's command byte and falls before READ_OUTPUT begins
            "busy_ok": (len(edges) == 2 and edges[0][1] == 1 and edges[1][1] == 0
                        and t_start < edges[0][0] <= t_start_end and edges[1][0] < t_read),
            "busy_cycles": (edges[1][0] - edges[0][0]) // tb.period if len(edges) == 2 else None,
        })
    status = await tb.status()
    wall = time.perf_counter() - wall0
    cycles = (get_sim_time() - sim0) // tb.period
    mismatches, first = score(expected, got)
    entry.update(mismatches=mismatches, first_mismatch=first, received=len(got), windows_detail=per_window,
                 final_status=status, leds=tb.leds(), sim_cycles=int(cycles), sim_wall_s=wall,
                 sim_cycles_per_s=cycles / wall if wall > 0 else None)
    write_results("inference", entry)
    assert mismatches == 0, f"{mismatches} mismatching output elements; first: {first}"
    assert all(w["busy_ok"] for w in per_window), [w["busy_edges"] for w in per_window]
    assert status == driver.STATUS_MARK | driver.STATUS_DONE | driver.STATUS_INPUT_READY, hex(status)
    assert tb.leds() == 0b010, bin(tb.leds())  # LED1 = result ready


@cocotb.test()
async def spi_protocol_errors_and_abort(dut) -> None:
    """Rejected commands set ERROR (sticky until RESET); RESET aborts a running inference; the core then
    runs the next window correctly; START again reruns the buffered window."""
    case = load_case(os.environ["HWGEN_SIM_CASE"])
    entry: dict = {"checks": {}, "error": None}
    await recorded("protocol", entry, _protocol(dut, case, entry))


async def _protocol(dut, case: dict, entry: dict) -> None:
    inputs, expected = case["inputs"], case["expected"]
    tb = TB(dut, case)
    drv = tb.driver
    checks = entry["checks"]
    await tb.reset()
    mark, busy, err, ready = driver.STATUS_MARK, driver.STATUS_BUSY, driver.STATUS_ERROR, driver.STATUS_INPUT_READY
    n_in = int(case["n_in"])
    window = [int(v) for v in inputs[0]]
    data = driver.encode_elements(window, drv.in_bits, drv.in_signed)
    per = len(data) // n_in

    async def start_busy() -> bool:
        """Write window 0 and START; True if the busy pin is high afterwards."""
        await tb.run(drv.txn_write_input(window))
        await tb.run(drv.txn_start())
        return bool(int(dut.busy.value))

    checks["idle after reset"] = await tb.status() == mark
    await tb.raw(driver.START)
    checks["START without input: ERROR, not busy"] = await tb.status() == mark | err and not int(dut.busy.value)
    checks["LED2 shows error"] = tb.leds() == 0b100
    try:
        await tb.run(drv.txn_wait_done())
        checks["wait_done raises on ERROR"] = False
    except HwgenSpiError:
        checks["wait_done raises on ERROR"] = True
    await tb.run(drv.txn_reset())
    checks["RESET clears ERROR"] = await tb.status() == mark

    await tb.raw(driver.WRITE_INPUT, data[: per * (n_in - 1)])
    checks["partial input: not INPUT_READY"] = await tb.status() == mark
    await tb.raw(driver.START)
    checks["START on partial input: ERROR"] = await tb.status() == mark | err
    await tb.run(drv.txn_reset())
    await tb.raw(driver.WRITE_INPUT, data + data[:per])
    checks["input overrun: ERROR"] = await tb.status() == mark | err | ready
    await tb.run(drv.txn_reset())
    await tb.raw(0x42)
    checks["unknown command: ERROR"] = await tb.status() == mark | err
    await tb.run(drv.txn_reset())
    await tb.raw(0x00)
    await tb.raw(0xFF, b"\xff")
    checks["NOPs leave status alone"] = await tb.status() == mark

    checks["busy pin high after START"] = await start_busy()
    await tb.raw(driver.START)
    checks["START while busy: ERROR"] = await tb.status() & (busy | err) == busy | err
    await tb.run(drv.txn_reset())
    checks["RESET aborts: busy pin low, idle"] = not int(dut.busy.value) and await tb.status() == mark

    checks["busy again after START"] = await start_busy()
    await tb.raw(driver.WRITE_INPUT, data)
    checks["WRITE_INPUT while busy: ERROR"] = await tb.status() & (busy | err) == busy | err
    await tb.run(drv.txn_reset())
    checks["busy once more"] = await start_busy()
    await tb.raw(driver.READ_OUTPUT, bytes(2))
    checks["READ_OUTPUT while busy: ERROR"] = await tb.status() & (busy | err) == busy | err
    await tb.run(drv.txn_reset())

    # After the aborts the core must still compute correctly, and START reruns the buffered window.
    want0, want1 = expected[0].tolist(), expected[1 % len(expected)].tolist()
    idx1 = 1 % len(inputs)
    checks["infer after aborts == golden"] = await tb.run(drv.txn_infer([int(v) for v in inputs[idx1]])) == want1
    await tb.run(drv.txn_write_input(window))
    await tb.run(drv.txn_start())
    await tb.run(drv.txn_wait_done())
    first = await tb.run(drv.txn_read_output())
    await tb.run(drv.txn_start())
    await tb.run(drv.txn_wait_done())
    checks["START again reruns the window"] = first == want0 and await tb.run(drv.txn_read_output()) == want0
    checks["INFO bytes past the end are 0"] = (await tb.raw(driver.INFO, bytes(10)))[8:] == b"\0\0"
    checks["STATUS repeats"] = len(set(await tb.raw(driver.STATUS, bytes(3)))) == 1

    write_results("protocol", entry)
    failed = [name for name, ok in checks.items() if not ok]
    assert not failed, f"failed checks: {failed}"
