"""Analytic latency of a ``Design`` (the accelerator ``hwgen.hw.lower`` builds from it).

It follows the schedules of the units cycle by cycle (no stalls on x or y): the input load, every
controller step in graph order, the output send. Each unit declares its own cycles (``cycles``) and, when
chained onto its producer, how many cycles it ends after it (``chained_cycles``), beside its pipeline.

Back to back, the next window's input is taken from the step after the input's last reader on
(``Design.preload``) and during the send, so a stream of windows takes one every ``throughput_cycles``:
the steps up to the last reader, then the rest of the steps and the send or the next input's load,
whichever is longer. When the first node is a linear over the whole input (``Design.load_overlap``) it
runs while the input arrives (its reads wait for each element), so the load is inside the first step:
``load`` is 0 and the first node's cycles count from the first input beat.
"""

from __future__ import annotations

from hwgen.hw.lower import Design, build_design
from hwgen.hw.memory import view
from hwgen.hw.units import UNITS
from hwgen.ir.graph import Graph
from hwgen.ops import macs


def estimate(design: Design) -> dict:
    """Cycles per node (by node name), for the input load and output send, and ``total``: cycles from the
    first input beat accepted to the last output beat sent of one window alone, with no stalls.
    ``throughput_cycles``: the cycles between the first input beats of consecutive windows (and between
    their last output beats) when windows are streamed back to back with no stalls, from the second window
    on (the first two windows' first beats are ``load`` plus the steps before ``Design.preload`` apart, at
    most as many); ``preload_cycles``: the cycles of a window in which the next window's input is taken
    (the steps from ``Design.preload`` on and the send). Also ``macs`` and ``mac_cycles`` (cycles of the
    product nodes) so utilisation can be read off."""
    graph = design.graph
    n_in, n_out = (view(t)[0] * view(t)[1] for t in (graph.input_type, graph.output_type))
    nodes = {}
    for i, (node, (kind, idx)) in enumerate(zip(graph.nodes, design.node_unit)):
        unit = UNITS[kind]
        prog = design.programs[kind][idx]
        if i in design.overlapped:  # started with its producer: the cycles it ends after it
            pk, pi = design.node_unit[design.overlapped[i]]
            producer, pprog = UNITS[pk], design.programs[pk][pi]
            nodes[node.name] = (unit.overlapped_cycles(design, prog, producer.write_times(design, pprog))
                                - producer.cycles(design, pprog))
        elif design.head[i] != i:
            nodes[node.name] = unit.chained_cycles(design)
        else:
            nodes[node.name] = unit.cycles(design, prog)
    first = graph.nodes[0].name if graph.nodes else None
    if design.load_overlap:  # the first node reads input element a once it has arrived (cycle a of the step)
        kind, idx = design.node_unit[0]
        first_unit, first_prog = UNITS[kind], design.programs[kind][idx]
        nodes[first] = first_unit.gated_cycles(design, first_prog, [a + 1 for a in range(n_in)])
    node_macs = {n.name: macs(graph, n) for n in graph.nodes}
    mac_cycles = sum(nodes[name] for name, m in node_macs.items() if m)
    steps = [sum(nodes[graph.nodes[i].name] for i in members) for members in design.steps]
    preload = sum(steps[design.preload:]) + n_out + 1
    load = 0 if design.load_overlap else n_in  # cycles before the first step
    if design.load_overlap:
        # back to back: ``preload`` elements of the next input arrive before its first step, the rest in it
        early = min(preload, n_in)
        ready = [0 if a < early else a - early + 1 for a in range(n_in)]
        steady = steps[0] - nodes[first] + first_unit.gated_cycles(design, first_prog, ready)
        period = steady + sum(steps[1:]) + n_out + 1
        next_input = sum(steps[:design.preload])  # the second window's first beat, from the first's
    else:
        period = sum(steps[:design.preload]) + max(preload, n_in)
        next_input = n_in + sum(steps[:design.preload])
    return {"load": load, "nodes": nodes, "send": n_out + 1, "total": load + sum(nodes.values()) + n_out + 1,
            "throughput_cycles": period, "preload_cycles": preload, "next_input_cycles": next_input,
            "load_with_first_node": design.load_overlap,
            "macs": sum(node_macs.values()), "mac_cycles": mac_cycles, "parallel": design.lanes}


def of_graph(graph: Graph, parallel: int, dsp_budget: int | None = None) -> dict:
    """:func:`estimate` of ``graph`` at ``parallel`` lanes (lowered without ROM images; ``dsp_budget`` as
    in ``build_design``)."""
    return estimate(build_design(graph, parallel, images=False, dsp_budget=dsp_budget))
