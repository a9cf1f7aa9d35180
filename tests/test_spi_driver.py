"""The host driver without hardware: element encoding, and the command sequence against a scripted device."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwgen.host import driver
from hwgen.host.driver import (
    HwgenSpi,
    HwgenSpiError,
    decode_elements,
    element_bytes,
    encode_elements,
    to_signed,
    to_unsigned,
)
from hwgen.hw import spi


@st.composite
def elements(draw):
    bits = draw(st.integers(1, 40))
    signed = draw(st.booleans())
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    values = draw(st.lists(st.integers(lo, hi), max_size=20))
    return values, bits, signed


@given(elements())
def test_encode_decode_round_trip(case):
    values, bits, signed = case
    data = encode_elements(values, bits, signed)
    assert isinstance(data, bytes) and len(data) == len(values) * element_bytes(bits)
    assert decode_elements(data, bits, signed) == values


@given(elements())
def test_encoding_is_big_endian_twos_complement_of_the_element_bytes(case):
    values, bits, signed = case
    nbytes = element_bytes(bits)
    want = b"".join((v % (1 << (8 * nbytes))).to_bytes(nbytes, "big") for v in values)
    assert encode_elements(values, bits, signed) == want


def test_known_encodings():
    assert encode_elements([-1, 0, 127, -128], 8) == b"\xff\x00\x7f\x80"
    assert encode_elements([-2, 2047, -2048], 12) == b"\xff\xfe\x07\xff\xf8\x00"  # sign-extended to 16 bits
    assert encode_elements([1, 65535], 16, signed=False) == b"\x00\x01\xff\xff"
    assert encode_elements([-1], 17) == b"\xff\xff\xff"
    assert [element_bytes(b) for b in (1, 8, 9, 16, 17, 24, 25)] == [1, 1, 2, 2, 3, 3, 4]
    assert (to_unsigned(-1, 12), to_signed(0xFFF, 12), to_signed(0x7FF, 12), to_signed(0x800, 12)) == (
        0xFFF, -1, 2047, -2048)


@pytest.mark.parametrize("value,bits,signed", [(128, 8, True), (-129, 8, True), (256, 8, False), (-1, 8, False),
                                               (2048, 12, True)])
def test_encode_rejects_out_of_range(value, bits, signed):
    with pytest.raises(ValueError, match="does not fit"):
        encode_elements([value], bits, signed)


def test_decode_rejects_corrupt_data():
    with pytest.raises(HwgenSpiError, match="does not fit"):
        decode_elements(b"\x08\x00", 12)  # 0x0800 is not a sign extension of a 12-bit value
    with pytest.raises(HwgenSpiError, match="whole number"):
        decode_elements(b"\x00\x01\x02", 16)


def test_driver_and_rtl_agree_on_the_protocol_constants():
    for name in ("WRITE_INPUT", "START", "STATUS", "READ_OUTPUT", "INFO", "RESET", "STATUS_BUSY", "STATUS_DONE",
                 "STATUS_ERROR", "STATUS_INPUT_READY", "STATUS_MARK", "INFO_MAGIC", "PROTOCOL_VERSION"):
        assert getattr(driver, name) == getattr(spi, name), name


def test_driver_is_plain_python_for_micropython():
    """The driver file imports nothing and uses no annotations (MicroPython ignores or lacks typing)."""
    tree = ast.parse(Path(driver.__file__).read_text())
    for node in ast.walk(tree):
        assert not isinstance(node, (ast.Import, ast.ImportFrom)), ast.unparse(node)
        assert not isinstance(node, ast.AnnAssign), ast.unparse(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            assert node.returns is None and all(a.annotation is None for a in args), node.name


class ScriptedDevice:
    """A transfer function answering like the link: busy for ``busy_polls`` STATUS polls after START."""

    def __init__(self, outputs: list[int], out_bits: int, busy_polls: int = 2, status_override: int | None = None):
        self.outputs, self.out_bits, self.busy_polls = outputs, out_bits, busy_polls
        self.status_override = status_override
        self.log: list[bytes] = []
        self.left = 0

    def __call__(self, tx: bytes) -> bytes:
        self.log.append(bytes(tx))
        cmd = tx[0]
        if cmd == driver.START:
            self.left = self.busy_polls
        if cmd == driver.STATUS:
            busy = self.left > 0
            self.left -= 1
            status = driver.STATUS_MARK | (driver.STATUS_BUSY if busy else driver.STATUS_DONE)
            return bytes([0, self.status_override if self.status_override is not None else status])
        if cmd == driver.READ_OUTPUT:
            return b"\0" + encode_elements(self.outputs, self.out_bits)
        if cmd == driver.INFO:
            return b"\0" + bytes(spi.info_bytes(12, True, self.out_bits, True, 3, len(self.outputs)))
        return bytes(len(tx))


def test_infer_sends_the_protocol_sequence_and_polls_until_done():
    dev = ScriptedDevice([-300, 7], out_bits=16, busy_polls=2)
    polls = []
    acc = HwgenSpi(dev, in_bits=12, out_bits=16, n_in=3, n_out=2, poll=lambda: polls.append(1))
    assert acc.infer([1, -2, 2047]) == [-300, 7]
    assert dev.log == [b"\x01\x00\x01\xff\xfe\x07\xff", b"\x02", b"\x03\0", b"\x03\0", b"\x03\0", b"\x04" + bytes(4)]
    assert len(polls) == 2
    assert acc.check_info()["n_in"] == 3


def test_driver_errors():
    acc = HwgenSpi(ScriptedDevice([0], 16, busy_polls=10**9), 12, 16, 3, 1, max_polls=5)
    with pytest.raises(HwgenSpiError, match="still busy after 5"):
        acc.infer([0, 0, 0])
    with pytest.raises(ValueError, match="has 3 elements"):
        acc.write_input([0, 0])
    with pytest.raises(HwgenSpiError, match="no hwgen link"):
        HwgenSpi(ScriptedDevice([0], 16, status_override=0xFF), 12, 16, 3, 1).status()
    error = driver.STATUS_MARK | driver.STATUS_ERROR
    with pytest.raises(HwgenSpiError, match="error"):
        HwgenSpi(ScriptedDevice([0], 16, status_override=error), 12, 16, 3, 1).infer([0, 0, 0])
    idle = driver.STATUS_MARK
    with pytest.raises(HwgenSpiError, match="no inference ran"):
        HwgenSpi(ScriptedDevice([0], 16, status_override=idle), 12, 16, 3, 1).wait_done()
    with pytest.raises(HwgenSpiError, match="configured for"):
        HwgenSpi(ScriptedDevice([0, 0], 16), 8, 16, 3, 2).check_info()  # device says 12-bit inputs
    with pytest.raises(HwgenSpiError, match="returned 1 bytes"):
        HwgenSpi(lambda tx: b"\0", 8, 16, 3, 1).status()


MICROPYTHON_SMOKE = """
print(encode_elements([-2, 2047, -2048], 12))
print(decode_elements(encode_elements([-5, 100, -100000], 20), 20))
for bad in ((lambda: encode_elements([128], 8)), (lambda: decode_elements(b"\\x08\\x00", 12))):
    try:
        bad()
    except Exception as e:
        print(type(e).__name__, e)
print(describe_status(0xA9))
left = [2]
def transfer(tx):
    if tx[0] == STATUS:
        left[0] -= 1
        return bytes((0, STATUS_MARK | (STATUS_BUSY if left[0] > 0 else STATUS_DONE)))
    if tx[0] == READ_OUTPUT:
        return bytes(1) + encode_elements([-300, 7], 16)
    return bytes(len(tx))
polls = []
print(HwgenSpi(transfer, 12, 16, 3, 2, poll=lambda: polls.append(1)).infer([1, -2, 3]), len(polls))
"""


def test_driver_runs_the_same_on_micropython(tmp_path):
    """Optional: set HWGEN_MICROPYTHON to a MicroPython command (e.g. ``micropython``, or ``node
    .../micropython-webassembly-pyscript/micropython.mjs``); the driver must print what CPython prints."""
    import os
    import shlex
    import subprocess
    import sys

    command = os.environ.get("HWGEN_MICROPYTHON")
    if not command:
        pytest.skip("HWGEN_MICROPYTHON is not set")
    script = tmp_path / "smoke.py"
    script.write_text(Path(driver.__file__).read_text() + MICROPYTHON_SMOKE)
    runs = [subprocess.run([*cmd, str(script)], capture_output=True, text=True, timeout=120, check=False)
            for cmd in (shlex.split(command), [sys.executable])]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert runs[0].stdout == runs[1].stdout
    assert "[-300, 7] 1" in runs[0].stdout
