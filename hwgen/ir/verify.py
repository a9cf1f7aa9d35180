"""The graph verifier: runs after export and after every pass."""

from __future__ import annotations

from hwgen.errors import HwgenError
from hwgen.ops import op_of


def verify(graph) -> None:
    """Raise HwgenError naming the first problem: unknown op, missing attribute or constant, undefined input,
    shape mismatch, or declared widths that differ from the inferred ones (when declared)."""
    defined = {graph.input_name}
    for node in graph.nodes:
        spec = op_of(node)
        if node.name in defined or node.name in graph.consts:
            raise HwgenError(f"node {node.name!r}: name used twice")
        if len(node.inputs) != spec.n_inputs:
            raise HwgenError(f"node {node.name!r} ({node.op}): takes {spec.n_inputs} inputs, not {len(node.inputs)}")
        for name in node.inputs:
            if name not in defined and name not in graph.consts:
                raise HwgenError(f"node {node.name!r}: input {name!r} is not defined before it")
        for key in spec.consts:
            if node.attrs.get(key) not in graph.consts:
                raise HwgenError(f"node {node.name!r}: attribute {key!r} must name a constant")
        for key in spec.optional_consts:
            if node.attrs.get(key) is not None and node.attrs[key] not in graph.consts:
                raise HwgenError(f"node {node.name!r}: attribute {key!r} names no constant")
        for key in spec.ints + tuple(k for k in spec.optional_ints if node.attrs.get(k) is not None):
            if not isinstance(node.attrs.get(key), int) or isinstance(node.attrs.get(key), bool):
                raise HwgenError(f"node {node.name!r}: attribute {key!r} must be an integer")
        for key, (lo, hi) in spec.int_ranges.items():
            if not lo <= node.attrs[key] <= hi:
                raise HwgenError(f"node {node.name!r}: attribute {key!r} must lie in {lo}..{hi}, "
                                 f"not {node.attrs[key]}")
        for key in spec.flags:
            if node.attrs.get(key) is not None and not isinstance(node.attrs[key], bool):
                raise HwgenError(f"node {node.name!r}: attribute {key!r} must be true or false, "
                                 f"not {node.attrs[key]!r}")
        try:
            shape = spec.shape(graph, node)
            if tuple(shape) != tuple(node.out.shape):
                raise HwgenError(f"node {node.name!r}: declared shape {node.out.shape} but computes {shape}")
            inferred = spec.widths(graph, node)
            if max(inferred.values()) > 63:
                raise HwgenError(f"node {node.name!r}: an intermediate needs {max(inferred.values())} bits, "
                                 "more than the 63 the integer datapaths (and the golden int64 arithmetic) hold")
            shifts = [node.attrs[k] for k in ("shift",) if isinstance(node.attrs.get(k), int)]
            if "shift" in spec.consts:
                shifts += [int(v) for v in graph.consts[node.attrs["shift"]].value.ravel()]
            if shifts and not 0 <= min(shifts) <= max(shifts) <= 62:
                raise HwgenError(f"node {node.name!r}: shifts must lie in 0..62, not {min(shifts)}..{max(shifts)}")
            declared = node.attrs.get("widths")
            if declared is not None and dict(declared) != inferred:
                raise HwgenError(f"node {node.name!r}: declared widths {dict(declared)} differ from "
                                 f"inferred {inferred}")
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as exc:
            # e.g. an input of the wrong rank, or a 'widths' attribute that is not a mapping
            raise HwgenError(f"node {node.name!r} ({node.op}): malformed "
                             f"({type(exc).__name__}: {exc})") from None
        defined.add(node.name)
    if graph.output_name not in defined:
        raise HwgenError(f"graph output {graph.output_name!r} is not computed by any node")


def infer_widths(graph):
    """Pass: declare every node's intermediate widths (attribute ``widths``) from its operand types."""
    nodes = []
    partial = graph.replace_nodes([])
    for node in graph.nodes:
        partial = partial.replace_nodes([*partial.nodes, node])
        nodes.append(node.with_attrs(widths=op_of(node).widths(partial, node)))
    result = graph.replace_nodes(nodes)
    verify(result)
    return result
