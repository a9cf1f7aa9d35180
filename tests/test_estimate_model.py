"""The fast resource model behind --parallel auto, against the Yosys counts it was calibrated on."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwgen.steps.build import auto_parallel, graph_from
from hwgen.errors import HwgenError
from hwgen.estimate.boards import load_part, resolve_target
from hwgen.estimate.model import fits
from hwgen.estimate.model import predict_graph as predict

ROOT = Path(__file__).resolve().parents[1]
# Yosys synth_xilinx 0.70 on models/pm25_w8.pt (see hwgen/estimate/model.py): (P, DSP budget) -> counts;
# budget None keeps every rescale product in DSP48E1, 20 moves them into fabric until 20 DSPs suffice.
YOSYS = {(4, 20): (3361, 1691, 11), (8, 20): (3857, 2020, 15), (13, 20): (4247, 2305, 20),
         (16, None): (4424, 2514, 23), (20, None): (4656, 2715, 27),
         (16, 20): (5029, 3428, 20), (20, 20): (6006, 4869, 20)}


@pytest.fixture(scope="module")
def w8():
    return graph_from(str(ROOT / "models" / "pm25_w8.pt"))[0]


@pytest.mark.parametrize("p, budget", sorted(YOSYS, key=str))
def test_model_close_to_yosys(w8, p, budget):
    lut, ff, dsp = YOSYS[p, budget]
    got = predict(w8, p, dsp_budget=budget)
    assert abs(got["lut"] - lut) <= 0.02 * lut
    assert abs(got["ff"] - ff) <= (0.025 if budget is None or p < 16 else 0.08) * ff
    assert got["dsp"] == dsp


def test_auto_is_the_fastest_that_fits(w8):
    board = resolve_target("xc7s15")
    p = auto_parallel(w8, board)
    # 16 lanes cover a row's 16 output channels; with the add and affine products in fabric they leave
    # 20 DSPs; 17-20 lanes are no faster (one row's channels per group)
    assert p == 16
    assert fits(predict(w8, p, dsp_budget=20), board.device.resources)
    assert not fits(predict(w8, 16), board.device.resources)  # every rescale product in a DSP: 23
    assert auto_parallel(w8, resolve_target("xc7s50")) > 13  # a larger part takes more lanes


def test_nothing_fits_a_tiny_part(w8):
    from dataclasses import replace

    board = resolve_target("xc7s15")
    tiny = replace(board, device=replace(board.device, resources=replace(load_part("xc7s15").resources, lut=3000)))
    with pytest.raises(HwgenError, match="does not fit"):
        auto_parallel(w8, tiny)
