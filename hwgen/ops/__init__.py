"""The op table: every IR op defined once, in its own module of this package.

An op's module holds its signature, shape and width inference, MAC count, its golden function (the pure
NumPy math that is the deployed model) and names the hardware unit kind that runs it (``Unit``; the unit
itself, with its cycle and DSP formulas, is in ``hwgen.hw``). The verifier (``hwgen.ir.verify``), the golden
interpreter, lowering and the estimators dispatch through ``OPS``; nothing else compares op names.
"""

from __future__ import annotations

from hwgen.errors import HwgenError
from hwgen.ops.add import Add
from hwgen.ops.affine import Affine
from hwgen.ops.anomaly_score import AnomalyScore
from hwgen.ops.argmax import Argmax
from hwgen.ops.attn_apply import AttnApply
from hwgen.ops.attn_scores import AttnScores
from hwgen.ops.avgpool import AvgPool
from hwgen.ops.concat import Concat
from hwgen.ops.conv1d import Conv1d
from hwgen.ops.base import OpDef, Unit, sbits
from hwgen.ops.layernorm import LayerNorm
from hwgen.ops.linear import MAX_IN_SHL, Linear, in_shl_max
from hwgen.ops.lut import Lut
from hwgen.ops.maxpool import MaxPool
from hwgen.ops.select_rows import SelectRows
from hwgen.ops.softmax import Softmax

OPS: dict[str, OpDef] = {op.name: op for op in (
    Linear(), AttnScores(), Softmax(), AttnApply(), Add(), Affine(), LayerNorm(), AvgPool(), Argmax(),
    AnomalyScore(), Lut(), MaxPool(), SelectRows(),
    Concat(), Conv1d())}


def op_of(node) -> OpDef:
    """The definition of ``node``'s op (HwgenError naming the node for an unknown op)."""
    op = OPS.get(node.op)
    if op is None:
        raise HwgenError(f"node {node.name!r}: unsupported op {node.op!r} (supported: {', '.join(OPS)})")
    return op


def out_shape(graph, node) -> tuple[int, ...]:
    """The output shape ``node``'s op computes from its inputs' shapes; HwgenError on a mismatch."""
    return op_of(node).shape(graph, node)


def widths(graph, node) -> dict[str, int]:
    """Declared signed widths of every intermediate of ``node``, by name ('acc' is the accumulator)."""
    return op_of(node).widths(graph, node)


def macs(graph, node) -> int:
    """Multiply-accumulates ``node`` performs per inference (products of two tensors, not rescales)."""
    return op_of(node).macs(graph, node)


__all__ = ["MAX_IN_SHL", "OPS", "OpDef", "Unit", "in_shl_max", "macs", "op_of", "out_shape", "sbits", "widths"]
