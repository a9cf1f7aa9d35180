"""Export a quantization-aware-trained TimeSeriesTransformer to the integer-only IR through the one export
path every model takes: its integer form as an hwgen.nn model (``hwgen.frontend.twin``: the same layers a
user composes, holding its weights and learned scales), captured by ``hwgen.convert``'s graph capture and
checked element for element against that model's forward, then the task's head."""

from __future__ import annotations

from typing import Any

import torch

from hwgen.errors import HwgenError
from hwgen.frontend.model import EncoderLayer, TimeSeriesTransformer
from hwgen.frontend.peg import shared_exponents
from hwgen.frontend.quantizer import Quantizer
from hwgen.frontend.twin import captured_graph
from hwgen.ir.graph import Graph
from hwgen.tasks import get as get_task

CHECK_WINDOWS = 64  # random windows on which the captured graph is checked against the twin's forward


def _check_structure(model) -> None:
    """HwgenError naming the first module or method the translation below would not see: the exporter walks
    TimeSeriesTransformer's own attributes, so any other model, an overridden forward or an added or replaced
    module (a GELU, a Conv1d stem, ...) would be exported silently wrong."""
    hint = "for your own model compose hwgen.nn layers and use hwgen.convert(model, example_input)"
    if not isinstance(model, TimeSeriesTransformer):
        raise HwgenError(f"export takes hwgen's TimeSeriesTransformer, not {type(model).__name__}: {hint}")
    for cls in (TimeSeriesTransformer, EncoderLayer):
        for name, m in model.named_modules():
            if isinstance(m, cls) and type(m) is not cls:
                for attr in ("forward", "attention"):
                    if getattr(type(m), attr, None) is not getattr(cls, attr, None):
                        raise HwgenError(f"model{'.' + name if name else ''}: {type(m).__name__} overrides "
                                         f"{cls.__name__}.{attr}, which export does not see; {hint}")
    with torch.random.fork_rng(devices=[]):  # the reference build draws initial weights: keep the RNG state
        expected = {n: type(m) for n, m in TimeSeriesTransformer(model.cfg).named_modules()}
    for name, m in model.named_modules():
        want = expected.get(name)
        if name and (want is None or type(m) is not want):  # the root may be a subclass (checked above)
            what = "is not part of" if want is None else f"replaces the {want.__name__} of"
            raise HwgenError(f"model.{name}: {type(m).__module__}.{type(m).__qualname__} {what} the "
                             f"TimeSeriesTransformer that export translates; {hint}")
    missing = sorted(set(expected) - {n for n, _ in model.named_modules()})
    if missing:
        raise HwgenError(f"model.{missing[0]}: missing from the TimeSeriesTransformer that export translates")


def _check_exportable(model: TimeSeriesTransformer) -> None:
    _check_structure(model)
    if not model.cfg.quantized:
        raise HwgenError("an FP32 checkpoint has no integer form: train with --bits N (QAT) or run 'hwgen quantize'")
    for name, module in model.named_modules():
        if isinstance(module, Quantizer) and not module.symmetric:
            raise HwgenError(f"quantizer {name!r} is asymmetric: the integer IR takes symmetric quantizers only")
        if isinstance(module, Quantizer) and not bool(module.initialized):
            raise HwgenError(f"quantizer {name!r} was never calibrated: the checkpoint is not a trained QAT model")
    try:
        shared_exponents(model)
    except ValueError as exc:
        raise HwgenError(f"per-embedding-group quantizers must share their exponents: {exc}") from None


def export_model(model: TimeSeriesTransformer, meta: dict[str, Any] | None = None,
                 class_scores: bool = True) -> Graph:
    """The integer graph of a quantized model (eval mode). ``meta`` (dataset, scaling, ...) is copied
    into the graph's host-side metadata; a classifier's graph returns the class index and, with
    ``class_scores``, the class scores after it. Raises HwgenError for an FP32 or non-exportable model, or
    (naming the node) if the captured graph differed from the model's integer forward on any element."""
    _check_exportable(model)
    model.eval()
    cfg = model.cfg
    s_in = model.q_in.effective_scale().reshape(-1).numpy()

    def finish(b, out, _captured_meta):
        node, head_meta = get_task(cfg.task).add_head(b, model, out.name, s_in, class_scores)
        full = {**dict(meta or {}), "config": cfg.to_dict(), "macs": cfg.macs(),
                "input_scale": [float(v) for v in s_in],
                "output_scale": float(model.q_head.effective_scale().reshape(-1)[0]), **head_meta}
        exponents = shared_exponents(model)
        if exponents is not None:
            full["peg_exponents"] = [int(v) for v in exponents]
        return b.finish(node, full)

    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(CHECK_WINDOWS, cfg.input_steps, cfg.features, generator=gen)
        graph, cap = captured_graph(model, finish=finish, example=x)
        cap.check(graph, [x])  # the twin's forward == the graph, every value, every element
    return graph
