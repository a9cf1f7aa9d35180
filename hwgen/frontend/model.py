"""The time-series Transformer (Ling et al. reference model, generalised) with fake quantization.

Structure: input window [L, F] -> Linear F->d -> + sinusoidal positional encoding -> N post-norm encoder
layers (multi-head self-attention, residual add, BatchNorm1d or LayerNorm, FFN Linear-ReLU-Linear, residual
add, norm) -> average pool over time -> Linear d->outputs. Every tensor the integer graph holds has a
quantizer here, at the same place, so that export is a one-to-one translation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwgen.errors import HwgenError
from hwgen.frontend.twin import captured_graph
from hwgen.golden import run as golden_run
from hwgen.host.quantize import quantize_input
from hwgen.frontend.integer_kernels import layernorm_ste, softmax_ste
from hwgen.frontend.quantizer import Quantizer, round_ste
from hwgen.nn.layers import sinusoidal_table as sinusoidal_encoding
from hwgen.tasks import TASKS

MAX_HORIZON = 32  # the bound hwgen.data.tasks.MAX_HORIZON (not imported here: it would load pandas)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and quantization of a model; stored in every checkpoint."""

    features: int = 7
    window: int = 24
    d_model: int = 16
    heads: int = 1
    layers: int = 1
    ffn: int = 64
    outputs: int = 1
    norm: str = "batch"
    quantized: bool = False
    bits_w: int = 8
    bits_a: int = 8
    bits_in: int = 8
    bits_res: int = 12
    bits_prob: int = 8
    bits_out: int = 16
    per_channel: bool = True
    symmetric: bool = True
    learnable: bool = True
    init: str = "mse"
    task: str = "forecast"  # forecast (outputs: values), classify (outputs: classes), anomaly (outputs: L*F or H*F)
    # anomaly only: 0 = reconstruct the window; H >= 1 = forecast the H steps after the window and score
    # those (the input then holds window + H steps, the model reads the first ``window``)
    horizon: int = 0
    precision: str = ""  # mixed precision, e.g. "attn=8,ffn.w=4,l1.ffn.a=6" (see bits_for)
    peg_groups: int = 1  # per-embedding-group quantization of the residual stream and FFN input/output
    peg_permute: bool = True  # group the embedding dimensions by range (else contiguous groups)

    def bits_for(self, group: str, kind: str, layer: int | None = None) -> int:
        """Bits of the weights (kind "w") or activations ("a") of ``group`` (embed, attn, ffn, head) in
        encoder layer ``layer``: the most specific entry of ``precision`` ("l<i>.<group>.<kind>=b",
        "<group>.<kind>=b", "<group>=b" for both kinds), else bits_w / bits_a."""
        table = parse_precision(self.precision)
        for key in (f"l{layer}.{group}.{kind}", f"l{layer}.{group}", f"{group}.{kind}", group):
            if key in table:
                return table[key]
        return self.bits_w if kind == "w" else self.bits_a

    def validate(self) -> ModelConfig:
        """Raise HwgenError naming the first out-of-range setting."""
        checks = [
            (1 <= self.features <= 64, f"features must be 1..64, not {self.features}"),
            (2 <= self.window <= 96, f"window must be 2..96, not {self.window}"),
            (4 <= self.d_model <= 64, f"d_model must be 4..64, not {self.d_model}"),
            (self.heads in (1, 2, 4), f"heads must be 1, 2 or 4, not {self.heads}"),
            (self.d_model % self.heads == 0, f"d_model {self.d_model} is not divisible by heads {self.heads}"),
            (1 <= self.layers <= 3, f"layers must be 1..3, not {self.layers}"),
            (1 <= self.ffn <= 256, f"ffn must be 1..256, not {self.ffn}"),
            (self.norm in ("batch", "layer"), f"norm must be 'batch' or 'layer', not {self.norm!r}"),
            (2 <= self.bits_w <= 8, f"weight bits must be 2..8, not {self.bits_w}"),
            (2 <= self.bits_a <= 8, f"activation bits must be 2..8, not {self.bits_a}"),
            (2 <= self.bits_in <= 8 and 2 <= self.bits_prob <= 8, "input and probability bits must be 2..8"),
            (2 <= self.bits_res <= 16, f"residual-stream bits must be 2..16, not {self.bits_res}"),
            (8 <= self.bits_out <= 16, f"output bits must be 8..16, not {self.bits_out}"),
            (self.init in ("minmax", "mse"), f"init must be 'minmax' or 'mse', not {self.init!r}"),
            (self.task in TASKS, f"task must be one of {', '.join(TASKS)}, not {self.task!r}"),
            (0 <= self.horizon <= MAX_HORIZON, f"horizon must be 0..{MAX_HORIZON}, not {self.horizon}"),
            *(TASKS[self.task].config_checks(self) if self.task in TASKS else []),
            (1 <= self.peg_groups <= self.d_model and self.d_model % self.peg_groups == 0,
             f"PEG groups must divide d_model {self.d_model}, not {self.peg_groups}"),
            (self.peg_groups == 1 or self.norm == "batch",
             "PEG groups need norm 'batch' (the integer LayerNorm takes one scale per row)"),
        ]
        for ok, message in checks:
            if not ok:
                raise HwgenError(message)
        for key in parse_precision(self.precision):
            if key.startswith("l") and int(key[1:].split(".")[0]) >= self.layers:
                raise HwgenError(f"precision entry {key!r} names a layer the model does not have "
                                 f"(layers 0..{self.layers - 1})")
        return self

    @property
    def scored_steps(self) -> int:
        """Anomaly detection: the steps the score compares (the window, or the H forecast steps)."""
        return self.horizon or self.window

    @property
    def input_steps(self) -> int:
        """Steps of the input window: the model's window, plus the H scored steps of a forecasting anomaly
        detector."""
        return self.window + self.horizon

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(obj) - known
        if unknown:
            raise HwgenError(f"unknown model configuration keys: {', '.join(sorted(unknown))}")
        return cls(**obj).validate()

    def macs(self) -> int:
        """Multiply-accumulates per inference (matrix products only)."""
        L, d = self.window, self.d_model
        per_layer = 3 * L * d * d + 2 * L * L * d + L * d * d + 2 * L * d * self.ffn
        return L * self.features * d + self.layers * per_layer + d * self.outputs


PRECISION_GROUPS = ("embed", "attn", "ffn", "head")


def parse_precision(spec: str) -> dict[str, int]:
    """A mixed-precision spec "attn=8,ffn.w=4,l0.ffn.a=6" -> {"attn": 8, "ffn.w": 4, "l0.ffn.a": 6}; a
    one-line HwgenError names the first bad entry. Groups: embed, attn, ffn, head; kinds: w, a (both when
    omitted); bits 2..8; an "l<i>." prefix restricts an entry to encoder layer i."""
    table: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        key, eq, value = item.partition("=")
        parts = key.strip().split(".")
        layer_ok = not parts[0].startswith("l") or parts[0][1:].isdigit()
        if parts and parts[0].startswith("l") and parts[0][1:].isdigit():
            parts = parts[1:]
        ok = (eq and layer_ok and 1 <= len(parts) <= 2 and parts[0] in PRECISION_GROUPS
              and (len(parts) == 1 or parts[1] in ("w", "a")) and value.strip().isdigit()
              and 2 <= int(value) <= 8)
        if not ok:
            raise HwgenError(f"bad precision entry {item!r}: expected [l<i>.]GROUP[.w|.a]=BITS with GROUP one of "
                             f"{', '.join(PRECISION_GROUPS)} and BITS 2..8")
        table[key.strip()] = int(value)
    return table


class QLinear(nn.Linear):
    """Linear layer with a per-channel (or per-tensor) weight quantizer and an integer bias
    (quantized to the accumulator's scale s_x * s_w)."""

    def __init__(self, cfg: ModelConfig, n_in: int, n_out: int, bits: int | None = None) -> None:
        super().__init__(n_in, n_out)
        self.wq = Quantizer(bits or cfg.bits_w, per_channel=cfg.per_channel, channels=n_out, axis=0,
                            symmetric=cfg.symmetric, learnable=cfg.learnable, init=cfg.init)
        self.wq.enabled = cfg.quantized

    def forward(self, x: torch.Tensor, x_quant: Quantizer) -> torch.Tensor:  # type: ignore[override]
        if not self.wq.enabled:
            return F.linear(x, self.weight, self.bias)
        if x_quant.per_channel:
            # Per-feature input scales fold into the weights: W x = (W diag(s)) x_int, so the integer layer
            # sees plain input integers and one accumulator scale per output channel.
            s = x_quant.effective_scale().to(x.dtype)
            x_int = round_ste(x / s)
            w = self.wq(self.weight * s)
            acc_scale = self.wq.effective_scale().to(x.dtype).reshape(-1)
            return F.linear(x_int, w, round_ste(self.bias / acc_scale) * acc_scale)
        w = self.wq(self.weight)
        acc_scale = (x_quant.effective_scale().to(x.dtype) * self.wq.effective_scale().to(x.dtype)).reshape(-1)
        bias = round_ste(self.bias / acc_scale) * acc_scale
        return F.linear(x, w, bias)


class Norm(nn.Module):
    """BatchNorm1d over channels (folded to an integer affine at export) or LayerNorm (integer algorithm)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind, self.quantized = cfg.norm, cfg.quantized
        if cfg.norm == "batch":
            self.bn = nn.BatchNorm1d(cfg.d_model)
        else:
            self.weight = nn.Parameter(torch.ones(cfg.d_model))
            self.bias = nn.Parameter(torch.zeros(cfg.d_model))

    def forward(self, x: torch.Tensor, x_quant: Quantizer) -> torch.Tensor:
        if self.kind == "batch":
            if self.bn.training and self.quantized:  # the statistics this batch is normalised with, for the
                rows = x.detach().reshape(-1, x.shape[-1])  # exact forward's fold (TimeSeriesTransformer)
                self.batch_stats = (rows.mean(0), rows.var(0, unbiased=False))
            return self.bn(x.transpose(1, 2)).transpose(1, 2)
        if self.quantized:
            n = layernorm_ste(x, x_quant.effective_scale())
        else:
            n = F.layer_norm(x, (x.shape[-1],))
        return n * self.weight + self.bias


class EncoderLayer(nn.Module):
    """Post-norm encoder layer: attention, add, norm, FFN (ReLU), add, norm; a quantizer on every output."""

    def __init__(self, cfg: ModelConfig, index: int = 0) -> None:
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        wa, wf = cfg.bits_for("attn", "w", index), cfg.bits_for("ffn", "w", index)
        self.wq, self.wk, self.wv, self.wo = (QLinear(cfg, d, d, wa) for _ in range(4))
        self.ffn1, self.ffn2 = QLinear(cfg, d, cfg.ffn, wf), QLinear(cfg, cfg.ffn, d, wf)
        self.norm1, self.norm2 = Norm(cfg), Norm(cfg)
        act = dict(learnable=cfg.learnable, init=cfg.init)
        # Per-embedding-group quantizers on the residual stream and the FFN input/output (Bondarenko et al.).
        peg = dict(peg_channels=d) if cfg.peg_groups > 1 else {}
        for name in ["q_q", "q_k", "q_v", "q_scores", "q_attn"]:
            self.add_module(name, Quantizer(cfg.bits_for("attn", "a", index), **act))
        self.q_out = Quantizer(cfg.bits_for("attn", "a", index), **act, **peg)
        self.q_ffn2 = Quantizer(cfg.bits_for("ffn", "a", index), **act, **peg)
        # The residual stream carries the outliers (Bondarenko et al.): it gets its own, wider, type.
        for name in ["q_res1", "q_norm1", "q_res2", "q_norm2"]:
            self.add_module(name, Quantizer(cfg.bits_res, **act, **peg))
        self.q_ffn1 = Quantizer(cfg.bits_for("ffn", "a", index), signed=False, **act)
        for q in self.quantizers():
            q.enabled = cfg.quantized

    def quantizers(self) -> list[Quantizer]:
        return [m for n, m in self.named_children() if isinstance(m, Quantizer)]

    def attention(self, h: torch.Tensor, hq: Quantizer) -> torch.Tensor:
        cfg = self.cfg
        b, length, d = h.shape
        dh = d // cfg.heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, cfg.heads, dh).transpose(1, 2)

        q = heads(self.q_q(self.wq(h, hq)))
        k = heads(self.q_k(self.wk(h, hq)))
        v = heads(self.q_v(self.wv(h, hq)))
        scores = self.q_scores(q @ k.transpose(-1, -2) / math.sqrt(dh))
        if cfg.quantized:
            p = softmax_ste(scores, self.q_scores.effective_scale(), cfg.bits_prob)
        else:
            p = torch.softmax(scores, dim=-1)
        a = self.q_attn((p @ v).transpose(1, 2).reshape(b, length, d))
        return self.q_out(self.wo(a, self.q_attn))

    def forward(self, h: torch.Tensor, hq: Quantizer) -> tuple[torch.Tensor, Quantizer]:
        r = self.q_res1(h + self.attention(h, hq))
        h1 = self.q_norm1(self.norm1(r, self.q_res1))
        f = self.q_ffn1(F.relu(self.ffn1(h1, self.q_norm1)))
        f = self.q_ffn2(self.ffn2(f, self.q_ffn1))
        r2 = self.q_res2(h1 + f)
        return self.q_norm2(self.norm2(r2, self.q_res2)), self.q_norm2


class TimeSeriesTransformer(nn.Module):
    """The reference model and its generalisation; ``cfg.quantized`` selects quantized or FP32.

    Quantized, the forward is exact: it returns the outputs of the model's integer graph (the graph export
    writes: its hwgen.nn form, ``hwgen.frontend.twin``, built from the current parameters and scales and
    captured as hwgen.convert captures any model, run by the golden interpreter; in training mode with each
    BatchNorm folded with the batch's own statistics, as torch normalises it), with the gradient of the
    fake-quant forward (straight-through).
    So QAT's loss is the deployed model's, and ``model(x)`` equals ``hwgen.golden.run`` of the exported graph
    on every element. ``exact = False`` returns the fake-quant
    forward itself (PTQ's inner loops and tests compare the two).
    """

    exact: bool = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        act = dict(learnable=cfg.learnable, init=cfg.init)
        # One scale per input feature (features differ in range by an order of magnitude); folded into
        # the embedding weights at export.
        self.q_in = Quantizer(cfg.bits_in, per_channel=True, channels=cfg.features, axis=-1, **act)
        peg = dict(peg_channels=cfg.d_model) if cfg.peg_groups > 1 else {}
        self.embed = QLinear(cfg, cfg.features, cfg.d_model, cfg.bits_for("embed", "w"))
        self.q_embed = Quantizer(cfg.bits_res, **act, **peg)
        self.register_buffer("pe", sinusoidal_encoding(cfg.window, cfg.d_model))
        self.q_pe = Quantizer(cfg.bits_for("embed", "a"), learnable=False, init="minmax", momentum=1.0, **peg)
        self.q_pos = Quantizer(cfg.bits_res, **act, **peg)
        self.encoder = nn.ModuleList(EncoderLayer(cfg, i) for i in range(cfg.layers))
        self.q_pool = Quantizer(cfg.bits_for("head", "a"), **act, **peg)
        self.head = QLinear(cfg, cfg.d_model, cfg.outputs, cfg.bits_for("head", "w"))
        self.q_head = Quantizer(cfg.bits_out, **act)
        for q in (self.q_in, self.q_embed, self.q_pe, self.q_pos, self.q_pool, self.q_head):
            q.enabled = cfg.quantized
        if TASKS[cfg.task].scores_threshold:
            # The deployed score's unit (real units per score LSB) and the integer threshold, both set after
            # training from the training windows (hwgen.steps.flow.calibrate_threshold); -1: not set yet.
            self.register_buffer("score_scale", torch.tensor(0.0, dtype=torch.float64))
            self.register_buffer("score_threshold", torch.tensor(-1, dtype=torch.int64))

    def quantizers(self) -> list[Quantizer]:
        return [m for m in self.modules() if isinstance(m, Quantizer)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, input_steps, features] (scaled) -> [batch, outputs] (scaled). A forecasting anomaly
        detector's input ends with the H steps it predicts; it reads only the window before them."""
        y = self.fake_forward(x)
        if not self.integer_ready():
            return y
        exact = torch.as_tensor(self.integer_forward(x), dtype=y.dtype).reshape(y.shape)
        return y + (exact - y).detach()

    def integer_ready(self) -> bool:
        """Whether the forward is exact now: quantized, ``exact``, every quantizer on, calibrated, symmetric."""
        return (self.cfg.quantized and self.exact
                and all(q.enabled and bool(q.initialized) and q.symmetric for q in self.quantizers()))

    @torch.no_grad()
    def integer_forward(self, x: torch.Tensor) -> np.ndarray:
        """The integer model's outputs (real units, float64 [batch, outputs]) for the scaled windows ``x``:
        ``hwgen.golden.run`` of the graph export writes (its hwgen.nn form, ``hwgen.frontend.twin``, through
        hwgen.convert's capture; ending at the model's own output), the input quantized as the host does."""
        stats = {n.bn: n.batch_stats for n in self.modules()
                 if isinstance(n, Norm) and n.kind == "batch" and self.training and hasattr(n, "batch_stats")}
        graph, _ = captured_graph(self, batch_stats=stats)
        s_in = self.q_in.effective_scale().reshape(-1).numpy()
        x_int = quantize_input(x.detach().double().numpy(), s_in, self.cfg.bits_in)
        out = golden_run(graph, x_int).reshape(len(x_int), -1)
        return out.astype(np.float64) * float(self.q_head.effective_scale().reshape(-1)[0])

    def fake_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The fake-quant forward (or the FP32 forward): the float computation, quantized at every tensor
        the integer graph holds."""
        x = self.q_in(x)[:, : self.cfg.window]
        h = self.q_embed(self.embed(x, self.q_in))
        h = self.q_pos(h + self.q_pe(self.pe.to(h.dtype)))
        hq = self.q_pos
        for layer in self.encoder:
            h, hq = layer(h, hq)
        pooled = self.q_pool(h.mean(dim=1))
        return self.q_head(self.head(pooled, self.q_pool))
