"""cocotb testbench for the emitted ``hwgen_top``: send all windows, receive all outputs, compare with ``==``.

Run by :func:`hwgen.sim.runner.simulate`, never collected by pytest. The case comes from the ``.npz`` named by
``HWGEN_SIM_CASE`` (inputs, expected golden outputs, seed, stall probabilities, widths); the results JSON goes
to ``HWGEN_SIM_RESULTS``.

Timing discipline (the same on Verilator and Icarus): the DUT samples on rising edges; Python drives and
samples only at falling edges (mid-cycle), where every register output has settled. A handshake is decided
in the ``ReadOnly`` phase of the mid-cycle, after this step's writes have settled, so ``ready`` may depend
combinationally on ``valid``. Python runs only when something can happen: a beat, the end of a stall run, or
a change of the other side's ``valid``/``ready``; idle and compute cycles cost no Python callback.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import FallingEdge, First, ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_steps

CLOCK_NS = 10
RESET_CYCLES = 4
PORTS = ("clk", "rst", "x__payload", "x__valid", "x__ready", "y__payload", "y__valid", "y__ready")


def stall_run(rng: np.random.Generator, p: float) -> int:
    """Cycles of a stall run when each cycle stalls independently with probability ``p`` (geometric)."""
    if p <= 0.0:
        return 0
    return int(rng.geometric(1.0 - p)) - 1


async def start_clock_and_reset(dut) -> None:
    """Start ``dut.clk`` (CLOCK_NS period) and hold ``dut.rst`` for RESET_CYCLES cycles; returns at a falling
    edge with ``rst`` low. Shared by every testbench of the emitted designs."""
    Clock(dut.clk, CLOCK_NS, unit="ns").start(start_high=False)
    dut.rst.value = 1
    for _ in range(RESET_CYCLES):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)


class StreamSource:
    """Drives ``<name>__payload/valid`` with idle gaps; ``valid`` stays high until the beat is accepted."""

    def __init__(self, dut, name: str, period: int, rng: np.random.Generator, stall: float) -> None:
        self.payload = getattr(dut, f"{name}__payload")
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.clk = dut.clk
        self.period = period
        self.rng = rng
        self.stall = stall
        self.accepted_edges: list[int] = []  # the clock edge index at which each beat was accepted
        self.valid.value = 0

    async def send(self, beats: list[int]) -> None:
        """Send ``beats`` in order; call at a falling edge. Returns at the falling edge after the last one."""
        for beat in beats:
            gap = stall_run(self.rng, self.stall)
            if gap:
                self.valid.value = 0
                await Timer(gap * self.period, "step")
            self.payload.value = beat
            self.valid.value = 1
            await ReadOnly()
            while not self.ready.value:
                await self.ready.value_change
                if get_sim_time() % self.period:  # changed at a rising edge: sample at the next falling edge
                    await FallingEdge(self.clk)
                # else it changed at this falling edge (a combinational path from y__ready): sample now
                await ReadOnly()
            self.accepted_edges.append(get_sim_time() // self.period)
            await FallingEdge(self.clk)
        self.valid.value = 0


class StreamSink:
    """Receives ``<name>__payload`` beats; drops ``ready`` for random stall runs while ``valid`` is high."""

    def __init__(self, dut, name: str, period: int, rng: np.random.Generator, stall: float,
                 signed: bool) -> None:
        self.payload = getattr(dut, f"{name}__payload")
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.clk = dut.clk
        self.period = period
        self.rng = rng
        self.stall = stall
        self.signed = signed
        self.beats: list[int] = []
        self.edges: list[int] = []  # the clock edge index at which each beat was accepted
        self.protocol_errors: list[str] = []
        self.progress: ProgressFile | None = None  # told the beat count after each beat, when set
        self.ready.value = 1

    async def receive(self, count: int) -> None:
        """Receive ``count`` beats; call at a falling edge. ``ready`` is high except during a stall run."""
        while len(self.beats) < count:
            if self.valid.value:  # a registered valid: decide this beat's back-pressure
                stall = stall_run(self.rng, self.stall)
                if stall:
                    self.ready.value = 0
                    await ReadOnly()  # the beat being held, once this step's writes have settled
                    held_valid, held = bool(self.valid.value), self.payload.value
                    await Timer(stall * self.period, "step")
                    self.ready.value = 1
                    if held_valid and (not self.valid.value or self.payload.value != held):
                        self.protocol_errors.append(
                            f"output beat {len(self.beats)}: valid dropped or payload changed while ready "
                            f"was low (t={get_sim_time()})")
            await ReadOnly()
            if self.valid.value:  # with ready high: the beat moves at the coming rising edge
                value = self.payload.value
                self.beats.append(value.to_signed() if self.signed else value.to_unsigned())
                self.edges.append(get_sim_time() // self.period)
                if self.progress is not None:
                    self.progress.update(len(self.beats))
                await FallingEdge(self.clk)
                continue
            await self.valid.value_change  # idle: no Python until valid changes
            if get_sim_time() % self.period:  # changed at a rising edge: act at the next falling edge
                await FallingEdge(self.clk)
            # else it changed at this falling edge (a combinational path from x): act now


class StepMonitor:
    """The cycles the controller spends in each of its steps, read off hwgen_top's ``step`` register (0: load
    the input, 1..n: the node steps, a node chained to its producer sharing the producer's step, n+1: send the
    output). One Python callback per step change: a few dozen per window."""

    def __init__(self, dut, period: int) -> None:
        self.step = getattr(dut, "step", None)  # internal: made public for Verilator by the runner, visible on Icarus
        self.period = period
        self.visits: dict[int, list[int]] = {}  # step -> cycles of every visit

    async def run(self) -> None:
        if self.step is None:
            return
        value, since = int(self.step.value), get_sim_time() // self.period
        while True:
            await self.step.value_change
            now = get_sim_time() // self.period
            self.visits.setdefault(value, []).append(int(now - since))
            value, since = int(self.step.value), now

    def summary(self) -> dict[str, list[float]] | None:
        """{step: [mean, min, max]} over the visits of every node step (not load and send, which wait on the
        streams), or None when the design does not expose ``step``."""
        if self.step is None:
            return None
        last = max(self.visits, default=0)
        return {str(k): [float(np.mean(v)), int(min(v)), int(max(v))]
                for k, v in sorted(self.visits.items()) if 0 < k < last}


class ProgressFile:
    """Writes the number of complete windows received to ``path`` (atomically, at most every ``interval``
    seconds of wall time, and at the last window) for the caller's progress bar; it polls the file."""

    def __init__(self, path: str | os.PathLike, per_window: int, windows: int, interval: float = 0.2) -> None:
        self.path = Path(path)
        self.per_window = max(int(per_window), 1)
        self.windows = int(windows)
        self.interval = interval
        self.last = 0.0

    def update(self, beats: int) -> None:
        if beats % self.per_window:
            return
        done, now = beats // self.per_window, time.perf_counter()
        if now - self.last >= self.interval or done == self.windows:
            self.last = now
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(str(done))
            os.replace(tmp, self.path)


class TB:
    """The hwgen_top testbench: clock, reset, input source on ``x`` and output sink on ``y``."""

    def __init__(self, dut, case: dict) -> None:
        self.dut = dut
        self.period = int(get_sim_steps(CLOCK_NS, "ns"))
        rng = np.random.default_rng(int(case["seed"]))
        rng_in, rng_out = (np.random.default_rng(s) for s in rng.integers(0, 2**63, size=2))
        self.source = StreamSource(dut, "x", self.period, rng_in, float(case["stall_in"]))
        self.sink = StreamSink(dut, "y", self.period, rng_out, float(case["stall_out"]),
                               bool(case["out_signed"]))

    async def reset(self) -> None:
        """Start the clock and hold ``rst`` for a few cycles; returns at a falling edge with ``rst`` low."""
        await start_clock_and_reset(self.dut)

    async def extra_output(self, cycles: int) -> bool:
        """True when ``y__valid`` rises within ``cycles`` cycles after the last expected output."""
        await ReadOnly()  # after the source's last writes (valid may follow x combinationally)
        if not self.sink.valid.value:
            await First(self.sink.valid.value_change, Timer(cycles * self.period, "step"))
            await ReadOnly()
        return bool(self.sink.valid.value)

    async def watchdog(self, idle_cycles: int) -> None:
        """Return when no beat moved on either stream for ``idle_cycles`` cycles."""
        seen = -1
        while True:
            now = len(self.source.accepted_edges) + len(self.sink.beats)
            if now == seen:
                return
            seen = now
            await Timer(idle_cycles * self.period, "step")


def load_case(path: str | os.PathLike) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def score(expected: np.ndarray, got: list[int]) -> tuple[int, dict | None]:
    """Mismatch count over every element (a missing output counts as one) and the first mismatch."""
    flat = expected.reshape(-1)
    per_window = expected.shape[1]
    mismatches, first = 0, None
    for i, want in enumerate(flat.tolist()):
        have = got[i] if i < len(got) else None
        if have != want:
            mismatches += 1
            if first is None:
                first = {"window": i // per_window, "element": i % per_window, "expected": want, "got": have}
    return mismatches, first


def check_ports(dut, widths: dict[str, int]) -> str | None:
    """None when the design has every port of the contract and the payload widths of the graph's types."""
    missing = [p for p in PORTS if not hasattr(dut, p)]
    if missing:
        return (f"the design has no port {', '.join(missing)} "
                f"(the hwgen_top contract needs {', '.join(PORTS)})")
    for port, bits in widths.items():
        have = len(getattr(dut, port))
        if have != bits:
            return f"port {port} is {have} bits wide, the graph's type needs {bits}"
    return None


@cocotb.test()
async def stream_all_windows(dut) -> None:
    """Send all windows back to back under the case's stall patterns; each output must equal golden's."""
    case = load_case(os.environ["HWGEN_SIM_CASE"])
    results_path = Path(os.environ["HWGEN_SIM_RESULTS"])
    inputs, expected = case["inputs"], case["expected"]
    windows, n_in = inputs.shape
    n_out = expected.shape[1]
    result: dict = {"windows": int(windows), "error": None}

    problem = check_ports(dut, {"x__payload": int(case["in_bits"]), "y__payload": int(case["out_bits"])})
    if problem:
        result["config_error"] = problem
        results_path.write_text(json.dumps(result, indent=1))
        raise AssertionError(problem)

    tb = TB(dut, case)
    if os.environ.get("HWGEN_SIM_PROGRESS"):
        tb.sink.progress = ProgressFile(os.environ["HWGEN_SIM_PROGRESS"], n_out, windows)
    await tb.reset()
    wall0, t0 = time.perf_counter(), get_sim_time()
    steps = StepMonitor(dut, tb.period)
    monitor = cocotb.start_soon(steps.run())
    sender = cocotb.start_soon(tb.source.send(inputs.reshape(-1).tolist()))
    receiver = cocotb.start_soon(tb.sink.receive(windows * n_out))
    watchdog = cocotb.start_soon(tb.watchdog(int(case["idle_timeout_cycles"])))
    await First(receiver, watchdog)
    wall = time.perf_counter() - wall0
    cycles = (get_sim_time() - t0) / tb.period
    timed_out = not receiver.done()
    watchdog.cancel()

    mismatches, first = score(expected, tb.sink.beats)
    ends = np.array(tb.sink.edges[n_out - 1 :: n_out], dtype=np.int64)  # last output beat of each window
    starts = np.array(tb.source.accepted_edges[::n_in][: ends.size], dtype=np.int64)  # first input beat
    # The latency of a window is measured where the design took it alone: its first input beat after the
    # window before it had left (always the first window). A design may take the next window's input while
    # it still computes (hwgen_top does), and that window's span from its first beat then includes the wait.
    alone = np.ones(ends.size, dtype=bool)
    alone[1:] = starts[1:] > ends[:-1]
    lat = (ends - starts)[alone]
    between = np.diff(ends)  # last output beat to the next window's: the period of the stream
    # the scoreboard must end empty: no output may follow the last expected one
    drain = min(int(max(lat.max() if lat.size else 0, between.max() if between.size else 0)),
                int(case["idle_timeout_cycles"])) + 16
    extra = not timed_out and await tb.extra_output(drain)
    sender.cancel()
    monitor.cancel()
    result.update(
        mismatches=mismatches,
        first_mismatch=first,
        received=len(tb.sink.beats),
        expected_beats=int(windows * n_out),
        timed_out=timed_out,
        protocol_errors=tb.sink.protocol_errors[:10],
        cycles_per_inference={
            "mean": float(lat.mean()) if lat.size else None,
            "min": int(lat.min()) if lat.size else None,
            "max": int(lat.max()) if lat.size else None,
            "windows": int(lat.size),
        },
        cycles_between_windows={
            "mean": float(between.mean()) if between.size else None,
            "min": int(between.min()) if between.size else None,
            "max": int(between.max()) if between.size else None,
        },
        step_cycles=steps.summary(),
        sim_cycles=int(cycles),
        sim_wall_s=wall,
        sim_cycles_per_s=cycles / wall if wall > 0 else None,
    )
    if timed_out:
        result["error"] = (f"no stream progress for {int(case['idle_timeout_cycles'])} cycles: received "
                           f"{len(tb.sink.beats)} of {windows * n_out} outputs, sent "
                           f"{len(tb.source.accepted_edges)} of {windows * n_in} inputs")
    elif tb.sink.protocol_errors:
        result["error"] = tb.sink.protocol_errors[0]
    elif extra:
        result["error"] = f"an output beat followed the last expected one ({windows * n_out} outputs)"
    results_path.write_text(json.dumps(result, indent=1))
    assert result["error"] is None, result["error"]
    assert mismatches == 0, f"{mismatches} mismatching output elements; first: {first}"
