"""Tests for hwgen.ir: integer types, constants, graph (de)serialisation, verifier, widths, builder and
dyadic rescales."""

from __future__ import annotations

import json
import math
import re
import time
from fractions import Fraction
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwgen.errors import HwgenError
from hwgen.golden import run
from hwgen.ir import Const, Graph, IntType, Node, TensorType, clog2, signed_bits_for
from hwgen.ir.verify import infer_widths, verify
from hwgen.ops import macs, widths
from hwgen.ir.builder import GraphBuilder
from hwgen.ir.dyadic import MAX_SHIFT, M0_BITS, common_dyadic, dyadic, dyadic_array, softmax_lut
from tests.synthetic import SyntheticConfig, random_graph

I8, U8 = IntType(8), IntType(8, False)
FAST = settings(deadline=None, max_examples=80)


# ---- integer types -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, bits, signed, qmin, qmax", [
    ("i2", 2, True, -2, 1), ("i8", 8, True, -128, 127), ("u1", 1, False, 0, 1), ("u4", 4, False, 0, 15),
    ("u8", 8, False, 0, 255), ("i64", 64, True, -(2**63), 2**63 - 1), ("u64", 64, False, 0, 2**64 - 1),
])
def test_inttype_ranges_and_text_round_trip(text, bits, signed, qmin, qmax):
    t = IntType.parse(text)
    assert (t.bits, t.signed, t.qmin, t.qmax, str(t)) == (bits, signed, qmin, qmax, text)
    assert t == IntType(bits, signed) and IntType.parse(str(t)) == t
    if bits < 64:
        assert t.contains(np.array([qmin, qmax])) and t.contains(np.array([], dtype=np.int64))
        assert not t.contains(np.array([qmin - 1])) and not t.contains(np.array([qmax + 1]))


@pytest.mark.parametrize("bad", ["f8", "i", "8", "i8x", "s8", "", "i 8"])
def test_inttype_parse_rejects_non_types(bad):
    with pytest.raises(ValueError, match="not an integer type"):
        IntType.parse(bad)


@pytest.mark.parametrize("bits, signed",
                         [(0, True), (0, False), (65, False), (1, True), (-3, True), (8.0, True)])
def test_inttype_rejects_impossible_widths(bits, signed):
    with pytest.raises(ValueError):
        IntType(bits, signed)


def test_clog2_values():
    ns = (1, 2, 3, 4, 5, 8, 9, 16, 17, 24, 1024, 1025)
    assert [clog2(n) for n in ns] == [0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 10, 11]
    with pytest.raises(ValueError):
        clog2(0)


def test_signed_bits_for_hand_values():
    cases = {0: 2, 1: 2, -1: 2, -2: 2, 2: 3, -3: 3, 127: 8, -128: 8, 128: 9, -129: 9, 2**15: 17, -(2**15): 16}
    assert {v: signed_bits_for(v) for v in cases} == cases
    assert signed_bits_for(np.array([3, -100])) == 8
    assert signed_bits_for(np.array([], dtype=np.int64)) == 2
    assert signed_bits_for(np.array([], dtype=np.int64), minimum=5) == 5
    assert signed_bits_for(1, minimum=6) == 6


@FAST
@given(st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=8))
def test_signed_bits_for_is_minimal(values):
    bits = signed_bits_for(np.array(values))
    assert IntType(bits).contains(np.array(values))
    if bits > 2:
        assert not IntType(bits - 1).contains(np.array(values))


# ---- constants -----------------------------------------------------------------------------------------


def test_const_refuses_floats_and_non_integers():
    for bad in (np.array([1.0, 2.0]), np.array([0.5]), np.array([True, False]), np.array(["1"]),
                np.array([1, 2], dtype=object)):
        with pytest.raises(HwgenError, match="not integer"):
            Const(bad, I8)


def test_const_refuses_values_outside_its_type():
    with pytest.raises(HwgenError, match=r"\[-129, 3\] do not fit its type i8"):
        Const(np.array([3, -129]), I8)
    with pytest.raises(HwgenError, match="do not fit its type u8"):
        Const(np.array([-1, 3]), U8)
    with pytest.raises(HwgenError, match="do not fit its type u8"):
        Const(np.array([256]), U8)
    # uint64 values above the int64 range must not wrap around into range (2**64 - 1 would become -1)
    with pytest.raises(HwgenError, match="does not fit"):
        Const(np.array([2**64 - 1], dtype=np.uint64), I8)


def test_const_normalises_to_readonly_int64():
    c = Const(np.array([[1, -2]], dtype=np.int8), IntType(3))
    assert c.value.dtype == np.int64 and c.value.tolist() == [[1, -2]]
    with pytest.raises(ValueError):
        c.value[0, 0] = 3
    assert Const(np.array([200], dtype=np.uint8), U8).value.tolist() == [200]


# ---- graph, serialisation ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth():
    return random_graph(SyntheticConfig(heads=2, layers=2, norm="layer"), seed=2, batch=16)


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert a.to_json() == b.to_json()
    assert sorted(a.consts) == sorted(b.consts)
    for name in a.consts:
        assert a.consts[name].dtype == b.consts[name].dtype, name
        assert a.consts[name].value.dtype == b.consts[name].value.dtype == np.int64, name
        assert np.array_equal(a.consts[name].value, b.consts[name].value), name


def test_value_type_and_lookups(synth):
    graph, _ = synth
    assert graph.value_type("x") == graph.input_type
    assert graph.value_type("embed") == graph.node("embed").out
    assert graph.value_type("pos") == TensorType((8, 8), I8)
    assert graph.output_type == graph.node("head").out
    with pytest.raises(KeyError):
        graph.value_type("nope")
    with pytest.raises(KeyError):
        graph.node("pos")  # a constant, not a node


def test_save_load_round_trip(synth, tmp_path):
    graph, x = synth
    graph.save(tmp_path / "g")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["consts.npz", "graph.json"]
    loaded = Graph.load(tmp_path / "g")
    assert_same_graph(graph, loaded)
    assert loaded.meta["synthetic"]["heads"] == 2
    assert (loaded.input_name, loaded.output_name) == ("x", "head")
    ref, got = run(graph, x, return_all=True), run(loaded, x, return_all=True)
    assert ref.keys() == got.keys() and all(np.array_equal(ref[k], got[k]) for k in ref)
    # and a second round trip is a fixed point
    loaded.save(tmp_path / "g2")
    assert_same_graph(loaded, Graph.load(tmp_path / "g2"))
    assert (tmp_path / "g" / "graph.json").read_bytes() == (tmp_path / "g2" / "graph.json").read_bytes()


def test_saved_bytes_are_deterministic(synth, tmp_path, monkeypatch):
    graph, _ = synth
    graph.save(tmp_path / "a")
    # a different wall-clock time (zip entries store one, at 2-second resolution) must not change the bytes
    later = time.time() + 3 * 86400 + 7
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(time, "time_ns", lambda: int(later * 1e9))
    graph.save(tmp_path / "b")
    for name in ("graph.json", "consts.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with zipfile.ZipFile(tmp_path / "a" / "consts.npz") as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        names = [n.removesuffix(".npy") for n in zf.namelist()]
        assert names == sorted(graph.consts)  # written in name order, whatever the insertion order
    # saving over an existing folder replaces it completely and leaves no temporary folder behind
    graph.save(tmp_path / "a")
    assert (tmp_path / "a" / "consts.npz").read_bytes() == (tmp_path / "b" / "consts.npz").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_consts_npz_independent_of_insertion_order(tmp_path):
    a = {"w": Const(np.array([1, 2]), I8), "b": Const(np.array([3]), I8)}
    b = dict(reversed(list(a.items())))
    node = Node("avgpool", "p", ("x",), {"m0": 1, "shift": 0, "bias": 0, "zp": 0}, TensorType((1, 2), I8))
    Graph("x", TensorType((3, 2), I8), (node,), a, "p").save(tmp_path / "a")
    Graph("x", TensorType((3, 2), I8), (node,), b, "p").save(tmp_path / "b")
    assert (tmp_path / "a" / "consts.npz").read_bytes() == (tmp_path / "b" / "consts.npz").read_bytes()


def _edit_json(key_path, value=None, delete=False):
    def mutate(folder: Path) -> None:
        obj = json.loads((folder / "graph.json").read_text())
        target = obj
        for key in key_path[:-1]:
            target = target[key]
        if delete:
            del target[key_path[-1]]
        else:
            target[key_path[-1]] = value
        (folder / "graph.json").write_text(json.dumps(obj))
    return mutate


def _write(name: str, data: bytes):
    return lambda folder: (folder / name).write_bytes(data)


def _truncate(name: str, keep: int):
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:keep])


def _replace_npz(folder: Path, **arrays) -> None:
    with np.load(folder / "consts.npz") as npz:
        data = {k: npz[k] for k in npz.files}
    data.update(arrays)
    for k, v in list(data.items()):
        if v is None:
            del data[k]
    with open(folder / "consts.npz", "wb") as fh:
        np.savez(fh, **data)


EMBED, SCORES, ADD = 0, 5, 1  # node indices in the fixture graph: embed, l0.scores, pos_add

LOAD_ERRORS = {
    "missing graph.json": (lambda f: (f / "graph.json").unlink(), r"graph\.json: missing"),
    "missing consts.npz": (lambda f: (f / "consts.npz").unlink(), r"consts\.npz: missing"),
    "truncated json": (_truncate("graph.json", 100), r"graph\.json: not readable JSON"),
    "non-utf8 json": (_write("graph.json", b"\xff\xfe{}"), r"graph\.json: not readable JSON"),
    "json not an object": (_write("graph.json", b"[1, 2]"), r"not an hwgen IR file"),
    "wrong format": (_edit_json(["format"], "onnx"), r"not an hwgen IR file \(format 'onnx'\)"),
    "empty npz": (_write("consts.npz", b""), r"corrupt graph \(EOFError"),
    "truncated npz": (_truncate("consts.npz", 200), r"corrupt graph \(BadZipFile"),
    "garbage npz": (_write("consts.npz", b"not a zip file at all" * 5), r"corrupt graph"),
    "constant missing from npz": (lambda f: _replace_npz(f, pos=None), r"constant 'pos' is missing"),
    "constant shape differs": (lambda f: _replace_npz(f, pos=np.zeros((8, 9), np.int64)),
                               r"constant 'pos' has shape \(8, 9\), graph.json says \(8, 8\)"),
    "constant out of its type": (_edit_json(["consts", "pos", "dtype"], "i2"),
                                 r"constant 'pos'.*do not fit its type i2"),
    "constant float in npz": (lambda f: _replace_npz(f, pos=np.zeros((8, 8))),
                              r"constant 'pos'.*not integer"),
    "constant type unparsable": (_edit_json(["consts", "pos", "dtype"], "f32"),
                                 r"not an integer type: 'f32'"),
    "consts not a mapping": (_edit_json(["consts"], [1, 2]), r"corrupt graph"),
    "node field missing": (_edit_json(["nodes", EMBED, "out"], delete=True), r"corrupt graph \(KeyError"),
    "unknown op": (_edit_json(["nodes", ADD, "op"], "gelu"), r"node 'pos_add': unsupported op 'gelu'"),
    "undefined input": (_edit_json(["nodes", ADD, "inputs"], ["nope", "pos"]),
                        r"node 'pos_add': input 'nope' is not defined before it"),
    "wrong node shape": (_edit_json(["nodes", EMBED, "out", "shape"], [8, 9]),
                         r"node 'embed': declared shape \(8, 9\) but computes \(8, 8\)"),
    "wrong input width": (_edit_json(["input", "shape"], [8, 4]), r"node 'embed' \(linear\): weight shape"),
    "wrong input rank": (_edit_json(["input", "shape"], [8]), r"node 'embed'"),
    "tampered widths": (_edit_json(["nodes", EMBED, "attrs", "widths", "acc"], 5),
                        r"node 'embed': declared widths .*'acc': 5.* differ from inferred"),
    "widths not a mapping": (_edit_json(["nodes", EMBED, "attrs", "widths"], [3]),
                             r"node 'embed' \(linear\): malformed"),
    "missing constant attribute": (_edit_json(["nodes", EMBED, "attrs", "weight"], delete=True),
                                   r"node 'embed': attribute 'weight' must name a constant"),
    "zero heads": (_edit_json(["nodes", SCORES, "attrs", "heads"], 0), r"node 'l0.scores'.*heads=0"),
    "float attribute": (_edit_json(["nodes", SCORES, "attrs", "shift"], 3.5),
                        r"node 'l0.scores': attribute 'shift' must be an integer"),
    "undefined output": (_edit_json(["output"], "nope"), r"graph output 'nope' is not computed"),
}


@pytest.mark.parametrize("case", LOAD_ERRORS, ids=list(LOAD_ERRORS))
def test_load_reports_corrupt_folders(synth, tmp_path, case):
    graph, _ = synth
    assert graph.nodes[EMBED].name == "embed" and graph.nodes[SCORES].name == "l0.scores"
    assert graph.nodes[ADD].name == "pos_add"
    folder = graph.save(tmp_path / "g")
    Graph.load(folder)  # intact
    mutate, pattern = LOAD_ERRORS[case]
    mutate(folder)
    with pytest.raises(HwgenError, match=pattern):
        Graph.load(folder)


def test_load_missing_folder(tmp_path):
    with pytest.raises(HwgenError, match="missing"):
        Graph.load(tmp_path / "does-not-exist")


# ---- verifier and op definitions -----------------------------------------------------------------------


def _pool_graph(**node_changes) -> Graph:
    fields = {"op": "avgpool", "name": "p", "inputs": ("x",), "out": TensorType((1, 2), I8),
              "attrs": {"m0": 1, "shift": 0, "bias": 0, "zp": 0}, **node_changes}
    consts = {"c": Const(np.zeros((3, 2), dtype=np.int64), I8)}
    return Graph("x", TensorType((3, 2), I8), (Node(**fields),), consts, "p")


def test_verify_accepts_a_good_graph_and_names_problems():
    verify(_pool_graph())
    problems = {
        "name used twice": _pool_graph(name="x"),
        "takes 1 inputs, not 2": _pool_graph(inputs=("x", "x")),
        "attribute 'bias' must be an integer": _pool_graph(attrs={"m0": 1, "shift": 0, "bias": True,
                                                                  "zp": 0}),
        "attribute 'zp' must be an integer": _pool_graph(attrs={"m0": 1, "shift": 0, "bias": 0}),
        r"declared shape \(2,\) but computes \(1, 2\)": _pool_graph(out=TensorType((2,), I8)),
    }
    for pattern, graph in problems.items():
        with pytest.raises(HwgenError, match=rf"node '(p|x)'.*{pattern}"):
            verify(graph)
    dup = _pool_graph()
    dup = dup.replace_nodes([dup.nodes[0], dup.nodes[0]])
    with pytest.raises(HwgenError, match="name used twice"):
        verify(dup)


def test_out_shape_mismatches_raise():
    rng = np.random.default_rng(0)
    # linear: weight [N, K] must match the input width K
    b = GraphBuilder("x", (4, 3), I8)
    with pytest.raises(HwgenError, match=r"node 'lin' \(linear\): weight shape \(5, 4\)"):
        b.linear("lin", "x", rng.integers(-3, 3, (5, 4)), None, 1, 0, I8, I8)
    # attention: q/k width must divide by heads; probabilities and values must line up
    b = GraphBuilder("x", (4, 6), I8)
    with pytest.raises(HwgenError, match=r"divide by heads=4"):
        b.attn_scores("s", "x", "x", 4, 1, 0, I8)
    b.attn_scores("s", "x", "x", 2, 1, 0, I8)
    b.const("v", np.zeros((5, 6), dtype=np.int64), I8)
    with pytest.raises(HwgenError, match="probabilities and values do not line up"):
        b.attn_apply("o", "s", "v", 1, 0, I8)
    # add: equal shapes; avgpool: [time, channels]
    b = GraphBuilder("x", (4, 3), I8)
    b.const("c", np.zeros((3, 4), dtype=np.int64), I8)
    with pytest.raises(HwgenError, match="same shape"):
        b.add("a", "x", "c", 1, 1, 0, 1, I8)
    b = GraphBuilder("x", (2, 4, 3), I8)
    with pytest.raises(HwgenError, match=r"expects \[time, channels\]"):
        b.avgpool("p", "x", 1, 0, 0, I8)
    # per-channel constants: one entry per channel
    b = GraphBuilder("x", (4, 3), I8)
    with pytest.raises(HwgenError, match="one entry per channel"):
        b.affine("a", "x", np.array([1, 2]), np.array([0, 0]), 1, I8)


def test_softmax_lut_must_cover_the_input_range():
    lut = softmax_lut(0.1, 8)  # 256 entries: enough for i8 scores
    b = GraphBuilder("x", (3, 4, 4), I8)
    b.softmax("sm", "x", lut, 31, U8)
    verify(b.finish("sm"))
    b = GraphBuilder("x", (3, 4, 4), I8)
    with pytest.raises(HwgenError, match=r"node 'sm' \(softmax\): lut needs at least 256 entries"):
        b.softmax("sm", "x", lut[:16], 31, U8)  # would index past the table for max - x >= 16
    b = GraphBuilder("x", (3, 4, 4), IntType(4))
    with pytest.raises(HwgenError, match="recip_bits"):
        b.softmax("sm", "x", softmax_lut(0.1, 4), 6, U8)  # shift recip_bits - 8 would be negative


def test_widths_by_hand():
    b = GraphBuilder("x", (4, 16), I8)
    # linear: 8 + 8 + clog2(16) = 20, bias i12 -> max(20, 12) + 1 = 21; scaled = 21 + 16 (m0 up to 2**15 - 1)
    b.linear("lin", "x", np.full((16, 16), -128), np.full(16, -2048), 2**15 - 1, 20, I8, I8)
    # attn_scores heads 2: d = 8; 8 + 8 + 3 = 19; m0 = 3 takes 3 bits: scaled 22
    b.attn_scores("s", "lin", "lin", 2, 3, 4, I8)
    b.softmax("sm", "s", softmax_lut(0.1, 8), 31, U8)
    # add: max(8 + 2, 8 + 3) = 11 (ma = 1 -> 2 bits, mb = -3 -> 3 bits); max(12, bias 100 -> 8) + 1 = 13
    b.add("a", "lin", "lin", 1, -3, 100, 1, I8)
    # affine: 8 + mul 9 bits (200) = 17; max(17, bias 20 bits) + 1 = 21
    b.affine("aff", "a", np.full(16, 200), np.full(16, -(2**19)), 3, I8)
    # avgpool over 4 steps: max(8 + 2, bias 0 -> 2) + 1 = 11; scaled 11 + 16
    b.avgpool("pool", "aff", 2**15 - 1, 17, 0, I8)
    graph = b.finish("pool")
    w = {n.name: dict(n.attrs["widths"]) for n in graph.nodes}
    assert w["lin"] == {"acc": 21, "scaled": 37}
    assert w["s"] == {"acc": 19, "scaled": 22}
    # softmax: lut u16 (32768) -> 17 signed bits; sum over 4: 17 + 2; recip 2**31 // 2**15 = 2**16 -> 18 bits
    assert w["sm"] == {"sum": 19, "recip": 18, "acc": 35}
    assert w["a"] == {"acc": 13}
    assert w["aff"] == {"acc": 21}
    assert w["pool"] == {"acc": 11, "scaled": 27}
    assert all(dict(n.attrs["widths"]) == widths(graph, n) for n in graph.nodes)


def test_layernorm_widths_by_hand():
    b = GraphBuilder("x", (4, 16), I8)
    b.layernorm("ln", "x", np.full(16, 3000), np.full(16, -5), 4, 8, 24, I8)
    w = dict(b.finish("ln").node("ln").attrs["widths"])
    # xc: 16 << 8 = 4096 -> 14 bits; sumsq 2*14 + 4 = 32; recip 24 + 2; prod 14 + 26 = 40;
    # norm: (isqrt(16) + 2) << 8 = 1536 -> 12 bits; acc max(12 + 13 (gamma 3000), 4 (beta -5)) + 1 = 26
    assert w == {"xc": 14, "sumsq": 32, "recip": 26, "prod": 40, "norm": 12, "acc": 26}


def test_infer_widths_is_idempotent_and_verify_checks_declared_widths(synth):
    graph, _ = synth
    again = infer_widths(graph)
    assert again.to_json() == graph.to_json()
    stripped = graph.replace_nodes([n.with_attrs(widths=None) for n in graph.nodes])
    verify(stripped)  # widths are optional ...
    assert infer_widths(stripped).to_json() == graph.to_json()  # ... and inferred from the types
    wider = {**graph.node("embed").attrs["widths"], "acc": graph.node("embed").attrs["widths"]["acc"] + 1}
    wrong = graph.replace_nodes([n.with_attrs(widths=wider) if n.name == "embed" else n for n in graph.nodes])
    with pytest.raises(HwgenError, match="node 'embed': declared widths"):
        verify(wrong)


def test_macs_by_hand_and_reference_model():
    b = GraphBuilder("x", (5, 3), I8)
    b.linear("lin", "x", np.ones((4, 3), dtype=np.int64), None, 1, 0, I8, I8)  # 5 * 3 * 4 = 60
    b.attn_scores("s", "lin", "lin", 2, 1, 0, I8)  # 5 * 5 * 4 = 100 (2 heads of width 2)
    b.softmax("sm", "s", softmax_lut(0.1, 8), 31, U8)
    b.attn_apply("o", "sm", "lin", 1, 0, I8)  # 5 * 5 * 4 = 100
    b.avgpool("p", "o", 1, 0, 0, I8)
    graph = b.finish("p")
    assert [macs(graph, n) for n in graph.nodes] == [60, 100, 0, 100, 0]
    # the reference model (L=24, F=7, d=16, FFN 64, one head, one layer, one output): "about 95,000"
    graph, _ = random_graph(SyntheticConfig(window=24, features=7, d_model=16, ffn=64), seed=0, batch=4)
    # embed 2688 + qkv 18432 + scores 9216 + apply 9216 + out 6144 + ffn 2 * 24576 + head 16
    assert sum(macs(graph, n) for n in graph.nodes) == 94_864


def test_builder_refuses_float_constants_and_duplicates():
    b = GraphBuilder("x", (2, 3), I8)
    with pytest.raises(HwgenError, match="constant 'w' of type float64 is not integer"):
        b.const("w", np.array([0.7, 1.0]))  # would silently truncate to [0, 1]
    with pytest.raises(HwgenError, match="not integer"):
        b.linear("lin", "x", np.full((2, 3), 0.5), None, 1, 0, I8, I8)
    b.const("c", np.array([1, -3]))
    assert b.consts["c"].dtype == IntType(3)  # narrowest signed type by default
    with pytest.raises(ValueError, match="added twice"):
        b.const("c", np.array([1]))


def test_builder_broadcasts_per_channel_rescales():
    b = GraphBuilder("x", (2, 3), I8)
    b.linear("lin", "x", np.ones((4, 3), dtype=np.int64), None, 17, 5, I8, I8)
    g = b.finish("lin")
    assert g.consts["lin.m0"].value.tolist() == [17] * 4 and g.consts["lin.shift"].value.tolist() == [5] * 4
    assert g.consts["lin.shift"].dtype == U8 and g.node("lin").out == TensorType((2, 4), I8)


# ---- dyadic rescales -----------------------------------------------------------------------------------


@settings(deadline=None, max_examples=300)
@given(st.floats(1e-9, 1e4), st.booleans())
def test_dyadic_approximates_scale(scale, negative):
    scale = -scale if negative else scale
    m0, shift = dyadic(scale)
    assert isinstance(m0, int) and isinstance(shift, int)
    assert 0 <= shift <= MAX_SHIFT
    if shift > 0:
        assert 2 ** (M0_BITS - 1) <= abs(m0) < 2**M0_BITS
    assert abs(Fraction(m0, 2**shift) / Fraction(scale) - 1) <= Fraction(1, 2**M0_BITS)


def test_dyadic_edges():
    assert dyadic(0.0) == (0, 0)
    assert dyadic(1.0) == (2**14, 14)
    assert dyadic(0.5) == (2**14, 15)
    assert dyadic(-0.75) == (-(3 * 2**13), 15)  # floor(log2 0.75) = -1: shift 14 + 1
    assert dyadic(1e6) == (1_000_000, 0)  # too large for shift >= 0: wider m0
    m0, shift = dyadic(1e-17)  # too small for shift <= 62: narrower m0 (1e-17 * 2**62 = 46.1)
    assert (m0, shift) == (46, MAX_SHIFT)
    # just below a power of two: 2**15 - 2**-5 rounds up to 2**15, which renormalises to (2**14, shift - 1)
    assert dyadic(2.0**-20 * (1 - 2**-20)) == (2**14, 34)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            dyadic(bad)
    m0s, shifts = dyadic_array(np.array([[1.0, 0.5], [0.0, -0.75]]))
    assert m0s.tolist() == [[2**14, 2**14], [0, -(3 * 2**13)]] and shifts.tolist() == [[14, 15], [0, 15]]


@settings(deadline=None, max_examples=200)
@given(st.floats(1e-6, 1e3), st.floats(-1.0, 1.0))
def test_common_dyadic_shares_one_shift(ra, ratio):
    rb = ra * ratio
    ma, mb, shift = common_dyadic(ra, rb)
    assert shift >= 1
    assert abs(ma / 2.0**shift - ra) <= 2.0 ** -(shift + 1) * 1.0000001
    assert abs(mb / 2.0**shift - rb) <= 2.0 ** -(shift + 1) * 1.0000001
    assert abs(ma / 2.0**shift / ra - 1) <= 2.0**-M0_BITS


def test_common_dyadic_edges():
    assert common_dyadic(0.0, 0.0) == (0, 0, 0)
    # the larger operand is normalised like dyadic(); the smaller shares its shift
    assert common_dyadic(0.5, 0.25) == (2**14, 2**13, 15)
    assert common_dyadic(-0.25, 0.5) == (-(2**13), 2**14, 15)
    assert common_dyadic(1e5, 1.0)[2] == 1  # shift is at least 1 (one rounding term)


def test_synthetic_reference_graph_round_trips_through_disk(tmp_path):
    cfg = SyntheticConfig(heads=4, layers=1, norm="batch", bits_w=4, bits_a=4)
    graph, x = random_graph(cfg, seed=9, batch=8)
    loaded = Graph.load(graph.save(tmp_path / "ref"))
    assert_same_graph(graph, loaded)
    assert np.array_equal(run(graph, x), run(loaded, x))
    assert math.prod(loaded.input_type.shape) == 8 * 3


def _tampered(synth, tmp_path, change) -> Path:
    graph, _ = synth
    graph.save(tmp_path / "g")
    path = tmp_path / "g" / "graph.json"
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))
    return tmp_path / "g"


def _set_attr(op: str, key: str, value):
    def change(obj):
        node = next(n for n in obj["nodes"] if n["op"] == op)
        node["attrs"][key] = value
        node["attrs"].pop("widths", None)
    return change


@pytest.mark.parametrize("change, message", [
    (lambda obj: obj.update(version=2), "IR version 2; this hwgen reads version 1"),
    (lambda obj: obj.pop("version"), "IR version None"),
    (_set_attr("linear", "relu", "no"), "attribute 'relu' must be true or false, not 'no'"),
    (_set_attr("softmax", "recip_bits", 99), "attribute 'recip_bits' must lie in 1..62, not 99"),
])
def test_load_refuses_tampered_graph(synth, tmp_path, change, message):
    with pytest.raises(HwgenError, match=re.escape(message)):
        Graph.load(_tampered(synth, tmp_path, change))


def test_save_refuses_non_finite_meta(synth, tmp_path):
    graph, _ = synth
    bad = Graph(graph.input_name, graph.input_type, graph.nodes, graph.consts, graph.output_name,
                {**graph.meta, "input_scale": float("inf")})
    with pytest.raises(HwgenError, match="non-finite"):
        bad.save(tmp_path / "g")
    assert not (tmp_path / "g").exists()
