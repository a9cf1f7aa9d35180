"""Memory organisation: where every value lives, and the ROM images of the constants.

* Activations live in *flat* buffers, one element per word (address = row-major index), each word as wide
  as the widest signed width of the buffer's values. Values whose lifetimes do not overlap share a buffer
  (greedy interval colouring, unless sharing takes more block RAM than a buffer of the value's own), so the
  reference model needs a handful of buffers, each small enough for LUTRAM or one RAMB18.
* The second operand of ``attn_scores`` (K) and of ``attn_apply`` (V) is also written as a *wide* copy:
  P elements per word, so the P MAC lanes read their P operands in one access. K is stored transposed
  ([channel][time]) and V per head with every head starting on a word boundary. Wide copies of the same
  layout and element width whose lifetimes do not overlap (layer 0's K and layer 1's K) share one memory
  and its writer (``MemoryPlan.wide_slot``).
* Constants that are node inputs (e.g. the positional-encoding table) become ROMs in the same layouts.
* Linear weights of all linear nodes share one wide ROM (word ``k * G + g`` holds W[g*P + lane, k]) and
  their per-channel bias/m0/shift share one parameter ROM, so one MAC array serves every layer.

The planner is plain Python; :class:`WideWriter` is the only hardware here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from hwgen.errors import HwgenError
from hwgen.estimate.memmap import Mem, map_memory
from hwgen.ir.graph import Graph, TensorType
from hwgen.ops import OPS, sbits


def view(t: TensorType) -> tuple[int, int]:
    """The 2-D view [rows, cols] of a tensor: all leading dimensions flattened into rows."""
    return (math.prod(t.shape[:-1]) if len(t.shape) > 1 else 1, t.shape[-1] if t.shape else 1)


def balanced(n: int, lanes: int) -> int:
    """Lanes per group when n outputs are split over ceil(n / lanes) equal groups (e.g. 24 over 20 lanes:
    two groups of 12, not 20 + 4), so no group is much shorter than the others."""
    return -(-n // -(-n // lanes))


def raw(value: int, bits: int) -> int:
    """Two's-complement bit pattern of ``value`` in ``bits`` bits (what a buffer stores)."""
    return int(value) & ((1 << bits) - 1)


@dataclass(frozen=True)
class WideLayout:
    """A wide copy of a [rows, cols] value: ``kind`` "T" (transposed, [cols][ceil(rows/P)] words) or
    "N" (per head: row r, head h, word w at r * heads * gd + h * gd + w, gd = ceil(cols/heads/P))."""

    kind: str
    rows: int
    cols: int
    heads: int
    lanes: int

    @property
    def words_per_row(self) -> int:
        if self.kind == "T":
            return -(-self.rows // self.lanes)
        return self.heads * -(-(self.cols // self.heads) // self.lanes)

    @property
    def depth(self) -> int:
        return (self.cols if self.kind == "T" else self.rows) * self.words_per_row

    def place(self, r: int, c: int) -> tuple[int, int]:
        """(word address, lane) of element (r, c)."""
        if self.kind == "T":
            return c * self.words_per_row + r // self.lanes, r % self.lanes
        d = self.cols // self.heads
        gd = -(-d // self.lanes)
        h, dd = divmod(c, d)
        return r * self.words_per_row + h * gd + dd // self.lanes, dd % self.lanes

    def image(self, values, bits: int) -> list[int]:
        """ROM words holding ``values`` ([rows, cols] integers) in this layout."""
        words = [0] * self.depth
        for r in range(self.rows):
            for c in range(self.cols):
                a, lane = self.place(r, c)
                words[a] |= raw(values[r][c], bits) << (lane * bits)
        return words


@dataclass
class MemoryPlan:
    """Where each value is stored. ``flat[name]`` is a buffer index (activations) or a ROM image
    (constants); ``wide[(name, kind, heads)]`` a WideLayout; buffers are [depth, bits] pairs, bits those of
    its words: the widest of its values' signed widths (``sbits``: a signed value as it is, an unsigned one
    with a zero sign bit), so every value is stored sign-extended."""

    lanes: int
    buffers: list[list[int]] = field(default_factory=list)
    flat: dict[str, int] = field(default_factory=dict)
    const_flat: dict[str, list[int]] = field(default_factory=dict)
    wide: dict[tuple[str, str, int], WideLayout] = field(default_factory=dict)
    # wide copy -> the memory holding it (an index into ``wide_slots``); copies of equal layout and element
    # bits whose lifetimes do not overlap share one
    wide_slot: dict[tuple[str, str, int], int] = field(default_factory=dict)
    wide_slots: list[tuple[WideLayout, int]] = field(default_factory=list)  # (layout, element bits) per memory

    def wide_key(self, graph: Graph, node) -> tuple[str, str, int] | None:
        """The wide copy a matrix-product node reads as its second operand (None for linear)."""
        return OPS[node.op].wide_copy(graph, node)


def plan_memory(graph: Graph, lanes: int, head: list[int] | None = None) -> MemoryPlan:
    """Assign every value a flat buffer (sharing buffers between values whose lifetimes do not overlap)
    and create the wide copies the attention products read. ``head[i]`` is the node whose step node ``i``
    runs in (a chained node is written while its chain's first node still reads its inputs).

    The graph input has a buffer of its own that no other value shares: the next window's input is written
    into it while the current window still computes and sends (``hwgen.hw.top``), so no other value may
    live there."""
    plan = MemoryPlan(lanes)
    head = head or list(range(len(graph.nodes)))
    types = {graph.input_name: graph.input_type, **{n.name: n.out for n in graph.nodes}}
    produced = {graph.input_name: -1, **{n.name: head[i] for i, n in enumerate(graph.nodes)}}
    last_use = dict.fromkeys(types, -1)
    last_use[graph.output_name] = len(graph.nodes)  # read once more while the output is sent
    last_reader: dict[tuple[str, str, int], int] = {}  # wide copy -> the last node reading it
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name in types:
                last_use[name] = i
        key = plan.wide_key(graph, node)
        if key is not None:
            last_reader[key] = i
        if key is not None and key not in plan.wide:
            rows, cols = view(graph.value_type(key[0]))
            if key[1] == "N" and (cols % key[2]):
                raise HwgenError(f"node {node.name!r} ({node.op}): width {cols} does not divide by {key[2]} heads")
            n_len = rows if key[1] == "T" else cols // key[2]  # the consumer's output channels
            plan.wide[key] = WideLayout(key[1], rows, cols, key[2], balanced(n_len, lanes))
    for name in graph.consts:
        if any(name in n.inputs for n in graph.nodes):
            c = graph.consts[name]
            vals = c.value.reshape(view(TensorType(tuple(c.value.shape), c.dtype))).tolist()
            plan.const_flat[name] = [raw(v, c.dtype.bits) for row in vals for v in row]
    _share_wide(graph, plan, head, last_reader)
    free_at: list[int] = []  # per buffer: the last node index that still reads its current value
    for name in sorted(types, key=lambda n: produced[n]):
        depth, bits = math.prod(view(types[name])), sbits(types[name].dtype)
        # Reuse a buffer whose value is dead before this value is written: the one that grows by the fewest
        # block RAMs, of those the best-sized; a buffer of its own when that takes fewer (a 12-bit value of
        # 1,536 elements does not widen a 9,216-deep buffer of 4-bit scores to 12 bits).
        fits = [b for b, last in enumerate(free_at) if last < produced[name]]
        buf = plan.buffers
        grow = {b: _bram(max(buf[b][0], depth), max(buf[b][1], bits)) - _bram(*buf[b]) for b in fits}
        b = min(fits, key=lambda b: (grow[b], abs(buf[b][0] - depth))) if fits else None
        if b is not None and grow[b] > _bram(depth, bits):
            b = None
        if b is not None:
            buf[b][0], buf[b][1] = max(buf[b][0], depth), max(buf[b][1], bits)
        else:
            b = len(buf)
            buf.append([depth, bits])
            free_at.append(-2)
        # the input's buffer is never free again: the next window's input arrives there early
        free_at[b] = len(graph.nodes) + 1 if name == graph.input_name else last_use[name]
        plan.flat[name] = b
    return plan


def _bram(depth: int, bits: int) -> float:
    """Block RAM (RAMB36 equivalents) Yosys maps a buffer of ``depth`` words of ``bits`` into."""
    return map_memory(Mem("buffer", bits, depth, 1)).bram36


def _share_wide(graph: Graph, plan: MemoryPlan, head: list[int], last_reader: dict[tuple, int]) -> None:
    """Give every wide copy a memory (``plan.wide_slot``): the copies of activations in order of their
    producers' steps, each into the first memory of the same layout and element bits whose copies are all
    read for the last time before that step; a constant's copy (a ROM) and the input's (written while
    another window computes) get one of their own."""
    producer = {n.name: head[i] for i, n in enumerate(graph.nodes)}
    free_after: list[int | None] = []  # per memory: the last reader of its copies (None: never shared)
    for key in sorted(plan.wide, key=lambda k: (producer.get(k[0], -1), k)):
        bits = sbits(graph.value_type(key[0]).dtype)
        own = key[0] in graph.consts or key[0] == graph.input_name
        slot = next((s for s, (lay, b) in enumerate(plan.wide_slots) if not own and free_after[s] is not None
                     and lay == plan.wide[key] and b == bits and free_after[s] < producer[key[0]]), None)
        if slot is None:
            slot = len(plan.wide_slots)
            plan.wide_slots.append((plan.wide[key], bits))
            free_after.append(None)
        plan.wide_slot[key] = slot
        free_after[slot] = None if own else last_reader[key]


class WideWriter(wiring.Component):
    """Writes a value, arriving one element per ``valid`` in row-major order, into its wide copy.

    ``start`` resets the cursor. Drives the memory write port given at construction (lane enables).
    """

    def __init__(self, layout: WideLayout, bits: int, write_port):
        if layout.kind not in ("T", "N"):
            raise ValueError(f"layout kind must be 'T' or 'N', not {layout.kind!r}")
        self.layout, self.bits, self.port = layout, bits, write_port
        super().__init__({"start": In(1), "valid": In(1), "data": In(bits)})

    def elaborate(self, platform):
        m = Module()
        lay, p = self.layout, self.port
        # Cursor (r, c) kept as counters so no division by P happens in hardware.
        r_word, r_lane = Signal(range(lay.depth + 1)), Signal(range(lay.lanes))
        c = Signal(range(lay.cols + 1))
        row_base = Signal(range(lay.depth + lay.words_per_row + 1))
        d = lay.cols // lay.heads
        gd = -(-d // lay.lanes)
        head_base, d_word, d_lane, d_cnt = (Signal(range(lay.depth + 1)), Signal(range(gd + 1)),
                                            Signal(range(lay.lanes)), Signal(range(d + 1)))
        if lay.kind == "T":
            m.d.comb += p.addr.eq(c * lay.words_per_row + r_word)
            lane = r_lane
        else:
            m.d.comb += p.addr.eq(row_base + head_base + d_word)
            lane = d_lane
        for i in range(lay.lanes):
            m.d.comb += p.data[i * self.bits:(i + 1) * self.bits].eq(self.data)
        m.d.comb += p.en.eq(self.valid << lane)
        with m.If(self.start):
            m.d.sync += [x.eq(0) for x in (r_word, r_lane, c, row_base, head_base, d_word, d_lane, d_cnt)]
        with m.Elif(self.valid):
            last_col = c == lay.cols - 1
            m.d.sync += c.eq(c + 1)
            with m.If(last_col):
                m.d.sync += [c.eq(0), r_lane.eq(r_lane + 1), row_base.eq(row_base + lay.words_per_row)]
                with m.If(r_lane == lay.lanes - 1):
                    m.d.sync += [r_lane.eq(0), r_word.eq(r_word + 1)]
            # Per-head cursor for the "N" layout: d counts within the head, (d_word, d_lane) = divmod(d, P).
            m.d.sync += [d_cnt.eq(d_cnt + 1), d_lane.eq(d_lane + 1)]
            with m.If(d_lane == lay.lanes - 1):
                m.d.sync += [d_lane.eq(0), d_word.eq(d_word + 1)]
            with m.If(d_cnt == d - 1):
                m.d.sync += [d_cnt.eq(0), d_lane.eq(0), d_word.eq(0),
                             head_base.eq(Mux(last_col, 0, head_base + gd))]
        return m
