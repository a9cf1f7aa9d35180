"""Host side of a deployed model: real (scaled) input windows to the integers the accelerator takes.

NumPy only: the simulation, the report and a host program quantize inputs without the torch front end.
"""

from __future__ import annotations

import numpy as np

from hwgen.ir.types import IntType


def quantize_input(x: np.ndarray, scale, bits: int) -> np.ndarray:
    """Real (scaled) inputs to the graph's input integers, with the quantizer's rounding (round half up,
    saturating); ``scale`` is one number or one per feature (the last axis)."""
    t = IntType(bits)
    s = np.asarray(scale, np.float64)
    return np.clip(np.floor(np.asarray(x, np.float64) / s + 0.5), t.qmin, t.qmax).astype(np.int64)
