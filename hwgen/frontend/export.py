"""Export a quantization-aware-trained model to the integer-only IR: a one-to-one translation, each
quantizer's scale turning into the integer rescales (dyadic m0/shift) of the op that produces it."""

from __future__ import annotations

from typing import Any

import torch

from hwgen.errors import HwgenError
from hwgen.frontend.integer_graph import Translator
from hwgen.frontend.model import EncoderLayer, TimeSeriesTransformer
from hwgen.frontend.peg import shared_exponents
from hwgen.frontend.quantizer import Quantizer
from hwgen.ir.graph import Graph


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
    """The integer graph of a fake-quantized model (eval mode). ``meta`` (dataset, scaling, ...) is copied
    into the graph's host-side metadata; a classifier's graph returns the class index and, with
    ``class_scores``, the class scores after it. Raises HwgenError for an FP32 or non-exportable model."""
    _check_exportable(model)
    model.eval()
    with torch.no_grad():
        return Translator(model, class_scores).run(dict(meta or {}))

