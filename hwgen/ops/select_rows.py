"""``select_rows``: rows ``start .. start + count - 1`` of [L, C] (``x[:, -1]``, the last-step readout, is
start L - 1, count 1); chainable onto the producer of its input. The output has the input's type."""

from __future__ import annotations

import numpy as np

from hwgen.ops.base import OpDef, Unit, sbits
from hwgen.ops.rounding import I64


def select_rows(x: np.ndarray, start: int, count: int) -> np.ndarray:
    """Rows ``start .. start + count - 1`` of [..., L, C]."""
    return np.asarray(x, I64)[..., start:start + count, :]


class SelectRows(OpDef):
    name = "select_rows"
    n_inputs = 1
    ints = ("start", "count")
    unit = Unit.SELECT
    chainable = True

    def shape(self, graph, node):
        shapes = self.in_shapes(graph, node)
        self.need(node, shapes, len(shapes[0]) == 2, "expects [time, channels]")
        start, count, length = node.attrs["start"], node.attrs["count"], shapes[0][0]
        self.need(node, shapes, 0 <= start and 1 <= count and start + count <= length,
                  f"rows {start}..{start + count - 1} are not within 0..{length - 1}")
        self.need(node, shapes, node.out.dtype == graph.value_type(node.inputs[0]).dtype,
                  f"the output type {node.out.dtype} must be the input's")
        return (count, shapes[0][1])

    def widths(self, graph, node):
        return {"value": sbits(graph.value_type(node.inputs[0]).dtype)}

    def compute(self, graph, node, args):
        return select_rows(args[0], node.attrs["start"], node.attrs["count"]), {}
