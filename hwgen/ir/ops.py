"""Op definitions: which inputs and attributes each op takes, its output shape and its declared widths.

Widths follow from the operand types: a sum of N products of b_x- and b_w-bit operands needs
b_x + b_w + ceil(log2 N) bits. The golden interpreter checks every intermediate against these widths, and
the hardware sizes its datapaths from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwgen.errors import HwgenError
from hwgen.ir.types import IntType, clog2, signed_bits_for


@dataclass(frozen=True)
class OpSpec:
    """The signature of an op: number of inputs, attributes naming constants, integer and flag attributes."""

    n_inputs: int
    consts: tuple[str, ...] = ()
    optional_consts: tuple[str, ...] = ()
    ints: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    optional_ints: tuple[str, ...] = ()


OPS: dict[str, OpSpec] = {
    # rows: read only the first ``rows`` rows of the [R, K] input (a forecasting anomaly detector's embedding
    # reads the context rows of a window whose last rows are the steps it scores)
    "linear": OpSpec(1, consts=("weight", "m0", "shift"), optional_consts=("bias", "in_shl"), ints=("zp",),
                     flags=("relu",), optional_ints=("rows",)),
    "attn_scores": OpSpec(2, ints=("heads", "m0", "shift", "zp")),
    "softmax": OpSpec(1, consts=("lut",), ints=("recip_bits",)),
    "attn_apply": OpSpec(2, ints=("m0", "shift", "zp")),
    "add": OpSpec(2, ints=("ma", "mb", "bias", "shift", "zp")),
    "affine": OpSpec(1, consts=("mul", "bias", "shift"), ints=("zp",)),
    "layernorm": OpSpec(1, consts=("gamma", "beta"), ints=("shift", "norm_bits", "recip_bits", "zp")),
    "avgpool": OpSpec(1, ints=("m0", "shift", "bias", "zp")),
    # Task heads (hwgen.golden.ops.argmax / anomaly_score):
    "argmax": OpSpec(1, flags=("scores",)),
    # offset: the compared part of the window starts at this row-major element (0: the whole window)
    "anomaly_score": OpSpec(2, consts=("mx", "mr"), ints=("shift", "threshold"), optional_ints=("offset",)),
}


# Per-embedding-group inputs: group scales are the tensor's scale times 2**e_k, 0 <= e_k <= MAX_IN_SHL.
MAX_IN_SHL = 8


def in_shl_max(graph, node) -> int:
    """The largest per-group shift of a linear node's input (0 without groups)."""
    key = node.attrs.get("in_shl")
    return int(graph.consts[key].value.max()) if key else 0


def sbits(t: IntType) -> int:
    """Bits of the signed type that holds every value of ``t``."""
    return t.bits if t.signed else t.bits + 1


def _const_sbits(graph, node, attr: str) -> int:
    return sbits(graph.consts[node.attrs[attr]].dtype)


def out_shape(graph, node) -> tuple[int, ...]:
    """The output shape an op computes from its inputs' shapes; HwgenError on a shape mismatch."""
    shapes = [graph.value_type(i).shape for i in node.inputs]
    a = node.attrs
    op = node.op

    def need(cond: bool, what: str) -> None:
        if not cond:
            raise HwgenError(f"node {node.name!r} ({op}): {what} (input shapes {shapes})")

    if op == "linear":
        w = graph.consts[a["weight"]].value.shape
        need(len(w) == 2 and shapes[0][-1] == w[1], f"weight shape {w} does not match the input width")
        for key in ("m0", "shift") + (("bias",) if a.get("bias") else ()):
            need(graph.consts[a[key]].value.shape in ((w[0],), ()), f"{key} must have one entry per output")
        if a.get("in_shl"):
            shl = graph.consts[a["in_shl"]].value
            need(shl.shape == (w[1],), "in_shl must have one entry per input channel")
            need(0 <= int(shl.min()) and int(shl.max()) <= MAX_IN_SHL, f"in_shl must lie in 0..{MAX_IN_SHL}")
        if a.get("rows") is not None:
            need(len(shapes[0]) == 2 and 1 <= a["rows"] <= shapes[0][0],
                 f"rows {a['rows']} must lie in 1..{shapes[0][0]} of a [rows, channels] input")
            return (a["rows"], w[0])
        return (*shapes[0][:-1], w[0])
    if op == "attn_scores":
        (lq, dq), (lk, dk) = shapes
        need(a["heads"] >= 1 and dq == dk and dq % a["heads"] == 0,
             f"q/k widths must match and divide by heads={a['heads']}")
        return (a["heads"], lq, lk)
    if op == "softmax":
        lut, t = graph.consts[a["lut"]].value, graph.value_type(node.inputs[0]).dtype
        span = t.qmax - t.qmin + 1  # row max - x takes every value in 0 .. span - 1
        need(lut.ndim == 1 and lut.shape[0] >= span and int(lut[0]) >= 1,
             f"lut needs at least {span} entries for input type {t} and lut[0] >= 1 (lut shape {lut.shape})")
        need(node.out.dtype.bits <= a["recip_bits"], "recip_bits must be at least the output's bits")
        return shapes[0]
    if op == "attn_apply":
        (h, lq, lk), (lv, dv) = shapes
        need(lk == lv and dv % h == 0, "probabilities and values do not line up")
        return (lq, dv)
    if op == "add":
        need(shapes[0] == shapes[1], "operands must have the same shape")
        return shapes[0]
    if op in ("affine", "layernorm"):
        c = shapes[0][-1]
        for key in ("mul", "bias", "shift") if op == "affine" else ("gamma", "beta"):
            need(graph.consts[a[key]].value.shape in ((c,), ()), f"{key} must have one entry per channel")
        return shapes[0]
    if op == "avgpool":
        need(len(shapes[0]) == 2, "expects [time, channels]")
        return (1, shapes[0][1])
    if op == "argmax":
        c, dt, it = shapes[0][-1], node.out.dtype, graph.value_type(node.inputs[0]).dtype
        need(len(shapes[0]) == 2 and shapes[0][0] == 1 and c >= 1, "expects one row of class scores [1, C]")
        need(dt.contains(c - 1) and (not a.get("scores") or (dt.qmin <= it.qmin and it.qmax <= dt.qmax)),
             f"output type {dt} cannot hold the class index and the scores")
        return (1, 1 + c) if a.get("scores") else (1, 1)
    if op == "anomaly_score":
        (lx, fx), n, off = shapes[0], math.prod(shapes[1]), a.get("offset") or 0
        need(len(shapes[0]) == 2 and n >= 1 and n % fx == 0 and off % fx == 0 and 0 <= off <= lx * fx - n,
             f"the reconstruction's {n} elements from element {off} on must be whole rows of the [{lx}, {fx}] window")
        for key in ("mx", "mr"):
            need(graph.consts[a[key]].value.shape in ((fx,), ()), f"{key} must have one entry per feature")
        need(node.out.dtype.signed and 0 <= a["threshold"] <= node.out.dtype.qmax,
             f"threshold {a['threshold']} must lie in 0..{node.out.dtype.qmax} of a signed output type")
        return (1, 2)
    raise HwgenError(f"node {node.name!r}: unknown op {op!r}")


def widths(graph, node) -> dict[str, int]:
    """Declared signed widths of every intermediate of ``node``, by name ('acc' is the accumulator)."""
    a = node.attrs
    types = [graph.value_type(i) for i in node.inputs]
    op = node.op
    if op == "linear":
        k = types[0].shape[-1]
        acc = sbits(types[0].dtype) + in_shl_max(graph, node) + _const_sbits(graph, node, "weight") + clog2(k)
        if a.get("bias"):
            acc = max(acc, _const_sbits(graph, node, "bias")) + 1
        return {"acc": acc, "scaled": acc + _const_sbits(graph, node, "m0")}
    if op == "attn_scores":
        d = types[0].shape[-1] // a["heads"]
        acc = sbits(types[0].dtype) + sbits(types[1].dtype) + clog2(d)
        return {"acc": acc, "scaled": acc + signed_bits_for(a["m0"])}
    if op == "attn_apply":
        acc = sbits(types[0].dtype) + sbits(types[1].dtype) + clog2(types[0].shape[-1])
        return {"acc": acc, "scaled": acc + signed_bits_for(a["m0"])}
    if op == "softmax":
        lut = graph.consts[a["lut"]]
        e_bits = sbits(lut.dtype)
        lut0 = int(lut.value[0])
        r_bits = signed_bits_for((1 << a["recip_bits"]) // max(lut0, 1))
        return {"sum": e_bits + clog2(types[0].shape[-1]), "recip": r_bits, "acc": e_bits + r_bits}
    if op == "add":
        acc = max(sbits(types[0].dtype) + signed_bits_for(a["ma"]), sbits(types[1].dtype) + signed_bits_for(a["mb"]))
        acc = max(acc + 1, signed_bits_for(a["bias"])) + 1
        return {"acc": acc}
    if op == "affine":
        acc = sbits(types[0].dtype) + _const_sbits(graph, node, "mul")
        return {"acc": max(acc, _const_sbits(graph, node, "bias")) + 1}
    if op == "layernorm":
        c = types[0].shape[-1]
        xc = signed_bits_for(c << sbits(types[0].dtype))
        sq = 2 * xc + clog2(c)
        recip = a["recip_bits"] + 2
        # |n| <= 2**norm_bits * |xc| / sd, and |xc| / sd stays below about sqrt(C) (+1 for the floor of sd).
        n = signed_bits_for(int((math.isqrt(c) + 2) << a["norm_bits"]))
        acc = max(n + _const_sbits(graph, node, "gamma"), _const_sbits(graph, node, "beta")) + 1
        return {"xc": xc, "sumsq": sq, "recip": recip, "prod": xc + recip, "norm": n, "acc": acc}
    if op == "avgpool":
        acc = max(sbits(types[0].dtype) + clog2(types[0].shape[0]), signed_bits_for(a["bias"])) + 1
        return {"acc": acc, "scaled": acc + signed_bits_for(a["m0"])}
    if op == "argmax":
        return {"best": sbits(types[0].dtype), "index": signed_bits_for(types[0].shape[-1])}
    if op == "anomaly_score":
        diff = max(sbits(types[0].dtype) + _const_sbits(graph, node, "mx"),
                   sbits(types[1].dtype) + _const_sbits(graph, node, "mr")) + 1
        # a sum of N absolute values each at most 2**(diff-1)
        return {"diff": diff, "acc": diff + clog2(math.prod(types[1].shape)) + 1}
    raise HwgenError(f"node {node.name!r}: unknown op {op!r}")


def macs(graph, node) -> int:
    """Multiply-accumulates the op performs per inference (products of two tensors, not rescales)."""
    t = [graph.value_type(i) for i in node.inputs]
    if node.op == "linear":
        n = graph.consts[node.attrs["weight"]].value.shape[0]
        return math.prod(node.out.shape[:-1]) * t[0].shape[-1] * n
    if node.op == "attn_scores":
        return t[0].shape[0] * t[1].shape[0] * t[0].shape[1]
    if node.op == "attn_apply":
        h, lq, lk = t[0].shape
        return lq * lk * t[1].shape[1]
    return 0
