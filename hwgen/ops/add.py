"""``add``: a * ma + b * mb + bias, requantized once (residual and positional-encoding adds of two
differently scaled tensors); chainable onto the producer of either operand."""

from __future__ import annotations

import numpy as np

from hwgen.ir.types import IntType, signed_bits_for
from hwgen.ops.base import OpDef, Unit, sbits
from hwgen.ops.rounding import I64, requantize


def add_acc(a, b, ma: int, mb: int, bias: int) -> np.ndarray:
    """a * ma + b * mb + bias: two operands brought to a common scale in exact integers."""
    return np.asarray(a, I64) * I64(ma) + np.asarray(b, I64) * I64(mb) + I64(bias)


def add(a, b, ma: int, mb: int, bias: int, shift: int, dtype: IntType, zp: int = 0) -> np.ndarray:
    """Add of two differently scaled tensors, requantized once."""
    return requantize(add_acc(a, b, ma, mb, bias), 1, shift, dtype, zp)


class Add(OpDef):
    name = "add"
    n_inputs = 2
    ints = ("ma", "mb", "bias", "shift", "zp")
    unit = Unit.ADD
    chainable = True
    chain_any_input = True

    def shape(self, graph, node):
        shapes = self.in_shapes(graph, node)
        self.need(node, shapes, shapes[0] == shapes[1], "operands must have the same shape")
        return shapes[0]

    def widths(self, graph, node):
        a = node.attrs
        ta, tb = (graph.value_type(i) for i in node.inputs)
        acc = max(sbits(ta.dtype) + signed_bits_for(a["ma"]), sbits(tb.dtype) + signed_bits_for(a["mb"]))
        return {"acc": max(acc + 1, signed_bits_for(a["bias"])) + 1}

    def compute(self, graph, node, args):
        a = node.attrs
        acc = add_acc(args[0], args[1], a["ma"], a["mb"], a["bias"])
        return requantize(acc, 1, a["shift"], node.out.dtype, a.get("zp", 0)), {"acc": acc}
