"""What every hwgen.nn layer shares: the quantized-tensor tag, the activation quantizer, weight integers.

A tensor between hwgen.nn layers is an ordinary float tensor whose value is exactly ``ints * scale`` and
that carries a tag (:class:`QInfo`: the integers, the real scale, the integer type). A layer reads its input's
tag, computes its output integers with the golden function of the IR op it exports to (``hwgen.ops``: the
one rounding rule, dyadic rescales from ``hwgen.ir.dyadic``), and returns

    y = surrogate + (ints * scale - surrogate).detach()

where ``surrogate`` is the float computation fake-quantized at the output (straight-through gradients;
LSQ gradients for the output scale). The forward value is thus the integer model's, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hwgen.errors import HwgenError
from hwgen.ir.types import IntType

MIN_SCALE = 1e-8


@dataclass(frozen=True)
class QInfo:
    """The integer form of a tensor: ``ints`` (int64, detached), the real ``scale`` of one step, ``dtype``."""

    ints: torch.Tensor
    scale: float | np.ndarray  # one per channel (the last axis) after a per-feature input quantizer
    dtype: IntType

    def numpy(self) -> np.ndarray:
        return self.ints.numpy()

    @property
    def per_channel(self) -> bool:
        return isinstance(self.scale, np.ndarray)


TAG = "_hwgen_q"


def info_of(x, who: str) -> QInfo:
    """The tag of ``x``; HwgenError naming ``who`` when ``x`` was not produced by an hwgen.nn layer."""
    info = getattr(x, TAG, None) if isinstance(x, torch.Tensor) else None
    if info is None:
        raise HwgenError(f"{who}: its input is not a quantized tensor (not the output of an hwgen.nn layer): "
                         "quantize the model input with hwgen.nn.QuantAct and connect hwgen.nn layers only")
    return info


def scalar_info(x, who: str) -> QInfo:
    """:func:`info_of` for a layer that takes one scale per tensor."""
    info = info_of(x, who)
    if info.per_channel:
        raise HwgenError(f"{who}: its input has one scale per feature (QuantAct(channels=...)): only a "
                         "QuantLinear (which folds them into its weights) or QuantMultiheadAttention may read it")
    return info


def integers(x: torch.Tensor) -> torch.Tensor:
    """The integers (int64) of a tensor an hwgen.nn layer returned: what the integer graph computes."""
    return info_of(x, "hwgen.nn.integers").ints


def emit(surrogate: torch.Tensor, ints, scale: float, dtype: IntType) -> torch.Tensor:
    """The forward value ``ints * scale`` with the gradient of ``surrogate``, tagged."""
    ints = torch.as_tensor(np.asarray(ints, np.int64)) if not isinstance(ints, torch.Tensor) else ints
    ints = ints.detach().to(torch.int64).reshape(surrogate.shape)
    scale = np.asarray(scale, np.float64) if np.ndim(scale) else float(scale)
    exact = (ints.double() * torch.as_tensor(scale, dtype=torch.float64)).to(surrogate.dtype)
    y = surrogate + (exact - surrogate).detach()
    setattr(y, TAG, QInfo(ints, scale, dtype))
    return y


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """floor(x + 1/2): the ties of the IR's rounding rule."""
    return torch.floor(x + 0.5)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (round_half_up(x) - x).detach()


def check_bits(who: str, what: str, bits, lo: int, hi: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= hi:
        raise HwgenError(f"{who}: {what} must be an integer in {lo}..{hi}, not {bits!r}")
    return bits


class ActQuant(nn.Module):
    """The scale of a quantized activation: learned (LSQ), initialised on the first batch by an MSE search
    over clipping ranges. ``bits`` 2..16, signed or unsigned, symmetric (zero point 0); one scale, or one
    per index of the last axis with ``channels``."""

    def __init__(self, bits: int, signed: bool = True, channels: int = 0) -> None:
        super().__init__()
        self.bits, self.signed = int(bits), bool(signed)
        self.channels = int(channels)
        self.dtype = IntType(self.bits, self.signed)
        self.scale = nn.Parameter(torch.ones(self.channels) if self.channels else torch.ones(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def extra_repr(self) -> str:
        return f"{self.dtype}"

    @property
    def qmin(self) -> int:
        return self.dtype.qmin

    @property
    def qmax(self) -> int:
        return self.dtype.qmax

    def value(self) -> float | np.ndarray:
        """The real scale of one step (positive), as the integer model uses it (float64 [C] per channel)."""
        s = np.maximum(np.abs(self.scale.detach().double().numpy()), MIN_SCALE)
        return s if self.channels else float(s.reshape(-1)[0])

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        if self.channels and x.shape[-1] != self.channels:
            raise HwgenError(f"input has {x.shape[-1]} features, the quantizer has {self.channels} scales")
        x = x.detach().double().reshape(-1, self.channels or 1) if self.channels else x.detach().double().reshape(-1, 1)
        top = x.abs().amax(0) if self.signed else x.clamp(min=0).amax(0)
        top = top.clamp(min=MIN_SCALE * self.qmax)
        best, best_err = top / self.qmax, torch.full_like(top, math.inf)
        for frac in np.linspace(0.3, 1.0, 36):
            s = top * float(frac) / self.qmax
            err = ((torch.clamp(round_half_up(x / s), self.qmin, self.qmax) * s - x) ** 2).mean(0)
            better = err < best_err
            best, best_err = torch.where(better, s, best), torch.where(better, err, best_err)
        self.scale.copy_(best.reshape(self.scale.shape).to(self.scale.dtype))
        self.initialized.fill_(True)

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        """Fake quantization of ``x`` with the LSQ gradient for the scale (the surrogate's output)."""
        if not bool(self.initialized):
            self.calibrate(x)
        g = 1.0 / math.sqrt(max(x.numel() / max(self.channels, 1), 1) * self.qmax)
        s = self.scale.abs().clamp(min=MIN_SCALE)
        s = (s - s * g).detach() + s * g
        return torch.clamp(round_ste(x / s), self.qmin, self.qmax) * s


def weight_scales(w: torch.Tensor, bits: int, per_channel: bool) -> np.ndarray:
    """Symmetric weight scales, max |w| / qmax per output channel (rows) or per tensor, float64 [N]."""
    qmax = IntType(bits).qmax
    wd = w.detach().double().reshape(w.shape[0], -1).abs()
    top = wd.amax(dim=1) if per_channel else wd.max().expand(w.shape[0])
    return np.maximum(top.numpy() / qmax, MIN_SCALE)


def weight_ints(w: torch.Tensor, scales: np.ndarray, bits: int) -> np.ndarray:
    """The weight integers for per-row ``scales`` (round half up, saturating)."""
    t = IntType(bits)
    s = torch.as_tensor(scales).reshape(-1, *([1] * (w.dim() - 1)))
    return torch.clamp(round_half_up(w.detach().double() / s), t.qmin, t.qmax).long().numpy()


def weight_fake(w: torch.Tensor, scales: np.ndarray, bits: int) -> torch.Tensor:
    """Fake-quantized weights with straight-through gradients (the surrogate's)."""
    t = IntType(bits)
    s = torch.as_tensor(scales, dtype=w.dtype).reshape(-1, *([1] * (w.dim() - 1)))
    return torch.clamp(round_ste(w / s), t.qmin, t.qmax) * s


def bias_ints(b: torch.Tensor | None, acc_scale: np.ndarray) -> np.ndarray | None:
    """A bias in the accumulator's units (round half up)."""
    if b is None:
        return None
    return np.floor(b.detach().double().numpy() / acc_scale + 0.5).astype(np.int64)


WEIGHT_SCALES = ("max", "lsq")


class WeightQuant(nn.Module):
    """The symmetric ``bits``-bit quantization of a layer's weight [N, ...] (N output channels): one scale
    per output channel (``per_channel``) or one per tensor, by ``mode`` "max" (max |w| / qmax, recomputed from
    the weights every time) or "lsq" (learned with LSQ, initialised by an MSE search over clipping ranges on
    the first forward, as the activation scales are)."""

    def __init__(self, who: str, bits: int, per_channel: bool, channels: int, mode: str) -> None:
        super().__init__()
        if mode not in WEIGHT_SCALES:
            raise HwgenError(f"{who}: weight_scale must be one of {', '.join(map(repr, WEIGHT_SCALES))}, not {mode!r}")
        self.bits, self.per_channel, self.channels, self.mode = int(bits), bool(per_channel), int(channels), mode
        if mode == "lsq":
            self.quant = ActQuant(self.bits, True, self.channels if self.per_channel else 0)

    def extra_repr(self) -> str:
        return f"{self.mode}, {'per-channel' if self.per_channel else 'per-tensor'}"

    def _rows(self, w: torch.Tensor) -> torch.Tensor:
        """[elements per channel, N]: the channels on the last axis, as ActQuant takes them."""
        return w.reshape(w.shape[0], -1).transpose(0, 1)

    def scales(self, w: torch.Tensor) -> np.ndarray:
        """float64 [N]: the scale of each output channel's weights."""
        if self.mode == "max":
            return weight_scales(w, self.bits, self.per_channel)
        if not bool(self.quant.initialized):
            self.quant.calibrate(self._rows(w.detach()))
        return np.broadcast_to(np.asarray(self.quant.value(), np.float64), (w.shape[0],)).copy()

    def fake(self, w: torch.Tensor) -> torch.Tensor:
        """The fake-quantized weights, straight-through (LSQ gradients for learned scales)."""
        if self.mode == "max":
            return weight_fake(w, weight_scales(w, self.bits, self.per_channel), self.bits)
        return self.quant.fake(self._rows(w)).transpose(0, 1).reshape(w.shape)

    def ints(self, w: torch.Tensor) -> np.ndarray:
        return weight_ints(w, self.scales(w), self.bits)
