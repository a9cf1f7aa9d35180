"""What an op is: ``OpDef``, the hardware unit kinds (``Unit``), and the helpers op definitions share.

An op definition (one module per op in this package) holds everything hwgen knows about the op apart
from its hardware unit: its signature (inputs, constant and integer attributes), shape and width
inference, MAC count, and its golden function, the pure NumPy math that *is* the deployed model. The
verifier, the golden interpreter, lowering and the estimators all dispatch through ``hwgen.ops.OPS``.
"""

from __future__ import annotations

from enum import StrEnum
import numpy as np

from hwgen.errors import HwgenError
from hwgen.ir.types import IntType


class Unit(StrEnum):
    """The shared hardware unit that runs an op (``hwgen.hw.units.UNITS`` maps each to its component)."""

    MATMUL = "matmul"
    ADD = "add"
    AFFINE = "affine"
    AVGPOOL = "avgpool"
    SOFTMAX = "softmax"
    LAYERNORM = "layernorm"
    ARGMAX = "argmax"
    ANOMALY = "anomaly"
    LUT = "lut"
    SELECT = "select"
    CONCAT = "concat"


def sbits(t: IntType) -> int:
    """Bits of the signed type that holds every value of ``t``."""
    return t.bits if t.signed else t.bits + 1


def const_sbits(graph, node, attr: str) -> int:
    """Signed bits of the constant that attribute ``attr`` of ``node`` names."""
    return sbits(graph.consts[node.attrs[attr]].dtype)


class OpDef:
    """One op. Subclasses set the class attributes and override the methods that apply.

    ``compute`` is the golden function: it returns the output and the intermediates the interpreter checks
    against the declared widths (a dict keyed like :meth:`widths`' entries; entries not returned are not
    checked).
    """

    name: str = ""
    n_inputs: int = 1
    consts: tuple[str, ...] = ()  # attributes naming a constant
    optional_consts: tuple[str, ...] = ()
    ints: tuple[str, ...] = ()  # integer attributes
    optional_ints: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()  # boolean attributes
    int_ranges: dict[str, tuple[int, int]] = {}  # integer attributes with bounds (inclusive)
    unit: Unit
    chainable: bool = False  # may run chained onto its producer, fed by the producer's output stream
    chain_any_input: bool = False  # chained through any input (else through the first only)

    # ---- shape and width inference -------------------------------------------------------------------
    def shape(self, graph, node) -> tuple[int, ...]:
        """The output shape from the inputs' shapes; HwgenError on a mismatch."""
        raise NotImplementedError

    def widths(self, graph, node) -> dict[str, int]:
        """Declared signed widths of every intermediate, by name ('acc' is the accumulator)."""
        raise NotImplementedError

    def macs(self, graph, node) -> int:
        """Multiply-accumulates per inference (products of two tensors, not rescales)."""
        return 0

    def wide_copy(self, graph, node) -> tuple[str, str, int] | None:
        """The wide copy (value, layout kind, heads) a product node reads as its second operand."""
        return None

    # ---- the golden function ------------------------------------------------------------------------
    def compute(self, graph, node, args: list[np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        raise NotImplementedError

    # ---- helpers --------------------------------------------------------------------------------------
    @staticmethod
    def const(graph, node, attr: str) -> np.ndarray | None:
        """The value of the constant attribute ``attr`` names (None when the attribute is unset)."""
        key = node.attrs.get(attr)
        return None if key is None else graph.consts[key].value

    @staticmethod
    def need(node, shapes, cond: bool, what: str) -> None:
        if not cond:
            raise HwgenError(f"node {node.name!r} ({node.op}): {what} (input shapes {shapes})")

    @staticmethod
    def in_shapes(graph, node) -> list[tuple[int, ...]]:
        return [graph.value_type(i).shape for i in node.inputs]

    def __repr__(self) -> str:
        return f"<op {self.name}>"
