"""The tasks a model is trained for: forecast, classify, anomaly. One ``Task`` object each (``get(name)``,
``TASKS``) holds what differs between them; callers dispatch through it. Importing this package loads
neither torch nor pandas (see ``hwgen.tasks.base``)."""

from __future__ import annotations

from typing import Any

from hwgen.errors import HwgenError
from hwgen.tasks.anomaly import Anomaly
from hwgen.tasks.base import Task
from hwgen.tasks.classify import Classify
from hwgen.tasks.forecast import Forecast

TASKS: dict[str, Task] = {t.name: t for t in (Forecast(), Classify(), Anomaly())}


def get(name: str) -> Task:
    """The task called ``name``; HwgenError naming the known ones otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise HwgenError(f"task must be one of {', '.join(TASKS)}, not {name!r}") from None


def reload_data(descriptor: dict[str, Any]):
    """The dataset a checkpoint or graph records (its ``data`` descriptor), reloaded by the task that wrote
    it; HwgenError when the data changed since training."""
    return get(descriptor.get("task", "forecast")).reload_data(descriptor)


__all__ = ["TASKS", "Task", "get", "reload_data"]
