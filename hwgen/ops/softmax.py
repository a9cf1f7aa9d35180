"""``softmax``: integer softmax along the last axis with an exp table indexed by row max minus x and one
reciprocal per row; output in units of 2**-bits (unsigned)."""

from __future__ import annotations

import numpy as np

from hwgen.ir.types import IntType, clog2, signed_bits_for
from hwgen.ops.base import OpDef, Unit, sbits
from hwgen.ops.rounding import I64, requantize


def softmax_parts(x: np.ndarray, lut: np.ndarray, recip_bits: int):
    """The integer softmax's intermediate values along the last axis.

    e = lut[max(x) - x] (lut[0] is the largest entry), s = sum(e), r = floor(2**recip_bits / s).
    """
    x = np.asarray(x, I64)
    diff = x.max(axis=-1, keepdims=True) - x
    e = np.asarray(lut, I64)[diff]
    s = e.sum(axis=-1, keepdims=True)
    r = np.left_shift(I64(1), recip_bits) // s
    return e, s, r


def softmax(x: np.ndarray, lut: np.ndarray, recip_bits: int, dtype: IntType) -> np.ndarray:
    """Integer softmax: y = clamp(round_shift(e * r, recip_bits - dtype.bits)) with e, r from
    :func:`softmax_parts`: one reciprocal per row, one multiply per element, the one rounding rule."""
    e, _, r = softmax_parts(x, lut, recip_bits)
    return requantize(e * r, 1, recip_bits - dtype.bits, dtype)


class Softmax(OpDef):
    name = "softmax"
    n_inputs = 1
    consts = ("lut",)
    ints = ("recip_bits",)
    int_ranges = {"recip_bits": (1, 62)}
    unit = Unit.SOFTMAX

    def shape(self, graph, node):
        shapes = self.in_shapes(graph, node)
        lut, t = graph.consts[node.attrs["lut"]].value, graph.value_type(node.inputs[0]).dtype
        span = t.qmax - t.qmin + 1  # row max - x takes every value in 0 .. span - 1
        self.need(node, shapes, lut.ndim == 1 and lut.shape[0] >= span and int(lut[0]) >= 1,
                  f"lut needs at least {span} entries for input type {t} and lut[0] >= 1 (lut shape {lut.shape})")
        self.need(node, shapes, node.out.dtype.bits <= node.attrs["recip_bits"],
                  "recip_bits must be at least the output's bits")
        return shapes[0]

    def widths(self, graph, node):
        lut = graph.consts[node.attrs["lut"]]
        e_bits = sbits(lut.dtype)
        r_bits = signed_bits_for((1 << node.attrs["recip_bits"]) // max(int(lut.value[0]), 1))
        return {"sum": e_bits + clog2(graph.value_type(node.inputs[0]).shape[-1]), "recip": r_bits,
                "acc": e_bits + r_bits}

    def compute(self, graph, node, args):
        rb = node.attrs["recip_bits"]
        e, s, r = softmax_parts(args[0], self.const(graph, node, "lut"), rb)
        acc = e * r
        return requantize(acc, 1, rb - node.out.dtype.bits, node.out.dtype), {"sum": s, "recip": r, "acc": acc}
