"""``hwgen.convert``: a model built from hwgen.nn layers -> an :class:`hwgen.Accelerator`, by graph capture
(``hwgen.nn.capture``) and its exact check."""

from __future__ import annotations

import torch
from torch import nn

from hwgen.errors import HwgenError
from hwgen.ir.graph import Graph
from hwgen.nn.capture import CHECK_BATCH, Capture, _batch


def convert(model: nn.Module, example_input, calibration=None):
    """The integer accelerator of ``model`` (hwgen.nn layers composed in a torch.nn.Module), checked to
    compute exactly what the model's quantized forward computes on ``example_input`` and ``calibration``
    (each [batch, time, features]). Returns an :class:`hwgen.Accelerator`; HwgenError (one line) naming the
    module or function it cannot map, or the first graph node that would differ."""
    from hwgen.accelerator import Accelerator

    cap = Capture(model, example_input)
    graph = cap.build()
    inputs = [cap.example] + ([] if calibration is None else [_batch(calibration, "calibration")])
    for x in inputs[1:]:
        if tuple(x.shape[1:]) != tuple(cap.example.shape[1:]):
            raise HwgenError(f"calibration: windows of shape {tuple(x.shape[1:])}, the example input's are "
                             f"{tuple(cap.example.shape[1:])}")
    windows = cap.check(graph, [chunk for x in inputs for chunk in torch.split(x, CHECK_BATCH)])
    graph = Graph(graph.input_name, graph.input_type, graph.nodes, graph.consts, graph.output_name,
                  {**graph.meta, "checked_windows": int(windows)})
    return Accelerator(graph)
