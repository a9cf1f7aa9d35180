"""Progress of the long steps of every command, on stderr (stdout stays for results).

Shown only when stderr is a terminal and ``--quiet`` was not given. :func:`step` is an elapsed-time line for
a step of unknown length (synthesis, compiling a simulator, scoring a model); with ``total`` it is a bar whose
count the caller advances. A background thread redraws it, so the elapsed time ticks even while a
subprocess works and nothing is counted.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm

_quiet = False
REFRESH_S = 0.2


def set_quiet(quiet: bool) -> None:
    """``--quiet``: no progress bars, no step lines."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


def enabled() -> bool:
    """True when progress is drawn: stderr is a terminal and ``--quiet`` was not given."""
    if _quiet:
        return False
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _width() -> dict:
    """tqdm's size options: follow the terminal, or 80x24 when it reports none (a bare pty)."""
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return {"dynamic_ncols": True} if columns > 0 else {"ncols": 80, "nrows": 24}


def bar(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it") -> tqdm:
    """A tqdm bar on stderr, disabled when progress is off."""
    on = enabled()
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=not on, leave=False,
                **(_width() if on else {}))


class _Ticker:
    """Redraws a bar every REFRESH_S seconds, so its elapsed time moves while nothing is counted."""

    def __init__(self, pbar: tqdm) -> None:
        self.pbar = pbar
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="hwgen-progress", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(REFRESH_S):
            self.pbar.refresh()


@contextmanager
def step(desc: str, total: int | None = None, unit: str = "it") -> Iterator[tqdm]:
    """Show ``desc`` and the elapsed time while the ``with`` block runs; with ``total``, also a
    bar the block advances (``bar.update(n)`` or ``bar.n = done; bar.refresh()``). Yields the tqdm object (a
    disabled one when progress is off, on which every call is a no-op). Leaves one line with the elapsed
    time when the step ends."""
    on = enabled()
    fmt = "{desc}: {elapsed} elapsed" if total is None else \
        "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}]"
    pbar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not on, bar_format=fmt,
                leave=False, **(_width() if on else {}))
    ticker = _Ticker(pbar) if on else None
    start = time.perf_counter()
    if ticker:
        ticker.thread.start()
    ok = False
    try:
        yield pbar
        ok = True
    finally:
        if ticker:
            ticker.stop.set()
            ticker.thread.join()
        pbar.close()
        if on:
            done = f" ({pbar.n}/{total} {unit})" if total is not None else ""
            status = "done" if ok else "stopped"
            print(f"{desc}: {status} in {time.perf_counter() - start:.1f} s{done}", file=sys.stderr, flush=True)
