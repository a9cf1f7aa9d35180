"""GraphBuilder: the one way graphs are assembled (by the exporter and by tests), with types inferred."""

from __future__ import annotations

from typing import Any

import numpy as np

from hwgen.errors import HwgenError
from hwgen.ir.graph import Const, Graph, Node, TensorType
from hwgen.ir.types import IntType, signed_bits_for
from hwgen.ir.verify import infer_widths
from hwgen.ops import out_shape


class GraphBuilder:
    """Collects constants and nodes in execution order; :meth:`finish` verifies and declares widths."""

    def __init__(self, input_name: str, shape: tuple[int, ...], dtype: IntType) -> None:
        self.input_name = input_name
        self.input_type = TensorType(tuple(shape), dtype)
        self.nodes: list[Node] = []
        self.consts: dict[str, Const] = {}

    # ---- constants ------------------------------------------------------------------------------------
    def const(self, name: str, value: np.ndarray, dtype: IntType | None = None) -> str:
        """Add an integer constant; its type defaults to the narrowest signed type that holds it."""
        value = np.asarray(value)
        if name in self.consts:
            raise ValueError(f"constant {name!r} added twice")
        if value.dtype.kind not in "iu":  # checked here: astype below would truncate floats silently
            raise HwgenError(f"constant {name!r} of type {value.dtype} is not integer: "
                             "the IR holds integers only")
        self.consts[name] = Const(value.astype(np.int64), dtype or IntType(signed_bits_for(value)))
        return name

    def _graph(self) -> Graph:
        return Graph(self.input_name, self.input_type, tuple(self.nodes), self.consts, self.input_name)

    def _node(self, op: str, name: str, inputs: tuple[str, ...], attrs: dict[str, Any], dtype: IntType) -> str:
        probe = Node(op, name, inputs, attrs, TensorType((), dtype))
        shape = out_shape(self._graph(), probe)
        self.nodes.append(Node(op, name, inputs, attrs, TensorType(tuple(shape), dtype)))
        return name

    # ---- ops (see hwgen.ops for their meaning) -------------------------------------------------
    def linear(self, name, x, weight, bias, m0, shift, dtype: IntType, wtype: IntType, zp=0, relu=False,
               in_shl=None, rows: int | None = None) -> str:
        n = np.asarray(weight).shape[0]
        attrs = {
            "weight": self.const(f"{name}.weight", weight, wtype),
            "bias": None if bias is None else self.const(f"{name}.bias", bias),
            "m0": self.const(f"{name}.m0", np.broadcast_to(np.asarray(m0), (n,))),
            "shift": self.const(f"{name}.shift", np.broadcast_to(np.asarray(shift), (n,)), IntType(8, False)),
            "zp": int(zp),
            "relu": bool(relu),
        }
        if in_shl is not None and np.any(np.asarray(in_shl) != 0):  # per-embedding-group input
            attrs["in_shl"] = self.const(f"{name}.in_shl", np.asarray(in_shl), IntType(4, False))
        if rows is not None:  # read only the first rows of the input
            attrs["rows"] = int(rows)
        return self._node("linear", name, (x,), attrs, dtype)

    def conv1d(self, name, x, weight, bias, m0, shift, dtype: IntType, wtype: IntType, stride=1, dilation=1,
               pad_left=0, pad_right=0, zp=0, relu=False) -> str:
        """A 1-D convolution over time of ``x`` [L, C_in] with ``weight`` [C_out, K, C_in] (see hwgen.ops.conv1d)."""
        w = np.asarray(weight)
        if w.ndim != 3:
            raise HwgenError(f"node {name!r} (conv1d): weight shape {w.shape} is not [out channels, kernel, "
                             "in channels]")
        n = w.shape[0]
        attrs = {
            "weight": self.const(f"{name}.weight", w, wtype),
            "bias": None if bias is None else self.const(f"{name}.bias", bias),
            "m0": self.const(f"{name}.m0", np.broadcast_to(np.asarray(m0), (n,))),
            "shift": self.const(f"{name}.shift", np.broadcast_to(np.asarray(shift), (n,)), IntType(8, False)),
            "kernel": int(w.shape[1]), "stride": int(stride), "dilation": int(dilation),
            "pad_left": int(pad_left), "pad_right": int(pad_right),
            "zp": int(zp),
            "relu": bool(relu),
        }
        return self._node("conv1d", name, (x,), attrs, dtype)

    def attn_scores(self, name, q, k, heads, m0, shift, dtype: IntType, zp=0) -> str:
        attrs = {"heads": int(heads), "m0": int(m0), "shift": int(shift), "zp": int(zp)}
        return self._node("attn_scores", name, (q, k), attrs, dtype)

    def softmax(self, name, x, lut, recip_bits, dtype: IntType) -> str:
        lut = np.asarray(lut)
        attrs = {"lut": self.const(f"{name}.lut", lut, IntType(max(int(lut.max()).bit_length(), 1), False)),
                 "recip_bits": int(recip_bits)}
        return self._node("softmax", name, (x,), attrs, dtype)

    def attn_apply(self, name, p, v, m0, shift, dtype: IntType, zp=0) -> str:
        attrs = {"m0": int(m0), "shift": int(shift), "zp": int(zp)}
        return self._node("attn_apply", name, (p, v), attrs, dtype)

    def add(self, name, a, b, ma, mb, bias, shift, dtype: IntType, zp=0) -> str:
        attrs = {"ma": int(ma), "mb": int(mb), "bias": int(bias), "shift": int(shift), "zp": int(zp)}
        return self._node("add", name, (a, b), attrs, dtype)

    def affine(self, name, x, mul, bias, shift, dtype: IntType, zp=0) -> str:
        c = np.asarray(mul).shape[0]
        attrs = {
            "mul": self.const(f"{name}.mul", mul),
            "bias": self.const(f"{name}.bias", bias),
            "shift": self.const(f"{name}.shift", np.broadcast_to(np.asarray(shift), (c,)), IntType(8, False)),
            "zp": int(zp),
        }
        return self._node("affine", name, (x,), attrs, dtype)

    def layernorm(self, name, x, gamma, beta, shift, norm_bits, recip_bits, dtype: IntType, zp=0) -> str:
        attrs = {
            "gamma": self.const(f"{name}.gamma", gamma),
            "beta": self.const(f"{name}.beta", beta),
            "shift": int(shift),
            "norm_bits": int(norm_bits),
            "recip_bits": int(recip_bits),
            "zp": int(zp),
        }
        return self._node("layernorm", name, (x,), attrs, dtype)

    def avgpool(self, name, x, m0, shift, bias, dtype: IntType, zp=0) -> str:
        attrs = {"m0": int(m0), "shift": int(shift), "bias": int(bias), "zp": int(zp)}
        return self._node("avgpool", name, (x,), attrs, dtype)

    def argmax(self, name, x, dtype: IntType, scores: bool = False) -> str:
        """Class index of the largest score (ties: the lowest index); then the scores when ``scores``."""
        return self._node("argmax", name, (x,), {"scores": bool(scores)}, dtype)

    def anomaly_score(self, name, x, rec, mx, mr, shift, threshold, dtype: IntType, offset: int = 0) -> str:
        """[score, flag] of a window ``x`` [L, F] against ``rec``: its reconstruction (L*F elements), or the
        forecast of its rows from element ``offset`` on."""
        f = self._graph().value_type(x).shape[-1]
        attrs = {"mx": self.const(f"{name}.mx", np.broadcast_to(np.asarray(mx), (f,))),
                 "mr": self.const(f"{name}.mr", np.broadcast_to(np.asarray(mr), (f,))),
                 "shift": int(shift), "threshold": int(threshold)}
        if offset:
            attrs["offset"] = int(offset)
        return self._node("anomaly_score", name, (x, rec), attrs, dtype)

    def lut(self, name, x, table, dtype: IntType) -> str:
        """``table[x - qmin]`` element-wise: one table entry per value of ``x``'s integer type."""
        attrs = {"table": self.const(f"{name}.table", np.asarray(table).reshape(-1), dtype)}
        return self._node("lut", name, (x,), attrs, dtype)

    def maxpool(self, name, x, kernel: int | None = None) -> str:
        """Maximum over time in windows of ``kernel`` rows (default: all), in the input's type."""
        attrs = {} if kernel is None else {"kernel": int(kernel)}
        return self._node("maxpool", name, (x,), attrs, self._graph().value_type(x).dtype)

    def select_rows(self, name, x, start: int, count: int = 1) -> str:
        """Rows ``start .. start + count - 1`` of ``x`` (the last step: start = time - 1)."""
        attrs = {"start": int(start), "count": int(count)}
        return self._node("select_rows", name, (x,), attrs, self._graph().value_type(x).dtype)

    def concat(self, name, a, b) -> str:
        """``a`` and ``b`` (same rows, same type) side by side along channels."""
        return self._node("concat", name, (a, b), {}, self._graph().value_type(a).dtype)

    def finish(self, output: str, meta: dict[str, Any] | None = None) -> Graph:
        """The verified graph with declared widths, computing ``output``."""
        graph = Graph(self.input_name, self.input_type, tuple(self.nodes), self.consts, output, meta or {})
        return infer_widths(graph)
