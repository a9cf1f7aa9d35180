"""Hardware: Amaranth components per op kind, memories, controller, and ``lower(graph) -> Top``."""

from hwgen.hw.top import Top
from hwgen.hw.lower import build_design
from hwgen.hw.verilog import emit_verilog, lower

__all__ = ["Top", "build_design", "emit_verilog", "lower"]
