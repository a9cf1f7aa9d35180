"""Estimates before Vivado: resources (Yosys synth_xilinx), board fit, energy, lint, Vivado report parsing."""
