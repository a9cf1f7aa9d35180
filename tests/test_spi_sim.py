"""The SPI-wrapped accelerator on Verilator: a lowered synthetic graph behind SpiHostLink, driven by the host
driver bit-banging the pins (hwgen.sim.tb_spi), must reproduce hwgen.golden.run exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.synthetic import SyntheticConfig, random_graph
from hwgen.sim.spi_runner import simulate_spi

CONFIG = SyntheticConfig(window=8, features=3, d_model=8, ffn=16)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sim_spi_build")


@pytest.mark.sim
@pytest.mark.slow
def test_spi_link_on_verilator_matches_golden(build_dir):
    graph, x = random_graph(CONFIG, seed=0)
    res = simulate_spi(graph, x[:5], build_dir, parallel=2, sclk_divider=8, seed=1)
    assert res.error is None, res.error
    assert (res.windows, res.mismatches, res.first_mismatch) == (5, 0, None)
    assert res.busy_ok  # busy rose during each START transaction and fell before each READ_OUTPUT
    assert res.protocol_checks and all(res.protocol_checks.values()), res.protocol_checks
    assert res.commands_per_inference[:2] == [0x01, 0x02] and res.commands_per_inference[-1] == 0x04
    assert res.spi_bytes_per_inference == 1 + 24 + 1 + 3 + 2 * (len(res.commands_per_inference) - 3)
    mean, lo, hi = res.spi_cycles_per_inference
    # at SCLK = clk/8 a byte is 64 cycles: the transfers alone bound the time from below
    assert 64 * res.spi_bytes_per_inference < lo <= mean <= hi
    assert res.passed


@pytest.mark.sim
def test_spi_link_on_icarus_matches_golden(build_dir):
    """The same flow on Icarus (builds in seconds): 4 windows, parallel=1."""
    graph, x = random_graph(CONFIG, seed=3)
    res = simulate_spi(graph, x[:4], build_dir, parallel=1, simulator="icarus", sclk_divider=10, seed=2)
    assert res.error is None, res.error
    assert (res.windows, res.mismatches) == (4, 0)
    assert res.busy_ok and all(res.protocol_checks.values()), res.protocol_checks
    assert res.sclk_mhz == 10.0
