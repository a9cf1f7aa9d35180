"""The integer-only intermediate representation: types, graph, (de)serialisation, builder and verifier.

The ops themselves are defined in ``hwgen.ops``; the verifier (``hwgen.ir.verify``) checks a graph
against that table.
"""

from hwgen.ir.graph import Const, Graph, Node, TensorType
from hwgen.ir.types import IntType, clog2, signed_bits_for

__all__ = ["Const", "Graph", "IntType", "Node", "TensorType", "clog2", "signed_bits_for"]
