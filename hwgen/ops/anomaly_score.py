"""``anomaly_score`` (an anomaly detector's head): [score, flag], score = the summed absolute difference
between the window and its reconstruction (or forecast) in integers, flag = score > ``threshold``.

``offset``: the compared part of the window starts at this row-major element (0: the whole window).
"""

from __future__ import annotations

import math

import numpy as np

from hwgen.ir.types import IntType, clog2
from hwgen.ops.base import OpDef, Unit, const_sbits, sbits
from hwgen.ops.rounding import I64, requantize


def anomaly_diff(x: np.ndarray, rec: np.ndarray, mx: np.ndarray, mr: np.ndarray, offset: int = 0) -> np.ndarray:
    """x * mx[F] - rec * mr[F] over the part of the window x [..., L, F] that ``rec`` describes: its N
    elements (whole rows, row-major) from element ``offset`` on (the whole window when N = L*F, the last rows
    when a forecaster predicts them from the rows before). The two are brought to one scale (m / 2**shift
    each) in exact integers; the result has rec's N / F rows: [..., N / F, F]."""
    x, r = np.asarray(x, I64), np.asarray(rec, I64)
    n = int(np.prod(r.shape[-2:]))  # rec is [..., 1, N] (a batch of rows) or [L', F]
    lead, f = x.shape[:-2], x.shape[-1]
    seg = x.reshape(*lead, -1)[..., offset:offset + n].reshape(*lead, n // f, f)
    return seg * np.asarray(mx, I64) - r.reshape(seg.shape) * np.asarray(mr, I64)


def anomaly_acc(x, rec, mx, mr, offset: int = 0) -> np.ndarray:
    """Sum of absolute differences over the compared rows: -> [..., 1, 1]."""
    return np.abs(anomaly_diff(x, rec, mx, mr, offset)).sum(axis=(-2, -1), keepdims=True)


def anomaly_score(x, rec, mx, mr, shift: int, threshold: int, dtype: IntType, offset: int = 0) -> np.ndarray:
    """[score, flag] [..., 1, 2]: score = clamp(round_shift(sum |x*mx - rec*mr|, shift)) into ``dtype``
    (saturating at qmax), flag = 1 when score > threshold, else 0."""
    return _score(anomaly_acc(x, rec, mx, mr, offset), shift, threshold, dtype)


def _score(acc, shift: int, threshold: int, dtype: IntType) -> np.ndarray:
    score = requantize(acc, 1, shift, dtype)
    return np.concatenate([score, (score > int(threshold)).astype(I64)], axis=-1)


class AnomalyScore(OpDef):
    name = "anomaly_score"
    n_inputs = 2
    consts = ("mx", "mr")
    ints = ("shift", "threshold")
    optional_ints = ("offset",)
    unit = Unit.ANOMALY

    def shape(self, graph, node):
        shapes, a = self.in_shapes(graph, node), node.attrs
        (lx, fx), n, off = shapes[0], math.prod(shapes[1]), a.get("offset") or 0
        self.need(node, shapes, len(shapes[0]) == 2 and n >= 1 and n % fx == 0 and off % fx == 0
                  and 0 <= off <= lx * fx - n,
                  f"the reconstruction's {n} elements from element {off} on must be whole rows of the "
                  f"[{lx}, {fx}] window")
        for key in ("mx", "mr"):
            self.need(node, shapes, graph.consts[a[key]].value.shape in ((fx,), ()),
                      f"{key} must have one entry per feature")
        self.need(node, shapes, node.out.dtype.signed and 0 <= a["threshold"] <= node.out.dtype.qmax,
                  f"threshold {a['threshold']} must lie in 0..{node.out.dtype.qmax} of a signed output type")
        return (1, 2)

    def widths(self, graph, node):
        tx, tr = (graph.value_type(i) for i in node.inputs)
        diff = max(sbits(tx.dtype) + const_sbits(graph, node, "mx"), sbits(tr.dtype) + const_sbits(graph, node, "mr")) + 1
        # a sum of N absolute values each at most 2**(diff-1)
        return {"diff": diff, "acc": diff + clog2(math.prod(tr.shape)) + 1}

    def compute(self, graph, node, args):
        a = node.attrs
        diff = anomaly_diff(args[0], args[1], self.const(graph, node, "mx"), self.const(graph, node, "mr"),
                            a.get("offset") or 0)
        acc = np.abs(diff).sum(axis=(-2, -1), keepdims=True)
        return _score(acc, a["shift"], a["threshold"], node.out.dtype), {"diff": diff, "acc": acc}
