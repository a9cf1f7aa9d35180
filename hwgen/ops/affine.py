"""``affine``: x[..., C] * mul[C] + bias[C] requantized per channel (a folded BatchNorm1d); chainable onto
the producer of its input."""

from __future__ import annotations

import numpy as np

from hwgen.ir.types import IntType
from hwgen.ops.base import OpDef, Unit, const_sbits, sbits
from hwgen.ops.rounding import I64, requantize


def affine_acc(x, mul, bias) -> np.ndarray:
    """x[..., C] * mul[C] + bias[C]: the folded BatchNorm before rounding."""
    return np.asarray(x, I64) * np.asarray(mul, I64) + np.asarray(bias, I64)


def affine(x, mul, bias, shift, dtype: IntType, zp: int = 0) -> np.ndarray:
    """Per-channel integer affine, requantized per channel."""
    return requantize(affine_acc(x, mul, bias), 1, shift, dtype, zp)


class Affine(OpDef):
    name = "affine"
    n_inputs = 1
    consts = ("mul", "bias", "shift")
    ints = ("zp",)
    unit = Unit.AFFINE
    chainable = True

    def shape(self, graph, node):
        shapes = self.in_shapes(graph, node)
        c = shapes[0][-1]
        for key in ("mul", "bias", "shift"):
            self.need(node, shapes, graph.consts[node.attrs[key]].value.shape in ((c,), ()),
                      f"{key} must have one entry per channel")
        return shapes[0]

    def widths(self, graph, node):
        acc = sbits(graph.value_type(node.inputs[0]).dtype) + const_sbits(graph, node, "mul")
        return {"acc": max(acc, const_sbits(graph, node, "bias")) + 1}

    def compute(self, graph, node, args):
        c = {k: self.const(graph, node, k) for k in ("mul", "bias", "shift")}
        acc = affine_acc(args[0], c["mul"], c["bias"])
        return requantize(acc, 1, c["shift"], node.out.dtype, node.attrs.get("zp", 0)), {"acc": acc}
