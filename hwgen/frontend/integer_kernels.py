"""Integer softmax and LayerNorm in PyTorch: bit-for-bit the golden algorithms in the forward pass,
float gradients (straight-through) in the backward pass."""

from __future__ import annotations

import torch

from hwgen.ir.dyadic import EXP_BITS

SOFTMAX_RECIP_BITS = 31
LN_NORM_BITS = 8
LN_RECIP_BITS = 24


def _floor_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="floor")


def int_softmax(scores_int: torch.Tensor, scale: float, prob_bits: int) -> torch.Tensor:
    """Golden ``softmax`` on integer scores (int64) with the exp table of step ``scale``: integer output in
    [0, 2**prob_bits - 1] (units of 2**-prob_bits)."""
    diff = scores_int.amax(dim=-1, keepdim=True) - scores_int
    e = torch.floor(torch.exp(-diff.double() * float(scale)) * (1 << EXP_BITS) + 0.5).long()
    s = e.sum(dim=-1, keepdim=True)
    r = _floor_div(torch.full_like(s, 1 << SOFTMAX_RECIP_BITS), s)
    sh = SOFTMAX_RECIP_BITS - prob_bits
    y = (e * r + (1 << (sh - 1))) >> sh
    return y.clamp(0, (1 << prob_bits) - 1)


def softmax_ste(scores: torch.Tensor, scale: torch.Tensor, prob_bits: int) -> torch.Tensor:
    """Softmax whose value is the integer softmax of the fake-quantized ``scores`` and whose gradient is
    the float softmax's."""
    s = float(scale)
    y_float = torch.softmax(scores, dim=-1)
    y_int = int_softmax(torch.floor(scores.detach().double() / s + 0.5).long(), s, prob_bits)
    return y_float + (y_int.to(scores.dtype) / (1 << prob_bits) - y_float).detach()


def isqrt_tensor(n: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(n)) for int64 n >= 0 (float estimate, corrected exactly)."""
    x = torch.floor(torch.sqrt(n.double())).long()
    x = torch.where(x * x > n, x - 1, x)
    x = torch.where((x + 1) * (x + 1) <= n, x + 1, x)
    return x


def int_layernorm_norm(x_int: torch.Tensor, norm_bits: int = LN_NORM_BITS,
                       recip_bits: int = LN_RECIP_BITS) -> torch.Tensor:
    """Golden ``layernorm_parts``: the normalised values n (units of 2**-norm_bits) over the last axis."""
    c = x_int.shape[-1]
    xc = c * x_int - x_int.sum(dim=-1, keepdim=True)
    q = (xc * xc).sum(dim=-1, keepdim=True)
    sd = isqrt_tensor(_floor_div(q, torch.full_like(q, c))).clamp(min=1)
    r = _floor_div(torch.full_like(sd, 1 << recip_bits), sd)
    sh = recip_bits - norm_bits
    return (xc * r + (1 << (sh - 1))) >> sh


def layernorm_ste(x: torch.Tensor, scale: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(x - mean) / std with the integer algorithm's value on fake-quantized ``x`` and the float gradient."""
    mean = x.mean(dim=-1, keepdim=True)
    n_float = (x - mean) / torch.sqrt(x.var(dim=-1, unbiased=False, keepdim=True) + eps)
    x_int = torch.floor(x.detach().double() / float(scale) + 0.5).long()
    n_int = int_layernorm_norm(x_int).to(x.dtype) / (1 << LN_NORM_BITS)
    return n_float + (n_int - n_float).detach()
