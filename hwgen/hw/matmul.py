"""The matrix-product unit: linear, conv1d, attn_scores and attn_apply on one shared MAC array.

Every product is ``out[h][i][n] = requantize(sum_k A[h][i][k] * B[h][k][n] + bias[n])``. Lane ``l``
computes output channel ``n = g * group + l`` of group ``g`` (``group`` <= P lanes, the outputs split
evenly over the groups); the broadcast operand ``A`` is one element of a
flat buffer, ``B`` one wide word (P weights of the weight ROM, or P elements of the wide K/V copy).
Finished groups are drained through one shared requantizer, one element per cycle, while the next group
accumulates; a new group starts no sooner than max(K, lanes of the previous group) cycles after the
previous one, so the drain never falls behind.

Row pairs (``MatmulProgram.pair``, chosen by ``MatmulUnit.arrange``): a product whose outputs fit one group
and whose reduction is longer than its outputs (``k_len > n_len``) runs two rows at a time. Each beat reads
the broadcast operand of both rows (a second read port, ``a2_addr``), every lane's one multiplier forms
both rows' products (``MacArray`` ``pack``: two 8-bit products in one 25 x 18 DSP48E1), and the drain
sends the first row's sums, then the second's, so the writes stay in row-major order. A pair takes
max(K, 2 * outputs) cycles where two single rows take 2 * max(K, outputs).

``conv1d`` runs as a linear over its K * C_in im2col inputs: output row o, reduction index j = k * C_in + c
reads the broadcast operand at input row o * stride + k * dilation - pad_left, column c, in place (no
im2col buffer); for a row in the padding (outside 0..L-1) the read goes to address 0 and the operand is
forced to 0. The cycles are the linear's over K * C_in inputs;
the row and address counters that do this exist only in a design with a conv1d node.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hwgen.hw.mac import MacArray
from hwgen.hw.memory import balanced, view
from hwgen.hw.program import Lowered, config_registers, counter_bits, signed_width
from hwgen.hw.requant import Requantizer
from hwgen.hw.shiftadd import delayed
from hwgen.ops import OPS, Unit, sbits
from hwgen.ops.conv1d import Conv1d


@dataclass(frozen=True)
class MatmulProgram:
    """Loop bounds and address strides of one product node (see the module docstring).

    Loops run o < outer, u < inner, g < groups, k < k_len; (h, i) is (o, u) if the head loop is outer.
    A address = o * a_o + u * a_u + k; B address = b_base + o * b_o + u * b_u + k * b_k + g.
    """

    name: str
    group: int  # lanes used per group (<= P): outputs n = g * group + lane
    outer: int
    inner: int
    groups: int
    k_len: int
    n_len: int
    a_o: int
    a_u: int
    b_base: int
    b_o: int
    b_u: int
    b_k: int
    per_channel: bool  # linear: bias/m0/shift from the parameter ROM at p_base + n
    p_base: int
    m0: int
    shift: int
    zp: int
    qmin: int
    qmax: int
    relu: bool
    shl_base: int = 0  # per-embedding-group input: A operand k is shifted left by shl_table[shl_base + k]
    use_shl: bool = False
    # conv1d (``conv``): A address = t_adr + c - pad_adr for the tap's input row t_row (t_adr = t_row * C_in,
    # both counted from pad_left rows before the input), read only when pad <= t_row < row_end (= L + pad).
    # Each tap moves t_row on by t_step (the dilation) rows, each output row by o_step (the stride).
    conv: bool = False
    c_in: int = 0
    t_step: int = 0
    t_adr_step: int = 0
    o_step: int = 0
    o_adr_step: int = 0
    pad: int = 0
    pad_adr: int = 0
    row_end: int = 0
    pair: bool = False  # rows (the outer loop) two at a time: see the module docstring

    @property
    def outputs(self) -> int:
        return self.outer * self.inner * self.n_len

    @property
    def c_last(self) -> int:
        return max(self.c_in - 1, 0)

    @property
    def conv_span(self) -> int:
        """A bound on every conv1d row and address counter and setting (0 for other products)."""
        if not self.conv:
            return 0
        return (self.outer * self.o_step + (self.k_len // self.c_in + 1) * self.t_step + self.pad + 1) * self.c_in


class MatmulUnit(Lowered, wiring.Component):
    """Runs the product node ``sel`` of ``programs`` on ``start``; pulses ``done`` after its last write.

    Reads: ``a_addr`` (with ``a_en``) returns the element in ``a_data`` two cycles later (the memory, then
    a register of the top level on its output); ``b_addr`` the wide word in ``b_data``, also two cycles
    later; ``p_addr`` the per-channel parameter word ``p_data`` ({shift, m0, bias}); with a paired program
    (``pack`` > 0), ``a2_addr`` the second row's element in ``a2_data``, alongside ``a_data``.
    Writes: ``w_valid``/``w_data`` emit the output elements in row-major order.
    """

    kind = Unit.MATMUL
    RESCALE_DSPS = 1  # the requantizer's acc * m0
    FABRIC_CAPABLE = True
    # Yosys splits the requantizer's product over two DSP48E1 once the accumulator is this wide (measured:
    # W8 reference, 25-bit accumulator, 20 DSPs at P=13, 27 at P=20; W6/W4, 23/22 bits, 19 at P=13).
    ACC_SPLIT_BITS = 25
    TAIL = 15  # start, operand reads (2), MAC pipeline (6), drain (2) and requantizer (4), done
    # The conv1d row and address counters (built only for a graph with a conv1d node): LUTs and flip-flops
    # a + b * P, fitted to Yosys synth_xilinx 0.70 of one graph (window 24, 7 features, d 16) with a K = 3
    # causal conv1d stem against the same graph with a linear stem: +136 LUT / +63 FF at P = 4, +180 / +110
    # at P = 16 (the lanes' accumulators grow with the K * C_in reduction too); at P = 8, +153 / +79
    # measured against 151 / 79 from the fit.
    CONV_LOGIC = ((121.3, 3.67), (47.3, 3.92))

    @classmethod
    def program(cls, design, index, node, wd, q) -> MatmulProgram:
        graph, P, a = design.graph, design.lanes, node.attrs
        common = {"name": node.name, "relu": bool(a.get("relu", False)), **q}
        wide = design.plan.wide_key(graph, node)
        if wide is None:  # linear and conv1d: the weights stream from the weight ROM, P per word
            weights = design.params.setdefault("weights", [])
            lin_params = design.params.setdefault("lin_params", [])
            w = graph.consts[a["weight"]].value
            conv = {}
            if node.op == "conv1d":  # the [C_out, K, C_in] weight as [C_out, K * C_in], the im2col columns
                geo = Conv1d.geometry(graph, node)
                rows, k_len, c = geo.out_rows, geo.kernel * geo.c_in, geo.c_in
                w = w.reshape(w.shape[0], k_len)
                conv = {"conv": True, "c_in": c, "t_step": geo.dilation, "t_adr_step": geo.dilation * c,
                        "o_step": geo.stride, "o_adr_step": geo.stride * c, "pad": geo.pad_left,
                        "pad_adr": geo.pad_left * c, "row_end": geo.rows + geo.pad_left}
            else:
                rows, k_len = view(graph.value_type(node.inputs[0]))
                rows = rows if a.get("rows") is None else a["rows"]  # the first rows of a row-major buffer
            n_len = w.shape[0]
            group = balanced(n_len, P)
            groups = -(-n_len // group)
            base = len(weights)
            for k in range(k_len):
                for g in range(groups):
                    ns = range(g * group, min(g * group + group, n_len))
                    weights.append([int(w[n, k]) for n in ns] + [0] * (P - len(ns)) if design.images else None)
            design.wmax(cls.kind, "b", sbits(graph.consts[a["weight"]].dtype))
            bias = graph.consts[a["bias"]].value.reshape(-1) if a.get("bias") else [0]
            m0, sh = (graph.consts[a[k]].value.reshape(-1) for k in ("m0", "shift"))
            p_base = len(lin_params)
            lin_params += [(int(bias[n % len(bias)]), int(m0[n % m0.size]), int(sh[n % sh.size]))
                           for n in range(n_len)]
            shl = {}
            if a.get("in_shl"):
                shl = {"shl_base": len(design.shl_table), "use_shl": True}
                design.shl_table += [int(v) for v in graph.consts[a["in_shl"]].value.reshape(-1)]
            return MatmulProgram(group=group, outer=rows, inner=1, groups=groups, k_len=k_len, n_len=n_len,
                                 a_o=0 if conv else k_len, a_u=0, b_base=base, b_o=0, b_u=0, b_k=groups,
                                 per_channel=True, p_base=p_base, m0=0, shift=0, **shl, **conv, **common)
        lay = design.plan.wide[wide]
        design.wmax(cls.kind, "b", design.sbits_of(node.inputs[1]))
        design.wmax(cls.kind, "m0", signed_width(a["m0"]))
        scalar = {"per_channel": False, "p_base": 0, "m0": a["m0"], "shift": a["shift"]}
        if wide[1] == "T":  # attn_scores: q (flat) against the transposed wide copy of k
            (lq, c), heads = graph.value_type(node.inputs[0]).shape, a["heads"]
            dh, wt = c // heads, lay.words_per_row
            return MatmulProgram(group=lay.lanes, outer=heads, inner=lq, groups=wt, k_len=dh, n_len=lay.rows,
                                 a_o=dh, a_u=c, b_base=0, b_o=dh * wt, b_u=0, b_k=wt, **scalar, **common)
        # attn_apply: the probabilities (flat) against the per-head wide copy of v
        heads, lq, lk = graph.value_type(node.inputs[0]).shape
        dh = lay.cols // heads
        gd = -(-dh // lay.lanes)
        return MatmulProgram(group=lay.lanes, outer=lq, inner=heads, groups=gd, k_len=lk, n_len=dh, a_o=lk,
                             a_u=lq * lk, b_base=0, b_o=0, b_u=gd, b_k=lay.words_per_row, **scalar, **common)

    @classmethod
    def arrange(cls, design):
        """Pair rows where it pays and the operands allow it: a linear (not conv1d, no per-group input
        shifts, not waiting for the input) or a one-head attn_apply whose outputs fit one group, with an
        even number of rows and ``k_len > n_len``; one packing position S for the unit (the widest
        product's signed width), each candidate checked against it (``MacArray.pair_fits``); records
        ``widths[MATMUL]["pack"]`` = S when any node pairs."""
        progs = design.programs.get(cls.kind, [])
        if not design.pair_rows or design.multiplier != "generic" or design.widths[cls.kind].get("b", 1) > 18:
            return
        graph, nodes = design.graph, design.graph.nodes
        index = {sel: i for i, (kind, sel) in enumerate(design.node_unit) if kind is cls.kind}
        cands = {}
        for sel, prog in enumerate(progs):
            node = nodes[index[sel]]
            if node.op not in ("linear", "attn_apply") or prog.conv or prog.use_shl:
                continue
            if index[sel] == 0 and design.load_overlap:
                continue
            if prog.inner != 1 or prog.groups != 1 or prog.outer < 2 or prog.outer % 2 or prog.k_len <= prog.n_len:
                continue
            a = graph.value_type(node.inputs[0]).dtype
            b = graph.consts[node.attrs["weight"]].dtype if node.op == "linear" else graph.value_type(
                node.inputs[1]).dtype
            ra, rb = (a.qmin, a.qmax), (b.qmin, b.qmax)
            cands[sel] = (ra, rb, signed_width(*[x * y for x in ra for y in rb]))
        while cands:  # the widest products first: without them, the others may pack at a smaller S
            pack = max(c[2] for c in cands.values())
            fit = {sel: c for sel, c in cands.items() if MacArray.pair_fits(pack, c[0], c[1])}
            if len(fit) == len(cands):
                break
            cands = {sel: c for sel, c in cands.items() if c[2] < pack or sel in fit}
        if not cands:
            return
        for sel in cands:
            progs[sel] = replace(progs[sel], pair=True)
            node = nodes[index[sel]]
            design.wmax(cls.kind, "pair_acc", dict(node.attrs.get("widths") or OPS[node.op].widths(graph, node))["acc"])
        design.wmax(cls.kind, "pack", pack)

    @classmethod
    def finish(cls, design):
        mm = design.widths[cls.kind]
        weights, lin_params = design.params.get("weights"), design.params.get("lin_params", [])
        if weights:
            bw = mm["b"]
            design.roms["weights"] = (design.lanes * bw, [design.pack(word, bw) for word in weights])
        if lin_params:
            mm["bias"] = signed_width(*[p[0] for p in lin_params])
            mm["m0"] = max(mm.get("m0", 2), signed_width(*[p[1] for p in lin_params]))
        mm.setdefault("bias", 2)
        mm.setdefault("m0", 2)
        design.roms["lin_params"] = (mm["bias"] + mm["m0"] + 8,
                                     [design.pack_fields(p, (mm["bias"], mm["m0"], 8)) for p in lin_params] or [0])

    @classmethod
    def make(cls, design, programs, addr_width):
        u = design.widths[cls.kind]
        return cls(programs, lanes=design.lanes, a_width=u["in"], b_width=u["b"], acc_width=u["acc"],
                   m0_width=u["m0"], bias_width=u["bias"], out_width=u["out"], addr_width=addr_width,
                   shl_table=design.shl_table, fabric=cls.kind in design.fabric, gated=design.load_overlap,
                   multiplier=design.multiplier, pack=u.get("pack", 0), pair_acc_width=u.get("pair_acc", 0))

    WRITES_IN_ORDER = True
    GATED_OPS = ("linear",)

    @classmethod
    def gated_cycles(cls, design, prog, ready) -> int:
        """``cycles`` of a node whose operand reads wait (``gated_times``): done follows the last write."""
        return cls.gated_times(design, prog, ready)[-1] + 2

    @staticmethod
    def _spans(prog):
        """Per group in schedule order: (cycles until the next group may start, outputs it drains)."""
        spans, rows = [], 1 + prog.pair
        for _ in range(prog.outer * prog.inner // rows):
            for g in range(prog.groups):
                nv = rows * min(prog.group, prog.n_len - g * prog.group)
                spans.append((max(prog.k_len, nv), nv))
        return spans

    @classmethod
    def cycles(cls, design, prog):
        spans = cls._spans(prog)
        return sum(s for s, _ in spans[:-1]) + prog.k_len + spans[-1][1] + cls.TAIL + cls.rescale_delay(design)

    @classmethod
    def gated_times(cls, design, prog, ready=None) -> list[int]:
        """The cycle (from ``start``) of each output write, in address order. ``ready``: the broadcast
        operand is still being written and its element at A address a can be read from cycle ``ready[a]`` on
        (linear nodes); None: nothing waits (``write_times``)."""
        if ready is not None and prog.conv:
            raise ValueError("a conv1d node's operand reads cannot wait for their elements")
        if ready is not None and prog.pair:
            raise ValueError("a node whose rows pair cannot wait for its operand")
        times, t, free = [], 0, 1  # free: the earliest cycle of the next group's first beat
        lag = cls.TAIL - 1 + cls.rescale_delay(design)
        rows = 1 + prog.pair  # a pair's drain sends both rows' sums, one after the other
        for o in range(prog.outer // rows):
            for u in range(prog.inner):
                for g in range(prog.groups):
                    nv = rows * min(prog.group, prog.n_len - g * prog.group)
                    for k in range(prog.k_len):
                        t = max(t + 1, free if k == 0 else 0,
                                0 if ready is None else ready[o * rows * prog.a_o + u * prog.a_u + k])
                    # the group's writes follow its last beat; the next group's first beat waits until
                    # this group's sums have drained (max(nv - k_len, 0) cycles after its last beat)
                    times += [t + lag + e for e in range(nv)]
                    free = t + 1 + max(nv - prog.k_len, 0)
        return times

    @classmethod
    def write_times(cls, design, prog):
        return cls.gated_times(design, prog)

    @classmethod
    def dsps(cls, design):
        if cls.kind in design.fabric:
            return 0
        return cls.RESCALE_DSPS + int(design.widths[cls.kind].get("acc", 0) >= cls.ACC_SPLIT_BITS)

    @classmethod
    def fabric_products(cls, design):
        return [(design.widths[cls.kind].get("acc", 0) + 1, 17)]

    @classmethod
    def extra_logic(cls, design):
        if not any(p.conv for p in design.programs.get(cls.kind, [])):
            return 0.0, 0.0
        (la, lb), (fa, fb) = cls.CONV_LOGIC
        return la + lb * design.lanes, fa + fb * design.lanes

    @classmethod
    def resource_terms(cls, design):
        # lanes x accumulator bits: the accumulate adder and mux, the hold register and the drain's
        # lane multiplexer; 16 loop counters and address adders; the requantizer (product, round, clamp)
        t = super().resource_terms(design)
        w, lanes, ps = design.widths[cls.kind], design.lanes, design.programs[cls.kind]
        acc, m0, out = w["acc"], w.get("m0", 2), w["out"]
        big = max(max(p.outputs, p.outer * max(p.a_o, p.b_o), p.b_base + p.outer * p.b_o + p.inner * p.b_u
                      + p.k_len * p.b_k + p.groups, lanes * p.groups) for p in ps) + lanes + 64 + len(design.shl_table)
        cw = counter_bits(big + 1)
        prod = acc + m0 + 2
        # row pairs: a second accumulator, hold register and drain input per lane
        t.update(lane=lanes * acc * (2 if w.get("pack") else 1), count=16 * cw, reg=3 * acc + m0 + out + prod,
                 arith=acc + 3 * out, shift=prod)
        return t

    def __init__(self, programs: list[MatmulProgram], *, lanes: int, a_width: int, b_width: int,
                 acc_width: int, m0_width: int, bias_width: int, out_width: int, addr_width: int,
                 shl_table: list[int] | None = None, fabric: bool = False, gated: bool = False,
                 multiplier: str = "generic", pack: int = 0, pair_acc_width: int = 0):
        if not programs:
            raise ValueError("a MatmulUnit needs at least one program, not an empty list")
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        self.programs, self.lanes, self.fabric, self.gated_reads = programs, lanes, fabric, gated
        self.multiplier = multiplier  # the MAC lanes' multiplier (``MacArray``: "generic" or "ecp5")
        self.pack = pack if any(p.pair for p in programs) else 0  # row pairs' packing position (0: none)
        # the second accumulators: the paired rows' sums, and the high parts of an unpaired sum
        self.acc2_width = min(max(pair_acc_width, acc_width - self.pack), acc_width) if self.pack else 0
        if any(p.pair for p in programs) and not pack:
            raise ValueError("a program pairs rows but the unit has no packing position (pack)")
        # Per-embedding-group inputs: one small table of left shifts for the broadcast operand (the group
        # partial sums rescaled by exact powers of two); absent, and no logic at all, without groups.
        self.shl_table = [int(v) for v in (shl_table or [])]
        if any(v < 0 for v in self.shl_table):
            raise ValueError("shl_table entries must be >= 0")
        self.acc_width, self.m0_width, self.bias_width = acc_width, m0_width, bias_width
        self.out_width = out_width
        self.p_width = bias_width + m0_width + 8
        super().__init__({
            "start": In(1), "sel": In(range(len(programs))), "done": Out(1),
            "a_addr": Out(addr_width), "a_en": Out(1), "a_data": In(signed(a_width)),
            "b_addr": Out(addr_width), "b_data": In(data.ArrayLayout(signed(b_width), lanes)),
            "p_addr": Out(addr_width), "p_data": In(unsigned(self.p_width)),
            "w_valid": Out(1), "w_data": Out(signed(out_width + 1)),
            "gated": In(1), "avail": In(addr_width),
            **({"a2_addr": Out(addr_width), "a2_data": In(signed(a_width))} if self.pack else {}),
        })

    def elaborate(self, platform):
        m = Module()
        P = self.lanes
        big = max(max(p.outputs, p.outer * max(p.a_o, p.b_o), p.b_base + p.outer * p.b_o + p.inner * p.b_u
                      + p.k_len * p.b_k + p.groups, P * p.groups, p.conv_span) for p in self.programs) + P + 64
        big += len(self.shl_table)
        conv = any(p.conv for p in self.programs)
        cnt = lambda: Signal(range(big + 1))  # noqa: E731
        names = ("group", "outer", "inner", "groups", "k_len", "n_len", "a_o", "a_u", "b_base", "b_o", "b_u",
                 "b_k", "per_channel", "p_base", "shift", "relu", "outputs")
        if self.shl_table:
            names += ("shl_base", "use_shl")
        if conv:
            names += ("conv", "c_last", "t_step", "t_adr_step", "o_step", "o_adr_step", "pad", "pad_adr", "row_end")
        if self.pack:
            names += ("pair",)
        shapes = {n: unsigned(len(cnt())) for n in names}
        shapes.update({"m0": signed(self.m0_width + 1), "zp": signed(self.out_width + 1),
                       "qmin": signed(self.out_width + 1), "qmax": signed(self.out_width + 1)})
        # Loop limits minus one, so the end-of-loop tests compare a counter with a register.
        # And the group arithmetic's constants: the first group's lanes, group - 1, group + 1, 2 * group.
        lasts = {"k_last": "k_len", "groups_last": "groups", "inner_last": "inner", "outer_last": "outer"}
        derived = {"nv0": lambda p: min(p.n_len, p.group), "nv0_m1": lambda p: min(p.n_len, p.group) - 1,
                   "group_m1": lambda p: p.group - 1, "group_p1": lambda p: p.group + 1,
                   "group2": lambda p: 2 * p.group}
        if self.pack:  # a pair: the outer loop over row pairs, the drain count (for the gap) of both rows
            derived["nv0_m1"] = lambda p: (1 + p.pair) * min(p.n_len, p.group) - 1
        shapes.update({n: unsigned(len(cnt())) for n in (*lasts, *derived)})
        table = [{n: int(getattr(prog, n)) for n in shapes if n not in lasts and n not in derived}
                 | {n: int(getattr(prog, f)) - 1 for n, f in lasts.items()}
                 | {n: int(f(prog)) for n, f in derived.items()} for prog in self.programs]
        for row, prog in zip(table, self.programs):
            if prog.pair:
                row.update(outer_last=prog.outer // 2 - 1, a_o=2 * prog.a_o)
        cfg = config_registers(m, self.start, self.sel, table, shapes)
        max_shl = max(self.shl_table, default=0)
        m.submodules.mac = mac = MacArray(P, len(self.a_data) + max_shl, len(self.b_data[0]), self.acc_width,
                                          tag_width=len(cnt()) + len(self.p_addr), multiplier=self.multiplier,
                                          pack=self.pack, acc2_width=self.acc2_width)
        m.submodules.rq = rq = Requantizer(self.acc_width + 1, self.m0_width + 1, 8, self.out_width,
                                              fabric=self.fabric)

        # ---- issue: one beat per cycle over (o, u, g, k) --------------------------------------------------
        # The A and B addresses are registers (a_ptr = oa + ua + k, b_ptr = b_base + ob + ub + kb + g), each
        # stepped by one addition from the registered row and group bases below, so no adder chain lies
        # between the counters and the memories. nv (the lanes of the current group) and rem (n_len - gp)
        # are registers too, loaded when the group changes.
        o, u, g, k, gp, cool = (cnt() for _ in range(6))
        oa, a_row, a_ptr = cnt(), cnt(), cnt()  # oa, oa + ua, oa + ua + k
        # row pairs: the second row's pointers (each the first's plus a_pair), stepped alongside
        oa2, a_row2, a_ptr2 = (cnt() for _ in range(3)) if self.pack else (None, None, None)
        b_orow, b_urow, b_grp, b_ptr = cnt(), cnt(), cnt(), cnt()  # b_base + ob (+ ub (+ g)), + kb
        rem, nv, nv_m1 = cnt(), cnt(), cnt()  # n_len - gp, the group's lanes, and one less
        running = Signal()
        # after a group's last beat, the next group's first waits max(nv - k_len, 0) cycles, so its sums
        # never reach the hold registers before this group's nv sums have drained (also when beats stall)
        idle_after = Mux(nv_m1 > cfg["k_last"], nv_m1 - cfg["k_last"], 0)
        # gated (the operand still being written, ``avail`` elements so far): a beat waits for its element
        issue = running & ((k != 0) | (cool == 0))
        if self.gated_reads:  # built only for a design whose first node runs while the input arrives
            issue = issue & (~self.gated | (a_ptr < self.avail))
        last_k = k == cfg["k_last"]
        a_on = None  # conv1d: whether the operand read is inside the input (else 0), delayed to its data
        if conv:
            cc, t_row, t_adr, o_row, o_adr = (cnt() for _ in range(5))
            is_conv = cfg["conv"][0]
            inside = (t_row >= cfg["pad"]) & (t_row < cfg["row_end"])
            a_conv = Mux(inside, t_adr + cc - cfg["pad_adr"], 0)
            m.d.comb += self.a_addr.eq(Mux(is_conv, a_conv, a_ptr))
            on = Signal()
            m.d.sync += on.eq(~is_conv | inside)
            a_on = delayed(m, on, 1, "a_on")  # the operand arrives two cycles after its address
            next_o = (g == cfg["groups_last"]) & (u == cfg["inner_last"])
            with m.If(self.start):
                m.d.sync += [x.eq(0) for x in (cc, t_row, t_adr, o_row, o_adr)]
            with m.If(issue):
                m.d.sync += cc.eq(cc + 1)
                with m.If(cc == cfg["c_last"]):  # the next tap: dilation rows on
                    m.d.sync += [cc.eq(0), t_row.eq(t_row + cfg["t_step"]), t_adr.eq(t_adr + cfg["t_adr_step"])]
                with m.If(last_k):  # the window again for the next group, or the next output row's
                    m.d.sync += [cc.eq(0), t_row.eq(o_row), t_adr.eq(o_adr)]
                    with m.If(next_o):
                        m.d.sync += [o_row.eq(o_row + cfg["o_step"]), o_adr.eq(o_adr + cfg["o_adr_step"]),
                                     t_row.eq(o_row + cfg["o_step"]), t_adr.eq(o_adr + cfg["o_adr_step"])]
        else:
            m.d.comb += self.a_addr.eq(a_ptr)
        m.d.comb += [self.a_en.eq(issue), self.b_addr.eq(b_ptr)]
        with m.If(cool != 0):
            m.d.sync += cool.eq(cool - 1)
        with m.If(self.start):
            m.d.sync += [x.eq(0) for x in (o, u, g, k, oa, a_row, a_ptr, gp, cool)]
            m.d.sync += running.eq(1)
            with m.Switch(self.sel):  # the first group's bases and lanes, from the program itself
                for i, prog in enumerate(self.programs):
                    with m.Case(i):
                        m.d.sync += [x.eq(prog.b_base) for x in (b_orow, b_urow, b_grp, b_ptr)]
                        m.d.sync += [rem.eq(prog.n_len), nv.eq(derived["nv0"](prog)),
                                     nv_m1.eq(derived["nv0_m1"](prog))]
                        if self.pack:
                            m.d.sync += [y.eq(prog.a_o if prog.pair else 0) for y in (oa2, a_row2, a_ptr2)]
        with m.If(issue):
            m.d.sync += [k.eq(k + 1), a_ptr.eq(a_ptr + 1), b_ptr.eq(b_ptr + cfg["b_k"])]
            if self.pack:
                m.d.sync += [a_ptr2.eq(a_ptr2 + 1)]
            with m.If(last_k):
                m.d.sync += cool.eq(idle_after)
                # next group: rem - group left, nv = min(rem - group, group); the comparison and both
                # subtractions side by side
                short = rem < cfg["group2"]
                if self.pack:
                    m.d.sync += [a_ptr2.eq(a_row2)]
                m.d.sync += [k.eq(0), g.eq(g + 1), gp.eq(gp + cfg["group"]), a_ptr.eq(a_row),
                             b_grp.eq(b_grp + 1), b_ptr.eq(b_grp + 1), rem.eq(rem - cfg["group"]),
                             nv.eq(Mux(short, rem - cfg["group"], cfg["group"])),
                             nv_m1.eq(Mux(short, rem - cfg["group_p1"], cfg["group_m1"]))]
                with m.If(g == cfg["groups_last"]):
                    m.d.sync += [g.eq(0), gp.eq(0), u.eq(u + 1), rem.eq(cfg["n_len"]), nv.eq(cfg["nv0"]),
                                 nv_m1.eq(cfg["nv0_m1"]), a_row.eq(a_row + cfg["a_u"]),
                                 a_ptr.eq(a_row + cfg["a_u"])]
                    if self.pack:
                        m.d.sync += [a_row2.eq(a_row2 + cfg["a_u"]), a_ptr2.eq(a_row2 + cfg["a_u"])]
                    m.d.sync += [x.eq(b_urow + cfg["b_u"]) for x in (b_urow, b_grp, b_ptr)]
                    with m.If(u == cfg["inner_last"]):
                        m.d.sync += [u.eq(0), o.eq(o + 1)]
                        m.d.sync += [x.eq(oa + cfg["a_o"]) for x in (oa, a_row, a_ptr)]
                        if self.pack:
                            m.d.sync += [x.eq(oa2 + cfg["a_o"]) for x in (oa2, a_row2, a_ptr2)]
                        m.d.sync += [x.eq(b_orow + cfg["b_o"]) for x in (b_orow, b_urow, b_grp, b_ptr)]
                        with m.If(o == cfg["outer_last"]):
                            m.d.sync += running.eq(0)
        # Operand data arrives two cycles after the address: delay the beat's control to meet it.
        beat_v, beat_f, beat_l, beat_tag = Signal(), Signal(), Signal(), Signal.like(mac.tag)
        m.d.sync += [beat_v.eq(issue), beat_f.eq(k == 0), beat_l.eq(last_k),
                     beat_tag.eq(Cat(nv, (cfg["p_base"] + gp)[:len(self.p_addr)]))]
        beat_v, beat_f, beat_l, beat_tag = (delayed(m, x, 1, n) for x, n in
                                            ((beat_v, "beat_v"), (beat_f, "beat_f"), (beat_l, "beat_l"),
                                             (beat_tag, "beat_tag")))
        m.d.comb += [mac.valid.eq(beat_v), mac.first.eq(beat_f), mac.last.eq(beat_l), mac.tag.eq(beat_tag),
                     mac.b.eq(self.b_data)]
        if self.pack:  # the second row's element, read alongside the first's
            m.d.comb += [self.a2_addr.eq(a_ptr2), mac.a2.eq(self.a2_data), mac.pair.eq(cfg["pair"][0])]
        if self.shl_table:
            # The shift of input channel k is read with the operand's address and arrives with its data.
            m.submodules.shl_rom = rom = Memory(shape=unsigned(max(max_shl.bit_length(), 1)),
                                                depth=len(self.shl_table), init=self.shl_table)
            rd = rom.read_port()
            m.d.comb += rd.addr.eq(cfg["shl_base"] + k)
            use = Signal()
            m.d.sync += use.eq(cfg["use_shl"][0])
            shl = delayed(m, rd.data, 1, "shl")
            a_val = Mux(use, self.a_data << shl, self.a_data)
        else:
            a_val = self.a_data
        m.d.comb += mac.a.eq(a_val if a_on is None else Mux(a_on, a_val, 0))

        # ---- drain: one finished lane per cycle into the requantizer --------------------------------------
        d_left, d_paddr = cnt(), Signal.like(self.p_addr)
        wn = len(cnt())
        # The drain starts in the cycle the sums appear, so it ends before the next group's sums can. The
        # parameter words are read one cycle ahead of their lane (the MAC announces its sums a cycle early),
        # so they can be registered as they leave the block RAM: the group's first address (p_base + gp,
        # carried in the tag), then one more per cycle.
        # The lanes are drained through lane 0 of the MAC's hold registers, shifted down one per cycle.
        cur_left = cnt()
        if not self.pack:
            m.d.comb += [cur_left.eq(Mux(mac.hold_valid, mac.hold_tag[:wn], d_left)),
                         self.p_addr.eq(Mux(mac.pre_valid, mac.pre_tag[wn:], d_paddr))]
            m.d.sync += d_paddr.eq(self.p_addr + 1)
            if self.multiplier == "ecp5":
                # ``cur_left != 0`` worked out a cycle ahead into a register: the hold registers' shift
                # enable (every lane's accumulator bits) starts from a flip-flop, not from the count's
                # multiplexer and comparator (the slowest routed paths of ECP5 builds)
                draining = Signal(name="draining")
                m.d.sync += draining.eq(Mux(mac.pre_valid, mac.pre_tag[:wn] != 0, draining & (cur_left != 1)))
            else:
                draining = cur_left != 0
            m.d.comb += mac.shift.eq(draining)
            with m.If(draining):
                m.d.sync += d_left.eq(cur_left - 1)
            drained = mac.hold[0]
        else:
            # a pair drains its first row (hold), then its second (hold2): after the first row's last lane
            # the count starts again, and so do the parameter words, from the group's first address
            m.d.comb += cur_left.eq(Mux(mac.hold_valid, mac.hold_tag[:wn], d_left))
            draining = cur_left != 0
            d_two, d_more = Signal(), Signal()  # draining the second row; the second row still to come
            cur_two = ~mac.hold_valid & d_two
            cur_more = Mux(mac.hold_valid, cfg["pair"][0], d_more)
            turn = draining & (cur_left == 1) & cur_more
            m.d.comb += [self.p_addr.eq(Mux(mac.pre_valid, mac.pre_tag[wn:], Mux(turn, mac.hold_tag[wn:], d_paddr))),
                         mac.shift.eq(draining & ~cur_two), mac.shift2.eq(draining & (cur_two | ~cfg["pair"][0]))]
            m.d.sync += d_paddr.eq(self.p_addr + 1)
            with m.If(draining):
                m.d.sync += [d_left.eq(cur_left - 1), d_two.eq(cur_two), d_more.eq(cur_more)]
                with m.If(turn):
                    m.d.sync += [d_left.eq(mac.hold_tag[:wn]), d_two.eq(1), d_more.eq(0)]
            # unpaired, a sum is its low part plus its high part * 2**S (modulo the accumulator width)
            whole = mac.hold[0] + Mux(cfg["pair"][0], 0, mac.hold2[0] << self.pack)
            drained = Mux(cur_two, mac.hold2[0], whole)
        sel_acc = Signal(signed(self.acc_width))
        dv1, dv2 = Signal(), Signal()
        p_r = Signal.like(self.p_data, name="p_r")
        m.d.sync += [sel_acc.eq(drained), dv1.eq(draining), p_r.eq(self.p_data)]
        bias = p_r[:self.bias_width].as_signed()
        m0 = p_r[self.bias_width:self.bias_width + self.m0_width].as_signed()
        shift = p_r[self.bias_width + self.m0_width:]
        pc = cfg["per_channel"][0]
        m.d.sync += [rq.acc.eq(sel_acc + Mux(pc, bias, 0)), rq.m0.eq(Mux(pc, m0, cfg["m0"])),
                     rq.shift.eq(Mux(pc, shift, cfg["shift"])), dv2.eq(dv1)]
        m.d.comb += [rq.i_valid.eq(dv2), rq.zp.eq(cfg["zp"]), rq.qmin.eq(cfg["qmin"]), rq.qmax.eq(cfg["qmax"]),
                     rq.relu.eq(cfg["relu"][0]), self.w_valid.eq(rq.o_valid), self.w_data.eq(rq.y)]

        # ---- completion: count the writes -----------------------------------------------------------------
        written = cnt()
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += written.eq(0)
        with m.Elif(rq.o_valid):
            m.d.sync += written.eq(written + 1)
            with m.If(written == cfg["outputs"] - 1):
                m.d.sync += self.done.eq(1)
        return m

