"""The fit check behind ``--parallel`` for the open-flow families (ECP5, iCE40, Gowin).

``hwgen.estimate.model`` is fitted to Yosys ``synth_xilinx`` counts; another family maps the same Verilog
onto other cells. What is modelled here, per family, from the family's own Yosys counts of the reference model
(W8A8 PM2.5, Yosys 0.70; ``synth_ecp5``, ``synth_ice40 -dsp``) at P = 1, 4 and 13:

- **Hard multipliers** (the limit that decides): one cell per MAC lane (8-bit operands fit every family's
  multiplier), plus the rescale multipliers. Yosys maps those into hard multipliers on these families too,
  two more than it puts into DSP48E1 (measured: ECP5 10, 13 and 21 MULT18X18D at P = 1, 4, 13; iCE40 10
  and 13 SB_MAC16 at P = 1, 4 against 8, 11 and 20 DSP48E1): lanes + Xilinx rescale count + 2, exact at
  P = 1 and 4, one too many at P = 13.
- **Block RAM**: the largest count seen, scaled with the model's size like the Xilinx model: ECP5 12
  DP16KD, iCE40 34 SB_RAM40_4K (its 4-Kb blocks round less; the iCE40UP5K has 30).
- **LUT4s**: the Xilinx LUT model times the largest ratio seen (ECP5, LUT4 + 2 per CCU2C: 1.17-1.36 ->
  1.4; iCE40 SB_LUT4: 0.93-1.00 -> 1.05), within ``LUT_MARGIN`` of the part; flip-flops as on Xilinx.
- **Gowin** is not measured: it uses the ECP5 figures (18x18 multipliers, 18-Kb block RAM).

Not modelled: routing congestion and timing (``hwgen impl`` measures both), the iCE40's SPRAM (the design
does not use it), multipliers Yosys might leave in LUTs. ``hwgen estimate`` on such a board runs the
family's Yosys synthesis and reports its real counts.
"""

from __future__ import annotations

import math

from hwgen.errors import HwgenError
from hwgen.estimate.model import dsp_count, predict
from hwgen.estimate.resources import LUT_MARGIN
from hwgen.hw.lower import Design, build_design
from hwgen.hw.vendor import family, lowering_options
from hwgen.ir.graph import Graph
from hwgen.ops import macs

EXTRA_RESCALE_MULTS = 2
BRAM_BLOCKS_SEEN = {"ecp5": 12, "ice40": 34, "gowin": 12}
LUT4_PER_XILINX_LUT = {"ecp5": 1.4, "ice40": 1.05, "gowin": 1.4}
REFERENCE_MACS = 94_864  # the reference model's MACs per window, where the counts above were measured
LANE_OPERAND_BITS = (9, 8)  # activation (8-bit, or 8-bit unsigned probabilities as 9-bit signed) x weight


def dsp_budget(board) -> int:
    """The hard multipliers a design for an open-flow ``board`` may give its lanes and rescale products (the
    ``dsp_budget`` of ``build_design``): the part's, less the ``EXTRA_RESCALE_MULTS`` Yosys adds on these
    families."""
    return max(int(board.resources.dsp) - EXTRA_RESCALE_MULTS, 1)


def predict_family(design: Design, board) -> dict[str, float]:
    """Predicted LUT4, flip-flops, hard multipliers and block RAM blocks of ``design`` on ``board``'s family."""
    fam = family(board.device.yosys_family)
    xilinx = predict(design)
    lanes = design.lanes
    # an ECP5 build's rescale products are all shift-add: no extra cells (W8 at P = 24: 24 MULT18X18D)
    extra = 0 if design.multiplier == "ecp5" else EXTRA_RESCALE_MULTS
    rescale = dsp_count(design) - lanes + extra
    per_lane = fam.multipliers_for(*LANE_OPERAND_BITS)
    size = max(sum(macs(design.graph, n) for n in design.graph.nodes) / REFERENCE_MACS, 0.25)
    return {
        "lut": xilinx["lut"] * LUT4_PER_XILINX_LUT[fam.name],
        "ff": xilinx["ff"],
        "dsp": lanes * per_lane + rescale,
        "bram": math.ceil(BRAM_BLOCKS_SEEN[fam.name] * size),
    }


def _over(need: dict[str, float], board) -> list[str]:
    fam, cap = family(board.device.yosys_family), board.resources
    checks = [("lut", "LUT4", LUT_MARGIN * cap.lut), ("ff", "FF", cap.ff), ("dsp", fam.multiplier, cap.dsp),
              ("bram", fam.bram, cap.bram_blocks)]
    return [f"{need[k]:.0f} {unit} predicted, {limit:g} available" for k, unit, limit in checks if need[k] > limit]


def _estimate_design(graph: Graph, p: int, board) -> Design:
    """``graph``'s design at ``p`` lanes for an open-flow ``board``, without ROM images (for the estimates):
    the budget and the lowering options a build for that board uses."""
    return build_design(graph, p, images=False, dsp_budget=dsp_budget(board),
                        **lowering_options(board.device.yosys_family))


def choose_parallel_family(graph: Graph, board, parallel: str | int, force: bool = False) -> int:
    """``--parallel`` on an open-flow board: "auto" is the fastest P whose prediction fits (fewest lanes among
    equally fast); an integer must fit unless ``force``."""
    from hwgen.estimate.latency import estimate as latency_estimate

    cap = board.resources
    if parallel == "auto":
        candidates = {p: _estimate_design(graph, p, board) for p in range(1, int(cap.dsp) + 1)}
        fitting = [p for p, d in candidates.items() if not _over(predict_family(d, board), board)]
        if not fitting:
            problems = _over(predict_family(candidates[1], board), board)
            raise HwgenError(f"even one multiplier lane does not fit {board.part} by hwgen's {board.device.family} "
                             f"model: " + "; ".join(problems) + " (--parallel 1 --force builds it anyway)")
        return min(fitting, key=lambda p: (latency_estimate(candidates[p])["total"], p))
    try:
        p = int(parallel)
    except (TypeError, ValueError):
        raise HwgenError(f"--parallel must be a positive integer or 'auto', not {parallel!r}") from None
    if p < 1:
        raise HwgenError(f"--parallel must be >= 1, not {p}")
    if p > cap.dsp:
        raise HwgenError(f"--parallel {p} exceeds the {cap.dsp} {family(board.device.yosys_family).multiplier} "
                         f"of {board.part}")
    if not force:
        problems = _over(predict_family(_estimate_design(graph, p, board), board), board)
        if problems:
            raise HwgenError(f"--parallel {p} does not fit {board.part} by hwgen's {board.device.family} model: "
                             + "; ".join(problems) + " (--force builds it anyway)")
    return p
