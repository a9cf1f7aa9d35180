"""What the resource model (``hwgen.estimate.model``) charges per unit of each structural term a unit
declares (``Lowered.resource_terms``), the top level (``Top.resource_terms``) and the memories
(``hwgen.estimate.model.memory_terms``) have: LUTs and flip-flops, by unit kind."""

from __future__ import annotations

# LUTs and flip-flops per unit of each structural term (``Lowered.resource_terms``, ``Top.resource_terms``
# and ``memory_terms``), by unit kind. Unit rows: least squares (ridge towards DEFAULT, non-negative) on
# Yosys synth_xilinx 0.70 counts of each unit synthesized alone, from the 16 calibration designs of
# ``bench/resources_model.py`` (CALIBRATION: 8 architectures at 2 parallelisms each); "top": the same fit
# of what those whole designs have beyond their units' predictions and the exact counts. None of the
# benchmark's designs was used.
COEFFICIENTS = {
    "matmul": {
        "lut": {"arith": 1.698, "cfg_reg": 0.626, "cfg_var": 1.413, "count": 1.72, "fabric": 1.204, "lane": 2.272,
                "reg": 0.475, "shift": 3.776},
        "ff": {"arith": 0.044, "cfg_reg": 0.999, "cfg_var": 0.002, "count": 1.027, "fabric": 1.777, "lane": 2.005,
               "reg": 1.036, "shift": 0.112},
    },
    "add": {
        "lut": {"arith": 0.669, "count": 0.378, "fabric": 1.058, "shift": 0.993},
        "ff": {"cfg_reg": 0.501, "count": 0.204, "fabric": 1.333, "reg": 0.693},
    },
    "affine": {
        "lut": {"arith": 1.043, "cfg_reg": 0.458, "cfg_var": 7.833, "count": 1.454, "fabric": 1.172, "reg": 0.141,
                "shift": 2.64},
        "ff": {"cfg_reg": 0.329, "count": 0.633, "fabric": 1.929, "reg": 0.885},
    },
    "avgpool": {
        "lut": {"arith": 0.817, "cfg_var": 1.0, "count": 1.102, "fabric": 0.425, "mux": 0.324, "reg": 0.076,
                "shift": 2.13},
        "ff": {"arith": 0.067, "cfg_reg": 1.098, "count": 1.051, "fabric": 0.631, "reg": 0.997, "shift": 0.051},
    },
    "softmax": {
        "lut": {"arith": 1.025, "cfg_reg": 0.326, "count": 1.502, "fabric": 0.998, "reg": 0.12, "shift": 2.599},
        "ff": {"cfg_reg": 0.803, "count": 0.911, "fabric": 1.642, "reg": 0.975},
    },
    "layernorm": {
        "lut": {"arith": 1.25, "cfg_reg": 2.801, "cfg_var": 4.344, "count": 2.799, "reg": 0.239, "shift": 3.393},
        "ff": {"arith": 0.059, "cfg_reg": 1.427, "count": 1.478, "reg": 1.031, "shift": 0.177},
    },
    "top": {
        "lut": {"mem_mux": 0.358, "rom_logic": 1.933, "route": 0.175, "steps": 2.24},
        "ff": {"count": 0.176, "mem_mux": 0.058, "steps": 0.098},
    },
}
# Units without Yosys calibration (argmax, anomaly score, lut, select, concat: not in the forecasting
# designs): a structural guess per term (about a LUT per adder bit, 2.5 per variable-shifter bit, a third
# per multiplexer input bit, a flip-flop per register bit), also the prior of the fits above.
DEFAULT = {
    "lut": {"arith": 1.0, "shift": 2.5, "mux": 0.35, "lane": 1.5, "cfg_var": 1.0, "cfg_reg": 0.2, "count": 1.5,
            "route": 0.5, "steps": 4.0, "rom_logic": 1.0, "mem_mux": 0.5, "fabric": 1.1, "reg": 0.1},
    "ff": {"reg": 1.0, "lane": 2.0, "cfg_reg": 1.0, "count": 1.0, "fabric": 1.8, "steps": 1.0},
}


def price(terms: dict[str, float], kind: str = "default") -> dict[str, float]:
    """LUTs and flip-flops of structural ``terms`` (term -> count) of unit ``kind`` ("top" for the top
    level and memories) at its ``COEFFICIENTS`` (``DEFAULT`` for a unit without them)."""
    table = COEFFICIENTS.get(str(kind), DEFAULT)
    return {k: sum(table[k].get(t, 0.0) * v for t, v in terms.items()) for k in ("lut", "ff")}
