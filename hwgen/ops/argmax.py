"""``argmax`` (a classifier's head): the index of the largest of C scores (ties: the lowest index),
followed by the scores when ``scores`` is set."""

from __future__ import annotations

import numpy as np

from hwgen.ir.types import signed_bits_for
from hwgen.ops.base import OpDef, Unit, sbits
from hwgen.ops.rounding import I64


def argmax(x: np.ndarray, scores: bool = False) -> np.ndarray:
    """Class index of the largest of the C scores [..., 1, C] (ties: the lowest index) -> [..., 1, 1];
    with ``scores`` the scores follow the index: [..., 1, 1 + C]."""
    x = np.asarray(x, I64)
    idx = np.argmax(x, axis=-1, keepdims=True).astype(I64)  # numpy returns the first of equal maxima
    return np.concatenate([idx, x], axis=-1) if scores else idx


class Argmax(OpDef):
    name = "argmax"
    n_inputs = 1
    flags = ("scores",)
    unit = Unit.ARGMAX

    def shape(self, graph, node):
        shapes = self.in_shapes(graph, node)
        c, dt, it = shapes[0][-1], node.out.dtype, graph.value_type(node.inputs[0]).dtype
        self.need(node, shapes, len(shapes[0]) == 2 and shapes[0][0] == 1 and c >= 1,
                  "expects one row of class scores [1, C]")
        self.need(node, shapes, dt.contains(c - 1) and (not node.attrs.get("scores") or
                                                        (dt.qmin <= it.qmin and it.qmax <= dt.qmax)),
                  f"output type {dt} cannot hold the class index and the scores")
        return (1, 1 + c) if node.attrs.get("scores") else (1, 1)

    def widths(self, graph, node):
        t = graph.value_type(node.inputs[0])
        return {"best": sbits(t.dtype), "index": signed_bits_for(t.shape[-1])}

    def compute(self, graph, node, args):
        return argmax(args[0], bool(node.attrs.get("scores"))), {}
