"""Strict JSON: every JSON file or stream hwgen writes refuses NaN and infinities (not JSON)."""

from __future__ import annotations

import json
import math
from typing import Any

from hwgen.errors import HwgenError


def _nonfinite_path(obj: Any, path: str = "") -> str | None:
    """Where the first non-finite float in ``obj`` is, as ``a.b[2]`` (``None`` if there is none)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{path or '(top level)'} = {obj}"
    if isinstance(obj, dict):
        for key, value in obj.items():
            found = _nonfinite_path(value, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found = _nonfinite_path(value, f"{path}[{i}]")
            if found:
                return found
    return None


def dumps(obj: Any, what: str, **kwargs: Any) -> str:
    """``json.dumps(obj, allow_nan=False, **kwargs)``; a NaN or infinity raises HwgenError naming ``what``
    (a file or stream) and the value's place in it."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as exc:
        where = _nonfinite_path(obj)
        if where is None:
            raise HwgenError(f"{what}: cannot write JSON ({exc})") from None
        raise HwgenError(f"{what}: cannot write the non-finite value {where} (JSON has no NaN or "
                         "infinity)") from None
