"""``layernorm``: integer LayerNorm over the last axis (integer mean and variance, isqrt by Newton's
iteration, one reciprocal per row), then n * gamma + beta requantized."""

from __future__ import annotations

import math

import numpy as np

from hwgen.ir.types import IntType, clog2, signed_bits_for
from hwgen.ops.base import OpDef, Unit, const_sbits, sbits
from hwgen.ops.rounding import I64, isqrt, requantize, round_shift


def layernorm_parts(x: np.ndarray, norm_bits: int, recip_bits: int):
    """Integer LayerNorm's normalised values over the last axis (C channels).

    xc = C*x - sum(x) (exactly C times the deviation from the mean); q = sum(xc**2);
    sd = isqrt(q // C) (about C times the standard deviation; 1 when it is 0);
    r = floor(2**recip_bits / sd); n = round_shift(xc * r, recip_bits - norm_bits) (norm_bits fraction bits).
    Returns (xc, q, sd, r, n).
    """
    x = np.asarray(x, I64)
    c = x.shape[-1]
    xc = c * x - x.sum(axis=-1, keepdims=True)
    q = (xc * xc).sum(axis=-1, keepdims=True)
    sd = np.maximum(isqrt(q // c), 1)
    r = np.left_shift(I64(1), recip_bits) // sd
    n = round_shift(xc * r, recip_bits - norm_bits)
    return xc, q, sd, r, n


def layernorm(x, gamma, beta, shift: int, norm_bits: int, recip_bits: int, dtype: IntType, zp: int = 0):
    """Integer LayerNorm: y = requantize(n * gamma[C] + beta[C], 1, shift) with n from layernorm_parts."""
    n = layernorm_parts(x, norm_bits, recip_bits)[-1]
    return requantize(n * np.asarray(gamma, I64) + np.asarray(beta, I64), 1, shift, dtype, zp)


class LayerNorm(OpDef):
    name = "layernorm"
    n_inputs = 1
    consts = ("gamma", "beta")
    ints = ("shift", "norm_bits", "recip_bits", "zp")
    int_ranges = {"norm_bits": (0, 62), "recip_bits": (1, 62)}
    unit = Unit.LAYERNORM

    def shape(self, graph, node):
        shapes = self.in_shapes(graph, node)
        c = shapes[0][-1]
        for key in ("gamma", "beta"):
            self.need(node, shapes, graph.consts[node.attrs[key]].value.shape in ((c,), ()),
                      f"{key} must have one entry per channel")
        return shapes[0]

    def widths(self, graph, node):
        a, t = node.attrs, graph.value_type(node.inputs[0])
        c = t.shape[-1]
        xc = signed_bits_for(c << sbits(t.dtype))
        sq = 2 * xc + clog2(c)
        recip = a["recip_bits"] + 2
        # |n| <= 2**norm_bits * |xc| / sd, and |xc| / sd stays below about sqrt(C) (+1 for the floor of sd).
        n = signed_bits_for(int((math.isqrt(c) + 2) << a["norm_bits"]))
        acc = max(n + const_sbits(graph, node, "gamma"), const_sbits(graph, node, "beta")) + 1
        return {"xc": xc, "sumsq": sq, "recip": recip, "prod": xc + recip, "norm": n, "acc": acc}

    def compute(self, graph, node, args):
        a = node.attrs
        xc, q, sd, r, n = layernorm_parts(args[0], a["norm_bits"], a["recip_bits"])
        acc = n * self.const(graph, node, "gamma") + self.const(graph, node, "beta")
        y = requantize(acc, 1, a["shift"], node.out.dtype, a.get("zp", 0))
        return y, {"xc": xc, "sumsq": q, "recip": r, "prod": xc * r, "norm": n, "acc": acc}
