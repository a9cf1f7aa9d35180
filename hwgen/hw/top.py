"""The top level: input and output streams, the controller that runs the nodes in graph order, the
memories, the shared units, and the routing between them.

Contract: ``x`` takes the input tensor's elements one per beat, row-major; after the last input beat
the engine runs every node in order, then sends the output tensor row-major on ``y``. The input has a
buffer of its own (``plan_memory``), so the next window's input is taken while the current window still
computes and sends: ``x.ready`` is high in LOAD and again from the controller step after the last one that
reads the input (``Design.preload``) until the next window's input is complete. When the output has been
sent the next window starts at once if its whole input has arrived, else the load goes on in LOAD from the
element where it stopped. When the first node is a linear over the whole input (``Design.load_overlap``)
there is no LOAD state: the first node's step takes the input as it arrives and its reads wait for each
element. Synchronous reset returns to waiting for input.
"""

from __future__ import annotations

import math

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hwgen.hw.lower import Design
from hwgen.hw.memory import WideWriter, view
from hwgen.hw.units import UNITS
from hwgen.ops import Unit


def rom_attrs(name: str) -> dict[str, str]:
    """Synthesis attributes of constant ROM ``name``: the weight ROM goes into block RAM. Left to itself,
    Yosys synth_xilinx maps a 128-bit x 215-word weight ROM (16 lanes) into ~1,000 LUTs of logic."""
    return {"rom_style": "block"} if name == "weights" else {}


def _shape(dtype):
    return signed(dtype.bits) if dtype.signed else unsigned(dtype.bits)


class Top(wiring.Component):
    """The accelerator for one graph: ``x`` in (input elements), ``y`` out (output elements).

    One shared unit per op kind (MatmulUnit with the P MAC lanes for linear/conv1d/attn_scores/attn_apply,
    AddUnit, AffineUnit, AvgpoolUnit, SoftmaxUnit, LayerNormUnit); the controller steps through the nodes
    in graph order, and in each step routes the active unit's read ports to the memories holding that
    node's operands and its output stream to the buffer (and wide copies) of its output value. An add,
    affine or avgpool node right after its producer is chained: it runs in the producer's step, fed by
    the producer's output stream. A node overlapped with its producer (``Design.overlapped``: the softmax
    after the attention scores) also starts in the producer's step, sees the producer's writes on its
    ``in_valid``/``in_data`` and reads the producer's output from memory as it becomes complete. ``step`` and ``units`` are kept as attributes for inspection in tests.
    """

    def __init__(self, design: Design):
        self.design = design
        g = design.graph
        super().__init__({"x": In(stream.Signature(_shape(g.input_type.dtype))),
                          "y": Out(stream.Signature(_shape(g.output_type.dtype)))})

    @staticmethod
    def resource_terms(design: Design) -> dict[str, float]:
        """The controller's and the routing's structure as ``hwgen.estimate.model`` prices it: "route", the
        multiplexer input bits between memory ports and unit ports (per port, its width times the distinct
        units or memories on the other side; the flat buffers' write ports likewise); "steps", the
        controller's states times the address width (every routed port decodes the step); "count", the input
        and output indices, the units' write addresses and the wide copies' writer cursors."""
        g, plan, nodes = design.graph, design.plan, design.graph.nodes
        depths = [b[0] for b in plan.buffers] + [lay.depth for lay in plan.wide.values()]
        depths += [len(v) for v in plan.const_flat.values()] + [len(v) for v in design.params.values()]
        addr = max(max(depths, default=2), 2).bit_length() + 1
        sb = design.sbits_of
        sinks: dict[tuple, set] = {}  # (unit, port) -> memories feeding it
        users: dict[object, set] = {}  # memory port -> units addressing it
        writers: dict[int, set] = {}  # flat buffer -> units writing it
        widths: dict[tuple, int] = {}

        def read(kind, port, mem, bits):
            sinks.setdefault((kind, port), set()).add(mem)
            users.setdefault(mem, set()).add(kind)
            widths[(kind, port)] = bits

        def flat(name, index=0):
            return ("const", name) if name in g.consts else ("buf", plan.flat[name], index)

        for i, node in enumerate(nodes):
            kind = design.node_unit[i][0]
            streamed = design.streamed.get(i)
            if kind is Unit.MATMUL:
                read(kind, "a", flat(node.inputs[0]), sb(node.inputs[0]))
                if design.paired(i):
                    read(kind, "a2", flat(node.inputs[0], 1), sb(node.inputs[0]))
                key = plan.wide_key(g, node)
                bits = design.widths[kind]["b"] if key is None else sb(key[0])
                read(kind, "b", ("rom", "weights") if key is None else ("wide", key), design.lanes * bits)
                read(kind, "p", ("rom", "lin_params"), 1)
            else:
                if streamed is None:
                    read(kind, "rd0", flat(node.inputs[0]), sb(node.inputs[0]))
                second = UNITS[kind].second_read(node, streamed)
                if second is not None:
                    read(kind, "rd1", flat(second[0], second[1]), sb(second[0]))
                for rom, pre in UNITS[kind].ROM_PORTS:
                    read(kind, pre, ("rom", rom), 1)
            writers.setdefault(plan.flat[node.name], set()).add(kind)
        route = sum(widths[k] * len(v) for k, v in sinks.items() if len(v) > 1)
        route += sum(addr * len(v) for v in users.values() if len(v) > 1)
        route += sum((addr + sb(n.name) + 2) * len(writers[plan.flat[n.name]]) for n in nodes
                     if len(writers[plan.flat[n.name]]) > 1)
        count = sum(max(math.prod(view(t)), 1).bit_length() for t in (g.input_type, g.output_type))
        count += addr * len(design.programs)
        written = {plan.wide_slot[key] for key in plan.wide if key[0] not in g.consts}  # one writer per memory
        count += sum(8 * max(plan.wide_slots[s][0].depth, 1).bit_length() for s in written)
        return {"route": route, "steps": (len(design.steps) + 2) * addr, "count": count}

    # ---- construction helpers ------------------------------------------------------------------------
    def _units(self, d: Design) -> dict:
        return {kind: UNITS[kind].make(d, progs, self.addr_width) for kind, progs in d.programs.items()}

    def elaborate(self, platform):
        m = Module()
        d, g = self.design, self.design.graph
        plan, nodes = d.plan, g.nodes
        depths = [b[0] for b in plan.buffers] + [len(w) for _, w in d.roms.values()]
        depths += [lay.depth for lay in plan.wide.values()] + [len(v) for v in plan.const_flat.values()]
        self.addr_width = max(max(depths), 2).bit_length() + 1
        units = self.units = self._units(d)
        for kind, unit in units.items():
            m.submodules[f"u_{kind}"] = unit
        sb = d.sbits_of

        # ---- memories: flat activation buffers, constant ROMs, wide copies ----------------------------------
        flat_mem, flat_rd, flat_wr = {}, {}, {}
        for b, (depth, bits) in enumerate(plan.buffers):
            # As wide as the widest signed width of its values: every element is stored sign-extended.
            if b in d.distributed_buffers:  # moved out of block RAM (``hwgen.steps.build.candidate``)
                mem = Memory(shape=unsigned(bits), depth=depth, init=[], attrs={"ram_style": "distributed"})
            else:
                mem = Memory(shape=unsigned(bits), depth=depth, init=[])
            m.submodules[f"buf{b}"] = mem
            flat_mem[b], flat_rd[b], flat_wr[b] = mem, [], mem.write_port()
        rom_rd = {}
        for name, (bits, words) in sorted(d.roms.items()):
            mem = Memory(shape=unsigned(bits), depth=max(len(words), 1), init=words, attrs=rom_attrs(name))
            m.submodules[f"rom_{name}"] = mem
            rom_rd[name] = mem.read_port()
        const_mem, const_rd = {}, {}
        for name, words in sorted(plan.const_flat.items()):
            bits = sb(name)
            mem = Memory(shape=unsigned(bits), depth=len(words), init=[w & ((1 << bits) - 1) for w in words])
            m.submodules[f"const_{name.replace('.', '_')}"] = mem
            const_mem[name], const_rd[name] = mem, []
        # one memory (and writer) per wide slot: copies of one layout whose lifetimes do not overlap share it
        # (named after the first of its copies in key order, as when every copy had a memory of its own)
        wide_rd, writers, slot_rd, slot_wr = {}, {}, {}, {}
        for i, (key, lay) in enumerate(sorted(plan.wide.items())):
            slot, bits = plan.wide_slot[key], sb(key[0])
            if slot not in slot_rd:
                if key[0] in g.consts:
                    c = g.consts[key[0]].value.reshape(view(g.value_type(key[0]))).tolist()
                    mem = Memory(shape=unsigned(lay.lanes * bits), depth=lay.depth, init=lay.image(c, bits))
                else:
                    mem = Memory(shape=unsigned(lay.lanes * bits), depth=lay.depth, init=[])
                    slot_wr[slot] = WideWriter(lay, bits, mem.write_port(granularity=bits))
                    m.submodules[f"wide_writer{i}"] = slot_wr[slot]
                m.submodules[f"wide{i}"] = mem
                slot_rd[slot] = mem.read_port()
            if slot in slot_wr:
                writers.setdefault(key[0], []).append(slot_wr[slot])
            wide_rd[key] = slot_rd[slot]

        def source(name, port_index=0):
            """(read port, element bits) of a value read one element per word."""
            mems, ports = (const_mem, const_rd) if name in g.consts else (flat_mem, flat_rd)
            key = name if name in g.consts else plan.flat[name]
            while len(ports[key]) <= port_index:  # a second port only where two reads overlap
                ports[key].append(mems[key].read_port())
            return ports[key][port_index], sb(name)

        # ---- routing: for each step (node), which memory port each unit port reaches -----------------------
        n_in, n_out = (view(t)[0] * view(t)[1] for t in (g.input_type, g.output_type))
        in_idx = Signal(range(n_in + 1))  # the input elements of the window being taken
        n = len(nodes)
        step = self.step = Signal(range(n + 2))  # 0: load input, 1..n: node, n+1: send output
        addr_of = {}  # read port -> list of (step, addr)
        data_of = {}  # (unit port) -> list of (step, value)

        held = {}  # (port, unit data port) -> the register on that port's data for that unit

        def route(st, port, addr, data_sig, bits, lanes=None, registered=False):
            """In step ``st``, ``addr`` drives ``port`` and ``data_sig`` takes its (sign-extended) data:
            one element, or ``lanes`` elements of a wide word. ``registered``: the data passes a register
            of its own first (one more cycle), so the block RAM's output reaches a flip-flop with no logic
            in between and the step multiplexer starts from registers."""
            addr_of.setdefault(id(port), (port, []))[1].append((st, addr))
            data = port.data
            if registered:
                key = (id(port), id(data_sig))
                if key not in held:
                    held[key] = Signal(len(port.data), name=f"held{len(held)}")
                    m.d.sync += held[key].eq(port.data)
                data = held[key]
            if lanes is None:
                value = data[:bits].as_signed()
            else:
                value = [data[i * bits:(i + 1) * bits].as_signed() for i in range(lanes)]
            data_of.setdefault(id(data_sig), (data_sig, []))[1].append((st, value))

        for i, node in enumerate(nodes):
            st, (kind, _) = d.head[i] + 1, d.node_unit[i]  # chained nodes run in their head's step
            u = units[kind]
            streamed = d.streamed.get(i)
            if kind is Unit.MATMUL:  # the MAC array: a broadcast operand, a wide operand, parameter words
                if i == 0 and d.load_overlap:  # its operand reads wait for the input still arriving
                    with m.If(step == st):
                        m.d.comb += [u.gated.eq(1), u.avail.eq(in_idx)]
                port, bits = source(node.inputs[0])
                route(st, port, u.a_addr, u.a_data, bits, registered=True)
                if d.paired(i):  # row pairs: the second row on a second port
                    port, bits = source(node.inputs[0], port_index=1)
                    route(st, port, u.a2_addr, u.a2_data, bits, registered=True)
                key = plan.wide_key(g, node)
                if key is None:  # linear: the weight ROM
                    route(st, rom_rd["weights"], u.b_addr, u.b_data, d.widths[kind]["b"], d.lanes, registered=True)
                else:
                    route(st, wide_rd[key], u.b_addr, u.b_data, sb(key[0]), plan.wide[key].lanes, registered=True)
                route_raw = rom_rd["lin_params"]
                addr_of.setdefault(id(route_raw), (route_raw, []))[1].append((st, u.p_addr))
                data_of.setdefault(id(u.p_data), (u.p_data, []))[1].append((st, route_raw.data))
            else:
                held_reads = UNITS[kind].REGISTERED_READS
                if streamed is None:
                    port, bits = source(node.inputs[0])
                    route(st, port, u.rd0_addr, u.rd0_data, bits, registered=held_reads)
                else:
                    producer = units[d.node_unit[i - 1][0]]
                    with m.If(step == st):
                        m.d.comb += [u.in_valid.eq(producer.w_valid), u.in_data.eq(producer.w_data)]
                second = UNITS[kind].second_read(node, streamed)
                if second is not None:
                    port, bits = source(second[0], port_index=second[1])
                    route(st, port, u.rd1_addr, u.rd1_data, bits, registered=held_reads)
                if i in d.overlapped:  # it watches its producer's writes
                    producer = units[d.node_unit[d.overlapped[i]][0]]
                    with m.If(step == st):
                        m.d.comb += [u.in_valid.eq(producer.w_valid), u.in_data.eq(producer.w_data)]
                for rom, pre in UNITS[kind].ROM_PORTS:
                    port, a_sig, d_sig = rom_rd[rom], getattr(u, f"{pre}_addr"), getattr(u, f"{pre}_data")
                    addr_of.setdefault(id(port), (port, []))[1].append((st, a_sig))
                    data_of.setdefault(id(d_sig), (d_sig, []))[1].append((st, port.data))
        out_port, out_bits = source(g.output_name)
        send_addr = Signal(self.addr_width)
        addr_of.setdefault(id(out_port), (out_port, []))[1].append((n + 1, send_addr))
        for port, pairs in addr_of.values():
            with m.Switch(step):
                for st, addr in pairs:
                    with m.Case(st):
                        m.d.comb += port.addr.eq(addr)
        for sig, pairs in data_of.values():
            with m.Switch(step):
                for st, value in pairs:
                    with m.Case(st):
                        if isinstance(value, list):
                            m.d.comb += [sig[i].eq(v) for i, v in enumerate(value)]
                        else:
                            m.d.comb += sig.eq(value)

        # ---- writes: the active unit's output elements, in row-major order ----------------------------------
        node_start = Signal(init=int(d.load_overlap))  # out of reset the first step starts at once (load overlap)
        w_addr = {kind: Signal(self.addr_width, name=f"w_addr_{kind}") for kind in units}
        for kind, unit in units.items():
            with m.If(node_start):
                m.d.sync += w_addr[kind].eq(0)
            with m.Elif(unit.w_valid):
                m.d.sync += w_addr[kind].eq(w_addr[kind] + 1)
        for i, node in enumerate(nodes):
            kind = d.node_unit[i][0]
            u = units[kind]
            with m.If(step == d.head[i] + 1):
                wp = flat_wr[plan.flat[node.name]]
                m.d.comb += [wp.addr.eq(w_addr[kind]), wp.data.eq(u.w_data), wp.en.eq(u.w_valid)]
                for wr in writers.get(node.name, []):
                    m.d.comb += [wr.start.eq(node_start), wr.valid.eq(u.w_valid), wr.data.eq(u.w_data)]

        # ---- controller ----------------------------------------------------------------------------------------
        # The input is loaded in LOAD and, for the next window, from the step after its last reader on (and
        # in SEND): ``take`` says the state may take input, ``in_idx`` counts the window's elements taken.
        idx = Signal(range(n_out + 1))  # SEND: the output element read next
        take, accept = Signal(), Signal()
        m.d.comb += [self.x.ready.eq(take & (in_idx < n_in)), accept.eq(self.x.valid & self.x.ready)]
        last_in = accept & (in_idx == n_in - 1)  # this beat completes a window's input
        in_wp = flat_wr[plan.flat[g.input_name]]
        with m.If(take):
            m.d.comb += [in_wp.addr.eq(in_idx), in_wp.en.eq(accept), in_wp.data.eq(self.x.payload)]
        with m.If(accept):
            m.d.sync += in_idx.eq(in_idx + 1)
        for wr in writers.get(g.input_name, []):  # its cursor returns to 0 after each window's last element
            m.d.comb += [wr.valid.eq(accept), wr.data.eq(self.x.payload), wr.start.eq(last_in)]
        m.d.sync += node_start.eq(0)
        # With the load overlapping the first node there is no LOAD state: the first step starts out of reset
        # and after each send, takes the window's input as it arrives (``in_idx``, counted on from what the
        # early load took), and ``in_idx`` starts again from 0 where the early load of the next window starts.
        overlap = d.load_overlap
        with m.FSM(init="N0" if overlap else "LOAD"):
            if not overlap:
                with m.State("LOAD"):
                    m.d.comb += [step.eq(0), take.eq(1)]
                    with m.If(last_in):
                        m.d.sync += [in_idx.eq(0), node_start.eq(1)]
                        m.next = "N0"
            heads = sorted(set(d.head))
            for h_i, head in enumerate(heads):
                members = [i for i in range(n) if d.head[i] == head]
                with m.State(f"N{head}"):
                    m.d.comb += step.eq(head + 1)
                    if h_i >= d.preload or (overlap and h_i == 0):  # no step from here on reads the input
                        m.d.comb += take.eq(1)
                    for i in members:
                        kind, sel = d.node_unit[i]
                        m.d.comb += [units[kind].sel.eq(sel), units[kind].start.eq(node_start)]
                    with m.If(units[d.node_unit[members[-1]][0]].done):
                        m.d.sync += node_start.eq(1)
                        m.next = f"N{heads[h_i + 1]}" if h_i + 1 < len(heads) else "SEND"
                        if overlap and h_i + 1 == d.preload:
                            m.d.sync += in_idx.eq(0)  # the early load of the next window starts
            with m.State("SEND"):
                m.d.comb += [step.eq(n + 1), take.eq(1)]
                y = self.y
                m.d.comb += [y.payload.eq(out_port.data[:out_bits].as_signed()), send_addr.eq(idx)]
                with m.If(~y.valid | y.ready):
                    m.d.comb += out_port.en.eq(1)
                    m.d.sync += [y.valid.eq(idx < n_out), idx.eq(idx + 1)]
                with m.Else():
                    m.d.comb += out_port.en.eq(0)
                with m.If(y.valid & y.ready & (idx == n_out)):
                    m.d.sync += [idx.eq(0), y.valid.eq(0)]
                    if overlap:  # the first node takes the rest of the input
                        m.d.sync += node_start.eq(1)
                        m.next = "N0"
                    else:
                        with m.If((in_idx == n_in) | last_in):  # the next window's input is all in: run it
                            m.d.sync += [in_idx.eq(0), node_start.eq(1)]
                            m.next = "N0"
                        with m.Else():
                            m.next = "LOAD"
        return m
