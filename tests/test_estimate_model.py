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
# Yosys synth_xilinx 0.70 on models/pm25_w8.pt (see hwgen/estimate/model.py)
YOSYS = {4: (3361, 1691, 11), 8: (3857, 2020, 15), 13: (4247, 2305, 20), 20: (6543, 2843, 27)}


@pytest.fixture(scope="module")
def w8():
    return graph_from(str(ROOT / "models" / "pm25_w8.pt"))[0]


@pytest.mark.parametrize("p", sorted(YOSYS))
def test_model_close_to_yosys(w8, p):
    lut, ff, dsp = YOSYS[p]
    got = predict(w8, p)
    assert abs(got["lut"] - lut) <= 0.06 * lut
    assert abs(got["ff"] - ff) <= 0.03 * ff
    assert got["dsp"] == dsp


def test_auto_is_the_fastest_that_fits(w8):
    board = resolve_target("xc7s15")
    p = auto_parallel(w8, board)
    assert p == 13  # 14 is as fast; 16+ needs more than 20 DSPs as Yosys maps them
    assert fits(predict(w8, p), board.device.resources)
    assert not fits(predict(w8, 16), board.device.resources)
    assert auto_parallel(w8, resolve_target("xc7s50")) > 13  # a larger part takes more lanes


def test_nothing_fits_a_tiny_part(w8):
    from dataclasses import replace

    board = resolve_target("xc7s15")
    tiny = replace(board, device=replace(board.device, resources=replace(load_part("xc7s15").resources, dsp=4)))
    with pytest.raises(HwgenError, match="does not fit"):
        auto_parallel(w8, tiny)
