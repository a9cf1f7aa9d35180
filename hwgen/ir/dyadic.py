"""Turning real rescale factors into the IR's integer form (used at export time only)."""

from __future__ import annotations

import math

import numpy as np

M0_BITS = 15  # multipliers are normalised into [2**(M0_BITS-1), 2**M0_BITS): 16-bit signed, one DSP port
MAX_SHIFT = 62
EXP_BITS = 15  # softmax exp table: lut[0] == 2**EXP_BITS


def dyadic(scale: float, m0_bits: int = M0_BITS) -> tuple[int, int]:
    """(m0, shift) with m0 / 2**shift closest to ``scale`` and |m0| in [2**(m0_bits-1), 2**m0_bits).

    A zero scale gives (0, 0). Scales too large for shift >= 0 keep shift 0 and a wider m0; scales too
    small for shift <= 62 keep shift 62 and a narrower m0.
    """
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, not {scale!r}")
    if scale == 0.0:
        return 0, 0
    shift = (m0_bits - 1) - math.floor(math.log2(abs(scale)))
    shift = min(max(shift, 0), MAX_SHIFT)
    m0 = round(scale * 2.0**shift)
    if abs(m0) >= 1 << m0_bits and shift > 0:
        m0, shift = round(scale * 2.0 ** (shift - 1)), shift - 1
    return int(m0), int(shift)


def dyadic_array(scales: np.ndarray, m0_bits: int = M0_BITS) -> tuple[np.ndarray, np.ndarray]:
    """:func:`dyadic` element-wise: (m0 array, shift array)."""
    pairs = [dyadic(float(s), m0_bits) for s in np.asarray(scales, dtype=np.float64).ravel()]
    m0 = np.array([p[0] for p in pairs], dtype=np.int64).reshape(np.shape(scales))
    shift = np.array([p[1] for p in pairs], dtype=np.int64).reshape(np.shape(scales))
    return m0, shift


def softmax_lut(scale: float, in_bits: int, exp_bits: int = EXP_BITS) -> np.ndarray:
    """exp table indexed by (row max - x) for b-bit integer scores of step ``scale``:
    lut[i] = round(2**exp_bits * exp(-i * scale)), i = 0 .. 2**in_bits - 1."""
    i = np.arange(1 << in_bits, dtype=np.float64)
    return np.floor(np.exp(-i * float(scale)) * (1 << exp_bits) + 0.5).astype(np.int64)


def common_dyadic(ra: float, rb: float, m0_bits: int = M0_BITS) -> tuple[int, int, int]:
    """(ma, mb, shift) with ma / 2**shift ~ ra and mb / 2**shift ~ rb: two rescales sharing one shift,
    so that a two-operand add rounds once. The larger of |ra|, |rb| is normalised like :func:`dyadic`."""
    big = max(abs(float(ra)), abs(float(rb)))
    if big == 0.0:
        return 0, 0, 0
    _, shift = dyadic(big, m0_bits)
    shift = max(shift, 1)
    return round(float(ra) * 2.0**shift), round(float(rb) * 2.0**shift), shift
