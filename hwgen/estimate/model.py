"""Fast resource model of the accelerator, for choosing ``--parallel auto`` without running Yosys.

PLACEHOLDER
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
    full = build_design(design.graph, design.lanes)
    full.fabric = design.fabric
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
    memories nothing reads left out, as Yosys ``opt_mem`` does."""
    from amaranth.lib.memory import Memory

    from hwgen.hw.top import Top

    module = Top(_with_images(design)).elaborate(None)
    # a flat buffer keeps one bit more than its values; every read takes the value's own bits (a signed
    # value's sign extension is not read), and Yosys drops data bits no port reads
    read_bits: dict[str, int] = {}
    for name, b in design.plan.flat.items():
        read_bits[f"buf{b}"] = max(read_bits.get(f"buf{b}", 1), design.sbits_of(name))
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
            if len(sub.read_ports) == 1:
                width = min(width, read_bits.get(name, width))
        else:
            width = _varying_columns([int(v) for v in sub.init], width, depth)
        mem = Mem(name, width, depth, len(sub.read_ports), writes, lanes, sub.attrs.get("rom_style") == "block")
        out.append((mem, map_memory(mem)))
    return out


def memory_terms(mapped: list[tuple[Mem, Mapping]]) -> tuple[dict[str, float], dict[str, float]]:
    """(terms priced by ``COEFFICIENTS``, exact counts) of the memories: LUTRAM LUTs, and the flip-flops
    of the read registers Yosys adds to LUTRAM (its read is asynchronous) or keeps beside logic ROMs are
    counted exactly; "rom_logic" (data bits x 64-word blocks of ROMs in logic) and "mem_mux" (read
    multiplexer bits over depth blocks) are priced."""
    terms = {"rom_logic": 0.0, "mem_mux": 0.0}
    exact = {"lut": 0.0, "ff": 0.0}
    for mem, mp in mapped:
        if mp.kind == "removed":
            continue
        if mp.kind == "logic":
            terms["rom_logic"] += mem.width * -(-mem.depth // 64) * (mem.reads if not mem.writes else 64)
            exact["ff"] += mem.width * mem.reads + (mem.width * mem.depth if mem.writes else 0)
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
