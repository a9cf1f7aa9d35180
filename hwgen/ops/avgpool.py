"""``avgpool``: the average over time, [L, C] -> [1, C]: the sum plus a constant (the folded input zero
point), requantized by m0 / 2**shift (which includes the 1/L); chainable onto the producer of its input."""

from __future__ import annotations

import numpy as np

from hwgen.ir.types import IntType, clog2, signed_bits_for
from hwgen.ops.base import OpDef, Unit, sbits
from hwgen.ops.rounding import I64, requantize


def avgpool_acc(x: np.ndarray, bias: int) -> np.ndarray:
    """Sum over time: [..., L, C] -> [..., 1, C], plus a constant."""
    return np.asarray(x, I64).sum(axis=-2, keepdims=True) + I64(bias)


def avgpool(x, m0: int, shift: int, bias: int, dtype: IntType, zp: int = 0) -> np.ndarray:
    """Average over time: the sum requantized by m0 / 2**shift."""
    return requantize(avgpool_acc(x, bias), m0, shift, dtype, zp)


class AvgPool(OpDef):
    name = "avgpool"
    n_inputs = 1
    ints = ("m0", "shift", "bias", "zp")
    unit = Unit.AVGPOOL
    chainable = True

    def shape(self, graph, node):
        shapes = self.in_shapes(graph, node)
        self.need(node, shapes, len(shapes[0]) == 2, "expects [time, channels]")
        return (1, shapes[0][1])

    def widths(self, graph, node):
        a, t = node.attrs, graph.value_type(node.inputs[0])
        acc = max(sbits(t.dtype) + clog2(t.shape[0]), signed_bits_for(a["bias"])) + 1
        return {"acc": acc, "scaled": acc + signed_bits_for(a["m0"])}

    def compute(self, graph, node, args):
        a = node.attrs
        acc = avgpool_acc(args[0], a["bias"])
        return requantize(acc, a["m0"], a["shift"], node.out.dtype, a.get("zp", 0)), {"acc": acc}
