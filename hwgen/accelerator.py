"""The Python API's accelerator: an integer graph with the steps users run on it (predict, save, build,
simulate, estimate). Torch-free (``hwgen.load`` loads no torch); the build steps are imported when called.

    acc = hwgen.convert(model, x)        # hwgen.nn model -> Accelerator (hwgen.nn.convert)
    acc.predict(x)                       # the golden integer model (the deployed model)
    acc.save("graph/"); hwgen.load("graph/")
    b = acc.build("out/", board="xc7s15", parallel="auto")
    acc.simulate(windows)                # cocotb + Verilator on the build, == golden on every element
    acc.estimate()                       # Yosys synth_xilinx: resources, timing proxy, energy
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.errors import HwgenError
from hwgen.golden import run as golden_run
from hwgen.host.quantize import quantize_input
from hwgen.ir.graph import Graph


def _array(x, what: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise HwgenError(f"{what}: not an array ({exc})") from None
    if arr.dtype.kind not in "iuf":
        raise HwgenError(f"{what}: must hold numbers, not {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise HwgenError(f"{what}: holds NaN or infinite values")
    return arr


def input_integers(graph: Graph, x, what: str = "input") -> np.ndarray:
    """Windows as the graph's input integers: integer arrays as they are, float arrays quantized with the
    graph's input scale (the host's rounding); one window [time, features] or a batch."""
    arr = _array(x, what)
    shape = tuple(graph.input_type.shape)
    if tuple(arr.shape[-len(shape):]) != shape or arr.ndim not in (len(shape), len(shape) + 1):
        raise HwgenError(f"{what}: shape {arr.shape} does not match the accelerator's input {shape} "
                         "(one window or a batch of them)")
    if arr.dtype.kind in "iu":
        t = graph.input_type.dtype
        if not t.contains(arr):
            raise HwgenError(f"{what}: integers in [{int(arr.min())}, {int(arr.max())}] leave the input type {t}")
        return arr.astype(np.int64)
    if "input_scale" not in graph.meta:
        raise HwgenError(f"{what}: the graph records no input scale; give the input integers")
    return quantize_input(arr, graph.meta["input_scale"], graph.input_type.dtype.bits)


class Build:
    """A build folder written by :meth:`Accelerator.build` (or ``hwgen build``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Build({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def report(self) -> dict[str, Any]:
        """report.json as it is now."""
        from hwgen.steps.build import read_report

        return read_report(self.path)

    def simulate(self, windows, simulator: str = "verilator", stall: float = 0.0, seed: int = 0) -> dict[str, Any]:
        """Stream ``windows`` (float: quantized with the input scale; or integers) through the emitted Verilog
        under cocotb; HwgenError naming the first mismatch unless every output element == golden. Returns the
        report's ``sim`` section."""
        from hwgen.steps.build import load_build, simulate_build

        xi = input_integers(load_build(self.path), windows, "windows")
        return simulate_build(str(self.path), simulator, stall=stall, seed=seed, inputs=xi)

    def estimate(self) -> dict[str, Any]:
        """Yosys synth_xilinx of the Verilog: resources against the part, logic levels, energy (report.json)."""
        from hwgen.steps.build import estimate_build

        return estimate_build(str(self.path))


class Accelerator:
    """An integer graph (``graph``: ``hwgen.ir.Graph``) and the steps that run on it."""

    def __init__(self, graph: Graph, build: Build | None = None) -> None:
        if not isinstance(graph, Graph):
            raise HwgenError(f"Accelerator takes an hwgen.ir.Graph, not {type(graph).__name__}")
        self.graph = graph
        self.last_build = build

    def __repr__(self) -> str:
        return (f"Accelerator({len(self.graph.nodes)} nodes, input {self.graph.input_type.shape} "
                f"{self.graph.input_type.dtype}, output {self.graph.output_type.shape} {self.graph.output_type.dtype})")

    @property
    def input_scale(self):
        return self.graph.meta.get("input_scale")

    @property
    def output_scale(self) -> float | None:
        return self.graph.meta.get("output_scale")

    def predict(self, x, integers: bool = False) -> np.ndarray:
        """The deployed integer model (golden interpreter) on ``x``: float windows are quantized with the
        graph's input scale, integer windows taken as the input integers; one window [time, features] or a
        batch. Returns the outputs in real units (output integers times the output scale), or the output
        integers with ``integers``; shaped like the model's output ([batch, ...])."""
        xi = input_integers(self.graph, x)
        single = xi.ndim == len(self.graph.input_type.shape)
        y = golden_run(self.graph, xi if not single else xi[None])
        shape = self.graph.meta.get("output_shape")
        y = y.reshape(len(y), *shape) if shape is not None else y
        if not integers:
            if self.output_scale is None:
                raise HwgenError("the graph records no output scale: predict(x, integers=True)")
            y = y * float(self.output_scale)
        return y[0] if single else y

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the graph (graph.json + consts.npz) into ``directory``, atomically; :func:`load` reads it."""
        return self.graph.save(directory)

    def build(self, out: str | os.PathLike, board: str = "xc7s15", parallel: str | int = "auto",
              force: bool = False) -> Build:
        """Lower to Verilog in ``out`` with ``hwgen.steps.build`` (as ``hwgen build``): rtl/, graph, design.json,
        vivado/, report.json. Returns the :class:`Build`, also kept for :meth:`simulate` and :meth:`estimate`."""
        from hwgen.steps.build import build

        with tempfile.TemporaryDirectory(prefix="hwgen-graph-") as tmp:
            src = Path(tmp) / "graph"
            self.graph.save(src)
            build(str(src), str(out), board, parallel, with_accuracy=False, force=force)
        self.last_build = Build(out)
        return self.last_build

    def _need_build(self) -> Build:
        if self.last_build is None:
            raise HwgenError("no build yet: call acc.build(out) first")
        return self.last_build

    def simulate(self, windows, simulator: str = "verilator", stall: float = 0.0, seed: int = 0) -> dict[str, Any]:
        """Simulate the last build on ``windows`` (see :meth:`Build.simulate`)."""
        return self._need_build().simulate(windows, simulator, stall, seed)

    def estimate(self) -> dict[str, Any]:
        """Yosys estimate of the last build (see :meth:`Build.estimate`)."""
        return self._need_build().estimate()


def load(directory: str | os.PathLike) -> Accelerator:
    """The accelerator saved by :meth:`Accelerator.save`, exported by ``hwgen export`` or built by
    ``hwgen build`` (a build folder: ``simulate`` and ``estimate`` then use it)."""
    directory = Path(directory)
    from hwgen.steps.build import MARKER, load_build

    if (directory / MARKER).is_file():
        return Accelerator(load_build(directory), Build(directory))
    return Accelerator(Graph.load(directory))
