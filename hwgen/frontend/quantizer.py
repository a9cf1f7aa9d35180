"""Fake quantizers with straight-through gradients (uniform, 2 to 16 bits).

x_int = clamp(round(x / s) + z, qmin, qmax); x_hat = s * (x_int - z), with round = round half up (the
IR's one rounding rule). Scales are initialised by min-max or by MSE on the first batch seen, then either
learned (LSQ, gradient scaled by 1 / sqrt(N * qmax)) or tracked as an exponential moving average of the
ranges.

Per-embedding-group (PEG) quantizers (``peg_channels`` = C) give channel c of the last axis the scale
s * 2**exponent[c]: K groups of channels, each with its own scale, the ratios between groups powers of two
so that a consumer's group partial sums are rescaled by exact shifts. The exponents are set by
:func:`hwgen.frontend.peg.assign_groups` before calibration; with all exponents 0 the quantizer equals a
per-tensor one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hwgen.ir.types import IntType


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """floor(x + 1/2): the same ties as the integer rule (acc + 2**(s-1)) >> s."""
    return torch.floor(x + 0.5)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half up in the forward pass, identity gradient (straight-through estimator)."""
    return x + (round_half_up(x) - x).detach()


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by g (LSQ)."""
    return (x - x * g).detach() + x * g


class Quantizer(nn.Module):
    """A uniform fake quantizer.

    ``bits`` 2..16; ``signed`` selects [-2**(b-1), 2**(b-1)-1] or [0, 2**b-1]; ``symmetric`` fixes the zero
    point at 0; ``per_channel`` keeps one scale per index of ``axis`` (weights: output channels);
    ``learnable`` turns on LSQ; ``init`` is "minmax" or "mse". Disabled (``enabled = False``) it passes x
    through unchanged (FP32 mode).
    """

    def __init__(self, bits: int, signed: bool = True, symmetric: bool = True, per_channel: bool = False,
                 channels: int = 1, axis: int = 0, learnable: bool = True, init: str = "mse",
                 momentum: float = 0.9, peg_channels: int = 0) -> None:
        super().__init__()
        if not 2 <= int(bits) <= 16:
            raise ValueError(f"bits must be in 2..16, not {bits!r}")
        if init not in ("minmax", "mse"):
            raise ValueError(f"init must be 'minmax' or 'mse', not {init!r}")
        self.bits, self.signed, self.symmetric = int(bits), bool(signed), bool(symmetric)
        self.per_channel, self.axis, self.learnable = bool(per_channel), int(axis), bool(learnable)
        self.init_method, self.momentum = init, float(momentum)
        self.dtype = IntType(self.bits, self.signed)
        n = int(channels) if per_channel else 1
        scale = torch.ones(n)
        if learnable:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        self.register_buffer("zero_point", torch.zeros(n))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.peg = int(peg_channels) > 0
        if self.peg:
            if per_channel:
                raise ValueError("a per-embedding-group quantizer is per-tensor apart from its group exponents")
            self.register_buffer("exponent", torch.zeros(int(peg_channels)))
        self.enabled = True

    @property
    def qmin(self) -> int:
        return self.dtype.qmin

    @property
    def qmax(self) -> int:
        return self.dtype.qmax

    def extra_repr(self) -> str:
        kind = "per-channel" if self.per_channel else ("per-embedding-group" if self.peg else "per-tensor")
        return f"{self.dtype}, {kind}, {'symmetric' if self.symmetric else 'asymmetric'}, lsq={self.learnable}"

    # ---- range setting --------------------------------------------------------------------------------
    def _reduce_dims(self, x: torch.Tensor) -> list[int]:
        return [d for d in range(x.dim()) if not (self.per_channel and d == self.axis % x.dim())]

    def _shape(self, x: torch.Tensor) -> list[int]:
        shape = [1] * x.dim()
        if self.per_channel:
            shape[self.axis % x.dim()] = -1
        return shape

    def _group_factor(self, x: torch.Tensor) -> torch.Tensor | float:
        """2**exponent along the last axis (PEG), else 1."""
        return torch.exp2(self.exponent).to(x.dtype) if self.peg else 1.0

    def _minmax(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x / self._group_factor(x)  # PEG: the range of the base scale
        dims = self._reduce_dims(x)
        lo = x.detach().amin(dim=dims) if dims else x.detach()
        hi = x.detach().amax(dim=dims) if dims else x.detach()
        return lo.reshape(-1).clamp(max=0.0), hi.reshape(-1).clamp(min=0.0)  # ranges always contain zero

    def _params_for(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.symmetric:
            top = torch.maximum(hi, -lo) if self.signed else hi
            scale = top / self.qmax
            zp = torch.zeros_like(scale)
        else:
            scale = (hi - lo) / (self.qmax - self.qmin)
            zp = round_half_up(self.qmin - lo / scale.clamp(min=1e-12)).clamp(self.qmin, self.qmax)
        return scale.clamp(min=1e-8), zp

    def _mse_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self._minmax(x)
        best = None
        dims = self._reduce_dims(x)
        for frac in torch.linspace(0.3, 1.0, 36):
            scale, zp = self._params_for(lo * frac, hi * frac)
            err = self._squared_error(x.detach(), scale, zp)
            err = err.mean(dim=dims).reshape(-1) if dims else err.reshape(-1)
            if best is None:
                best = [err, scale, zp]
            else:
                better = err < best[0]
                best = [torch.where(better, err, best[0]), torch.where(better, scale, best[1]),
                        torch.where(better, zp, best[2])]
        return best[1], best[2]

    @torch.no_grad()
    def _squared_error(self, x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
        """``(self._fake(x, scale, zp) - x) ** 2``, equal bit for bit (the same operations in the same order,
        in place on one temporary instead of a new tensor each: about 4x faster on a calibration batch's
        attention scores, where the MSE range search spent most of a QAT run's calibration)."""
        s, z = self._grid(x, scale, zp)
        v = x / s
        r = v + 0.5
        r.floor_().sub_(v)  # round_ste(v) = v + (floor(v + 0.5) - v)
        return v.add_(r).add_(z).clamp_(self.qmin, self.qmax).sub_(z).mul_(s).sub_(x).pow_(2)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Set the range from ``x`` (min-max or MSE search) and mark the quantizer initialised."""
        scale, zp = self._mse_params(x) if self.init_method == "mse" else self._params_for(*self._minmax(x))
        self.scale.data.copy_(scale.expand_as(self.scale))
        self.zero_point.copy_(zp.expand_as(self.zero_point))
        self.initialized.fill_(True)

    # ---- quantization ---------------------------------------------------------------------------------
    def _grid(self, x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step (with PEG group factors) and zero point, shaped to broadcast against ``x``."""
        s = scale.reshape(self._shape(x)) if self.per_channel else scale.reshape(())
        z = zp.reshape(self._shape(x)) if self.per_channel else zp.reshape(())
        return s * self._group_factor(x), z

    def _fake(self, x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
        s, z = self._grid(x, scale, zp)
        q = torch.clamp(round_ste(x / s) + z, self.qmin, self.qmax)
        return (q - z) * s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if not bool(self.initialized):
            self.calibrate(x)
        scale = self.scale
        if self.learnable:
            scale = grad_scale(scale.abs().clamp(min=1e-8), 1.0 / math.sqrt(x.numel() / scale.numel() * self.qmax))
        elif self.training:
            with torch.no_grad():  # EMA of the ranges
                new_scale, new_zp = self._params_for(*self._minmax(x))
                self.scale.mul_(self.momentum).add_((1 - self.momentum) * new_scale)
                if not self.symmetric:
                    self.zero_point.copy_(round_half_up(self.momentum * self.zero_point + (1 - self.momentum) * new_zp))
            scale = self.scale
        return self._fake(x, scale, self.zero_point)

    def effective_scale(self) -> torch.Tensor:
        """The scale the forward pass uses (positive), detached, float64."""
        return self.scale.detach().abs().clamp(min=1e-8).double()

    def channel_scales(self) -> torch.Tensor:
        """PEG: the scale of every channel, s * 2**exponent (float64); otherwise :meth:`effective_scale`."""
        s = self.effective_scale()
        return s.reshape(()) * torch.exp2(self.exponent.double()) if self.peg else s

    def int_repr(self, x: torch.Tensor) -> torch.Tensor:
        """The integers x_int this quantizer assigns to ``x`` (int64)."""
        s = self.effective_scale()
        s = s.reshape(self._shape(x)) if self.per_channel else s.reshape(())
        s = s * self._group_factor(x.double())
        z = self.zero_point.double()
        z = z.reshape(self._shape(x)) if self.per_channel else z.reshape(())
        return torch.clamp(round_half_up(x.double() / s) + z, self.qmin, self.qmax).long()
