"""One pure NumPy function per IR op: the living definition of every op.

All arithmetic is on int64 arrays; every function accepts leading batch dimensions. The hardware and the
PyTorch front end are checked against these functions, never the other way round.

The one rounding rule (round half up, by an arithmetic shift):
    requantize(acc, m0, shift) = clamp(((acc * m0) + (1 << (shift - 1))) >> shift + zp, qmin, qmax)
with no rounding term when shift == 0.
"""

from __future__ import annotations

import numpy as np

from hwgen.ir.types import IntType

I64 = np.int64


def round_shift(value: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """Divide by 2**shift rounding half up: (value + 2**(shift-1)) >> shift, exact on int64."""
    v = np.asarray(value, dtype=I64)
    s = np.asarray(shift, dtype=I64)
    if np.any(s < 0):
        raise ValueError(f"shift must be >= 0, not {int(s.min())}")
    half = np.where(s > 0, np.left_shift(I64(1), np.maximum(s - 1, 0)), 0)
    return np.right_shift(v + half, s)


def clamp(value: np.ndarray, dtype: IntType) -> np.ndarray:
    """Saturate to the range of ``dtype``."""
    return np.clip(np.asarray(value, dtype=I64), dtype.qmin, dtype.qmax)


def requantize(acc: np.ndarray, m0, shift, dtype: IntType, zp: int = 0) -> np.ndarray:
    """The one rounding rule: clamp(round_shift(acc * m0, shift) + zp) into ``dtype``."""
    scaled = np.asarray(acc, dtype=I64) * np.asarray(m0, dtype=I64)
    return clamp(round_shift(scaled, shift) + int(zp), dtype)


# ---- accumulations (returned separately so that the interpreter can check declared widths) -------------


def linear_acc(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
               in_shl: np.ndarray | None = None) -> np.ndarray:
    """x[..., K] @ weight[N, K].T + bias[N] in exact integers.

    With ``in_shl`` (per-embedding-group inputs: input channel k has scale s * 2**in_shl[k]) the product is
    accumulated per group of equal shift, and each group's partial sum is rescaled to the common scale s by
    its exact left shift before the partial sums are added (no rounding: the rescale is a power of two).
    """
    x, w = np.asarray(x, I64), np.asarray(weight, I64)
    if in_shl is None:
        acc = np.einsum("...k,nk->...n", x, w)
    else:
        shl = np.asarray(in_shl, I64)
        acc = np.zeros((*x.shape[:-1], w.shape[0]), I64)
        for e in np.unique(shl):
            cols = shl == e
            acc = acc + np.left_shift(np.einsum("...k,nk->...n", x[..., cols], w[:, cols]), e)
    return acc if bias is None else acc + np.asarray(bias, I64)


def linear(x, weight, bias, m0, shift, dtype: IntType, zp: int = 0, relu: bool = False,
           in_shl: np.ndarray | None = None) -> np.ndarray:
    """Integer linear layer: requantize(x @ W.T + b) per output channel, then ReLU if asked."""
    y = requantize(linear_acc(x, weight, bias, in_shl), m0, shift, dtype, zp)
    return np.maximum(y, zp) if relu else y


def split_heads(x: np.ndarray, heads: int) -> np.ndarray:
    """[..., L, H*D] -> [..., H, L, D]."""
    *lead, length, width = x.shape
    return np.moveaxis(x.reshape(*lead, length, heads, width // heads), -2, -3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """[..., H, L, D] -> [..., L, H*D]."""
    x = np.moveaxis(x, -3, -2)
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def attn_scores_acc(q: np.ndarray, k: np.ndarray, heads: int) -> np.ndarray:
    """Per head, q_h @ k_h.T: [..., L, H*D] x [..., L, H*D] -> [..., H, L, L]."""
    qh, kh = split_heads(np.asarray(q, I64), heads), split_heads(np.asarray(k, I64), heads)
    return np.einsum("...hid,...hjd->...hij", qh, kh)


def attn_scores(q, k, heads: int, m0: int, shift: int, dtype: IntType, zp: int = 0) -> np.ndarray:
    """Attention scores requantized; the 1/sqrt(D) scaling is folded into m0."""
    return requantize(attn_scores_acc(q, k, heads), m0, shift, dtype, zp)


def attn_apply_acc(p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per head, p_h @ v_h: [..., H, L, L] x [..., L, H*D] -> [..., L, H*D]."""
    heads = p.shape[-3]
    vh = split_heads(np.asarray(v, I64), heads)
    return merge_heads(np.einsum("...hij,...hjd->...hid", np.asarray(p, I64), vh))


def attn_apply(p, v, m0: int, shift: int, dtype: IntType, zp: int = 0) -> np.ndarray:
    """Weighted sum of values by attention probabilities, requantized."""
    return requantize(attn_apply_acc(p, v), m0, shift, dtype, zp)


def softmax_parts(x: np.ndarray, lut: np.ndarray, recip_bits: int):
    """The integer softmax's intermediate values along the last axis.

    e = lut[max(x) - x] (lut[0] is the largest entry), s = sum(e), r = floor(2**recip_bits / s).
    """
    x = np.asarray(x, I64)
    diff = x.max(axis=-1, keepdims=True) - x
    e = np.asarray(lut, I64)[diff]
    s = e.sum(axis=-1, keepdims=True)
    r = np.left_shift(I64(1), recip_bits) // s
    return e, s, r


def softmax(x: np.ndarray, lut: np.ndarray, recip_bits: int, dtype: IntType) -> np.ndarray:
    """Integer softmax along the last axis, output in units of 2**-dtype.bits (unsigned).

    y = clamp(round_shift(e * r, recip_bits - dtype.bits)) with e, r from :func:`softmax_parts`: one
    reciprocal per row, one multiply per element, the one rounding rule.
    """
    e, _, r = softmax_parts(x, lut, recip_bits)
    return requantize(e * r, 1, recip_bits - dtype.bits, dtype)


def add_acc(a, b, ma: int, mb: int, bias: int) -> np.ndarray:
    """a * ma + b * mb + bias: two operands brought to a common scale in exact integers."""
    return np.asarray(a, I64) * I64(ma) + np.asarray(b, I64) * I64(mb) + I64(bias)


def add(a, b, ma: int, mb: int, bias: int, shift: int, dtype: IntType, zp: int = 0) -> np.ndarray:
    """Residual (or positional-encoding) add of two differently scaled tensors, requantized once."""
    return requantize(add_acc(a, b, ma, mb, bias), 1, shift, dtype, zp)


def affine_acc(x, mul, bias) -> np.ndarray:
    """x[..., C] * mul[C] + bias[C]: the folded BatchNorm before rounding."""
    return np.asarray(x, I64) * np.asarray(mul, I64) + np.asarray(bias, I64)


def affine(x, mul, bias, shift, dtype: IntType, zp: int = 0) -> np.ndarray:
    """Per-channel integer affine (a folded BatchNorm1d), requantized per channel."""
    return requantize(affine_acc(x, mul, bias), 1, shift, dtype, zp)


def isqrt(n: np.ndarray) -> np.ndarray:
    """floor(sqrt(n)) for non-negative int64, by Newton's iteration x <- (x + n // x) // 2.

    Starts from a power of two >= sqrt(n) so the iteration decreases monotonically to the floor.
    """
    n = np.asarray(n, I64)
    if np.any(n < 0):
        raise ValueError("isqrt of a negative number")
    bits = np.zeros(n.shape, I64)
    t = n.copy()
    while np.any(t > 0):
        nz = t > 0
        bits[nz] += 1
        t = np.where(nz, t >> 1, t)
    x = np.left_shift(I64(1), (bits + 1) // 2)  # 2**ceil(bitlen/2) >= sqrt(n)
    while True:
        safe = np.maximum(x, 1)
        nxt = np.where(n > 0, (x + n // safe) // 2, 0)
        done = nxt >= x
        if np.all(done):
            return np.where(n > 0, x, 0)
        x = np.where(done, x, nxt)


def layernorm_parts(x: np.ndarray, norm_bits: int, recip_bits: int):
    """Integer LayerNorm's normalised values over the last axis (C channels).

    xc = C*x - sum(x) (exactly C times the deviation from the mean); q = sum(xc**2);
    sd = isqrt(q // C) (about C times the standard deviation; 1 when it is 0);
    r = floor(2**recip_bits / sd); n = round_shift(xc * r, recip_bits - norm_bits) (norm_bits fraction bits).
    Returns (xc, q, sd, r, n).
    """
    x = np.asarray(x, I64)
    c = x.shape[-1]
    xc = c * x - x.sum(axis=-1, keepdims=True)
    q = (xc * xc).sum(axis=-1, keepdims=True)
    sd = np.maximum(isqrt(q // c), 1)
    r = np.left_shift(I64(1), recip_bits) // sd
    n = round_shift(xc * r, recip_bits - norm_bits)
    return xc, q, sd, r, n


def layernorm(x, gamma, beta, shift: int, norm_bits: int, recip_bits: int, dtype: IntType, zp: int = 0):
    """Integer LayerNorm: y = requantize(n * gamma[C] + beta[C], 1, shift) with n from layernorm_parts."""
    n = layernorm_parts(x, norm_bits, recip_bits)[-1]
    return requantize(n * np.asarray(gamma, I64) + np.asarray(beta, I64), 1, shift, dtype, zp)


def avgpool_acc(x: np.ndarray, bias: int) -> np.ndarray:
    """Sum over time: [..., L, C] -> [..., 1, C], plus a constant (the folded input zero point)."""
    return np.asarray(x, I64).sum(axis=-2, keepdims=True) + I64(bias)


def avgpool(x, m0: int, shift: int, bias: int, dtype: IntType, zp: int = 0) -> np.ndarray:
    """Average over time: the sum requantized by m0 / 2**shift (which includes the 1/L)."""
    return requantize(avgpool_acc(x, bias), m0, shift, dtype, zp)


# ---- task heads ------------------------------------------------------------------------------------------


def argmax(x: np.ndarray, scores: bool = False) -> np.ndarray:
    """Class index of the largest of the C scores [..., 1, C] (ties: the lowest index) -> [..., 1, 1];
    with ``scores`` the scores follow the index: [..., 1, 1 + C]."""
    x = np.asarray(x, I64)
    idx = np.argmax(x, axis=-1, keepdims=True).astype(I64)  # numpy returns the first of equal maxima
    return np.concatenate([idx, x], axis=-1) if scores else idx


def anomaly_diff(x: np.ndarray, rec: np.ndarray, mx: np.ndarray, mr: np.ndarray, offset: int = 0) -> np.ndarray:
    """x * mx[F] - rec * mr[F] over the part of the window x [..., L, F] that ``rec`` describes: its N
    elements (whole rows, row-major) from element ``offset`` on (the whole window when N = L*F, the last rows
    when a forecaster predicts them from the rows before). The two are brought to one scale (m / 2**shift
    each) in exact integers; the result has rec's N / F rows: [..., N / F, F]."""
    x, r = np.asarray(x, I64), np.asarray(rec, I64)
    n = int(np.prod(r.shape[-2:]))  # rec is [..., 1, N] (a batch of rows) or [L', F]
    lead, f = x.shape[:-2], x.shape[-1]
    seg = x.reshape(*lead, -1)[..., offset:offset + n].reshape(*lead, n // f, f)
    return seg * np.asarray(mx, I64) - r.reshape(seg.shape) * np.asarray(mr, I64)


def anomaly_acc(x, rec, mx, mr, offset: int = 0) -> np.ndarray:
    """Sum of absolute differences over the compared rows: -> [..., 1, 1]."""
    return np.abs(anomaly_diff(x, rec, mx, mr, offset)).sum(axis=(-2, -1), keepdims=True)


def anomaly_score(x, rec, mx, mr, shift: int, threshold: int, dtype: IntType, offset: int = 0) -> np.ndarray:
    """[score, flag] [..., 1, 2]: score = clamp(round_shift(sum |x*mx - rec*mr|, shift)) into ``dtype``
    (saturating at qmax), flag = 1 when score > threshold, else 0."""
    score = requantize(anomaly_acc(x, rec, mx, mr, offset), 1, shift, dtype)
    return np.concatenate([score, (score > int(threshold)).astype(I64)], axis=-1)
