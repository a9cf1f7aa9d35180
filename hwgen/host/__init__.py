"""Host-side code for the accelerator's SPI link (see ``hwgen.hw.spi`` for the protocol).

``driver.py`` is self-contained plain Python that also runs on MicroPython: copy that one file to the board.
"""

from hwgen.host.driver import (
    HwgenSpi,
    HwgenSpiError,
    decode_elements,
    element_bytes,
    encode_elements,
    to_signed,
    to_unsigned,
)

__all__ = ["HwgenSpi", "HwgenSpiError", "decode_elements", "element_bytes", "encode_elements", "to_signed",
           "to_unsigned"]
