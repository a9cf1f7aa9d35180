"""Lowering: an IR graph -> the programs of the shared units and the images of the constant ROMs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hwgen.errors import HwgenError
from hwgen.ir.graph import Graph
from hwgen.ir.ops import OPS, sbits, widths
from hwgen.ir.verify import verify
from hwgen.hw.matmul import MatmulProgram
from hwgen.hw.memory import MemoryPlan, balanced, plan_memory, raw, view
from hwgen.hw.program import signed_width

UNIT_OF = {"linear": "matmul", "attn_scores": "matmul", "attn_apply": "matmul", "add": "add",
           "affine": "affine", "avgpool": "avgpool", "softmax": "softmax", "layernorm": "layernorm",
           "argmax": "argmax", "anomaly_score": "anomaly"}


@dataclass
class Design:
    """Everything the Top needs: memory plan, per-unit node programs, ROM images and datapath widths."""

    graph: Graph
    lanes: int
    plan: MemoryPlan
    node_unit: list[tuple[str, int]] = field(default_factory=list)
    programs: dict[str, list] = field(default_factory=dict)
    roms: dict[str, tuple[int, list[int]]] = field(default_factory=dict)  # name -> (word bits, words)
    widths: dict[str, dict[str, int]] = field(default_factory=dict)
    head: list[int] = field(default_factory=list)  # per node: the first node of its chain
    streamed: dict[int, int] = field(default_factory=dict)  # chained node -> which input is streamed
    shl_table: list[int] = field(default_factory=list)  # per-embedding-group input shifts of linear nodes

    def sbits_of(self, name: str) -> int:
        return sbits(self.graph.value_type(name).dtype)


def _pack(values, bits: int) -> int:
    return sum(raw(v, bits) << (i * bits) for i, v in enumerate(values))


def _wmax(design: Design, unit: str, key: str, value: int) -> None:
    w = design.widths.setdefault(unit, {})
    w[key] = max(w.get(key, 1), int(value))


def build_design(graph: Graph, lanes: int) -> Design:
    """Check that every node is supported and turn the graph into a Design for ``lanes`` MAC lanes."""
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise HwgenError(f"parallelism must be an integer >= 1, not {lanes!r}")
    verify(graph)
    for node in graph.nodes:
        if node.op not in UNIT_OF or node.op not in OPS:
            raise HwgenError(f"node {node.name!r}: op {node.op!r} has no hardware unit")
    d = Design(graph, lanes, None)
    _find_chains(d)
    d.plan = plan_memory(graph, lanes, d.head)
    weights: list[int] = []
    lin_params: list[tuple[int, int, int]] = []
    aff_params: list[tuple[int, int, int]] = []
    ln_params: list[tuple[int, int]] = []
    luts: list[int] = []
    consts = graph.consts
    for node in graph.nodes:
        unit = UNIT_OF[node.op]
        a, wd, out = node.attrs, dict(node.attrs.get("widths") or widths(graph, node)), node.out.dtype
        progs = d.programs.setdefault(unit, [])
        d.node_unit.append((unit, len(progs)))
        q = {"zp": int(a.get("zp", 0)), "qmin": out.qmin, "qmax": out.qmax}
        _wmax(d, unit, "out", sbits(out))
        for i in node.inputs:
            _wmax(d, unit, "in", d.sbits_of(i))
        for key, val in wd.items():
            _wmax(d, unit, key, val)
        if unit == "matmul":
            progs.append(_matmul_program(d, node, weights, lin_params, q))
        elif unit == "add":
            ma, mb = (a["mb"], a["ma"]) if d.streamed.get(len(d.node_unit) - 1) == 1 else (a["ma"], a["mb"])
            progs.append({"numel": math.prod(view(node.out)), "ma": ma, "mb": mb, "bias": a["bias"],
                          "shift": a["shift"], "chained": int(len(d.node_unit) - 1 in d.streamed), **q})
        elif unit == "affine":
            rows, cols = view(node.out)
            mul, bias, sh = (consts[a[k]].value.reshape(-1) for k in ("mul", "bias", "shift"))
            progs.append({"numel": rows * cols, "channels": cols, "p_base": len(aff_params),
                          "chained": int(len(d.node_unit) - 1 in d.streamed), **q})
            aff_params += [(int(mul[c % mul.size]), int(bias[c % bias.size]), int(sh[c % sh.size]))
                           for c in range(cols)]
        elif unit == "avgpool":
            rows, cols = view(graph.value_type(node.inputs[0]))
            progs.append({"numel": rows * cols, "rows": rows, "channels": cols, "m0": a["m0"], "shift": a["shift"],
                          "bias": a["bias"], "chained": int(len(d.node_unit) - 1 in d.streamed), **q})
            _wmax(d, unit, "m0", signed_width(a["m0"]))
        elif unit == "softmax":
            rows, cols = view(node.out)
            lut = [int(v) for v in consts[a["lut"]].value.reshape(-1)]
            in_t = graph.value_type(node.inputs[0]).dtype
            if len(lut) < in_t.qmax - in_t.qmin + 1:
                # max(x) - x can reach qmax - qmin; a shorter table would be read past its end.
                raise HwgenError(f"node {node.name!r} (softmax): exp table has {len(lut)} entries, the {in_t} "
                                 f"input needs {in_t.qmax - in_t.qmin + 1}")
            out_shift = a["recip_bits"] - out.bits
            if out_shift < 0 or a["recip_bits"] > 62:
                raise HwgenError(f"node {node.name!r} (softmax): recip_bits {a['recip_bits']} must lie in "
                                 f"[{out.bits}, 62]")
            progs.append({"rows": rows, "cols": cols, "lut_base": len(luts), "recip_bits": a["recip_bits"],
                          "out_shift": out_shift, "q_bits": max(wd["recip"] - 1, 1), "qmax": out.qmax})
            luts += lut
            _wmax(d, unit, "lut", max(max(lut).bit_length(), 1))
        elif unit == "argmax":
            cols = graph.value_type(node.inputs[0]).shape[-1]
            scores = int(bool(a.get("scores")))
            progs.append({"cols": cols, "scores": scores, "total": 1 + cols * scores})
        elif unit == "anomaly":
            cols = view(graph.value_type(node.inputs[0]))[1]
            mx, mr = ([int(v) for v in consts[a[k]].value.reshape(-1)] for k in ("mx", "mr"))
            progs.append({"numel": math.prod(view(graph.value_type(node.inputs[1]))), "offset": a.get("offset") or 0,
                          "features": cols, "mx": [mx[f % len(mx)] for f in range(cols)],
                          "mr": [mr[f % len(mr)] for f in range(cols)], "shift": a["shift"],
                          "threshold": a["threshold"], "qmax": out.qmax})
        elif unit == "layernorm":
            rows, cols = view(node.out)
            if a["recip_bits"] < a["norm_bits"]:
                raise HwgenError(f"node {node.name!r} (layernorm): recip_bits < norm_bits")
            gamma, beta = (consts[a[k]].value.reshape(-1) for k in ("gamma", "beta"))
            progs.append({"rows": rows, "cols": cols, "p_base": len(ln_params), "recip_bits": a["recip_bits"],
                          "n_shift": a["recip_bits"] - a["norm_bits"], "shift": a["shift"],
                          "q1_bits": wd["sumsq"], **q})
            ln_params += [(int(gamma[c % gamma.size]), int(beta[c % beta.size])) for c in range(cols)]
            _wmax(d, unit, "recip_bits", a["recip_bits"])
    _pack_roms(d, weights, lin_params, aff_params, ln_params, luts)
    return d


def _find_chains(d: Design) -> None:
    """Chain an add, affine or avgpool node onto the node just before it when it consumes that node's output: it
    then takes the elements from the producer's output stream and runs concurrently with it.

    Allowed only when the chain's units are distinct and the chained node's other operand is neither
    written nor read by the chain (each flat memory has one read port)."""
    nodes = d.graph.nodes
    for j, node in enumerate(nodes):
        d.head.append(j)
        if j == 0 or node.op not in ("add", "affine", "avgpool"):
            continue
        prev = nodes[j - 1]
        pos = [p for p, name in enumerate(node.inputs) if name == prev.name]
        if len(pos) != 1 or (node.op != "add" and pos != [0]):
            continue
        members = range(d.head[j - 1], j)
        if UNIT_OF[node.op] in {UNIT_OF[nodes[k].op] for k in members}:
            continue
        busy = {name for k in members for name in (*nodes[k].inputs, nodes[k].name)}
        if any(name in busy for p, name in enumerate(node.inputs) if p != pos[0]):
            continue
        d.head[j] = d.head[j - 1]
        d.streamed[j] = pos[0]


def _matmul_program(d: Design, node, weights: list[int], lin_params: list, q: dict) -> MatmulProgram:
    graph, P, a = d.graph, d.lanes, node.attrs
    common = {"name": node.name, "relu": bool(a.get("relu", False)), **q}
    if node.op == "linear":
        rows, k_len = view(graph.value_type(node.inputs[0]))
        rows = rows if a.get("rows") is None else a["rows"]  # the first rows of a row-major buffer
        w = graph.consts[a["weight"]].value
        n_len = w.shape[0]
        group = balanced(n_len, P)
        groups = -(-n_len // group)
        base = len(weights)
        for k in range(k_len):
            for g in range(groups):
                ns = range(g * group, min(g * group + group, n_len))
                weights.append([int(w[n, k]) for n in ns] + [0] * (P - len(ns)))
        _wmax(d, "matmul", "b", sbits(graph.consts[a["weight"]].dtype))
        bias = graph.consts[a["bias"]].value.reshape(-1) if a.get("bias") else [0]
        m0, sh = (graph.consts[a[k]].value.reshape(-1) for k in ("m0", "shift"))
        p_base = len(lin_params)
        lin_params += [(int(bias[n % len(bias)]), int(m0[n % m0.size]), int(sh[n % sh.size])) for n in range(n_len)]
        shl = {}
        if a.get("in_shl"):
            shl = {"shl_base": len(d.shl_table), "use_shl": True}
            d.shl_table += [int(v) for v in graph.consts[a["in_shl"]].value.reshape(-1)]
        return MatmulProgram(group=group, outer=rows, inner=1, groups=groups, k_len=k_len, n_len=n_len, a_o=k_len, a_u=0,
                             b_base=base, b_o=0, b_u=0, b_k=groups, per_channel=True, p_base=p_base, m0=0,
                             shift=0, **shl, **common)
    lay = d.plan.wide[d.plan.wide_key(graph, node)]
    _wmax(d, "matmul", "b", d.sbits_of(node.inputs[1]))
    _wmax(d, "matmul", "m0", signed_width(a["m0"]))
    scalar = {"per_channel": False, "p_base": 0, "m0": a["m0"], "shift": a["shift"]}
    if node.op == "attn_scores":
        (lq, c), heads = graph.value_type(node.inputs[0]).shape, a["heads"]
        dh, wt = c // heads, lay.words_per_row
        return MatmulProgram(group=lay.lanes, outer=heads, inner=lq, groups=wt, k_len=dh, n_len=lay.rows, a_o=dh, a_u=c,
                             b_base=0, b_o=dh * wt, b_u=0, b_k=wt, **scalar, **common)
    heads, lq, lk = graph.value_type(node.inputs[0]).shape
    dh = lay.cols // heads
    gd = -(-dh // lay.lanes)
    return MatmulProgram(group=lay.lanes, outer=lq, inner=heads, groups=gd, k_len=lk, n_len=dh, a_o=lk, a_u=lq * lk,
                         b_base=0, b_o=0, b_u=gd, b_k=lay.words_per_row, **scalar, **common)


def _pack_roms(d: Design, weights, lin_params, aff_params, ln_params, luts) -> None:
    P, w = d.lanes, d.widths
    if weights:
        bw = w["matmul"]["b"]
        d.roms["weights"] = (P * bw, [_pack(word, bw) for word in weights])
    mm = w.get("matmul", {})
    if lin_params:
        mm["bias"] = signed_width(*[p[0] for p in lin_params])
        mm["m0"] = max(mm.get("m0", 2), signed_width(*[p[1] for p in lin_params]))
    if "matmul" in w:
        mm.setdefault("bias", 2)
        mm.setdefault("m0", 2)
        d.roms["lin_params"] = (mm["bias"] + mm["m0"] + 8,
                                [_pack_fields(p, (mm["bias"], mm["m0"], 8)) for p in lin_params] or [0])
    if aff_params:
        af = w["affine"]
        af["mul"], af["bias"] = (signed_width(*[p[i] for p in aff_params]) for i in (0, 1))
        d.roms["aff_params"] = (af["mul"] + af["bias"] + 8,
                                [_pack_fields(p, (af["mul"], af["bias"], 8)) for p in aff_params])
    if ln_params:
        ln = w["layernorm"]
        ln["gamma"], ln["beta"] = (signed_width(*[p[i] for p in ln_params]) for i in (0, 1))
        d.roms["ln_params"] = (ln["gamma"] + ln["beta"], [_pack_fields(p, (ln["gamma"], ln["beta"])) for p in ln_params])
    if luts:
        d.roms["lut"] = (w["softmax"]["lut"], luts)


def _pack_fields(values, widths) -> int:
    word, pos = 0, 0
    for v, bits in zip(values, widths):
        word |= raw(v, bits) << pos
        pos += bits
    return word
