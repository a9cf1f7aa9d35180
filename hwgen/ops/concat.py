"""``concat``: two tensors of the same rows and integer type side by side along channels, [L, Ca] and
[L, Cb] -> [L, Ca + Cb]; the output has their type (a plain copy, no rescale)."""

from __future__ import annotations

import numpy as np

from hwgen.ops.base import OpDef, Unit, sbits
from hwgen.ops.rounding import I64


def concat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[..., L, Ca] and [..., L, Cb] -> [..., L, Ca + Cb] (a constant operand broadcast over the batch)."""
    a, b = np.asarray(a, I64), np.asarray(b, I64)
    lead = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    a, b = (np.broadcast_to(v, (*lead, v.shape[-1])) for v in (a, b))
    return np.concatenate([a, b], axis=-1)


class Concat(OpDef):
    name = "concat"
    n_inputs = 2
    unit = Unit.CONCAT

    def shape(self, graph, node):
        shapes = self.in_shapes(graph, node)
        ta, tb = (graph.value_type(i).dtype for i in node.inputs)
        self.need(node, shapes, len(shapes[0]) == 2 and len(shapes[1]) == 2 and shapes[0][0] == shapes[1][0],
                  "expects [time, channels] operands with the same number of rows")
        self.need(node, shapes, ta == tb == node.out.dtype,
                  f"operands of types {ta} and {tb} and the output {node.out.dtype} must share one type")
        return (shapes[0][0], shapes[0][1] + shapes[1][1])

    def widths(self, graph, node):
        return {"value": sbits(node.out.dtype)}

    def compute(self, graph, node, args):
        return concat(args[0], args[1]), {}
