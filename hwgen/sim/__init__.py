"""Simulation of the emitted Verilog against the golden model: cocotb testbench and runner."""

from hwgen.sim.runner import SIMULATORS, SimResult, simulate

__all__ = ["SIMULATORS", "SimResult", "simulate"]
