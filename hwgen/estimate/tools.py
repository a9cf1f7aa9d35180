"""Finding the external tools the estimate steps run."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from hwgen.errors import HwgenError


def find_tool(name: str, install_hint: str) -> str:
    """The path of ``name``: on PATH, or beside this interpreter (the venv's bin/ when it is not on PATH).
    HwgenError with ``install_hint`` when neither has it."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    raise HwgenError(f"{name} not found: {install_hint}")
