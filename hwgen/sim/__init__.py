"""Simulation of the emitted Verilog against the golden model: the runners of the cocotb testbenches
(package ``hwgen.testbenches``, source folder ``sim/``)."""

from hwgen.sim.runner import SIMULATORS, SimResult, simulate

__all__ = ["SIMULATORS", "SimResult", "simulate"]
