"""Lowering: an IR graph -> a ``Design``: the programs of the shared units, the memory plan, the controller
schedule and the images of the constant ROMs. Every op is looked up in ``hwgen.ops.OPS`` and its unit in
``hwgen.hw.units.UNITS``; nothing here knows an op by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hwgen.errors import HwgenError
from hwgen.hw.memory import MemoryPlan, plan_memory, raw
from hwgen.hw.program import signed_width
from hwgen.hw.units import UNITS
from hwgen.hw.vendor import MAC_MULTIPLIERS
from hwgen.ir.graph import Graph
from hwgen.ir.verify import verify
from hwgen.ops import OPS, Unit, sbits


@dataclass
class Design:
    """Everything the Top needs: memory plan, per-unit node programs, ROM images and datapath widths.

    ``images`` False leaves the ROM images out (``roms`` empty, ``params["weights"]`` placeholders): enough
    for the latency and resource estimates of a candidate parallelism, at a fraction of the cost."""

    graph: Graph
    lanes: int
    plan: MemoryPlan
    images: bool = True
    node_unit: list[tuple[Unit, int]] = field(default_factory=list)
    programs: dict[Unit, list] = field(default_factory=dict)
    roms: dict[str, tuple[int, list[int]]] = field(default_factory=dict)  # name -> (word bits, words)
    widths: dict[Unit, dict[str, int]] = field(default_factory=dict)
    head: list[int] = field(default_factory=list)  # per node: the first node of its chain
    streamed: dict[int, int] = field(default_factory=dict)  # chained node -> which input is streamed
    # overlapped node -> its producer: both start in the producer's step and the node reads the producer's
    # output from memory as the producer writes it (``Lowered.OVERLAPS_PRODUCER``)
    overlapped: dict[int, int] = field(default_factory=dict)
    # the position in ``steps`` of the first controller step that takes the next window's input: the one
    # after the last step reading the input (directly or through a wide copy); len(steps): only from SEND
    preload: int = 0
    # the first node (a linear reading the whole input) runs while the input arrives: its operand reads wait
    # for the elements (``MatmulUnit`` gate), so the load and the node share the first controller step
    load_overlap: bool = False
    shl_table: list[int] = field(default_factory=list)  # per-embedding-group input shifts of linear nodes
    params: dict[str, list] = field(default_factory=dict)  # per unit: parameter words for its ROMs
    fabric: frozenset = frozenset()  # units whose rescale products are shift-add in fabric, not DSP48E1
    multiplier: str = "generic"  # the MAC lanes' multiplier: "generic" (a product), "ecp5" (MULT18X18D cells)
    # products may run two rows at a time, both through each lane's one DSP48E1 (``MatmulUnit.arrange``)
    pair_rows: bool = True
    # flat activation buffers (indices into ``plan.buffers``) asked into distributed RAM: ``ram_style =
    # "distributed"`` (``hwgen.steps.build.candidate`` moves the smallest there when block RAM runs out)
    distributed_buffers: frozenset = frozenset()
    lutram: bool = True  # the family has distributed RAM (not the iCE40): small unit memories are asked into it

    def paired(self, index: int) -> bool:
        """Whether node ``index`` runs two rows at a time (``MatmulUnit.arrange``)."""
        kind, sel = self.node_unit[index]
        return bool(getattr(self.programs[kind][sel], "pair", False))

    def sbits_of(self, name: str) -> int:
        return sbits(self.graph.value_type(name).dtype)

    def wmax(self, unit: Unit, key: str, value: int) -> None:
        """Widen datapath ``key`` of ``unit`` to at least ``value`` bits."""
        w = self.widths.setdefault(unit, {})
        w[key] = max(w.get(key, 1), int(value))

    @property
    def steps(self) -> list[list[int]]:
        """The controller's node steps in order: the nodes (indices) each runs (a chain runs in one)."""
        return [[i for i, h in enumerate(self.head) if h == head] for head in sorted(set(self.head))]

    @property
    def preload_step(self) -> int:
        """The controller step (``Top.step``: 1..n the node steps, n + 1 SEND) from which the next window's
        input is taken."""
        steps = self.steps
        return self.head[steps[self.preload][0]] + 1 if self.preload < len(steps) else len(self.graph.nodes) + 1

    @staticmethod
    def pack(values, bits: int) -> int:
        return sum(raw(v, bits) << (i * bits) for i, v in enumerate(values))

    @staticmethod
    def pack_fields(values, widths) -> int:
        word, pos = 0, 0
        for v, bits in zip(values, widths):
            word |= raw(v, bits) << pos
            pos += bits
        return word

    def param_rom(self, rom: str, kind: Unit, fields: tuple[str, ...], tail: tuple[int, ...] = ()) -> None:
        """Pack the parameter tuples ``params[rom]`` into ROM ``rom``: each of ``fields`` as narrow as its
        values (the width recorded as ``widths[kind][field]``), then the fixed-width ``tail`` fields."""
        params = self.params.get(rom)
        if not params:
            return
        w = self.widths[kind]
        for i, name in enumerate(fields):
            w[name] = signed_width(*[p[i] for p in params])
        bits = tuple(w[name] for name in fields) + tuple(tail)
        self.roms[rom] = (sum(bits), [self.pack_fields(p, bits) for p in params])

    def summary(self) -> dict[str, Any]:
        """What the build records in ``design.json``: lanes, units and their widths, the controller's steps
        (chains), the memory plan and ROM sizes."""
        nodes = self.graph.nodes
        return {
            "lanes": self.lanes,
            **({"multiplier": self.multiplier} if self.multiplier != "generic" else {}),
            "units": {str(k): {"nodes": len(v), "widths": dict(self.widths.get(k, {})),
                               "rescale_dsps": UNITS[k].dsps(self), "rescale_in_fabric": k in self.fabric}
                      for k, v in self.programs.items()},
            "load_with_first_node": self.load_overlap,
            "nodes": [{"name": n.name, "op": n.op, "unit": str(self.node_unit[i][0]), "step": self.head[i] + 1,
                       **({"row_pairs": True} if self.paired(i) else {}),
                       **({"streamed_input": self.streamed[i]} if i in self.streamed else {}),
                       **({"overlaps": nodes[self.overlapped[i]].name} if i in self.overlapped else {})}
                      for i, n in enumerate(nodes)],
            "steps": [{"step": self.head[s[0]] + 1, "nodes": [nodes[i].name for i in s]}
                      for s in self.steps],
            "next_input_from_step": self.preload_step,
            "memory": {"buffers": [{"depth": d, "bits": b} for d, b in self.plan.buffers],
                       "values": dict(self.plan.flat),
                       **({"distributed": sorted(self.distributed_buffers)} if self.distributed_buffers else {}),
                       "wide": [{"value": k[0], "layout": k[1], "heads": k[2], "lanes": lay.lanes, "depth": lay.depth}
                                for k, lay in sorted(self.plan.wide.items())],
                       "roms": {name: {"bits": bits, "words": len(words)} for name, (bits, words) in
                                sorted(self.roms.items())}},
        }


def build_design(graph: Graph, lanes: int, images: bool = True, dsp_budget: int | None = None,
                 multiplier: str = "generic", lutram: bool = True, pair_rows: bool = True,
                 distributed_buffers: frozenset = frozenset()) -> Design:
    """Check that every node is supported and turn the graph into a Design for ``lanes`` MAC lanes
    (``images`` False: without the ROM images, for estimates).

    ``dsp_budget`` (the part's DSP48E1 count): move units' rescale products from DSP48E1 into fabric
    (shift-add, ``hwgen.hw.shiftadd``), cheapest in LUTs per DSP freed first, until the lanes and the
    remaining rescale products fit it (or no unit can move). None keeps every rescale product in DSPs.
    ``multiplier``: the MAC lanes' multiplier, "generic" or "ecp5" (``vendor.mac_multiplier`` of the board's
    family: registered MULT18X18D cells, same cycles). ``lutram``: the family has distributed RAM
    (``Family.lutram``; ``vendor.lowering_options`` gives both for a board's family), so the units' small memories carry ``ram_style = "distributed"``.
    ``pair_rows``: products may pair rows in one multiplier (``MatmulUnit.arrange``: a 25 x 18 DSP48E1 forms both
    rows' products; off for families whose multipliers are narrower). ``distributed_buffers``: the flat
    activation buffers (indices of the memory plan) to ask into distributed RAM (needs ``lutram``)."""
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise HwgenError(f"parallelism must be an integer >= 1, not {lanes!r}")
    verify(graph)
    for node in graph.nodes:
        if OPS[node.op].unit not in UNITS:
            raise HwgenError(f"node {node.name!r}: op {node.op!r} has no hardware unit")
    if multiplier not in MAC_MULTIPLIERS:
        raise HwgenError(f"multiplier must be one of {', '.join(MAC_MULTIPLIERS)}, not {multiplier!r}")
    if distributed_buffers and not lutram:
        raise HwgenError("buffers can go into distributed RAM only on a family that has it (lutram)")
    d = Design(graph, lanes, None, images, multiplier=multiplier, lutram=lutram, pair_rows=pair_rows,
               distributed_buffers=frozenset(int(b) for b in distributed_buffers))
    _find_chains(d)
    _find_overlaps(d)
    d.preload = last_input_reader(d) + 1
    d.plan = plan_memory(graph, lanes, d.head)
    if any(not 0 <= b < len(d.plan.buffers) for b in d.distributed_buffers):
        raise HwgenError(f"distributed_buffers {sorted(d.distributed_buffers)}: the plan has "
                         f"{len(d.plan.buffers)} buffers")
    d.load_overlap = _load_overlaps(d)
    for i, node in enumerate(graph.nodes):
        kind = OPS[node.op].unit
        a, wd, out = node.attrs, dict(node.attrs.get("widths") or OPS[node.op].widths(graph, node)), node.out.dtype
        progs = d.programs.setdefault(kind, [])
        d.node_unit.append((kind, len(progs)))
        q = {"zp": int(a.get("zp", 0)), "qmin": out.qmin, "qmax": out.qmax}
        d.wmax(kind, "out", sbits(out))
        for name in node.inputs:
            d.wmax(kind, "in", d.sbits_of(name))
        for key, val in wd.items():
            d.wmax(kind, key, val)
        progs.append(UNITS[kind].program(d, i, node, wd, q))
    for kind in d.programs:
        UNITS[kind].arrange(d)
    if images:
        for kind in d.programs:
            UNITS[kind].finish(d)
    if multiplier == "ecp5":
        # every rescale product as pipelined shift-add: an unregistered MULT18X18D (and the adder of a
        # split product behind it) in one cycle is the slowest path left on an ECP5
        d.fabric = frozenset(k for k in d.programs if UNITS[k].FABRIC_CAPABLE and UNITS[k].dsps(d) > 0)
    elif dsp_budget is not None:
        d.fabric = choose_fabric(d, dsp_budget)
    return d


def fabric_luts(design: Design, kind: Unit) -> float:
    """Estimated LUTs of unit ``kind``'s rescale products as shift-add: about 1.1 per bit of the wide
    operand and bit of the selecting one (measured with Yosys synth_xilinx: 26 x 17 bits 486 LUTs, 12 x 16
    bits 233)."""
    return sum(1.1 * a * b for a, b in UNITS[kind].fabric_products(design))


def fabric_ffs(design: Design, kind: Unit) -> float:
    """Estimated flip-flops of the same (the registered partial products and sums: 793 and 344 measured)."""
    return sum(1.8 * a * b for a, b in UNITS[kind].fabric_products(design))


def choose_fabric(design: Design, dsp_budget: int) -> frozenset:
    """The units to build their rescale products in fabric so the design's DSP48E1 fit ``dsp_budget``."""
    kinds = [k for k in design.programs if UNITS[k].FABRIC_CAPABLE and UNITS[k].dsps(design) > 0]
    kinds.sort(key=lambda k: (fabric_luts(design, k) / UNITS[k].dsps(design), str(k)))
    fabric: set = set()
    for kind in kinds:
        design.fabric = frozenset(fabric)
        used = design.lanes + sum(UNITS[k].dsps(design) for k in design.programs)
        if used <= dsp_budget:
            break
        fabric.add(kind)
    design.fabric = frozenset()
    return frozenset(fabric)


def last_input_reader(d: Design) -> int:
    """The position in ``d.steps`` of the last controller step with a node that reads the graph's input (its
    flat buffer, or a wide copy of it: both are among the node's inputs); -1 if none does."""
    name = d.graph.input_name
    return max((pos for pos, members in enumerate(d.steps)
                if any(name in d.graph.nodes[i].inputs for i in members)), default=-1)


def _find_chains(d: Design) -> None:
    """Chain a chainable node (``OpDef.chainable``: add, affine, avgpool) onto the node just before it when it
    consumes that node's output: it then takes the elements from the producer's output stream and runs
    concurrently with it.

    Allowed only when the chain's units are distinct and the chained node's other operand is neither
    written nor read by the chain (each flat memory has one read port)."""
    nodes = d.graph.nodes
    for j, node in enumerate(nodes):
        d.head.append(j)
        op = OPS[node.op]
        if j == 0 or not op.chainable:
            continue
        prev = nodes[j - 1]
        pos = [p for p, name in enumerate(node.inputs) if name == prev.name]
        if len(pos) != 1 or (not op.chain_any_input and pos != [0]):
            continue
        members = range(d.head[j - 1], j)
        if op.unit in {OPS[nodes[k].op].unit for k in members}:
            continue
        busy = {name for k in members for name in (*nodes[k].inputs, nodes[k].name)}
        if any(name in busy for p, name in enumerate(node.inputs) if p != pos[0]):
            continue
        d.head[j] = d.head[j - 1]
        d.streamed[j] = pos[0]


def _find_overlaps(d: Design) -> None:
    """Overlap a node whose unit reads its producer's output as it is written (``OVERLAPS_PRODUCER``:
    the softmax after the attention scores) with the node just before it when that node produces its
    first input, runs in a step of its own and its unit can say when it writes each element
    (``write_times``): the node joins the producer's step and starts with it."""
    nodes = d.graph.nodes
    for j in range(1, len(nodes)):
        node, prev = nodes[j], nodes[j - 1]
        unit, prev_unit = UNITS[OPS[node.op].unit], UNITS[OPS[prev.op].unit]
        if not unit.OVERLAPS_PRODUCER or d.head[j] != j or d.head[j - 1] != j - 1:
            continue
        if node.inputs[0] != prev.name or prev.name in node.inputs[1:] or unit is prev_unit:
            continue
        if not prev_unit.WRITES_IN_ORDER or j + 1 < len(nodes) and d.head[j + 1] == j:
            continue
        d.head[j] = j - 1
        d.overlapped[j] = j - 1


def _load_overlaps(d: Design) -> bool:
    """Whether the first node can run while the input arrives: a linear (``MatmulUnit.GATED_OPS``) whose
    broadcast operand is the whole input, with no other node of its step reading the input."""
    g, nodes = d.graph, d.graph.nodes
    if not nodes:
        return False
    first = nodes[0]
    if first.op not in UNITS[OPS[first.op].unit].GATED_OPS or first.inputs[0] != g.input_name:
        return False
    if first.attrs.get("rows") is not None or d.plan.wide_key(g, first) is not None:
        return False
    return not any(g.input_name in nodes[i].inputs for i in d.steps[0][1:])
