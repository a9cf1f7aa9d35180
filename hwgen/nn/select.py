"""Selections of a quantized tensor: max pooling and the last-step readout over time (the IR's ``maxpool``
and ``select_rows``), concatenation along channels (``concat``), and a classifier's ``argmax``. The first
three keep the input's scale and integer type: the forward is the selected integers times the scale, the
gradient that of the float max or slice."""

from __future__ import annotations

import torch

from hwgen.errors import HwgenError
from hwgen.ir.types import IntType, signed_bits_for
from hwgen.nn.layers import QuantModule, _value
from hwgen.nn.quant import check_bits, emit, scalar_info
from hwgen.ops.argmax import argmax as golden_argmax
from hwgen.ops.maxpool import maxpool as golden_maxpool
from hwgen.ops.select_rows import select_rows as golden_select_rows


def _time_major(module: QuantModule, x: torch.Tensor) -> None:
    if x.dim() != 3:
        module.fail(f"input shape {tuple(x.shape)}: expects [batch, time, channels]")


class QuantMaxPool(QuantModule):
    """The maximum over time, [batch, time, C] -> [batch, C] (``x.amax(dim=1)``); with ``kernel_size`` k
    over windows of k steps (stride k, channels-last ``nn.MaxPool1d(k)``): -> [batch, time // k, C]."""

    def __init__(self, kernel_size: int | None = None) -> None:
        super().__init__()
        self.kernel_size = None if kernel_size is None else check_bits("QuantMaxPool", "kernel_size",
                                                                          kernel_size, 1, 1 << 16)

    def extra_repr(self) -> str:
        return "" if self.kernel_size is None else f"kernel_size={self.kernel_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            _time_major(self, x)
            k = self.kernel_size
            if k is None:
                return x.amax(dim=1)
            rows = x.shape[1] // k
            return x[:, :rows * k].reshape(x.shape[0], rows, k, x.shape[2]).amax(dim=2)
        info = scalar_info(x, self.who())
        _time_major(self, x)
        k = self.kernel_size
        if k is None:
            surrogate = x.amax(dim=1)
        else:
            if k > x.shape[1]:
                self.fail(f"kernel_size {k} is longer than the {x.shape[1]} time steps")
            rows = x.shape[1] // k
            surrogate = x[:, :rows * k].reshape(x.shape[0], rows, k, x.shape[2]).amax(dim=2)
        return emit(surrogate, golden_maxpool(info.numpy(), k), info.scale, info.dtype)

    def export(self, b, name, args):
        (x,) = args
        if len(x.shape) != 2:
            self.fail(f"input shape {x.shape} per window: expects [time, channels]")
        b.maxpool(name, x.name, self.kernel_size)
        return _value(b, name, x.scale, x.dtype)


class QuantLastStep(QuantModule):
    """The last time step, [batch, time, C] -> [batch, C] (``x[:, -1]``, a recurrent-style readout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            _time_major(self, x)
            return x[:, -1]
        info = scalar_info(x, self.who())
        _time_major(self, x)
        ints = golden_select_rows(info.numpy(), x.shape[1] - 1, 1)
        return emit(x[:, -1], ints, info.scale, info.dtype)

    def export(self, b, name, args):
        (x,) = args
        if len(x.shape) != 2:
            self.fail(f"input shape {x.shape} per window: expects [time, channels]")
        b.select_rows(name, x.name, x.shape[0] - 1, 1)
        return _value(b, name, x.scale, x.dtype)


class QuantCat(QuantModule):
    """Two quantized tensors side by side along channels, called ``cat(a, b)`` (``torch.cat([a, b], -1)``):
    the IR's ``concat``. Both must have one scale and type (quantize both with one shared
    ``hwgen.nn.QuantAct``); the output keeps them."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            return torch.cat([a, b], dim=-1)
        ia, ib = scalar_info(a, self.who()), scalar_info(b, self.who())
        if a.dim() != b.dim() or a.shape[:-1] != b.shape[:-1]:
            self.fail(f"operands of shapes {tuple(a.shape)} and {tuple(b.shape)} differ before the channel axis")
        if ia.scale != ib.scale or ia.dtype != ib.dtype:
            self.fail(f"operands have scales {ia.scale:.6g} ({ia.dtype}) and {ib.scale:.6g} ({ib.dtype}): "
                      "requantize both with one shared hwgen.nn.QuantAct first")
        ints = torch.cat([ia.ints, ib.ints], dim=-1)
        return emit(torch.cat([a, b], dim=-1), ints, ia.scale, ia.dtype)

    def export(self, b, name, args):
        x, y = args
        if x.scale != y.scale or x.dtype != y.dtype or len(x.shape) != 2:
            self.fail(f"operands of scales {x.scale:.6g} and {y.scale:.6g}, types {x.dtype} and {y.dtype}, "
                      f"shapes {x.shape} and {y.shape}: expects one scale and type, [time, channels]")
        b.concat(name, x.name, y.name)
        return _value(b, name, x.scale, x.dtype)


class QuantArgmax(QuantModule):
    """A classifier's head on the accelerator: the index of the largest of C class scores, [batch, C] ->
    [batch, 1] (``x.argmax(dim=-1, keepdim=True)``, ties: the lowest index), or with ``scores`` the index
    followed by the C score integers, [batch, 1 + C]: the IR's ``argmax``. Its output has scale 1 (the
    index, and the scores in their integer units) and no gradient: train on the scores before it (e.g.
    ``nn.Sequential(model, hwgen.nn.QuantArgmax())`` for deployment)."""

    def __init__(self, *, scores: bool = False) -> None:
        super().__init__()
        if not isinstance(scores, bool):
            raise HwgenError(f"QuantArgmax: scores must be True or False, not {scores!r}")
        self.scores = scores

    def extra_repr(self) -> str:
        return f"scores={self.scores}"

    def out_type(self, dtype: IntType, classes: int) -> IntType:
        """A signed type holding the class index (and, with ``scores``, the scores of type ``dtype``)."""
        bits = signed_bits_for(classes - 1)
        if self.scores:
            bits = max(bits, dtype.bits + (0 if dtype.signed else 1))
        return IntType(max(bits, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            idx = x.argmax(dim=-1, keepdim=True).to(x.dtype)
            return torch.cat([idx, x], dim=-1) if self.scores else idx
        info = scalar_info(x, self.who())
        if x.dim() != 2:
            self.fail(f"input shape {tuple(x.shape)}: expects class scores [batch, classes] (pool over time first)")
        ints = torch.as_tensor(golden_argmax(info.numpy()[:, None, :], self.scores)[:, 0, :])
        return emit(ints.to(x.dtype), ints, 1.0, self.out_type(info.dtype, x.shape[-1]))

    def export(self, b, name, args):
        (x,) = args
        if len(x.shape) != 2 or x.shape[0] != 1:
            self.fail(f"input shape {x.shape} per window: expects one row of class scores [1, classes]")
        dtype = self.out_type(x.dtype, x.shape[-1])
        b.argmax(name, x.name, dtype, scores=self.scores)
        return _value(b, name, 1.0, dtype)
