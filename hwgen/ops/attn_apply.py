"""``attn_apply``: per head, requantize(p_h @ v_h), the weighted sum of values by attention probabilities;
runs on the MAC array, reading v from its per-head wide copy."""

from __future__ import annotations

import numpy as np

from hwgen.ir.types import IntType, clog2, signed_bits_for
from hwgen.ops.attn_scores import merge_heads, split_heads
from hwgen.ops.base import OpDef, Unit, sbits
from hwgen.ops.rounding import I64, int_matmul, requantize


def attn_apply_acc(p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per head, p_h @ v_h: [..., H, L, L] x [..., L, H*D] -> [..., L, H*D]."""
    heads = p.shape[-3]
    vh = split_heads(np.asarray(v, I64), heads)
    return merge_heads(int_matmul(np.asarray(p, I64), vh))


def attn_apply(p, v, m0: int, shift: int, dtype: IntType, zp: int = 0) -> np.ndarray:
    """Weighted sum of values by attention probabilities, requantized."""
    return requantize(attn_apply_acc(p, v), m0, shift, dtype, zp)


class AttnApply(OpDef):
    name = "attn_apply"
    n_inputs = 2
    ints = ("m0", "shift", "zp")
    unit = Unit.MATMUL

    def shape(self, graph, node):
        shapes = self.in_shapes(graph, node)
        (h, lq, lk), (lv, dv) = shapes
        self.need(node, shapes, lk == lv and dv % h == 0, "probabilities and values do not line up")
        return (lq, dv)

    def widths(self, graph, node):
        tp, tv = (graph.value_type(i) for i in node.inputs)
        acc = sbits(tp.dtype) + sbits(tv.dtype) + clog2(tp.shape[-1])
        return {"acc": acc, "scaled": acc + signed_bits_for(node.attrs["m0"])}

    def macs(self, graph, node):
        tp, tv = (graph.value_type(i) for i in node.inputs)
        h, lq, lk = tp.shape
        return lq * lk * tv.shape[1]

    def wide_copy(self, graph, node):
        return (node.inputs[1], "N", graph.value_type(node.inputs[0]).shape[0])

    def compute(self, graph, node, args):
        a = node.attrs
        acc = attn_apply_acc(args[0], args[1])
        return requantize(acc, a["m0"], a["shift"], node.out.dtype, a.get("zp", 0)), {"acc": acc}
