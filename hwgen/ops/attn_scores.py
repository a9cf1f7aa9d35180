"""``attn_scores``: per head, requantize(q_h @ k_h.T) (the 1/sqrt(D) scaling folded into ``m0``); runs on
the MAC array, reading k from its transposed wide copy."""

from __future__ import annotations

import numpy as np

from hwgen.ir.types import IntType, clog2, signed_bits_for
from hwgen.ops.base import OpDef, Unit, sbits
from hwgen.ops.rounding import I64, int_matmul, requantize


def split_heads(x: np.ndarray, heads: int) -> np.ndarray:
    """[..., L, H*D] -> [..., H, L, D]."""
    *lead, length, width = x.shape
    return np.moveaxis(x.reshape(*lead, length, heads, width // heads), -2, -3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """[..., H, L, D] -> [..., L, H*D]."""
    x = np.moveaxis(x, -3, -2)
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def attn_scores_acc(q: np.ndarray, k: np.ndarray, heads: int) -> np.ndarray:
    """Per head, q_h @ k_h.T: [..., L, H*D] x [..., L, H*D] -> [..., H, L, L]."""
    qh, kh = split_heads(np.asarray(q, I64), heads), split_heads(np.asarray(k, I64), heads)
    return int_matmul(qh, np.swapaxes(kh, -1, -2))


def attn_scores(q, k, heads: int, m0: int, shift: int, dtype: IntType, zp: int = 0) -> np.ndarray:
    """Attention scores requantized."""
    return requantize(attn_scores_acc(q, k, heads), m0, shift, dtype, zp)


class AttnScores(OpDef):
    name = "attn_scores"
    n_inputs = 2
    ints = ("heads", "m0", "shift", "zp")
    unit = Unit.MATMUL

    def shape(self, graph, node):
        shapes = self.in_shapes(graph, node)
        (lq, dq), (lk, dk) = shapes
        heads = node.attrs["heads"]
        self.need(node, shapes, heads >= 1 and dq == dk and dq % heads == 0,
                  f"q/k widths must match and divide by heads={heads}")
        return (heads, lq, lk)

    def widths(self, graph, node):
        tq, tk = (graph.value_type(i) for i in node.inputs)
        acc = sbits(tq.dtype) + sbits(tk.dtype) + clog2(tq.shape[-1] // node.attrs["heads"])
        return {"acc": acc, "scaled": acc + signed_bits_for(node.attrs["m0"])}

    def macs(self, graph, node):
        tq, tk = (graph.value_type(i) for i in node.inputs)
        return tq.shape[0] * tk.shape[0] * tq.shape[1]

    def wide_copy(self, graph, node):
        return (node.inputs[1], "T", 1)

    def compute(self, graph, node, args):
        a = node.attrs
        acc = attn_scores_acc(args[0], args[1], a["heads"])
        return requantize(acc, a["m0"], a["shift"], node.out.dtype, a.get("zp", 0)), {"acc": acc}
