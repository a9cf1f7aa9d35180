"""The integer form of a TimeSeriesTransformer as an hwgen.nn model: the same layers a user composes
(QuantAct, QuantLinear, SinusoidalPositionalEncoding, QuantMultiheadAttention, QuantAdd, QuantBatchNorm1d or
QuantLayerNorm, QuantReLU, QuantMeanPool), holding the model's weights and the scales its quantizers learned.

``export_model`` converts it with ``hwgen.convert``'s capture (one export path for every model), and the
model's exact quantized forward is its forward. Its layers carry the graph names the reference model's nodes
have always had (embed, pos_add, l0.q ... l0.norm2, pool, head).
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwgen.errors import HwgenError
from hwgen.frontend.quantizer import Quantizer
from hwgen.ir.dyadic import common_dyadic
from hwgen.ir.types import IntType
from hwgen.nn.layers import (QuantAct, QuantAdd, QuantBatchNorm1d, QuantLayerNorm, QuantLinear, QuantMeanPool,
                             QuantMultiheadAttention, QuantReLU, SinusoidalPositionalEncoding, _value)
from hwgen.nn.quant import ActQuant, emit, info_of
from hwgen.ops.linear import linear as golden_linear


def _share_act(act: ActQuant, q: Quantizer) -> None:
    """``act`` uses ``q``'s scale tensor itself (one, or one per channel: learned or not, it moves with the
    model) and is marked initialised."""
    if act.dtype != q.dtype:
        raise HwgenError(f"internal: quantizer types differ ({act.dtype} vs {q.dtype})")
    if isinstance(q.scale, nn.Parameter):
        act.scale = q.scale
    else:  # a quantizer whose range is tracked, not learned: its scale is a buffer
        act._parameters.pop("scale", None)
        act.register_buffer("scale", q.scale, persistent=False)
    act.initialized.fill_(True)


def _named(module: nn.Module, name: str) -> nn.Module:
    module.graph_name = name
    return module


def _exponents(q: Quantizer | None) -> np.ndarray | None:
    """A per-embedding-group quantizer's channel exponents (its channel c has scale s * 2**e[c]), else None."""
    return q.exponent.detach().cpu().numpy().astype(np.int64) if q is not None and q.peg else None


class _GroupScales:
    """Per embedding group (PEG): the exponents of the model's quantizers of a layer's input and output
    (``_q_in``, ``_q_out``: not submodules here), and the output scales they give, base * 2**e[c]."""

    _q_in: Quantizer | None = None
    _q_out: Quantizer | None = None

    @property
    def in_e(self) -> np.ndarray | None:
        return _exponents(self._q_in)

    @property
    def out_e(self) -> np.ndarray | None:
        return _exponents(self._q_out)

    def out_scales(self):
        return self.out_quant.value() * (np.exp2(self.out_e) if self.out_e is not None else 1.0)


class _TwinLinear(_GroupScales, QuantLinear):
    """A QuantLinear as the reference model's linears are: reading only the first ``rows`` time steps (the
    IR linear's ``rows``: the embedding of a forecasting anomaly detector, whose input ends with the steps it
    scores), and per embedding group (PEG) an input whose channel c stands for base * 2**in_shl[c]
    (``in_shl``: exact left shifts of the partial sums) and an output of scales base * 2**out_e[c]."""

    rows: int | None = None

    @property
    def in_shl(self) -> np.ndarray | None:
        return self.in_e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        info = info_of(x, self.who())
        if self.rows is not None:
            x = emit(x[:, : self.rows], info.ints[:, : self.rows], info.scale, info.dtype)
            info = info_of(x, self.who())
        w, bias, m0, shift = self.int_params(info.scale)
        ints = golden_linear(info.numpy(), w, bias, m0, shift, self.dtype, in_shl=self.in_shl)
        surrogate = F.linear(x, self.wq.fake(self.weight), self.bias)  # (no gradient is taken through a twin)
        return emit(surrogate, ints, self.out_quant.value(), self.dtype)

    def export(self, b, name, args):
        (x,) = args
        w, bias, m0, shift = self.int_params(x.scale)
        b.linear(name, x.name, w, bias, m0, shift, self.dtype, IntType(self.weight_bits), in_shl=self.in_shl,
                 rows=self.rows)
        return _value(b, name, self.out_quant.value(), self.dtype)


class _TwinBatchNorm(_GroupScales, QuantBatchNorm1d):
    """The folded BatchNorm of per-embedding-group tensors: input and output channel c at base * 2**e[c]."""

    def int_params(self, s_in, mean, var):
        return super().int_params(s_in * (np.exp2(self.in_e) if self.in_e is not None else 1.0), mean, var)


class _TablePE(SinusoidalPositionalEncoding):
    """The positional encoding with the model's own table quantizer (``q_pe``) and constant name."""

    def __init__(self, d_model: int, table: torch.Tensor, q_pe: Quantizer, act_bits: int) -> None:
        super().__init__(d_model, table.shape[0], pe_bits=q_pe.bits, act_bits=act_bits)
        self.pe = table
        object.__setattr__(self, "q_pe", q_pe)

    def table(self, length: int) -> tuple[np.ndarray, float]:
        return (self.q_pe.int_repr(self.pe.double()).numpy()[:length],
                float(self.q_pe.effective_scale().reshape(-1)[0]))

    def export(self, b, name, args):
        (x,) = args
        pe_int, s_pe = self.table(x.shape[0])
        pe = b.const("pos_enc", pe_int, IntType(self.pe_bits))
        so = self.out_quant.value()
        ma, mb, shift = common_dyadic(x.scale / so, s_pe / so)
        b.add(name, x.name, pe, ma, mb, 0, shift, self.dtype)
        return _value(b, name, so, self.dtype)


def _linear(lin, q_out: Quantizer, name: str, q_in: Quantizer | None = None) -> _TwinLinear:
    """The QuantLinear of the model's QLinear ``lin`` (its weight, bias and learned weight scales
    themselves), reading a tensor of quantizer ``q_in`` and writing one of ``q_out``."""
    wq = lin.wq
    twin = _TwinLinear(lin.in_features, lin.out_features, weight_bits=wq.bits, act_bits=q_out.bits,
                       per_channel=wq.per_channel, weight_scale="lsq", act_signed=q_out.signed)
    twin.weight, twin.bias = lin.weight, lin.bias
    _share_act(twin.wq.quant, wq)
    _share_act(twin.out_quant, q_out)
    object.__setattr__(twin, "_q_in", q_in)
    object.__setattr__(twin, "_q_out", q_out)
    return _named(twin, name)


def _norm(norm, q_in: Quantizer, q_out: Quantizer, name: str) -> nn.Module:
    if norm.kind == "batch":
        bn = norm.bn
        twin = _TwinBatchNorm(bn.num_features, eps=bn.eps, act_bits=q_out.bits)
        twin.weight, twin.bias = bn.weight, bn.bias
        object.__setattr__(twin, "_q_in", q_in)
        object.__setattr__(twin, "_q_out", q_out)
        object.__setattr__(twin, "source", bn)
    else:
        twin = QuantLayerNorm(norm.weight.shape[0], act_bits=q_out.bits)
        twin.weight, twin.bias = norm.weight, norm.bias
    _share_act(twin.out_quant, q_out)
    return _named(twin, name)


class _Layer(nn.Module):
    """One post-norm encoder layer: attention, add, norm, FFN (ReLU), add, norm."""

    def __init__(self, layer, i: int, q_in: Quantizer) -> None:
        super().__init__()
        cfg, p = layer.cfg, f"l{i}"
        d = cfg.d_model
        attn = QuantMultiheadAttention(d, cfg.heads, weight_bits=layer.wq.wq.bits, act_bits=layer.q_q.bits,
                                       weight_scale="lsq", prob_bits=cfg.bits_prob)
        for part, lin, q in (("q_proj", layer.wq, layer.q_q), ("k_proj", layer.wk, layer.q_k),
                             ("v_proj", layer.wv, layer.q_v), ("out_proj", layer.wo, layer.q_out)):
            reads = q_in if part != "out_proj" else None
            setattr(attn, part, _linear(lin, q, f"{p}.{part}", reads))  # (the attention names its own nodes)
        for act, q in ((attn.score_quant, layer.q_scores), (attn.attn_quant, layer.q_attn)):
            _share_act(act, q)
        self.attn = _named(attn, p)
        self.res1 = _named(QuantAdd(act_bits=layer.q_res1.bits), f"{p}.res1")
        _share_act(self.res1.out_quant, layer.q_res1)
        self.norm1 = _norm(layer.norm1, layer.q_res1, layer.q_norm1, f"{p}.norm1")
        self.ffn1 = _linear(layer.ffn1, layer.q_ffn1, f"{p}.ffn1", layer.q_norm1)
        self.relu = QuantReLU()
        self.ffn2 = _linear(layer.ffn2, layer.q_ffn2, f"{p}.ffn2")
        self.res2 = _named(QuantAdd(act_bits=layer.q_res2.bits), f"{p}.res2")
        _share_act(self.res2.out_quant, layer.q_res2)
        self.norm2 = _norm(layer.norm2, layer.q_res2, layer.q_norm2, f"{p}.norm2")

    def forward(self, h):
        a, _ = self.attn(h, h, h)
        n1 = self.norm1(self.res1(h, a))
        return self.norm2(self.res2(n1, self.ffn2(self.relu(self.ffn1(n1)))))


class Twin(nn.Module):
    """The hwgen.nn model whose forward and integer graph are the TimeSeriesTransformer ``model``'s integer
    model. It holds the model's own parameter and scale tensors (so it follows the model as it trains);
    :meth:`refresh` sets what each BatchNorm folds: its running statistics, or a training batch's."""

    def __init__(self, model) -> None:
        super().__init__()
        cfg = model.cfg
        self.q = QuantAct(cfg.bits_in, channels=cfg.features)
        _share_act(self.q.quant, model.q_in)
        self.embed = _linear(model.embed, model.q_embed, "embed")
        self.embed.rows = cfg.window if cfg.input_steps != cfg.window else None
        self.pos = _named(_TablePE(cfg.d_model, model.pe, model.q_pe, model.q_pos.bits), "pos_add")
        _share_act(self.pos.out_quant, model.q_pos)
        reads = [model.q_pos] + [layer.q_norm2 for layer in model.encoder]  # what each encoder layer reads
        self.layers = nn.ModuleList(_Layer(layer, i, reads[i]) for i, layer in enumerate(model.encoder))
        self.pool = _named(QuantMeanPool(act_bits=model.q_pool.bits), "pool")
        _share_act(self.pool.out_quant, model.q_pool)
        self.head = _linear(model.head, model.q_head, "head", model.q_pool)
        self.refresh()

    def refresh(self, batch_stats: dict | None = None) -> Twin:
        """Fold each BatchNorm with ``batch_stats[bn]`` (mean, biased variance of a training batch) where
        given, else with its running statistics; eval mode."""
        stats = batch_stats or {}
        for m in self.modules():
            if isinstance(m, _TwinBatchNorm):
                bn = m.source
                m.running_mean, m.running_var = (t.detach() for t in stats.get(bn, (bn.running_mean, bn.running_var)))
        return self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pos(self.embed(self.q(x)))
        for layer in self.layers:
            h = layer(h)
        return self.head(self.pool(h))


_CAPTURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (its twin, the twin's capture)


def captured_graph(model, batch_stats: dict | None = None, finish=None, example: torch.Tensor | None = None):
    """(graph, capture) of ``model``'s twin through hwgen.convert's graph capture; ``finish`` completes the
    graph (see ``Capture.build``). The twin and its trace are made once per model (they follow its tensors);
    the capture runs the twin on ``example`` (default one window of zeros: every scale is already set, so
    any window gives the same graph)."""
    from hwgen.nn.capture import Capture, _batch

    cfg = model.cfg
    x = torch.zeros(1, cfg.input_steps, cfg.features) if example is None else example
    entry = _CAPTURES.get(model)
    if entry is None:
        twin = Twin(model)
        entry = _CAPTURES[model] = (twin, Capture(twin, x))
    twin, cap = entry
    twin.refresh(batch_stats)
    cap.example = _batch(x, "example_input").to(model.pe.dtype)
    return cap.build(finish), cap
