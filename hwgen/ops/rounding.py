"""The one rounding rule and the integer primitives every op's golden function is made of.

All arithmetic is on int64 arrays; every function accepts leading batch dimensions. The hardware
(``hwgen.hw.requant``) and the PyTorch front end are checked against these functions, never the other way
round:

    requantize(acc, m0, shift) = clamp(((acc * m0) + (1 << (shift - 1))) >> shift + zp, qmin, qmax)

with ``>>`` an arithmetic (flooring) shift, i.e. round half up, and no rounding term when shift == 0.
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


def _absmax(x: np.ndarray) -> int:
    return max(int(x.max()), -int(x.min()))


def int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (NumPy matmul broadcasting) in exact int64 arithmetic, as int64.

    Through float64 BLAS when ``max|a| * max|b| * K < 2**53``: every product and every partial sum is
    then an integer below 2**53 in magnitude, which float64 holds exactly whatever order the sums are taken
    in, so the result is the integer one bit for bit (several times faster than an int64 product for the
    golden model's linear and attention products); otherwise NumPy's int64 matmul.
    """
    a, b = np.asarray(a, I64), np.asarray(b, I64)
    if a.size and b.size and _absmax(a) * _absmax(b) * a.shape[-1] < (1 << 53):
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(I64)
    return np.matmul(a, b)


def clamp(value: np.ndarray, dtype: IntType) -> np.ndarray:
    """Saturate to the range of ``dtype``."""
    return np.clip(np.asarray(value, dtype=I64), dtype.qmin, dtype.qmax)


def requantize(acc: np.ndarray, m0, shift, dtype: IntType, zp: int = 0) -> np.ndarray:
    """The one rounding rule: clamp(round_shift(acc * m0, shift) + zp) into ``dtype``."""
    scaled = np.asarray(acc, dtype=I64) * np.asarray(m0, dtype=I64)
    return clamp(round_shift(scaled, shift) + int(zp), dtype)


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
