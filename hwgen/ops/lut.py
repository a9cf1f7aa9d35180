"""``lut``: an element-wise lookup table, ``y = table[x - qmin]`` with one table entry per value of the
input's integer type (GELU, SiLU, sigmoid, tanh, ... of a quantized tensor: any function of one integer);
chainable onto the producer of its input."""

from __future__ import annotations

import numpy as np

from hwgen.ops.base import OpDef, Unit, sbits
from hwgen.ops.rounding import I64

MAX_LUT_IN_BITS = 12  # a table of at most 4096 entries per node


def lut(x: np.ndarray, table: np.ndarray, qmin: int) -> np.ndarray:
    """``table[x - qmin]`` element-wise (``table`` holds one entry per input value, from ``qmin`` up)."""
    return np.asarray(table, I64).reshape(-1)[np.asarray(x, I64) - I64(qmin)]


class Lut(OpDef):
    name = "lut"
    n_inputs = 1
    consts = ("table",)
    unit = Unit.LUT
    chainable = True

    def shape(self, graph, node):
        shapes = self.in_shapes(graph, node)
        it, table = graph.value_type(node.inputs[0]).dtype, graph.consts[node.attrs["table"]].value
        self.need(node, shapes, len(shapes[0]) == 2, "expects [time, channels]")
        self.need(node, shapes, it.bits <= MAX_LUT_IN_BITS,
                  f"input type {it} is wider than the {MAX_LUT_IN_BITS} bits a table may be indexed by")
        self.need(node, shapes, table.size == it.qmax - it.qmin + 1,
                  f"the table has {table.size} entries, the input type {it} has {it.qmax - it.qmin + 1} values")
        self.need(node, shapes, bool(node.out.dtype.contains(table)),
                  f"table entries in [{int(table.min())}, {int(table.max())}] leave the output type {node.out.dtype}")
        return shapes[0]

    def widths(self, graph, node):
        return {"index": sbits(graph.value_type(node.inputs[0]).dtype) + 1}

    def compute(self, graph, node, args):
        qmin = graph.value_type(node.inputs[0]).dtype.qmin
        return lut(args[0], graph.consts[node.attrs["table"]].value, qmin), {}
