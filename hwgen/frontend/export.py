"""Export a quantization-aware-trained model to the integer-only IR: a one-to-one translation, each
quantizer's scale turning into the integer rescales (dyadic m0/shift) of the op that produces it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hwgen.errors import HwgenError
from hwgen.frontend.integer_kernels import LN_NORM_BITS, LN_RECIP_BITS, SOFTMAX_RECIP_BITS
from hwgen.frontend.model import EncoderLayer, Norm, QLinear, TimeSeriesTransformer
from hwgen.frontend.peg import shared_exponents
from hwgen.frontend.quantizer import Quantizer
from hwgen.ir.builder import GraphBuilder
from hwgen.ir.dyadic import common_dyadic, dyadic, dyadic_array, softmax_lut
from hwgen.ir.graph import Graph
from hwgen.ir.types import IntType
from hwgen.tasks import get as get_task


def _scale(q: Quantizer) -> float:
    if q.per_channel and q.scale.numel() > 1:
        raise HwgenError(f"activation quantizer {q} must be per-tensor")
    return float(q.effective_scale().reshape(-1)[0])


def _scales(q: Quantizer):
    """The output scale of a quantizer as the exporter divides by: one per channel for a PEG quantizer."""
    return q.channel_scales().numpy() if q.peg else _scale(q)


def _shl(q: Quantizer):
    """Per-channel left shifts of a PEG tensor's consumer (None for a per-tensor quantizer)."""
    return q.exponent.numpy().astype(np.int64) if q.peg else None


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


class _Exporter:
    def __init__(self, model: TimeSeriesTransformer, class_scores: bool = True) -> None:
        self.model = model
        self.class_scores = class_scores
        self.cfg = model.cfg
        self.b = GraphBuilder("x", (self.cfg.input_steps, self.cfg.features), IntType(self.cfg.bits_in))

    def linear(self, name: str, lin: QLinear, src: str, s_in, q_out: Quantizer, relu: bool = False,
               shl=None, rows: int | None = None) -> str:
        w = lin.weight.detach().double()
        if not np.isscalar(s_in):  # per-feature input scales fold into the weights (see QLinear.forward)
            w = w * torch.as_tensor(np.asarray(s_in, np.float64))
            s_in = 1.0
        w_int = lin.wq.int_repr(w).numpy()
        s_w = lin.wq.effective_scale().reshape(-1).numpy()
        s_w = np.broadcast_to(s_w, (w.shape[0],)).astype(np.float64)
        acc_scale = s_in * s_w
        bias = np.floor(lin.bias.detach().double().numpy() / acc_scale + 0.5).astype(np.int64)
        m0, shift = dyadic_array(acc_scale / _scales(q_out))
        return self.b.linear(name, src, w_int, bias, m0, shift, q_out.dtype, IntType(lin.wq.bits), relu=relu,
                             in_shl=shl, rows=rows)

    def add(self, name: str, a: str, s_a: float, c: str, s_c: float, q_out: Quantizer) -> str:
        s_y = _scale(q_out)
        ma, mc, shift = common_dyadic(s_a / s_y, s_c / s_y)
        return self.b.add(name, a, c, ma, mc, 0, shift, q_out.dtype)

    def norm(self, name: str, norm: Norm, src: str, s_in, q_out: Quantizer) -> str:
        s_y = _scale(q_out)
        if norm.kind == "batch":
            s_y = _scales(q_out)  # per channel for PEG tensors (the input's s_in then is too)
            bn = norm.bn
            a = (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()
            c = bn.bias.detach().double().numpy() - bn.running_mean.double().numpy() * a
            mul, shift = dyadic_array(s_in * a / s_y)
            bias = np.floor(c / s_y * np.exp2(shift) + 0.5).astype(np.int64)
            return self.b.affine(name, src, mul, bias, shift, q_out.dtype)
        gamma = norm.weight.detach().double().numpy() / (s_y * (1 << LN_NORM_BITS))
        beta = norm.bias.detach().double().numpy() / s_y
        _, shift = dyadic(float(np.abs(gamma).max()) or 1.0)
        shift = max(shift, 1)
        g = np.floor(gamma * 2.0**shift + 0.5).astype(np.int64)
        bt = np.floor(beta * 2.0**shift + 0.5).astype(np.int64)
        return self.b.layernorm(name, src, g, bt, shift, LN_NORM_BITS, LN_RECIP_BITS, q_out.dtype)

    def layer(self, i: int, layer: EncoderLayer, h: str, hq: Quantizer) -> tuple[str, Quantizer]:
        cfg, p, s_h = self.cfg, f"l{i}.", _scale(hq)
        q = self.linear(p + "q", layer.wq, h, s_h, layer.q_q, shl=_shl(hq))
        k = self.linear(p + "k", layer.wk, h, s_h, layer.q_k, shl=_shl(hq))
        v = self.linear(p + "v", layer.wv, h, s_h, layer.q_v, shl=_shl(hq))
        s_sc = _scale(layer.q_scores)
        dh = cfg.d_model // cfg.heads
        m0, shift = dyadic(_scale(layer.q_q) * _scale(layer.q_k) / (math.sqrt(dh) * s_sc))
        scores = self.b.attn_scores(p + "scores", q, k, cfg.heads, m0, shift, layer.q_scores.dtype)
        probs = self.b.softmax(p + "softmax", scores, softmax_lut(s_sc, layer.q_scores.bits), SOFTMAX_RECIP_BITS,
                               IntType(cfg.bits_prob, signed=False))
        m0, shift = dyadic(2.0**-cfg.bits_prob * _scale(layer.q_v) / _scale(layer.q_attn))
        attn = self.b.attn_apply(p + "attn", probs, v, m0, shift, layer.q_attn.dtype)
        out = self.linear(p + "out", layer.wo, attn, _scale(layer.q_attn), layer.q_out)
        r1 = self.add(p + "res1", h, s_h, out, _scale(layer.q_out), layer.q_res1)
        n1 = self.norm(p + "norm1", layer.norm1, r1, _scales(layer.q_res1), layer.q_norm1)
        f1 = self.linear(p + "ffn1", layer.ffn1, n1, _scale(layer.q_norm1), layer.q_ffn1, relu=True,
                         shl=_shl(layer.q_norm1))
        f2 = self.linear(p + "ffn2", layer.ffn2, f1, _scale(layer.q_ffn1), layer.q_ffn2)
        r2 = self.add(p + "res2", n1, _scale(layer.q_norm1), f2, _scale(layer.q_ffn2), layer.q_res2)
        n2 = self.norm(p + "norm2", layer.norm2, r2, _scales(layer.q_res2), layer.q_norm2)
        return n2, layer.q_norm2

    def run(self, meta: dict[str, Any]) -> Graph:
        m, cfg = self.model, self.cfg
        s_in = m.q_in.effective_scale().reshape(-1).numpy()
        # a forecasting anomaly detector's input ends with the steps it scores: the embedding reads the window
        rows = cfg.window if cfg.input_steps != cfg.window else None
        h = self.linear("embed", m.embed, "x", s_in, m.q_embed, rows=rows)
        pe = self.b.const("pos_enc", m.q_pe.int_repr(m.pe.double()).numpy(), m.q_pe.dtype)
        h = self.add("pos_add", h, _scale(m.q_embed), pe, _scale(m.q_pe), m.q_pos)
        hq = m.q_pos
        for i, layer in enumerate(m.encoder):
            h, hq = self.layer(i, layer, h, hq)
        m0, shift = dyadic(_scale(hq) / (cfg.window * _scale(m.q_pool)))
        pooled = self.b.avgpool("pool", h, m0, shift, 0, m.q_pool.dtype)
        out = self.linear("head", m.head, pooled, _scale(m.q_pool), m.q_head, shl=_shl(m.q_pool))
        out, head_meta = get_task(cfg.task).add_head(self.b, m, out, s_in, self.class_scores)
        full_meta = {
            **meta,
            "config": cfg.to_dict(),
            "macs": cfg.macs(),
            "input_scale": [float(v) for v in s_in],
            "output_scale": _scale(m.q_head),
            **head_meta,
        }
        exponents = shared_exponents(m)
        if exponents is not None:
            full_meta["peg_exponents"] = [int(v) for v in exponents]
        return self.b.finish(out, full_meta)


def export_model(model: TimeSeriesTransformer, meta: dict[str, Any] | None = None,
                 class_scores: bool = True) -> Graph:
    """The integer graph of a fake-quantized model (eval mode). ``meta`` (dataset, scaling, ...) is copied
    into the graph's host-side metadata; a classifier's graph returns the class index and, with
    ``class_scores``, the class scores after it. Raises HwgenError for an FP32 or non-exportable model."""
    _check_exportable(model)
    model.eval()
    with torch.no_grad():
        return _Exporter(model, class_scores).run(dict(meta or {}))

