"""``maxpool``: the maximum over time in windows of ``kernel`` rows (stride ``kernel``; default: all rows),
[L, C] -> [L // kernel, C], rows past the last whole window ignored; chainable onto the producer of its
input. The output has the input's type."""

from __future__ import annotations

import numpy as np

from hwgen.ops.base import OpDef, Unit, sbits
from hwgen.ops.rounding import I64


def maxpool(x: np.ndarray, kernel: int | None = None) -> np.ndarray:
    """Maximum over windows of ``kernel`` rows of [..., L, C] -> [..., L // kernel, C] (all rows: one)."""
    x = np.asarray(x, I64)
    length = x.shape[-2]
    k = length if kernel is None else kernel
    rows = length // k
    windows = x[..., :rows * k, :].reshape(*x.shape[:-2], rows, k, x.shape[-1])
    return windows.max(axis=-2)


class MaxPool(OpDef):
    name = "maxpool"
    n_inputs = 1
    optional_ints = ("kernel",)
    unit = Unit.SELECT
    chainable = True

    def shape(self, graph, node):
        shapes = self.in_shapes(graph, node)
        self.need(node, shapes, len(shapes[0]) == 2, "expects [time, channels]")
        k = node.attrs.get("kernel")
        k = shapes[0][0] if k is None else k
        self.need(node, shapes, 1 <= k <= shapes[0][0], f"kernel must lie in 1..{shapes[0][0]}, not {k}")
        self.need(node, shapes, node.out.dtype == graph.value_type(node.inputs[0]).dtype,
                  f"the output type {node.out.dtype} must be the input's")
        return (shapes[0][0] // k, shapes[0][1])

    def widths(self, graph, node):
        return {"best": sbits(graph.value_type(node.inputs[0]).dtype)}

    def compute(self, graph, node, args):
        return maxpool(args[0], node.attrs.get("kernel")), {}
