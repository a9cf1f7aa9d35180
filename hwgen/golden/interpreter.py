"""The graph interpreter: the deployed model. It runs every node's golden function (``hwgen.ops``) and
checks every value against its declared type."""

from __future__ import annotations

import numpy as np

from hwgen.errors import HwgenError
from hwgen.ir.graph import Graph
from hwgen.ir.types import IntType
from hwgen.ops import op_of


class RangeError(HwgenError):
    """A value left its declared type: the graph (or the export that made it) is wrong."""


def _check(name: str, what: str, values: np.ndarray, dtype: IntType) -> None:
    if not dtype.contains(values):
        raise RangeError(
            f"node {name!r}: {what} in [{int(values.min())}, {int(values.max())}] leaves its declared type {dtype}"
        )


def run(graph: Graph, x: np.ndarray, return_all: bool = False):
    """Run the integer graph on ``x`` (the input's shape, or a batch of them with a leading dimension).

    Returns the output integers (int64), or with ``return_all`` a dict of every value by name. Raises
    HwgenError if the input has the wrong shape or leaves the input type, and RangeError if any
    intermediate leaves its declared width.
    """
    x = np.asarray(x)
    shape = graph.input_type.shape
    if x.dtype.kind not in "iu":
        raise HwgenError(f"input must be integer, not {x.dtype}: quantize it with the graph's input scale first")
    if tuple(x.shape[-len(shape):]) != tuple(shape) or x.ndim not in (len(shape), len(shape) + 1):
        raise HwgenError(f"input shape {x.shape} does not match the graph input {shape} (optionally batched)")
    x = x.astype(np.int64)
    _check(graph.input_name, "input", x, graph.input_type.dtype)
    env = {graph.input_name: x}
    for node in graph.nodes:
        op = op_of(node)
        args = [env[i] if i in env else graph.consts[i].value for i in node.inputs]
        declared = node.attrs.get("widths") or op.widths(graph, node)
        y, parts = op.compute(graph, node, args)
        for key, value in parts.items():
            _check(node.name, key, value, IntType(min(declared[key], 64), True))
        _check(node.name, "output", y, node.out.dtype)
        env[node.name] = y
    return env if return_all else env[graph.output_name]
