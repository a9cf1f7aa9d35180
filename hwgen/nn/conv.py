"""A quantized 1-D convolution over time (the IR's ``conv1d``), channels-last like every hwgen.nn layer."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwgen.errors import HwgenError
from hwgen.ir.dyadic import dyadic_array
from hwgen.ir.types import IntType
from hwgen.nn.layers import MAX_WEIGHT_BITS, QuantModule, _act, _value
from hwgen.nn.quant import WeightQuant, bias_ints, check_bits, emit, info_of, weight_ints
from hwgen.ops.conv1d import ConvGeometry, padding
from hwgen.ops.conv1d import conv1d as golden_conv1d


def _size(name: str, value, lo: int) -> int:
    """A torch-style size argument: an int or a 1-tuple, at least ``lo``."""
    v = value[0] if isinstance(value, (tuple, list)) and len(value) == 1 else value
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise HwgenError(f"QuantConv1d: {name} must be an integer >= {lo}, not {value!r}")
    return v


class QuantConv1d(QuantModule):
    """``torch.nn.Conv1d`` over time on a channels-last [batch, time, in_channels] tensor, returning [batch,
    time_out, out_channels]: the IR's ``conv1d``. Weights ``weight_bits`` (2..8) symmetric, one scale per
    output channel (``per_channel``) or per tensor (``weight_scale`` "max" or "lsq", as QuantLinear), the bias
    in the accumulator's units, an ``act_bits`` (2..16) output, signed or (``act_signed=False``) unsigned. ``padding``: zero rows on both sides (an int), 'same' (stride 1: as many output
    steps as input steps) or 'causal' ((kernel_size - 1) * dilation on the left only: output step t sees
    input steps <= t). ``weight`` is [out_channels, in_channels, kernel_size] as torch's; groups must be 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding=0,
                 dilation: int = 1, groups: int = 1, bias: bool = True, *, weight_bits: int = 8, act_bits: int = 8,
                 per_channel: bool = True, weight_scale: str = "max", act_signed: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = _size("in_channels", in_channels, 1), _size("out_channels",
                                                                                         out_channels, 1)
        self.kernel_size = _size("kernel_size", kernel_size, 1)
        self.stride, self.dilation = _size("stride", stride, 1), _size("dilation", dilation, 1)
        if groups != 1:
            raise HwgenError(f"QuantConv1d: groups={groups!r} is not supported (the accelerator's conv1d takes "
                             "groups=1 only)")
        self.groups = 1
        if isinstance(padding, str):
            if padding not in ("same", "causal", "valid"):
                raise HwgenError(f"QuantConv1d: padding must be an integer >= 0, 'same', 'causal' or 'valid', "
                                 f"not {padding!r}")
            if padding == "same" and self.stride != 1:
                raise HwgenError(f"QuantConv1d: padding='same' needs stride 1, not {self.stride}")
            self.padding = 0 if padding == "valid" else padding
        else:
            self.padding = _size("padding", padding, 0)
        self.weight_bits = check_bits("QuantConv1d", "weight_bits", weight_bits, 2, MAX_WEIGHT_BITS)
        self.per_channel = bool(per_channel)
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels, self.kernel_size))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.wq = WeightQuant("QuantConv1d", self.weight_bits, self.per_channel, self.out_channels, weight_scale)
        self.out_quant = _act("QuantConv1d", act_bits, bool(act_signed))
        self.reset_parameters()

    def reset_parameters(self) -> None:  # as torch.nn.Conv1d
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels * self.kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}, dilation={self.dilation}, bias={self.bias is not None}, "
                f"weight_bits={self.weight_bits}, act_bits={self.out_quant.bits}")

    @property
    def dtype(self) -> IntType:
        return self.out_quant.dtype

    @property
    def pads(self) -> tuple[int, int]:
        """(left, right) zero rows."""
        return padding(self.kernel_size, self.dilation, self.padding)

    def int_params(self, s_in):
        """(weight ints [out, kernel, in], bias ints, m0, shift) for an input of scale ``s_in`` (one scale per
        input channel folds into the weights, as in QuantLinear)."""
        w = self.weight.detach().double()
        if np.ndim(s_in):
            w = w * torch.as_tensor(np.asarray(s_in, np.float64))[None, :, None]
            s_in = 1.0
        s_w = self.wq.scales(w)
        acc = s_in * s_w
        m0, shift = dyadic_array(acc / self.out_quant.value())
        w_int = weight_ints(w, s_w, self.weight_bits).transpose(0, 2, 1)
        return np.ascontiguousarray(w_int), bias_ints(self.bias, acc), m0, shift

    def _check(self, shape) -> None:
        """``shape`` is one window's [time, in_channels]."""
        if len(shape) != 2 or shape[-1] != self.in_channels:
            self.fail(f"input shape {tuple(shape)} per window: expects [time, {self.in_channels}]")
        g = ConvGeometry(shape[0], shape[1], self.kernel_size, self.stride, self.dilation, *self.pads)
        if g.out_rows < 1:
            self.fail(f"a window of {g.span} steps (kernel_size {self.kernel_size}, dilation {self.dilation}) is "
                      f"longer than the {shape[0]} input steps with padding {self.padding!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            if x.dim() != 3:
                self.fail(f"input shape {tuple(x.shape)}: expects [batch, time, {self.in_channels}]")
            left, right = self.pads
            y = F.conv1d(F.pad(x.transpose(1, 2), (left, right)), self.weight, self.bias, self.stride, 0, self.dilation)
            return y.transpose(1, 2)
        info = info_of(x, self.who())
        if x.dim() != 3:
            self.fail(f"input shape {tuple(x.shape)}: expects [batch, time, {self.in_channels}]")
        self._check(tuple(x.shape[1:]))
        left, right = self.pads
        if self.wq.mode == "lsq" and info.per_channel:  # the scales are learned for the folded weights
            s_in = torch.as_tensor(np.asarray(info.scale), dtype=x.dtype)
            xt, w = F.pad((x / s_in).transpose(1, 2), (left, right)), self.wq.fake(self.weight * s_in[None, :, None])
        else:
            xt, w = F.pad(x.transpose(1, 2), (left, right)), self.wq.fake(self.weight)
        y = F.conv1d(xt, w, self.bias, self.stride, 0, self.dilation)
        surrogate = self.out_quant.fake(y.transpose(1, 2))
        w, bias, m0, shift = self.int_params(info.scale)
        ints = golden_conv1d(info.numpy(), w, bias, m0, shift, self.dtype, self.stride, self.dilation, left, right)
        return emit(surrogate, ints, self.out_quant.value(), self.dtype)

    def export(self, b, name, args):
        (x,) = args
        self._check(x.shape)
        w, bias, m0, shift = self.int_params(x.scale)
        left, right = self.pads
        b.conv1d(name, x.name, w, bias, m0, shift, self.dtype, IntType(self.weight_bits), self.stride, self.dilation,
                 left, right)
        return _value(b, name, self.out_quant.value(), self.dtype)
