"""Entry points: ``lower(graph, parallel) -> Top`` and deterministic Verilog emission."""

from __future__ import annotations

from amaranth.back import verilog

from hwgen.errors import HwgenError
from hwgen.hw.lower import build_design
from hwgen.hw.top import Top
from hwgen.ir.graph import Graph


def lower(graph: Graph, parallel: int = 1, dsp_budget: int | None = None) -> Top:
    """The accelerator for ``graph`` with ``parallel`` MAC lanes (HwgenError naming the problem if the
    graph has an op without a hardware unit or ``parallel`` < 1); ``dsp_budget`` as in ``build_design``."""
    if not isinstance(graph, Graph):
        raise HwgenError(f"lower expects an hwgen.ir.Graph, not {type(graph).__name__}")
    return Top(build_design(graph, parallel, dsp_budget=dsp_budget))


def emit_verilog(top: Top, name: str = "hwgen_top") -> str:
    """Verilog text of ``top`` with ports clk, rst, x__payload/valid/ready, y__payload/valid/ready.

    Deterministic: the same graph and parallelism give byte-identical text (Amaranth names are derived
    from the design, and every table is built in graph order).
    """
    if not name.isidentifier():
        raise HwgenError(f"module name must be a Verilog identifier, not {name!r}")
    return verilog.convert(top, name=name, emit_src=False)
