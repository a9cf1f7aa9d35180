"""Analytic latency model of the accelerator ``lower(graph, parallel)`` builds.

It follows the schedules of the units cycle by cycle (no stalls on x or y): the input load, every node in
graph order, the output send. The constants are the pipeline depths of the units (see their docstrings).
"""

from __future__ import annotations

from hwgen.hw.lower import build_design
from hwgen.hw.memory import view
from hwgen.ir.graph import Graph
from hwgen.ir.ops import macs

MATMUL_TAIL = 11  # start, MAC pipeline (5), drain and requantizer (5), done
ELTWISE_TAIL = 7  # start, read, 4 arithmetic stages, done
SOFTMAX_ROW = 2  # sum -> divider wait
NORM_ROW = 10  # square->divider wait (4) and three handshakes (2 each)
ARGMAX_TAIL = 4  # start, read, compare, write, done
ANOMALY_TAIL = 9  # start, read, products, difference, sum, round, clamp, score and flag writes, done
CHAINED = {"add": 5, "affine": 5, "avgpool": 4}  # a chained node ends this many cycles after its producer


def _matmul(p, lanes: int) -> int:
    spans = []
    for _ in range(p.outer * p.inner):
        for g in range(p.groups):
            nv = min(p.group, p.n_len - g * p.group)
            spans.append((max(p.k_len, nv), nv))
    return sum(s for s, _ in spans[:-1]) + p.k_len + spans[-1][1] + MATMUL_TAIL


def _node_cycles(design, kind: str, prog) -> int:
    if kind == "matmul":
        return _matmul(prog, design.lanes)
    if kind in ("add", "affine"):
        return prog["numel"] + ELTWISE_TAIL
    if kind == "avgpool":
        return prog["numel"] + ELTWISE_TAIL - 1
    if kind == "softmax":
        # Max and sum passes of row 0, then per row: divider (alongside the next row's max pass), output
        # pass (alongside the next row's sum pass), wait for the last sum.
        length, rows, div = prog["cols"], prog["rows"], prog["q_bits"] + 2
        per_row = [(max(div, length) if r + 1 < rows else div) + length for r in range(rows)]
        return 2 * length + SOFTMAX_ROW * rows + sum(per_row) + ELTWISE_TAIL
    if kind == "layernorm":
        w = design.widths["layernorm"]["sumsq"]
        sqrt_steps = (w + (w & 1)) // 2
        per_row = 3 * prog["cols"] + prog["q1_bits"] + sqrt_steps + prog["recip_bits"] + 1 + NORM_ROW
        return prog["rows"] * per_row + ELTWISE_TAIL + 2
    if kind == "argmax":  # scan, then the scores read out again
        return prog["cols"] * (1 + prog["scores"]) + ARGMAX_TAIL
    if kind == "anomaly":
        return prog["numel"] + ANOMALY_TAIL
    raise ValueError(f"no latency model for unit kind {kind!r}")


def estimate(graph: Graph, parallel: int) -> dict:
    """Cycles per node (by node name), for the input load and output send, and ``total``: cycles from the
    first input beat accepted to the last output beat sent, with no stalls. Also ``macs`` and
    ``mac_cycles`` (cycles of the product nodes) so utilisation can be read off."""
    design = build_design(graph, parallel)
    n_in, n_out = (view(t)[0] * view(t)[1] for t in (graph.input_type, graph.output_type))
    nodes = {}
    for i, (node, (kind, idx)) in enumerate(zip(graph.nodes, design.node_unit)):
        chained = design.head[i] != i
        nodes[node.name] = CHAINED[kind] if chained else _node_cycles(design, kind, design.programs[kind][idx])
    total_macs = sum(macs(graph, n) for n in graph.nodes)
    mac_cycles = sum(nodes[n.name] for n, (kind, _) in zip(graph.nodes, design.node_unit) if kind == "matmul")
    return {"load": n_in, "nodes": nodes, "send": n_out + 1, "total": n_in + sum(nodes.values()) + n_out + 1,
            "macs": total_macs, "mac_cycles": mac_cycles, "parallel": parallel}
