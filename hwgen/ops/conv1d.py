"""``conv1d``: a 1-D convolution over time, channels-last: [L, C_in] -> [L_out, C_out]; runs on the MAC array.

Output row ``r``, channel ``n`` is the ``linear`` arithmetic over the K * C_in inputs of its window
(im2col): ``requantize(sum_{k, c} x[r * stride + k * dilation - pad_left, c] * W[n, k, c] + b[n])`` per
output channel, then ReLU if asked; rows outside 0..L-1 are the zero padding (their products are 0).

Attributes: ``weight`` [C_out, K, C_in] (torch's Conv1d weight [C_out, C_in, K] with its last two axes
swapped: reduction index ``j = k * C_in + c`` is the im2col column), ``m0``/``shift`` per output channel,
optional ``bias`` [C_out], integers ``kernel`` (K, the weight's middle axis), ``stride``, ``dilation``,
``pad_left`` and ``pad_right`` (zero rows before and after the input: 'causal' is pad_left = (K - 1) *
dilation, pad_right = 0), ``zp``, optional ``groups`` (1, the only value supported), flag ``relu``.
L_out = (L + pad_left + pad_right - dilation * (K - 1) - 1) // stride + 1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hwgen.ir.types import IntType, clog2
from hwgen.ops.base import OpDef, Unit, const_sbits, sbits
from hwgen.ops.linear import linear_acc
from hwgen.ops.rounding import I64, requantize


class ConvGeometry(NamedTuple):
    """The time axis of a conv1d node: input rows and channels, kernel, stride, dilation, padding, output rows."""

    rows: int
    c_in: int
    kernel: int
    stride: int
    dilation: int
    pad_left: int
    pad_right: int

    @property
    def span(self) -> int:
        """Rows one output row's window covers: dilation * (K - 1) + 1."""
        return self.dilation * (self.kernel - 1) + 1

    @property
    def out_rows(self) -> int:
        return (self.rows + self.pad_left + self.pad_right - self.span) // self.stride + 1

    def input_row(self, r: int, k: int) -> int:
        """The input row tap ``k`` of output row ``r`` reads (outside 0..rows-1: padding)."""
        return r * self.stride + k * self.dilation - self.pad_left


def im2col(x: np.ndarray, kernel: int, stride: int = 1, dilation: int = 1, pad_left: int = 0,
           pad_right: int = 0) -> np.ndarray:
    """[..., L, C] -> [..., L_out, K * C]: row r holds the K rows r * stride + k * dilation - pad_left of the
    zero-padded input side by side (column k * C + c)."""
    x = np.asarray(x, I64)
    widths = [(0, 0)] * (x.ndim - 2) + [(pad_left, pad_right), (0, 0)]
    xp = np.pad(x, widths)
    g = ConvGeometry(x.shape[-2], x.shape[-1], kernel, stride, dilation, pad_left, pad_right)
    r = np.arange(g.out_rows)[:, None] * stride + np.arange(kernel)[None, :] * dilation  # padded rows [L_out, K]
    cols = xp[..., r, :]  # [..., L_out, K, C]
    return cols.reshape(*cols.shape[:-2], kernel * x.shape[-1])


def conv1d_acc(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1, dilation: int = 1,
               pad_left: int = 0, pad_right: int = 0) -> np.ndarray:
    """The exact integer accumulator [..., L_out, C_out] of ``x`` [..., L, C_in] and ``weight`` [C_out, K, C_in]."""
    w = np.asarray(weight, I64)
    cols = im2col(x, w.shape[1], stride, dilation, pad_left, pad_right)
    return linear_acc(cols, w.reshape(w.shape[0], -1), bias)


def conv1d(x, weight, bias, m0, shift, dtype: IntType, stride: int = 1, dilation: int = 1, pad_left: int = 0,
           pad_right: int = 0, zp: int = 0, relu: bool = False) -> np.ndarray:
    """Integer 1-D convolution over time: requantize(im2col(x) @ W.T + b) per output channel, then ReLU."""
    y = requantize(conv1d_acc(x, weight, bias, stride, dilation, pad_left, pad_right), m0, shift, dtype, zp)
    return np.maximum(y, zp) if relu else y


def padding(kernel: int, dilation: int, mode) -> tuple[int, int]:
    """(pad_left, pad_right) of ``mode``: an int (both sides), 'causal' ((K - 1) * dilation on the left) or
    'same' (the output as long as the input at stride 1; the odd row, if any, on the right as torch does)."""
    total = dilation * (kernel - 1)
    if mode == "causal":
        return total, 0
    if mode == "same":
        return total // 2, total - total // 2
    return int(mode), int(mode)


class Conv1d(OpDef):
    name = "conv1d"
    n_inputs = 1
    consts = ("weight", "m0", "shift")
    optional_consts = ("bias",)
    ints = ("kernel", "stride", "dilation", "pad_left", "pad_right", "zp")
    optional_ints = ("groups",)
    flags = ("relu",)
    unit = Unit.MATMUL

    @staticmethod
    def geometry(graph, node) -> ConvGeometry:
        rows, c_in = graph.value_type(node.inputs[0]).shape
        a = node.attrs
        return ConvGeometry(rows, c_in, a["kernel"], a["stride"], a["dilation"], a["pad_left"], a["pad_right"])

    def shape(self, graph, node):
        shapes, a = self.in_shapes(graph, node), node.attrs
        w = graph.consts[a["weight"]].value.shape
        self.need(node, shapes, len(shapes[0]) == 2, "expects [time, channels]")
        self.need(node, shapes, a.get("groups", 1) == 1, f"groups {a.get('groups')} is not supported (only 1)")
        for key in ("kernel", "stride", "dilation"):
            self.need(node, shapes, a[key] >= 1, f"{key} must be >= 1, not {a[key]}")
        for key in ("pad_left", "pad_right"):
            self.need(node, shapes, a[key] >= 0, f"{key} must be >= 0, not {a[key]}")
        self.need(node, shapes, len(w) == 3 and w[1] == a["kernel"] and w[2] == shapes[0][1],
                  f"weight shape {w} is not [out channels, kernel {a['kernel']}, in channels {shapes[0][1]}]")
        for key in ("m0", "shift") + (("bias",) if a.get("bias") else ()):
            self.need(node, shapes, graph.consts[a[key]].value.shape in ((w[0],), ()),
                      f"{key} must have one entry per output channel")
        g = self.geometry(graph, node)
        self.need(node, shapes, g.out_rows >= 1,
                  f"a window of {g.span} rows (kernel {g.kernel}, dilation {g.dilation}) is longer than the "
                  f"{g.rows} input rows with padding {g.pad_left} + {g.pad_right}")
        return (g.out_rows, w[0])

    def widths(self, graph, node):
        t = graph.value_type(node.inputs[0])
        acc = sbits(t.dtype) + const_sbits(graph, node, "weight") + clog2(node.attrs["kernel"] * t.shape[-1])
        if node.attrs.get("bias"):
            acc = max(acc, const_sbits(graph, node, "bias")) + 1
        return {"acc": acc, "scaled": acc + const_sbits(graph, node, "m0")}

    def macs(self, graph, node):
        """Every tap of every output row, those in the padding too (the MAC array spends a beat on each)."""
        n = graph.consts[node.attrs["weight"]].value.shape[0]
        g = self.geometry(graph, node)
        return g.out_rows * g.kernel * g.c_in * n

    def compute(self, graph, node, args):
        a = node.attrs
        acc = conv1d_acc(args[0], self.const(graph, node, "weight"), self.const(graph, node, "bias"), a["stride"],
                         a["dilation"], a["pad_left"], a["pad_right"])
        zp = a.get("zp", 0)
        y = requantize(acc, self.const(graph, node, "m0"), self.const(graph, node, "shift"), node.out.dtype, zp)
        return (np.maximum(y, zp) if a.get("relu") else y), {"acc": acc}
