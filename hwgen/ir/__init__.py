"""The integer-only intermediate representation: types, ops, graph, verifier and passes."""

from hwgen.ir.graph import Const, Graph, Node, TensorType
from hwgen.ir.ops import OPS, macs, widths
from hwgen.ir.types import IntType, clog2, signed_bits_for
from hwgen.ir.verify import infer_widths, verify

__all__ = ["Const", "Graph", "IntType", "Node", "OPS", "TensorType", "clog2", "infer_widths", "macs",
           "signed_bits_for", "verify", "widths"]
