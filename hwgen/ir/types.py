"""Integer types: every tensor in the IR carries one."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_TYPE_RE = re.compile(r"^([iu])(\d+)$")


@dataclass(frozen=True, order=True)
class IntType:
    """A two's-complement (signed) or plain binary (unsigned) integer of ``bits`` bits."""

    bits: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 64:
            raise ValueError(f"bits must be an integer in 1..64, not {self.bits!r}")
        if self.signed and self.bits < 2:
            raise ValueError(f"a signed type needs at least 2 bits, not {self.bits!r}")

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def contains(self, values: np.ndarray) -> bool:
        """True when every element lies in [qmin, qmax]."""
        arr = np.asarray(values)
        return arr.size == 0 or (int(arr.min()) >= self.qmin and int(arr.max()) <= self.qmax)

    def __str__(self) -> str:
        return f"{'i' if self.signed else 'u'}{self.bits}"

    @classmethod
    def parse(cls, text: str) -> IntType:
        """Inverse of ``str``: ``"i8"`` -> IntType(8, True), ``"u4"`` -> IntType(4, False)."""
        match = _TYPE_RE.match(str(text))
        if not match:
            raise ValueError(f"not an integer type: {text!r} (expected e.g. 'i8' or 'u4')")
        return cls(int(match.group(2)), match.group(1) == "i")


def signed_bits_for(values: np.ndarray | int, minimum: int = 2) -> int:
    """The fewest bits of a signed type that holds every value (at least ``minimum``)."""
    arr = np.asarray(values, dtype=np.int64)
    if arr.size == 0:
        return minimum
    lo, hi = int(arr.min()), int(arr.max())
    bits = max(minimum, 2)
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def clog2(n: int) -> int:
    """ceil(log2(n)) for n >= 1: the extra accumulator bits a sum of n terms needs."""
    if n < 1:
        raise ValueError(f"clog2 needs n >= 1, not {n!r}")
    return (n - 1).bit_length()
