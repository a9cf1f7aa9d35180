"""The golden model: pure NumPy integer ops and the graph interpreter (the deployed model)."""

from hwgen.golden.interpreter import RangeError, run

__all__ = ["RangeError", "run"]
