"""Fast resource model of the accelerator, for choosing ``--parallel auto`` without running Yosys.

The prediction is summed from the design's own parts (``breakdown``):

* every shared unit: ``Lowered.resource_terms`` counts its structure from its own parameters (widths,
  lanes, node programs, rescale products in fabric): bits of datapath registers, adders/comparators,
  variable shifters, multiplexer inputs, counters, MAC lane accumulators, configuration registers and
  the ones that differ between programs, fabric products; ``hwgen.hw.costs.COEFFICIENTS`` prices them per
  unit kind in LUTs and flip-flops;
* the top level: ``Top.resource_terms`` (routing multiplexers, controller states times address width,
  counters) plus the memories' priced terms (ROMs left in logic, read multiplexers over depth blocks),
  priced by the "top" row;
* the memories, exactly: ``memories`` lists the elaborated top level's memories as Yosys sees them and
  ``hwgen.estimate.memmap`` maps each as Yosys ``memory_libmap`` does (block RAM by depth, width,
  write-enable lanes and read ports; LUTRAM; logic); RAMB18 count 0.5 BRAM36, LUTRAM LUTs and the read
  registers Yosys adds beside LUTRAM and logic ROMs are counted;
* DSP48E1 (``dsp_count``): the lanes plus each unit's multipliers as Yosys maps them.

Coefficients (``python -m bench.resources_model --calibrate``): each unit of 16 calibration designs (8
architectures at 2 parallelisms, ``bench.resources_model.CALIBRATION``) synthesized alone fits its kind's
row; the whole designs' remainder fits the "top" row. Measured against Yosys synth_xilinx 0.70 on designs
not used for calibration (``bench/results/resources_model.json``, random weights; Yosys, then model)::

    window, d_model, heads, layers, FFN, norm, bits                 Yosys  model              Yosys  model          Yosys model
    w12 d16 h4 L1 f32 LN W8A8        P=1   LUT  3886    3926   +1.0%   FF  2063    2040  -1.1%   DSP 14  14   BRAM36  3.0  3.0
    w12 d16 h4 L1 f32 LN W8A8        P=2   LUT  3908    3957   +1.2%   FF  2112    2088  -1.1%   DSP 15  15   BRAM36  3.0  3.0
    w12 d16 h4 L1 f32 LN W8A8        P=4   LUT  4138    3983   -3.8%   FF  2228    2193  -1.6%   DSP 17  17   BRAM36  3.0  3.0
    w12 d16 h1 L2 f16 BN W6A6        P=6   LUT  3800    3738   -1.6%   FF  1826    1854  +1.5%   DSP 12  12   BRAM36  1.5  1.5
    w12 d16 h1 L2 f16 BN W6A6        P=8   LUT  3912    3733   -4.6%   FF  1918    1947  +1.5%   DSP 14  14   BRAM36  1.5  1.5
    w12 d16 h1 L2 f16 BN W6A6        P=16  LUT  4988    4646   -6.9%   FF  3010    2985  -0.8%   DSP 20  20   BRAM36  2.0  2.0
    w24 d32 h4 L1 f64 LN W3A6        P=3   LUT  4292    4010   -6.6%   FF  2464    2427  -1.5%   DSP 15  15   BRAM36  7.5  7.5
    w24 d32 h4 L1 f64 LN W3A6        P=6   LUT  4597    4252   -7.5%   FF  2620    2582  -1.5%   DSP 18  18   BRAM36  7.5  7.5
    w24 d32 h4 L1 f64 LN W3A6        P=16  LUT  6436    6147   -4.5%   FF  4804    4927  +2.6%   DSP 23  23   BRAM36  8.0  8.0
    w12 d32 h2 L2 f128 LN W6A4       P=2   LUT  3864    4478  +15.9%   FF  2451    2430  -0.8%   DSP 15  15   BRAM36 10.0 10.0
    w12 d32 h2 L2 f128 LN W6A4       P=10  LUT  4386    4757   +8.5%   FF  2890    2842  -1.7%   DSP 23  23   BRAM36 10.5 10.5
    w12 d32 h2 L2 f128 LN W6A4       P=14  LUT  5335    5879  +10.2%   FF  4203    4256  +1.3%   DSP 23  23   BRAM36 11.0 11.0
    w48 d16 h2 L2 f128 BN W8A8       P=1   LUT  4863    4481   -7.9%   FF  1678    1639  -2.4%   DSP  8   8   BRAM36 19.5 19.5
    w48 d16 h2 L2 f128 BN W8A8       P=3   LUT  5381    4498  -16.4%   FF  1765    1714  -2.9%   DSP 10  10   BRAM36 20.0 20.0
    w48 d32 h4 L1 f128 LN W6A5       P=2   LUT  3923    4004   +2.1%   FF  2497    2474  -0.9%   DSP 14  14   BRAM36 16.5 16.5
    w48 d32 h4 L1 f128 LN W6A5       P=12  LUT  5294    5231   -1.2%   FF  3503    3531  +0.8%   DSP 22  22   BRAM36 17.0 17.0
    w48 d16 h4 L2 f128 LN W5A8       P=4   LUT  5004    4942   -1.2%   FF  2296    2266  -1.3%   DSP 17  17   BRAM36 20.5 20.5
    w48 d16 h4 L2 f128 LN W5A8       P=6   LUT  5066    5041   -0.5%   FF  2393    2356  -1.5%   DSP 19  19   BRAM36 21.5 21.5
    w48 d16 h4 L2 f128 LN W5A8       P=16  LUT  7512    7335   -2.4%   FF  4999    4978  -0.4%   DSP 24  24   BRAM36 20.5 20.5
    w12 d8 h1 L2 f128 LN W5A5        P=12  LUT  4545    4972   +9.4%   FF  3004    2988  -0.5%   DSP 21  21   BRAM36  3.5  3.5
    w12 d8 h1 L2 f128 LN W5A5        P=14  LUT  5039    5488   +8.9%   FF  3699    3727  +0.8%   DSP 21  21   BRAM36  3.5  3.5
    w12 d8 h1 L2 f128 LN W5A5        P=20  LUT  5675    6252  +10.2%   FF  4541    4646  +2.3%   DSP 26  26   BRAM36  4.0  4.0
    w24 d32 h4 L1 f64 BN W5A8        P=6   LUT  3450    3290   -4.7%   FF  2009    1994  -0.8%   DSP 12  12   BRAM36 10.5 10.5
    w24 d32 h4 L1 f64 BN W5A8        P=12  LUT  4069    3770   -7.3%   FF  2383    2363  -0.9%   DSP 18  18   BRAM36  9.5  9.5
    w24 d32 h4 L1 f64 BN W5A8        P=14  LUT  4206    3883   -7.7%   FF  2473    2455  -0.7%   DSP 20  20   BRAM36 10.0 10.0
    w12 d16 h4 L2 f16 LN W5A8        P=4   LUT  5093    4665   -8.4%   FF  2253    2229  -1.1%   DSP 17  17   BRAM36  3.5  3.5
    w12 d16 h4 L2 f16 LN W5A8        P=10  LUT  5434    5007   -7.8%   FF  2552    2526  -1.0%   DSP 23  23   BRAM36  3.5  3.5
    w48 d32 h2 L2 f64 LN W4A4        P=4   LUT  4009    4522  +12.8%   FF  2608    2568  -1.5%   DSP 17  17   BRAM36 13.5 14.5

On the current datapath (the softmax's exp-value ring, liveness-planned buffers), recalibrated, with a RAM in
logic priced as registers and a read multiplexer and the top level's LUT row fitted without the pull towards
``DEFAULT``: the 28 held-out designs DSP48E1 and BRAM36 equal on all 28, LUTs within 10% on all 28 (at most
9.5%), flip-flops within 6.3%; the 30 designs of ``bench/fit.py`` LUTs within 9.2%.

After the datapath's pipelining for 100 MHz, with the coefficients refitted on the pipelined units, the
same 28 held-out designs (``bench/results/resources_model.json``): DSP48E1 equal on 16 (the other 12, every
2-layer LayerNorm design, predicted one over Yosys), BRAM36 on 27, LUTs within 10% on 23 (at most 21.2%),
flip-flops within 7.9%. The table above is from before the pipelining:

Held out, 28 designs: DSP48E1 equal on all 28; BRAM36 equal on 27 (the W4 model: 14.5 predicted, 13.5
Yosys: Yosys dropped the extra sign bit, which no port reads, of its 4,608 x 5-bit score buffer with two read
ports (4 RAMB18 instead of 6); the model keeps that bit on buffers with two read ports because Yosys kept it
on one in a calibration design, and what tells the two cases apart is not identified). LUTs within 10% on
23 of 28, largest error 16.4%; the five beyond: w12 d32 L2 FFN-128 LayerNorm at P=2 (+15.9%) and P=14
(+10.2%), w48 d16 L2 FFN-128 at P=3 (-16.4%), w12 d8 L2 FFN-128 at P=20 (+10.2%) and the W4 model (+12.8%),
not attributed part by part (on the calibration designs the largest residuals are in the top level:
routing, controller and ROMs in logic, priced from four aggregate terms). Flip-flops within 2.9%. On the
calibration designs themselves: LUTs within 17.0% (a window-48 d_model-8 design at P=1), flip-flops 9.5%,
DSP48E1 and BRAM36 equal on all 16. The fitted model this one replaces predicted 41,509 LUT, 16,514 FF and
57.2 BRAM36 for the W4 model; this one predicts 4,522 LUT, 2,568 FF, 14.5 BRAM36 for the random-weight
instance above (Yosys: 4,009, 2,608, 13.5).

Logic a unit builds only for some graphs and does not count in its terms (``extra_logic``: the matrix
unit's conv1d row addressing, measured against the same graph with a linear stem) is added as the unit
declares it.
"""

from __future__ import annotations

from hwgen.estimate.memmap import Mem, Mapping, map_memory
from hwgen.estimate.resources import LUT_MARGIN
from hwgen.hw.costs import COEFFICIENTS, DEFAULT, price
from hwgen.hw.lower import Design, build_design
from hwgen.hw.units import UNITS
from hwgen.ir.graph import Graph

__all__ = ["COEFFICIENTS", "DEFAULT", "LUT_MARGIN", "breakdown", "dsp_count", "fits", "memories", "predict",
           "predict_graph", "price"]


def dsp_count(design: Design, rescale_in_dsp: bool = True) -> int:
    """DSP48E1 slices: the MAC lanes plus, when ``rescale_in_dsp`` (what Yosys synth_xilinx does with a
    ``$mul``: it ignores the ``use_dsp = "no"`` hint of ``hwgen.hw.vendor``), the multipliers of each unit
    (``Lowered.dsp48``: none for products in ``design.fabric``; LayerNorm's split as Yosys ``mul2dsp`` splits
    them, ``hwgen.hw.vendor.dsp48_for_product``). Equal to Yosys 0.70 on every calibration and benchmark
    design (``bench/resources_model.py``)."""
    if not rescale_in_dsp:
        return design.lanes
    return design.lanes + sum(UNITS[kind].dsp48(design) for kind in design.programs)


def _with_images(design: Design) -> Design:
    """``design`` with its ROM images (a design lowered with ``images=False`` has none)."""
    if design.images:
        return design
    full = build_design(design.graph, design.lanes, pair_rows=design.pair_rows, lutram=design.lutram,
                        distributed_buffers=design.distributed_buffers)
    full.fabric, full.lutram = design.fabric, design.lutram
    return full


def _varying_columns(words: list[int], width: int, depth: int) -> int:
    """Data bits of a ROM that are not the same in every word (Yosys ``opt_mem`` drops constant ones)."""
    words = list(words) + [0] * (depth - len(words))
    ones = zeros = 0
    mask = (1 << width) - 1
    for w in words:
        ones |= w
        zeros |= ~w & mask
    return bin(ones & zeros).count("1")


def memories(design: Design) -> list[tuple[Mem, Mapping]]:
    """Every memory of the accelerator's top level as Yosys sees it before mapping, and its mapping: the
    elaborated ``Top``'s memories with their read and write ports; ROM columns that never change and
    memories nothing reads left out, as Yosys ``opt_mem`` does (a flat buffer is as wide as the bits its
    values are read at, ``MemoryPlan.buffers``); then the memories inside the units (``Lowered.memories``,
    distributed RAM by their ``ram_style``)."""
    from amaranth.lib.memory import Memory

    from hwgen.hw.top import Top

    top = Top(_with_images(design))
    module = top.elaborate(None)
    for obj in [top, module, *(sub for sub, _ in module._named_submodules.values())]:
        obj._MustUse__silence = True  # elaborated to be inspected, not built: no "never used" warnings
    out = []
    for name, (sub, _) in module._named_submodules.items():
        if not isinstance(sub, Memory):
            continue
        width, depth = sub.shape.width, sub.depth
        writes = len(sub.write_ports)
        lanes = 1
        if writes:
            gran = sub.write_ports[0].signature.granularity
            lanes = width // gran if gran else 1
        else:
            width = _varying_columns([int(v) for v in sub.init], width, depth)
        mem = Mem(name, width, depth, len(sub.read_ports), writes, lanes, sub.attrs.get("rom_style") == "block",
                  distributed=sub.attrs.get("ram_style") == "distributed")
        out.append((mem, map_memory(mem)))
    for kind in design.programs:  # the memories inside the units
        for name, depth, bits in UNITS[kind].memories(design):
            mem = Mem(f"u_{kind}.{name}", bits, depth, 1, distributed=design.lutram)
            out.append((mem, map_memory(mem)))
    return out


def memory_terms(mapped: list[tuple[Mem, Mapping]]) -> tuple[dict[str, float], dict[str, float]]:
    """(terms priced by ``COEFFICIENTS``, exact counts) of the memories: LUTRAM LUTs, the flip-flops of
    the read registers Yosys adds to LUTRAM (its read is asynchronous) or keeps beside logic ROMs, and a
    RAM left in logic (flip-flops per bit, a depth-to-1 read multiplexer of LUT6 4:1 stages per read bit and
    a write-enable decode per word: a one-word buffer is a register) are counted exactly; "rom_logic" (data
    bits x 64-word blocks of ROMs in logic) and "mem_mux" (read multiplexer bits over depth blocks) are
    priced."""
    terms = {"rom_logic": 0.0, "mem_mux": 0.0}
    exact = {"lut": 0.0, "ff": 0.0}
    for mem, mp in mapped:
        if mp.kind == "removed":
            continue
        if mp.kind == "logic":
            exact["ff"] += mem.width * mem.reads + (mem.width * mem.depth if mem.writes else 0)
            if mem.writes:  # flip-flops with a write enable each; a depth-to-1 multiplexer per read bit
                exact["lut"] += mem.width * mem.reads * -(-(mem.depth - 1) // 3) + (mem.depth if mem.depth > 1 else 0)
            else:
                terms["rom_logic"] += mem.width * -(-mem.depth // 64) * mem.reads
            continue
        exact["lut"] += mp.lutram_luts
        if mp.kind.startswith("LUTRAM"):
            exact["ff"] += mem.width * mem.reads
        terms["mem_mux"] += (mp.depth_blocks - 1) * mem.width * mem.reads
    return terms, exact


def breakdown(design: Design) -> dict[str, dict[str, float]]:
    """Predicted LUTs and flip-flops per unit kind, "top" (controller, routing, memory multiplexers and ROMs
    in logic) and "memory" (LUTRAM LUTs and the read registers Yosys adds, counted exactly)."""
    from hwgen.hw.top import Top

    parts = {str(kind): UNITS[kind].resources(design) for kind in design.programs}
    mem_terms, exact = memory_terms(memories(design))
    parts["top"] = price({**Top.resource_terms(design), **mem_terms}, "top")
    parts["memory"] = exact
    return parts


def predict(design: Design) -> dict[str, float]:
    """Predicted lut, ff, dsp and bram36 of the accelerator of ``design`` after Yosys synth_xilinx: the
    sum of ``breakdown``, DSP48E1 from ``dsp_count`` and block RAM from each memory's mapping."""
    from hwgen.hw.top import Top

    mapped = memories(design)
    mem_terms, exact = memory_terms(mapped)
    parts = [UNITS[kind].resources(design) for kind in design.programs]
    parts += [price({**Top.resource_terms(design), **mem_terms}, "top"), exact]
    parts += [dict(zip(("lut", "ff"), UNITS[kind].extra_logic(design))) for kind in design.programs]
    return {"lut": sum(p["lut"] for p in parts), "ff": sum(p["ff"] for p in parts), "dsp": dsp_count(design),
            "bram36": sum(mp.bram36 for _, mp in mapped)}


def predict_graph(graph: Graph, parallel: int, dsp_budget: int | None = None) -> dict[str, float]:
    """:func:`predict` of ``graph`` at ``parallel`` lanes (rescale products moved into fabric as
    ``build_design`` does for ``dsp_budget``)."""
    return predict(build_design(graph, parallel, dsp_budget=dsp_budget))


def fits(prediction: dict[str, float], capacity, lut_margin: float = LUT_MARGIN) -> bool:
    """Whether a prediction fits the part (LUTs with ``lut_margin``, as ``hwgen.estimate.resources.fit``)."""
    return (prediction["lut"] <= lut_margin * capacity.lut and prediction["ff"] <= capacity.ff
            and prediction["dsp"] <= capacity.dsp and prediction["bram36"] <= capacity.bram36)
