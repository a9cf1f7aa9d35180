"""The fast resource model behind --parallel auto, against Yosys on designs it was not calibrated on."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.resources_model import CALIBRATION, design_for, graph_for, yosys_counts
from hwgen.errors import HwgenError
from hwgen.estimate.boards import load_part, resolve_target
from hwgen.estimate.memmap import Mem, map_memory
from hwgen.estimate.model import fits, predict
from hwgen.estimate.model import predict_graph
from hwgen.steps.build import auto_parallel, graph_from

ROOT = Path(__file__).resolve().parents[1]
# small held-out designs (random weights, calibrated ranges): neither is in CALIBRATION
HELD_OUT = [
    ({"window": 12, "d_model": 8, "heads": 2, "layers": 1, "ffn": 16, "norm": "batch", "bits_w": 4, "bits_a": 4}, 2),
    ({"window": 12, "d_model": 8, "heads": 1, "layers": 1, "ffn": 32, "norm": "layer", "bits_w": 6, "bits_a": 8}, 4),
]


def test_held_out_designs_are_not_calibration_designs():
    assert not {str(sorted(a.items())) for a, _ in HELD_OUT} & {str(sorted(a.items())) for a, _ in CALIBRATION}


@pytest.mark.slow
@pytest.mark.parametrize("arch, parallel", HELD_OUT, ids=["batch-w4-p2", "layer-w6a8-p4"])
def test_model_matches_yosys_on_held_out_designs(arch, parallel):
    graph = graph_for(arch)
    got = yosys_counts(graph, parallel)
    pred = predict(design_for(graph, parallel))
    assert pred["dsp"] == got["dsp"]
    assert pred["bram36"] == got["bram36"]
    assert abs(pred["lut"] - got["lut"]) <= 0.10 * got["lut"], (pred, got)


@pytest.mark.slow
def test_dsp_count_matches_yosys_with_four_layernorm_programs():
    # 2 layers x 2 LayerNorms: four programs of one unit, whose element count is a settings register (no
    # write-count product, which the model counted as one more DSP48E1 before)
    arch = {"window": 8, "d_model": 8, "heads": 2, "layers": 2, "ffn": 16, "norm": "layer", "bits_w": 6,
            "bits_a": 6}
    assert str(sorted(arch.items())) not in {str(sorted(a.items())) for a, _ in CALIBRATION}
    graph = graph_for(arch)
    design = design_for(graph, 3)
    from hwgen.ops import Unit

    assert len(design.programs[Unit.LAYERNORM]) == 4
    got = yosys_counts(graph, 3)
    pred = predict(design)
    assert (pred["dsp"], pred["bram36"]) == (got["dsp"], got["bram36"])


# Memories of calibration designs and what Yosys synth_xilinx 0.70 made of them (memory_libmap's log)
@pytest.mark.parametrize("mem, kind, ramb18, ramb36, lutram", [
    (Mem("buf", 12, 1536, 1), "BRAM_TDP", 0, 1, 0),  # 18-bit ports, 2K deep: one RAMB36
    (Mem("buf", 16, 384, 1), "BRAM_TDP", 1, 0, 0),
    (Mem("buf", 12, 576, 2), "BRAM_TDP", 2, 0, 0),  # a second read port: a second copy
    (Mem("buf", 8, 16, 1), "LUTRAM_SDP", 0, 0, 8),  # two RAM32M
    (Mem("buf", 12, 96, 1), "LUTRAM_SDP", 0, 0, 24),  # 3 x 32 words x 12 bits
    (Mem("rom", 42, 161, 1, 0), "logic", 0, 0, 0),  # a ROM costs 1/64 per bit in logic
    (Mem("rom", 16, 256, 2, 0), "logic", 0, 0, 0),
    (Mem("weights", 32, 812, 1, 0, block=True), "BRAM_TDP", 0, 1, 0),
    (Mem("wide", 32, 96, 1, 1, lanes=4), "BRAM_SDP", 1, 0, 0),  # 4 lanes of 8 bits: one 36-bit word
    (Mem("wide", 12, 48, 1, 1, lanes=2), "LUTRAM_SDP", 0, 0, 16),  # four RAM64M
])
def test_memory_mapping(mem, kind, ramb18, ramb36, lutram):
    got = map_memory(mem)
    assert (got.kind, got.ramb18, got.ramb36, got.lutram_luts) == (kind, ramb18, ramb36, lutram)


def test_distributed_memory_stays_out_of_block_ram():
    """``ram_style = "distributed"`` (the softmax's exp-value ring): LUTRAM even where a RAMB18 costs less."""
    mem = Mem("ring", 16, 288, 1)
    assert map_memory(mem).kind == "BRAM_TDP"
    got = map_memory(Mem("ring", 16, 288, 1, distributed=True))
    assert got.kind.startswith("LUTRAM") and got.bram36 == 0 and got.lutram_luts > 0


def test_a_one_word_buffer_in_logic_is_a_register():
    """A buffer Yosys leaves in logic costs its flip-flops and a read multiplexer over its words: one word (a
    forecast of one value) is a register and costs no LUT (it was priced as 64 ROM blocks per bit, 2,023
    LUTs too many on a d_model-8 fit-bench design); a deeper one (block RAM refused) a 4:1 multiplexer
    stage per bit and a write enable per word."""
    from hwgen.estimate.memmap import Mapping
    from hwgen.estimate.model import memory_terms

    mem = Mem("buf", 16, 1, 1)
    assert map_memory(mem).kind == "logic"
    terms, exact = memory_terms([(mem, map_memory(mem))])
    assert terms["rom_logic"] == 0 and exact == {"lut": 0, "ff": 16 + 16}
    mem = Mem("buf", 16, 4, 1)
    terms, exact = memory_terms([(mem, Mapping("logic", cost=64))])
    assert terms["rom_logic"] == 0 and exact == {"lut": 16 + 4, "ff": 16 * 4 + 16}


def test_unread_memory_is_removed():
    assert map_memory(Mem("buf", 12, 384, 0)).kind == "removed"


@pytest.fixture(scope="module")
def w8():
    return graph_from(str(ROOT / "models" / "pm25_w8.pt"))[0]


def test_auto_is_the_fastest_that_fits(w8):
    board = resolve_target("xc7s15")
    p = auto_parallel(w8, board)
    assert fits(predict_graph(w8, p, dsp_budget=20), board.device.resources)
    assert not fits(predict_graph(w8, 20), board.device.resources)  # every rescale product in a DSP: 27
    assert auto_parallel(w8, resolve_target("xc7s50")) >= p  # a larger part takes at least as many lanes


def test_nothing_fits_a_tiny_part(w8):
    from dataclasses import replace

    board = resolve_target("xc7s15")
    tiny = replace(board, device=replace(board.device, resources=replace(load_part("xc7s15").resources, lut=1500)))
    with pytest.raises(HwgenError, match="does not fit"):
        auto_parallel(w8, tiny)


def test_attention_buffers_of_a_large_window_stay_narrow_and_are_read_once():
    """A 48-step, 4-head W4 model: the 9,216 4-bit scores keep a buffer of their own (no 12-bit value of
    1,536 elements widens it) of 4-bit words (signed values need no extra sign bit), the softmax reads them
    and its exp table through one port each (its output pass takes the exp values from its ring): 10.5
    BRAM36 by the model (17.0 before these changes; bench fit checks it against Yosys)."""
    from hwgen.estimate.model import memories

    arch = {"window": 48, "d_model": 32, "heads": 4, "layers": 1, "ffn": 64, "norm": "batch", "bits_w": 4,
            "bits_a": 4}
    design = design_for(graph_for(arch), 1)
    plan = design.plan
    scores = plan.flat["l0.scores"]
    assert {n for n, b in plan.flat.items() if b == scores} == {"l0.scores"}
    assert plan.buffers[scores] == [48 * 48 * 4, 4]
    assert all(w == max(design.sbits_of(n) for n, b in plan.flat.items() if b == i)
               for i, (_, w) in enumerate(plan.buffers))
    mapped = {mem.name: (mem, mp) for mem, mp in memories(design)}
    assert mapped[f"buf{scores}"][0].reads == 1 and mapped["rom_lut"][0].reads == 1
    ring, mp = mapped["u_softmax.ring"]
    assert (ring.depth, mp.bram36) == (3 * 48, 0) and mp.kind.startswith("LUTRAM")
    assert predict(design)["bram36"] == 10.5


def _short_of_block_ram(bram36: float):
    from dataclasses import replace

    board = resolve_target("xc7s15")
    return replace(board, device=replace(board.device, resources=replace(board.device.resources, bram36=bram36)))


def test_block_ram_short_moves_buffers_into_distributed_ram(w8):
    """On a part with 4.5 BRAM36 (the paired W8 design needs 5.0), auto keeps P = 16 with row pairs and asks
    one activation buffer into distributed RAM; the Verilog differs from the unmoved design's by that buffer's
    ``ram_style`` attribute alone; with every BRAM36 of the XC7S15 nothing moves; a part that has no
    distributed RAM refuses such a design."""
    import re

    from hwgen.estimate.latency import estimate
    from hwgen.hw import Top, build_design, emit_verilog
    from hwgen.steps.build import candidate, settle_parallel

    assert settle_parallel(w8, resolve_target("xc7s15"), "auto")[1]["distributed_buffers"] == frozenset()
    short = _short_of_block_ram(4.5)
    p, options = settle_parallel(w8, short, "auto")
    assert p == 16 and options["pair_rows"] and len(options["distributed_buffers"]) == 1
    design, need = candidate(w8, short, p)
    assert fits(need, short.device.resources) and need["bram36"] == 4.5
    assert design.distributed_buffers == options["distributed_buffers"] and any(
        design.paired(i) for i in range(len(w8.nodes)))
    assert estimate(design)["total"] == estimate(candidate(w8, resolve_target("xc7s15"), p)[0])["total"]
    moved = emit_verilog(Top(build_design(w8, p, dsp_budget=20, **options)))
    kept = emit_verilog(Top(build_design(w8, p, dsp_budget=20)))
    attr = '(* ram_style = "distributed" *)'
    assert moved.count(attr) == kept.count(attr) + 1
    assert re.sub(r"\(\* ram_style = \"distributed\" \*\)\s*", "", moved) == re.sub(
        r"\(\* ram_style = \"distributed\" \*\)\s*", "", kept)
    with pytest.raises(HwgenError, match="distributed RAM"):
        build_design(w8, p, lutram=False, **options)


@pytest.mark.slow
def test_buffers_moved_into_distributed_ram_are_what_yosys_maps(w8):
    """Yosys synth_xilinx of that design: the moved buffer in LUTRAM, 4.5 BRAM36 and 20 DSP48E1 as
    predicted, LUTs within 10%."""
    from hwgen.steps.build import candidate, settle_parallel

    short = _short_of_block_ram(4.5)
    p, options = settle_parallel(w8, short, "auto")
    pred = candidate(w8, short, p)[1]
    got = yosys_counts(w8, p, **options)
    assert (got["bram36"], got["dsp"]) == (pred["bram36"], pred["dsp"]) == (4.5, 20)
    assert got["lutram_luts"] > 0 and abs(pred["lut"] - got["lut"]) <= 0.10 * got["lut"], (pred, got)


def test_build_says_which_buffers_moved_and_records_them(w8, tmp_path, monkeypatch, capsys):
    """`hwgen build` on that part: the message naming the moved buffer, design.json `memory.distributed`,
    and the buffer's memory in the emitted Verilog asked into distributed RAM."""
    import json

    import hwgen.estimate.boards
    from hwgen.steps.build import build

    short = _short_of_block_ram(4.5)
    monkeypatch.setattr(hwgen.estimate.boards, "resolve_target", lambda name: short)
    out = tmp_path / "b"
    report = build(str(ROOT / "models" / "pm25_w8.pt"), str(out), "xc7s15", "16", with_accuracy=False)
    moved = json.loads((out / "design.json").read_text())["memory"]["distributed"]
    assert len(moved) == 1 and report["hardware"]["latency_cycles"] == 5841
    assert f"1 activation buffer(s) in distributed RAM (buf{moved[0]})" in capsys.readouterr().err
    import re

    verilog = (out / "rtl" / "hwgen_top.v").read_text()
    asked = re.findall(r'\(\* ram_style = "distributed" \*\)\s*reg \[\d+:0\] (buf\d+) ', verilog)
    assert asked == [f"buf{moved[0]}"]
