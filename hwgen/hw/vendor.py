"""The one hook for vendor-specific hints (AMD/Xilinx 7-series), so generic blocks stay generic.

The MAC lanes are the only multipliers meant for DSP48E1 slices; the rescale products (requantizers,
element-wise units, softmax, norms) are asked to stay in LUTs so that P MAC lanes can use every DSP of a
small part (the XC7S15 has 20). Vivado honours ``use_dsp`` on the registered product signals.
"""

from __future__ import annotations


def mac_product_attrs() -> dict[str, str]:
    """Attributes of a MAC lane's registered product: map onto a DSP48E1."""
    return {"use_dsp": "yes"}


def rescale_product_attrs() -> dict[str, str]:
    """Attributes of a rescale multiplier's registered product: keep it out of the DSP slices."""
    return {"use_dsp": "no"}
