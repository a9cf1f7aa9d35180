"""The graph interpreter: the deployed model. It checks every value against its declared type."""

from __future__ import annotations

import numpy as np

from hwgen.errors import HwgenError
from hwgen.golden import ops
from hwgen.ir.graph import Graph, Node
from hwgen.ir.ops import widths
from hwgen.ir.types import IntType


class RangeError(HwgenError):
    """A value left its declared type: the graph (or the export that made it) is wrong."""


def _check(name: str, what: str, values: np.ndarray, dtype: IntType) -> None:
    if not dtype.contains(values):
        raise RangeError(
            f"node {name!r}: {what} in [{int(values.min())}, {int(values.max())}] leaves its declared type {dtype}"
        )


def _signed(bits: int) -> IntType:
    return IntType(min(bits, 64), True)


def _eval_node(graph: Graph, node: Node, env: dict[str, np.ndarray]) -> np.ndarray:
    a = node.attrs
    c = {k: graph.consts[v].value for k, v in a.items() if isinstance(v, str) and v in graph.consts}
    args = [env[i] if i in env else graph.consts[i].value for i in node.inputs]
    w = a.get("widths") or widths(graph, node)
    dt = node.out.dtype
    zp = a.get("zp", 0)

    def acc_checked(acc: np.ndarray, key: str = "acc") -> np.ndarray:
        _check(node.name, key, acc, _signed(w[key]))
        return acc

    if node.op == "linear":
        x = args[0] if a.get("rows") is None else args[0][..., : a["rows"], :]
        acc = acc_checked(ops.linear_acc(x, c["weight"], c.get("bias"), c.get("in_shl")))
        y = ops.requantize(acc, c["m0"], c["shift"], dt, zp)
        return np.maximum(y, zp) if a.get("relu") else y
    if node.op == "attn_scores":
        acc = acc_checked(ops.attn_scores_acc(args[0], args[1], a["heads"]))
        return ops.requantize(acc, a["m0"], a["shift"], dt, zp)
    if node.op == "attn_apply":
        acc = acc_checked(ops.attn_apply_acc(args[0], args[1]))
        return ops.requantize(acc, a["m0"], a["shift"], dt, zp)
    if node.op == "softmax":
        e, s, r = ops.softmax_parts(args[0], c["lut"], a["recip_bits"])
        _check(node.name, "sum", s, _signed(w["sum"]))
        _check(node.name, "recip", r, _signed(w["recip"]))
        acc_checked(e * r)
        return ops.softmax(args[0], c["lut"], a["recip_bits"], dt)
    if node.op == "add":
        acc = acc_checked(ops.add_acc(args[0], args[1], a["ma"], a["mb"], a["bias"]))
        return ops.requantize(acc, 1, a["shift"], dt, zp)
    if node.op == "affine":
        acc = acc_checked(ops.affine_acc(args[0], c["mul"], c["bias"]))
        return ops.requantize(acc, 1, c["shift"], dt, zp)
    if node.op == "layernorm":
        xc, q, sd, r, n = ops.layernorm_parts(args[0], a["norm_bits"], a["recip_bits"])
        for key, val in (("xc", xc), ("sumsq", q), ("recip", r), ("prod", xc * r), ("norm", n)):
            _check(node.name, key, val, _signed(w[key]))
        acc = acc_checked(n * c["gamma"] + c["beta"])
        return ops.requantize(acc, 1, a["shift"], dt, zp)
    if node.op == "avgpool":
        acc = acc_checked(ops.avgpool_acc(args[0], a["bias"]))
        return ops.requantize(acc, a["m0"], a["shift"], dt, zp)
    if node.op == "argmax":
        return ops.argmax(args[0], bool(a.get("scores")))
    if node.op == "anomaly_score":
        off = a.get("offset") or 0
        _check(node.name, "diff", ops.anomaly_diff(args[0], args[1], c["mx"], c["mr"], off), _signed(w["diff"]))
        acc_checked(ops.anomaly_acc(args[0], args[1], c["mx"], c["mr"], off))
        return ops.anomaly_score(args[0], args[1], c["mx"], c["mr"], a["shift"], a["threshold"], dt, off)
    raise HwgenError(f"node {node.name!r}: the golden model has no op {node.op!r}")


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
        y = _eval_node(graph, node, env)
        _check(node.name, "output", y, node.out.dtype)
        env[node.name] = y
    return env if return_all else env[graph.output_name]
