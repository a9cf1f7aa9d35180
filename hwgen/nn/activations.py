"""Table activations: GELU, SiLU, sigmoid and tanh of a quantized tensor, exported as the IR's ``lut`` (one
table entry per input integer). The quantized forward is exactly the table lookup; the gradient is that of
the float function, fake-quantized at the output (straight-through)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hwgen.ir.types import IntType
from hwgen.nn.layers import QuantModule, _act, _value
from hwgen.nn.quant import emit, round_half_up, scalar_info
from hwgen.ops.lut import MAX_LUT_IN_BITS
from hwgen.ops.lut import lut as golden_lut


class _TableActivation(QuantModule):
    """``y = f(x)`` on a quantized tensor of at most 12 bits, as a table of every input integer's output
    integer: ``clamp(round(f(x * s_in) / s_out))`` in float64."""

    def __init__(self, *, act_bits: int = 8, signed: bool = True) -> None:
        super().__init__()
        self.out_quant = _act(type(self).__name__, act_bits, signed)

    @staticmethod
    def fn(x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def dtype(self) -> IntType:
        return self.out_quant.dtype

    def table(self, s_in: float, dtype: IntType) -> np.ndarray:
        """The output integer of every input integer ``dtype.qmin .. dtype.qmax``."""
        if dtype.bits > MAX_LUT_IN_BITS:
            self.fail(f"its input has {dtype.bits} bits; a table activation takes at most {MAX_LUT_IN_BITS}")
        x = torch.arange(dtype.qmin, dtype.qmax + 1, dtype=torch.float64) * float(s_in)
        y = round_half_up(self.fn(x) / self.out_quant.value())
        return torch.clamp(y, self.dtype.qmin, self.dtype.qmax).long().numpy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            return self.fn(x)
        info = scalar_info(x, self.who())
        surrogate = self.out_quant.fake(self.fn(x))  # initialises the output scale on the first batch
        ints = golden_lut(info.numpy(), self.table(info.scale, info.dtype), info.dtype.qmin)
        return emit(surrogate, ints, self.out_quant.value(), self.dtype)

    def export(self, b, name, args):
        (x,) = args
        b.lut(name, x.name, self.table(x.scale, x.dtype), self.dtype)
        return _value(b, name, self.out_quant.value(), self.dtype)


class QuantGELU(_TableActivation):
    """``nn.GELU`` (exact, erf) on a quantized tensor: the IR's ``lut``."""

    @staticmethod
    def fn(x):
        return F.gelu(x)


class QuantSiLU(_TableActivation):
    """``nn.SiLU`` on a quantized tensor: the IR's ``lut``."""

    @staticmethod
    def fn(x):
        return F.silu(x)


class QuantSigmoid(_TableActivation):
    """``nn.Sigmoid`` on a quantized tensor: the IR's ``lut`` (unsigned output by default: it lies in (0, 1))."""

    def __init__(self, *, act_bits: int = 8, signed: bool = False) -> None:
        super().__init__(act_bits=act_bits, signed=signed)

    @staticmethod
    def fn(x):
        return torch.sigmoid(x)


class QuantTanh(_TableActivation):
    """``nn.Tanh`` on a quantized tensor: the IR's ``lut``."""

    @staticmethod
    def fn(x):
        return torch.tanh(x)
