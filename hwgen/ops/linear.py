"""``linear``: y = requantize(x @ W.T + b) per output channel, optional ReLU; runs on the MAC array.

Attributes: ``weight`` [N, K], ``m0``/``shift`` per output, optional ``bias`` [N], optional ``in_shl`` [K]
(per-embedding-group inputs: input channel k has scale s * 2**in_shl[k]), ``zp``, ``relu``, optional
``rows`` (read only the first ``rows`` rows of the [R, K] input: a forecasting anomaly detector's
embedding reads the context rows of a window whose last rows are the steps it scores).
"""

from __future__ import annotations

import math

import numpy as np

from hwgen.ir.types import IntType, clog2
from hwgen.ops.base import OpDef, Unit, const_sbits, sbits
from hwgen.ops.rounding import I64, int_matmul, requantize

# Per-embedding-group inputs: group scales are the tensor's scale times 2**e_k, 0 <= e_k <= MAX_IN_SHL.
MAX_IN_SHL = 8


def linear_acc(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
               in_shl: np.ndarray | None = None) -> np.ndarray:
    """x[..., K] @ weight[N, K].T + bias[N] in exact integers.

    With ``in_shl`` the product is accumulated per group of equal shift, and each group's partial sum is
    rescaled to the common scale s by its exact left shift before the partial sums are added (no rounding:
    the rescale is a power of two).
    """
    x, w = np.asarray(x, I64), np.asarray(weight, I64)
    if in_shl is None:
        acc = int_matmul(x, w.T)
    else:
        shl = np.asarray(in_shl, I64)
        acc = np.zeros((*x.shape[:-1], w.shape[0]), I64)
        for e in np.unique(shl):
            cols = shl == e
            acc = acc + np.left_shift(int_matmul(x[..., cols], w[:, cols].T), e)
    return acc if bias is None else acc + np.asarray(bias, I64)


def linear(x, weight, bias, m0, shift, dtype: IntType, zp: int = 0, relu: bool = False,
           in_shl: np.ndarray | None = None) -> np.ndarray:
    """Integer linear layer: requantize(x @ W.T + b) per output channel, then ReLU if asked."""
    y = requantize(linear_acc(x, weight, bias, in_shl), m0, shift, dtype, zp)
    return np.maximum(y, zp) if relu else y


def in_shl_max(graph, node) -> int:
    """The largest per-group shift of a linear node's input (0 without groups)."""
    key = node.attrs.get("in_shl")
    return int(graph.consts[key].value.max()) if key else 0


class Linear(OpDef):
    name = "linear"
    n_inputs = 1
    consts = ("weight", "m0", "shift")
    optional_consts = ("bias", "in_shl")
    ints = ("zp",)
    flags = ("relu",)
    optional_ints = ("rows",)
    unit = Unit.MATMUL

    def shape(self, graph, node):
        shapes, a = self.in_shapes(graph, node), node.attrs
        w = graph.consts[a["weight"]].value.shape
        self.need(node, shapes, len(w) == 2 and shapes[0][-1] == w[1], f"weight shape {w} does not match the input width")
        for key in ("m0", "shift") + (("bias",) if a.get("bias") else ()):
            self.need(node, shapes, graph.consts[a[key]].value.shape in ((w[0],), ()),
                      f"{key} must have one entry per output")
        if a.get("in_shl"):
            shl = graph.consts[a["in_shl"]].value
            self.need(node, shapes, shl.shape == (w[1],), "in_shl must have one entry per input channel")
            self.need(node, shapes, 0 <= int(shl.min()) and int(shl.max()) <= MAX_IN_SHL,
                      f"in_shl must lie in 0..{MAX_IN_SHL}")
        if a.get("rows") is not None:
            self.need(node, shapes, len(shapes[0]) == 2 and 1 <= a["rows"] <= shapes[0][0],
                      f"rows {a['rows']} must lie in 1..{shapes[0][0]} of a [rows, channels] input")
            return (a["rows"], w[0])
        return (*shapes[0][:-1], w[0])

    def widths(self, graph, node):
        t = graph.value_type(node.inputs[0])
        k = t.shape[-1]
        acc = sbits(t.dtype) + in_shl_max(graph, node) + const_sbits(graph, node, "weight") + clog2(k)
        if node.attrs.get("bias"):
            acc = max(acc, const_sbits(graph, node, "bias")) + 1
        return {"acc": acc, "scaled": acc + const_sbits(graph, node, "m0")}

    def macs(self, graph, node):
        n = graph.consts[node.attrs["weight"]].value.shape[0]
        return math.prod(node.out.shape[:-1]) * graph.value_type(node.inputs[0]).shape[-1] * n

    def compute(self, graph, node, args):
        a = node.attrs
        x = args[0] if a.get("rows") is None else args[0][..., : a["rows"], :]
        acc = linear_acc(x, self.const(graph, node, "weight"), self.const(graph, node, "bias"),
                         self.const(graph, node, "in_shl"))
        zp = a.get("zp", 0)
        y = requantize(acc, self.const(graph, node, "m0"), self.const(graph, node, "shift"), node.out.dtype, zp)
        return (np.maximum(y, zp) if a.get("relu") else y), {"acc": acc}
