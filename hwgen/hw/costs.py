"""What the resource model (``hwgen.estimate.model``) charges per unit of each structural term a unit
declares (``Lowered.resource_terms``), the top level (``Top.resource_terms``) and the memories
(``hwgen.estimate.model.memory_terms``) have: LUTs and flip-flops, by unit kind."""

from __future__ import annotations

# LUTs and flip-flops per unit of each structural term (``Lowered.resource_terms``, ``Top.resource_terms``
# and ``memory_terms``), by unit kind. Unit rows: least squares (ridge towards DEFAULT, non-negative) on
# Yosys synth_xilinx 0.70 counts of each unit synthesized alone (refitted after the datapath's pipelining
# for 100 MHz), from the 16 calibration designs of
# ``bench/resources_model.py`` (CALIBRATION: 8 architectures at 2 parallelisms each); "top": what those
# whole designs have beyond their units' predictions and the exact counts, its LUTs by plain non-negative
# least squares (no pull towards DEFAULT). Recalibrated on the datapath with the softmax's exp-value ring and
# liveness-planned buffers. None of the benchmark's designs was used.
COEFFICIENTS = {
    "matmul": {
        "lut": {"arith": 1.844, "cfg_reg": 0.676, "cfg_var": 1.462, "count": 1.8, "fabric": 1.293,
                "lane": 2.606, "reg": 0.57, "shift": 4.083},
        "ff": {"arith": 0.506, "cfg_reg": 1.278, "cfg_var": 0.297, "count": 1.211, "fabric": 1.818,
                "lane": 2.043, "reg": 1.292, "shift": 0.974},
    },
    "add": {
        "lut": {"arith": 0.665, "count": 0.264, "fabric": 1.082, "shift": 0.977},
        "ff": {"cfg_reg": 0.789, "count": 0.823, "fabric": 1.42, "reg": 0.862},
    },
    "softmax": {
        "lut": {"arith": 1.023, "cfg_reg": 0.094, "cfg_var": 29.393, "count": 1.829, "fabric": 0.916,
                "mux": 1.353, "reg": 0.125, "shift": 2.558},
        "ff": {"arith": 0.07, "cfg_reg": 1.506, "count": 1.082, "fabric": 1.82, "mux": 0.067, "reg": 1.048,
                "shift": 0.388},
    },
    "affine": {
        "lut": {"arith": 0.98, "cfg_reg": 0.134, "cfg_var": 6.962, "count": 1.254, "fabric": 1.26,
                "reg": 0.081, "shift": 2.435},
        "ff": {"arith": 0.015, "cfg_reg": 1.076, "count": 1.038, "fabric": 2.125, "reg": 1.014,
                "shift": 0.05},
    },
    "avgpool": {
        "lut": {"arith": 0.5, "cfg_var": 1.0, "count": 0.413, "fabric": 0.375, "mux": 0.092, "shift": 1.756},
        "ff": {"arith": 0.135, "cfg_reg": 1.182, "count": 0.987, "fabric": 0.728, "mux": 0.01, "reg": 1.01,
                "shift": 0.185},
    },
    "layernorm": {
        "lut": {"arith": 1.249, "cfg_reg": 2.8, "cfg_var": 2.548, "count": 2.771, "reg": 0.239,
                "shift": 3.389},
        "ff": {"arith": 0.059, "cfg_reg": 1.427, "count": 1.478, "reg": 1.031, "shift": 0.177},
    },
    "top": {
        "lut": {"mem_mux": 0.395, "rom_logic": 4.781, "route": 0.091},
        "ff": {"count": 0.522, "mem_mux": 0.031, "steps": 0.329},
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
