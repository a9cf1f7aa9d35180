"""The integer graph of a TimeSeriesTransformer's current parameters: a one-to-one translation, each
quantizer's scale turning into the integer rescales (dyadic m0/shift) of the op that produces it.

Used by export (``hwgen.frontend.export``, after its checks) and by the model's exact quantized forward
(``TimeSeriesTransformer.forward`` returns this graph's outputs, run by the golden interpreter). It reads the
model's attributes only (no import of ``hwgen.frontend.model``, which imports this module).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hwgen.errors import HwgenError
from hwgen.frontend.integer_kernels import LN_NORM_BITS, LN_RECIP_BITS, SOFTMAX_RECIP_BITS
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


class Translator:
    """The integer graph of ``model`` (a TimeSeriesTransformer). ``batch_stats`` maps a BatchNorm1d to the
    (mean, biased variance) it normalised the current batch with (training mode), folded instead of its
    running statistics."""

    def __init__(self, model, class_scores: bool = True, batch_stats: dict | None = None) -> None:
        self.model = model
        self.class_scores = class_scores
        self.batch_stats = batch_stats or {}
        self.cfg = model.cfg
        self.b = GraphBuilder("x", (self.cfg.input_steps, self.cfg.features), IntType(self.cfg.bits_in))

    def linear(self, name: str, lin, src: str, s_in, q_out: Quantizer, relu: bool = False,
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

    def norm(self, name: str, norm, src: str, s_in, q_out: Quantizer) -> str:
        s_y = _scale(q_out)
        if norm.kind == "batch":
            s_y = _scales(q_out)  # per channel for PEG tensors (the input's s_in then is too)
            bn = norm.bn
            mean, var = self.batch_stats.get(bn, (bn.running_mean, bn.running_var))
            a = (bn.weight.detach().double() / torch.sqrt(var.detach().double() + bn.eps)).numpy()
            c = bn.bias.detach().double().numpy() - mean.detach().double().numpy() * a
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

    def layer(self, i: int, layer, h: str, hq: Quantizer) -> tuple[str, Quantizer]:
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

    def run(self, meta: dict[str, Any], task_head: bool = True) -> Graph:
        """The graph; without ``task_head`` it ends at the model's own output (the ``head`` linear), which
        is what the model's forward returns."""
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
        out, head_meta = get_task(cfg.task).add_head(self.b, m, out, s_in, self.class_scores) if task_head else (out, {})
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
