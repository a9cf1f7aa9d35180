"""Reference host driver for the hwgen SPI link (protocol: the docstring of ``hwgen.hw.spi``).

Plain Python for CPython and MicroPython alike (no numpy, no dataclasses, no typing, no ``int.from_bytes``):
copy this one file to the microcontroller. On an RP2040 under MicroPython::

    from machine import Pin, SPI
    import time
    from driver import HwgenSpi

    spi = SPI(0, baudrate=10_000_000, polarity=0, phase=0, bits=8, firstbit=SPI.MSB,
              sck=Pin(2), mosi=Pin(3), miso=Pin(4))
    cs = Pin(5, Pin.OUT, value=1)
    busy = Pin(6, Pin.IN)

    def transfer(tx):
        rx = bytearray(len(tx))
        cs.value(0)
        try:
            spi.write_readinto(tx, rx)
        finally:
            cs.value(1)
        return rx

    def wait_busy():  # called between status polls: sleep until the busy pin falls
        while busy.value():
            time.sleep_us(5)

    acc = HwgenSpi(transfer, in_bits=8, out_bits=16, n_in=24, n_out=1, poll=wait_busy)
    acc.check_info()
    y = acc.infer([1, -2, 3, ...])

Every command exists twice. ``txn_<command>(...)`` is a generator holding the protocol logic and no I/O: it
yields ``bytes`` for one transaction (CS_n low for exactly those bytes) and is sent the bytes read back, or
yields ``WAIT`` between two status polls; its ``return`` value is the command's result. ``<command>(...)``
runs that generator with the ``transfer`` and ``poll`` functions given to the constructor. A simulation (see
``hwgen.testbenches.tb_spi``) runs the same generators against the RTL pins with :func:`run_async`.
"""

WRITE_INPUT = 0x01
START = 0x02
STATUS = 0x03
READ_OUTPUT = 0x04
INFO = 0x05
RESET = 0x06

STATUS_BUSY = 0x01
STATUS_DONE = 0x02
STATUS_ERROR = 0x04
STATUS_INPUT_READY = 0x08
STATUS_MARK = 0xA0  # bits 7..4 of every status byte
STATUS_MARK_MASK = 0xF0
INFO_MAGIC = 0x68
PROTOCOL_VERSION = 0x01

WAIT = "WAIT"  # yielded by a transaction generator between two status polls


class HwgenSpiError(Exception):
    """The accelerator answered something the protocol does not allow (or did not answer)."""


def element_bytes(bits):
    """Bytes per element on the link for ``bits``-bit elements."""
    if bits < 1:
        raise ValueError(f"element width must be positive, not {bits!r}")
    return (bits + 7) // 8


def _check_range(value, bits, signed):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= value <= hi:
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"{value!r} does not fit a {bits}-bit {kind} element [{lo}, {hi}]")


def to_unsigned(value, bits):
    """``value`` (in range for ``bits`` bits, signed or not) as its ``bits``-bit two's complement pattern."""
    return value & ((1 << bits) - 1)


def to_signed(pattern, bits):
    """The signed value of the ``bits``-bit two's complement ``pattern`` (0 <= pattern < 2**bits)."""
    pattern &= (1 << bits) - 1
    return pattern - (1 << bits) if pattern >> (bits - 1) else pattern


def encode_elements(values, bits, signed=True):
    """``values`` as link bytes: each element in ``element_bytes(bits)`` bytes, two's complement
    (sign-extended when ``signed``), most significant byte first. ValueError for a value out of range."""
    nbytes = element_bytes(bits)
    out = bytearray(len(values) * nbytes)
    i = 0
    for v in values:
        v = int(v)
        _check_range(v, bits, signed)
        pattern = to_unsigned(v, 8 * nbytes)
        for k in range(nbytes - 1, -1, -1):
            out[i] = (pattern >> (8 * k)) & 0xFF
            i += 1
    return bytes(out)


def decode_elements(data, bits, signed=True):
    """The elements in link bytes ``data`` (the inverse of :func:`encode_elements`). HwgenSpiError when the
    length is not a whole number of elements or a value does not fit ``bits`` bits (a corrupted transfer)."""
    nbytes = element_bytes(bits)
    if len(data) % nbytes:
        raise HwgenSpiError(f"{len(data)} bytes are not a whole number of {nbytes}-byte elements")
    values = []
    for i in range(0, len(data), nbytes):
        pattern = 0
        for k in range(nbytes):
            pattern = (pattern << 8) | data[i + k]
        v = to_signed(pattern, 8 * nbytes) if signed else pattern
        try:
            _check_range(v, bits, signed)
        except ValueError as exc:
            raise HwgenSpiError(f"element {i // nbytes}: {exc}")
        values.append(v)
    return values


def describe_status(status):
    """A readable form of a status byte, e.g. ``'0xa9 (BUSY INPUT_READY)'``."""
    names = [n for bit, n in ((STATUS_BUSY, "BUSY"), (STATUS_DONE, "DONE"), (STATUS_ERROR, "ERROR"),
                              (STATUS_INPUT_READY, "INPUT_READY")) if status & bit]
    return f"0x{status:02x} ({' '.join(names) if names else 'idle'})"


def _spin():
    pass


async def run_async(txn, transfer, wait):
    """Run a transaction generator with coroutine functions: ``await transfer(tx) -> rx`` and ``await wait()``
    at every ``WAIT``; its return value. For asyncio on the board, and for simulators (cocotb, Amaranth)."""
    reply = None
    while True:
        try:
            item = txn.send(reply)
        except StopIteration as stop:
            return stop.args[0] if stop.args else None
        if item is WAIT:
            await wait()
            reply = None
        else:
            reply = await transfer(item)


class HwgenSpi:
    """One accelerator behind the SPI link.

    ``transfer(tx) -> rx``: one full-duplex transaction (CS_n low for its duration), ``len(rx) == len(tx)``.
    ``in_bits``/``out_bits``: element widths; ``n_in``/``n_out``: elements per input window / per result
    (row-major); ``in_signed``/``out_signed``: element signedness. ``poll()``: called between two status
    polls (sleep, or wait for the busy pin to fall); ``max_polls``: status polls before giving up.
    """

    def __init__(self, transfer, in_bits, out_bits, n_in, n_out, in_signed=True, out_signed=True, poll=None,
                 max_polls=100000):
        for name, v in (("in_bits", in_bits), ("out_bits", out_bits), ("n_in", n_in), ("n_out", n_out),
                        ("max_polls", max_polls)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, not {v!r}")
        if in_bits > 127 or out_bits > 127 or n_in > 0xFFFF or n_out > 0xFFFF:
            raise ValueError("the link carries elements of at most 127 bits, at most 65535 per tensor")
        self.transfer = transfer
        self.in_bits, self.out_bits = in_bits, out_bits
        self.n_in, self.n_out = n_in, n_out
        self.in_signed, self.out_signed = in_signed, out_signed
        self.poll = poll
        self.max_polls = max_polls

    # ---- transaction generators (no I/O) -------------------------------------------------------------------
    def txn_status(self):
        """The status byte; HwgenSpiError when the reply is not a status byte (no link, wrong mode)."""
        rx = yield bytes((STATUS, 0))
        status = rx[1]
        if status & STATUS_MARK_MASK != STATUS_MARK:
            raise HwgenSpiError(f"no hwgen link: status byte 0x{status:02x} (MISO stuck, or SPI not in mode 0?)")
        return status

    def txn_info(self):
        """The INFO reply as a dict: in_bits, in_signed, out_bits, out_signed, n_in, n_out."""
        rx = yield bytes((INFO,)) + bytes(8)
        r = rx[1:]
        if r[0] != INFO_MAGIC or r[1] != PROTOCOL_VERSION:
            raise HwgenSpiError(f"no hwgen link of protocol version {PROTOCOL_VERSION}: INFO starts "
                                f"0x{r[0]:02x} 0x{r[1]:02x}")
        return {"in_bits": r[2] & 0x7F, "in_signed": bool(r[2] & 0x80), "out_bits": r[3] & 0x7F,
                "out_signed": bool(r[3] & 0x80), "n_in": (r[4] << 8) | r[5], "n_out": (r[6] << 8) | r[7]}

    def txn_check_info(self):
        """HwgenSpiError unless the accelerator's INFO matches this driver's configuration."""
        got = yield from self.txn_info()
        want = {"in_bits": self.in_bits, "in_signed": self.in_signed, "out_bits": self.out_bits,
                "out_signed": self.out_signed, "n_in": self.n_in, "n_out": self.n_out}
        if got != want:
            raise HwgenSpiError(f"the accelerator is {got!r}, the driver was configured for {want!r}")
        return got

    def txn_write_input(self, values):
        """Write one input window (``n_in`` values, row-major)."""
        if len(values) != self.n_in:
            raise ValueError(f"an input window has {self.n_in} elements, not {len(values)}")
        yield bytes((WRITE_INPUT,)) + encode_elements(values, self.in_bits, self.in_signed)

    def txn_start(self):
        """Start an inference on the window in the input buffer."""
        yield bytes((START,))

    def txn_reset(self):
        """Abort a running inference and clear BUSY, DONE, ERROR and INPUT_READY."""
        yield bytes((RESET,))

    def txn_read_output(self):
        """The ``n_out`` output elements of the last inference."""
        nbytes = element_bytes(self.out_bits)
        rx = yield bytes((READ_OUTPUT,)) + bytes(self.n_out * nbytes)
        return decode_elements(rx[1:], self.out_bits, self.out_signed)

    def txn_wait_done(self):
        """Poll STATUS until BUSY clears; the final status. HwgenSpiError on ERROR, on a START that was not
        accepted (BUSY clear without DONE) and after ``max_polls`` polls."""
        for _ in range(self.max_polls):
            status = yield from self.txn_status()
            if status & STATUS_ERROR:
                raise HwgenSpiError(f"accelerator reports an error, status {describe_status(status)} "
                                    "(RESET clears it)")
            if not status & STATUS_BUSY:
                if not status & STATUS_DONE:
                    raise HwgenSpiError(f"no inference ran: status {describe_status(status)}")
                return status
            yield WAIT
        raise HwgenSpiError(f"still busy after {self.max_polls} status polls")

    def txn_infer(self, values):
        """Write ``values`` (one window), start, wait until done, read the result."""
        yield from self.txn_write_input(values)
        yield from self.txn_start()
        yield from self.txn_wait_done()
        result = yield from self.txn_read_output()
        return result

    # ---- blocking forms --------------------------------------------------------------------------------------
    def run(self, txn, poll=None):
        """Run a transaction generator to its end with ``transfer`` (and ``poll``, default the constructor's,
        at every ``WAIT``); its return value."""
        poll = poll or self.poll or _spin
        reply = None
        while True:
            try:
                item = txn.send(reply)
            except StopIteration as stop:
                return stop.args[0] if stop.args else None
            if item is WAIT:
                poll()
                reply = None
            else:
                reply = self.transfer(item)
                if len(reply) != len(item):
                    raise HwgenSpiError(f"transfer returned {len(reply)} bytes for {len(item)} sent")

    def status(self):
        """The status byte (bits: STATUS_BUSY, STATUS_DONE, STATUS_ERROR, STATUS_INPUT_READY)."""
        return self.run(self.txn_status())

    def busy(self):
        """True while an inference runs."""
        return bool(self.status() & STATUS_BUSY)

    def info(self):
        """The accelerator's element widths and counts (see :meth:`txn_info`)."""
        return self.run(self.txn_info())

    def check_info(self):
        """HwgenSpiError unless the accelerator matches this driver's configuration."""
        return self.run(self.txn_check_info())

    def write_input(self, values):
        """Write one input window (``n_in`` values, row-major)."""
        self.run(self.txn_write_input(values))

    def start(self):
        """Start an inference on the window in the input buffer."""
        self.run(self.txn_start())

    def reset(self):
        """Abort a running inference and clear the status flags."""
        self.run(self.txn_reset())

    def wait_done(self, poll=None):
        """Poll until the inference is done; the final status byte."""
        return self.run(self.txn_wait_done(), poll)

    def read_output(self):
        """The output elements of the last inference (a list of ints)."""
        return self.run(self.txn_read_output())

    def infer(self, values, poll=None):
        """One inference: write ``values``, start, wait (calling ``poll`` between status polls), read."""
        return self.run(self.txn_infer(values), poll)
