"""The quantized layers: each one's forward computes its output integers with the golden function of the IR
op it exports to (``hwgen.ops``), so the torch forward, the integer graph and the hardware agree bit for
bit; each one's :meth:`export` emits that op with the same constants (see ``hwgen.nn.quant``).

All layers take channels-last tensors: [batch, time, channels] (or [batch, channels] after pooling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwgen.errors import HwgenError
from hwgen.ir.builder import GraphBuilder
from hwgen.ir.dyadic import common_dyadic, dyadic, dyadic_array, softmax_lut
from hwgen.ir.types import IntType
from hwgen.nn.quant import (TAG, ActQuant, WeightQuant, bias_ints, check_bits, emit, info_of, round_half_up,
                            scalar_info, weight_fake, weight_ints, weight_scales)
from hwgen.ops.add import add as golden_add
from hwgen.ops.affine import affine as golden_affine
from hwgen.ops.attn_apply import attn_apply as golden_attn_apply
from hwgen.ops.attn_scores import attn_scores as golden_attn_scores
from hwgen.ops.avgpool import avgpool as golden_avgpool
from hwgen.ops.layernorm import layernorm as golden_layernorm
from hwgen.ops.linear import linear as golden_linear
from hwgen.ops.softmax import softmax as golden_softmax

# The integer algorithms' fixed widths (the same as the reference model's, hwgen.frontend.integer_kernels)
SOFTMAX_RECIP_BITS = 31
PROB_BITS = 8  # softmax probabilities: 8-bit unsigned, units of 2**-8
LN_NORM_BITS = 8
LN_RECIP_BITS = 24
MAX_WEIGHT_BITS = 8
MAX_ACT_BITS = 16
MAX_SCORE_BITS = 8  # the softmax's exp table has 2**bits entries


@dataclass(frozen=True)
class Value:
    """A value of the integer graph being built: its name, real scale, integer type and shape (no batch)."""

    name: str
    scale: float
    dtype: IntType
    shape: tuple[int, ...]


def _value(b: GraphBuilder, name: str, scale: float, dtype: IntType) -> Value:
    return Value(name, float(scale), dtype, tuple(b.nodes[-1].out.shape))


class QuantModule(nn.Module):
    """Base of the hwgen.nn layers: a leaf of graph capture, exported by :meth:`export`.

    ``quantized`` (default True; :func:`set_quantized` sets it on a whole model): False makes the layer
    compute its plain float function (what ``torch.nn`` would), for training in float first and quantizing
    after training: switch quantization on, run calibration windows through the model (each output scale
    is initialised on the first batch it sees), then ``hwgen.convert`` (or fine-tune with QAT first)."""

    _hwgen_path: str = ""
    quantized: bool = True

    def who(self) -> str:
        path = self._hwgen_path
        return f"{path or 'model'} ({type(self).__name__})" if path else type(self).__name__

    def fail(self, message: str):
        raise HwgenError(f"{self.who()}: {message}")

    def export(self, b: GraphBuilder, name: str, args: list[Value]) -> Value:
        raise NotImplementedError


def _act(who: str, bits, signed: bool = True, hi: int = MAX_ACT_BITS) -> ActQuant:
    return ActQuant(check_bits(who, "act_bits", bits, 2, hi), signed)


class QuantAct(QuantModule):
    """A quantization point: on the model input, the input quantizer (the graph's input scale, ``bits``
    signed; with ``channels`` = F one scale per input feature, which the QuantLinear reading it folds into
    its weights); on a quantized tensor, a requantization to ``bits`` (an integer ``affine`` in the graph)."""

    def __init__(self, bits: int = 8, *, signed: bool = True, channels: int | None = None) -> None:
        super().__init__()
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
            raise HwgenError(f"QuantAct: channels must be a positive integer, not {channels!r}")
        self.quant = ActQuant(check_bits("QuantAct", "bits", bits, 2, MAX_ACT_BITS), signed, channels or 0)

    @property
    def dtype(self) -> IntType:
        return self.quant.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            return x
        info = getattr(x, TAG, None)
        surrogate = self.quant.fake(x)
        s = self.quant.value()
        if info is None:  # the input quantizer: the host's rounding (hwgen.host.quantize)
            st = torch.as_tensor(s, dtype=torch.float64)
            ints = torch.clamp(round_half_up(x.detach().double() / st), self.quant.qmin, self.quant.qmax).long()
            return emit(surrogate, ints, s, self.dtype)
        info = scalar_info(x, self.who())
        if self.quant.channels:
            self.fail("one scale per feature (channels=...) is for the model input only")
        m0, shift = dyadic(info.scale / s)
        c = x.shape[-1]
        ints = golden_affine(info.numpy(), np.full(c, m0), np.zeros(c, np.int64), np.full(c, shift), self.dtype)
        return emit(surrogate, ints, s, self.dtype)

    def export(self, b, name, args):
        (x,) = args
        s = self.quant.value()
        m0, shift = dyadic(x.scale / s)
        c = x.shape[-1]
        b.affine(name, x.name, np.full(c, m0), np.zeros(c, np.int64), shift, self.dtype)
        return _value(b, name, s, self.dtype)


class QuantLinear(QuantModule):
    """``torch.nn.Linear`` with ``weight_bits`` (2..8) symmetric weights, one scale per output channel
    (``per_channel``) or per tensor (``weight_scale`` "max": max |w| / qmax; "lsq": learned, MSE-initialised),
    the bias in the accumulator's units and an ``act_bits`` (2..16) output, signed or (``act_signed=False``,
    e.g. before a ReLU: one more bit of resolution for the positive values) unsigned: the IR's ``linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, weight_bits: int = 8,
                 act_bits: int = 8, per_channel: bool = True, weight_scale: str = "max",
                 act_signed: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight_bits = check_bits("QuantLinear", "weight_bits", weight_bits, 2, MAX_WEIGHT_BITS)
        self.per_channel = bool(per_channel)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.wq = WeightQuant("QuantLinear", self.weight_bits, self.per_channel, self.out_features, weight_scale)
        self.out_quant = _act("QuantLinear", act_bits, bool(act_signed))
        self.reset_parameters()

    def reset_parameters(self) -> None:  # as torch.nn.Linear
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"weight_bits={self.weight_bits}, act_bits={self.out_quant.bits}")

    @property
    def dtype(self) -> IntType:
        return self.out_quant.dtype

    def int_params(self, s_in):
        """(weight ints, bias ints, m0, shift) for an input of scale ``s_in``. One scale per input feature
        folds into the weights, W x = (W diag(s_in)) x_int, as the reference model's embedding does."""
        w = self.weight.detach().double()
        if np.ndim(s_in):
            w = w * torch.as_tensor(np.asarray(s_in, np.float64))
            s_in = 1.0
        s_w = self.wq.scales(w)
        acc = s_in * s_w
        m0, shift = dyadic_array(acc / self.out_scales())
        return weight_ints(w, s_w, self.weight_bits), bias_ints(self.bias, acc), m0, shift

    def out_scales(self):
        """The real scale of the output integers the rescale aims at (one per channel where it differs)."""
        return self.out_quant.value()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            return F.linear(x, self.weight, self.bias)
        info = info_of(x, self.who())
        if x.shape[-1] != self.in_features:
            self.fail(f"input has {x.shape[-1]} features, the layer takes {self.in_features}")
        if self.wq.mode == "lsq" and info.per_channel:  # the scales are learned for the folded weights
            s_in = torch.as_tensor(np.asarray(info.scale), dtype=x.dtype)
            y = F.linear(x / s_in, self.wq.fake(self.weight * s_in), self.bias)
        else:
            y = F.linear(x, self.wq.fake(self.weight), self.bias)
        surrogate = self.out_quant.fake(y)
        w, bias, m0, shift = self.int_params(info.scale)
        ints = golden_linear(info.numpy(), w, bias, m0, shift, self.dtype)
        return emit(surrogate, ints, self.out_quant.value(), self.dtype)

    def export(self, b, name, args):
        (x,) = args
        w, bias, m0, shift = self.int_params(x.scale)
        b.linear(name, x.name, w, bias, m0, shift, self.dtype, IntType(self.weight_bits))
        return _value(b, name, self.out_quant.value(), self.dtype)


class QuantReLU(QuantModule):
    """ReLU on a quantized tensor (same scale and type); fused into the QuantLinear before it (which it must
    follow) as the IR ``linear``'s ``relu`` flag."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            return F.relu(x)
        info = info_of(x, self.who())
        return emit(F.relu(x), info.ints.clamp(min=0), info.scale, info.dtype)


class QuantAdd(QuantModule):
    """A quantized add of two tensors of equal shape (a residual add): the IR's ``add``, both operands
    rescaled to the ``act_bits`` output and rounded once."""

    def __init__(self, *, act_bits: int = 8) -> None:
        super().__init__()
        self.out_quant = _act("QuantAdd", act_bits)

    @property
    def dtype(self) -> IntType:
        return self.out_quant.dtype

    def multipliers(self, s_a: float, s_b: float) -> tuple[int, int, int]:
        s = self.out_quant.value()
        return common_dyadic(s_a / s, s_b / s)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            return a + b
        ia, ib = scalar_info(a, self.who()), scalar_info(b, self.who())
        if a.shape != b.shape:
            self.fail(f"operands have shapes {tuple(a.shape)} and {tuple(b.shape)} (no broadcasting)")
        surrogate = self.out_quant.fake(a + b)
        ma, mb, shift = self.multipliers(ia.scale, ib.scale)
        ints = golden_add(ia.numpy(), ib.numpy(), ma, mb, 0, shift, self.dtype)
        return emit(surrogate, ints, self.out_quant.value(), self.dtype)

    def export(self, b, name, args):
        x, y = args
        ma, mb, shift = self.multipliers(x.scale, y.scale)
        b.add(name, x.name, y.name, ma, mb, 0, shift, self.dtype)
        return _value(b, name, self.out_quant.value(), self.dtype)


class QuantLayerNorm(QuantModule):
    """``torch.nn.LayerNorm`` over the last axis as the IR's integer ``layernorm`` (integer mean and
    variance, integer square root, one reciprocal per row; ``eps`` is used by the float gradient only),
    ``act_bits`` signed output."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 *, act_bits: int = 8) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if len(shape) != 1:
            raise HwgenError(f"QuantLayerNorm: normalizes the last axis only, not {shape}")
        self.normalized_shape, self.eps = (int(shape[0]),), float(eps)
        c = self.normalized_shape[0]
        self.weight = nn.Parameter(torch.ones(c)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(c)) if elementwise_affine and bias else None
        self.out_quant = _act("QuantLayerNorm", act_bits)

    @property
    def dtype(self) -> IntType:
        return self.out_quant.dtype

    def int_params(self):
        """(gamma ints, beta ints, shift) of the integer LayerNorm's output n * gamma + beta."""
        c, s_y = self.normalized_shape[0], self.out_quant.value()
        w = self.weight.detach().double().numpy() if self.weight is not None else np.ones(c)
        bias = self.bias.detach().double().numpy() if self.bias is not None else np.zeros(c)
        gamma, beta = w / (s_y * (1 << LN_NORM_BITS)), bias / s_y
        _, shift = dyadic(float(np.abs(gamma).max()) or 1.0)
        shift = max(shift, 1)
        g = np.floor(gamma * 2.0**shift + 0.5).astype(np.int64)
        return g, np.floor(beta * 2.0**shift + 0.5).astype(np.int64), shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        info = scalar_info(x, self.who())
        if x.shape[-1] != self.normalized_shape[0]:
            self.fail(f"input has {x.shape[-1]} channels, the layer normalizes {self.normalized_shape[0]}")
        surrogate = self.out_quant.fake(F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps))
        g, beta, shift = self.int_params()
        ints = golden_layernorm(info.numpy(), g, beta, shift, LN_NORM_BITS, LN_RECIP_BITS, self.dtype)
        return emit(surrogate, ints, self.out_quant.value(), self.dtype)

    def export(self, b, name, args):
        (x,) = args
        g, beta, shift = self.int_params()
        b.layernorm(name, x.name, g, beta, shift, LN_NORM_BITS, LN_RECIP_BITS, self.dtype)
        return _value(b, name, self.out_quant.value(), self.dtype)


class QuantBatchNorm1d(QuantModule):
    """``torch.nn.BatchNorm1d`` over the last axis (channels-last [batch, time, C] or [batch, C]), folded to
    the IR's per-channel integer ``affine``; ``act_bits`` signed output. In training mode the batch
    statistics are used (and folded), as torch does."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 *, act_bits: int = 8) -> None:
        super().__init__()
        c = self.num_features = int(num_features)
        self.eps, self.momentum = float(eps), float(momentum)
        self.weight = nn.Parameter(torch.ones(c)) if affine else None
        self.bias = nn.Parameter(torch.zeros(c)) if affine else None
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.out_quant = _act("QuantBatchNorm1d", act_bits)

    @property
    def dtype(self) -> IntType:
        return self.out_quant.dtype

    def out_scales(self):
        """The real scale of the output integers (one per channel where it differs)."""
        return self.out_quant.value()

    def int_params(self, s_in: float, mean: np.ndarray, var: np.ndarray):
        """(mul, bias, shift) of the folded BatchNorm for an input of scale ``s_in``."""
        c, s_y = self.num_features, self.out_scales()
        w = self.weight.detach().double().numpy() if self.weight is not None else np.ones(c)
        bias = self.bias.detach().double().numpy() if self.bias is not None else np.zeros(c)
        a = w / np.sqrt(var + self.eps)
        mul, shift = dyadic_array(s_in * a / s_y)
        return mul, np.floor((bias - mean * a) / s_y * np.exp2(shift) + 0.5).astype(np.int64), shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            rows = x.reshape(-1, self.num_features)
            return F.batch_norm(rows, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                                self.momentum, self.eps).reshape(x.shape)
        info = info_of(x, self.who())
        c = self.num_features
        if x.shape[-1] != c:
            self.fail(f"input has {x.shape[-1]} channels, the layer normalizes {c}")
        rows = x.reshape(-1, c)
        y = F.batch_norm(rows, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                         self.momentum, self.eps).reshape(x.shape)
        if self.training:  # the statistics the float BatchNorm used
            self.num_batches_tracked.add_(1)
            d = rows.detach().double()
            mean, var = d.mean(0).numpy(), d.var(0, unbiased=False).numpy()
        else:
            mean, var = self.running_mean.double().numpy(), self.running_var.double().numpy()
        surrogate = self.out_quant.fake(y)
        mul, bias, shift = self.int_params(info.scale, mean, var)
        return emit(surrogate, golden_affine(info.numpy(), mul, bias, shift, self.dtype), self.out_quant.value(),
                    self.dtype)

    def export(self, b, name, args):
        (x,) = args
        mul, bias, shift = self.int_params(x.scale, self.running_mean.double().numpy(),
                                           self.running_var.double().numpy())
        b.affine(name, x.name, mul, bias, shift, self.dtype)
        return _value(b, name, self.out_quant.value(), self.dtype)


class _PositionalEncoding(QuantModule):
    """x + pe[:time]: the table quantized to ``pe_bits`` (one scale), a constant of the graph, and an IR
    ``add`` to the ``act_bits`` output."""

    pe: torch.Tensor

    def __init__(self, d_model: int, max_len: int, pe_bits: int, act_bits: int) -> None:
        super().__init__()
        self.d_model, self.max_len = int(d_model), int(max_len)
        self.pe_bits = check_bits(type(self).__name__, "pe_bits", pe_bits, 2, MAX_WEIGHT_BITS)
        self.out_quant = _act(type(self).__name__, act_bits)

    @property
    def dtype(self) -> IntType:
        return self.out_quant.dtype

    def table(self, length: int) -> tuple[np.ndarray, float]:
        """The first ``length`` rows of the table as integers, and their scale."""
        s = weight_scales(self.pe.reshape(1, -1), self.pe_bits, False)
        return weight_ints(self.pe.reshape(1, -1), s, self.pe_bits).reshape(self.pe.shape)[:length], float(s[0])

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.d_model or x.shape[1] > self.max_len:
            self.fail(f"input shape {tuple(x.shape)}: expects [batch, time <= {self.max_len}, {self.d_model}]")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            self._check(x)
            return x + self.pe[: x.shape[1]].to(x.dtype)
        info = scalar_info(x, self.who())
        self._check(x)
        length = x.shape[1]
        s = weight_scales(self.pe.reshape(1, -1), self.pe_bits, False)
        pe = weight_fake(self.pe.reshape(1, -1), s, self.pe_bits).reshape(self.pe.shape)[:length]
        surrogate = self.out_quant.fake(x + pe.to(x.dtype))
        pe_int, s_pe = self.table(length)
        so = self.out_quant.value()
        ma, mb, shift = common_dyadic(info.scale / so, s_pe / so)
        ints = golden_add(info.numpy(), pe_int, ma, mb, 0, shift, self.dtype)
        return emit(surrogate, ints, so, self.dtype)

    def export(self, b, name, args):
        (x,) = args
        pe_int, s_pe = self.table(x.shape[0])
        pe = b.const(f"{name}.pe", pe_int, IntType(self.pe_bits))
        so = self.out_quant.value()
        ma, mb, shift = common_dyadic(x.scale / so, s_pe / so)
        b.add(name, x.name, pe, ma, mb, 0, shift, self.dtype)
        return _value(b, name, so, self.dtype)


def sinusoidal_table(length: int, d: int) -> torch.Tensor:
    """The Transformer's fixed positional encoding [length, d]."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, i / d)
    pe = torch.zeros(length, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d // 2])
    return pe.float()


class SinusoidalPositionalEncoding(_PositionalEncoding):
    """Adds the fixed sinusoidal encoding to a [batch, time, d_model] tensor (time <= ``max_len``)."""

    def __init__(self, d_model: int, max_len: int = 512, *, pe_bits: int = 8, act_bits: int = 8) -> None:
        super().__init__(d_model, max_len, pe_bits, act_bits)
        self.register_buffer("pe", sinusoidal_table(self.max_len, self.d_model))


class LearnedPositionalEncoding(_PositionalEncoding):
    """Adds a learned [max_len, d_model] table to a [batch, time, d_model] tensor."""

    def __init__(self, d_model: int, max_len: int = 512, *, pe_bits: int = 8, act_bits: int = 8) -> None:
        super().__init__(d_model, max_len, pe_bits, act_bits)
        self.pe = nn.Parameter(torch.randn(self.max_len, self.d_model) * 0.02)


class QuantMeanPool(QuantModule):
    """The mean over time, [batch, time, C] -> [batch, C] (``x.mean(dim=1)``): the IR's ``avgpool``."""

    def __init__(self, *, act_bits: int = 8) -> None:
        super().__init__()
        self.out_quant = _act("QuantMeanPool", act_bits)

    @property
    def dtype(self) -> IntType:
        return self.out_quant.dtype

    def multiplier(self, s_in: float, length: int) -> tuple[int, int]:
        return dyadic(s_in / (length * self.out_quant.value()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            return x.mean(dim=1)
        info = scalar_info(x, self.who())
        if x.dim() != 3:
            self.fail(f"input shape {tuple(x.shape)}: expects [batch, time, channels]")
        surrogate = self.out_quant.fake(x.mean(dim=1))
        m0, shift = self.multiplier(info.scale, x.shape[1])
        ints = golden_avgpool(info.numpy(), m0, shift, 0, self.dtype)
        return emit(surrogate, ints, self.out_quant.value(), self.dtype)

    def export(self, b, name, args):
        (x,) = args
        if len(x.shape) != 2:
            self.fail(f"input shape {x.shape} per window: expects [time, channels]")
        m0, shift = self.multiplier(x.scale, x.shape[0])
        b.avgpool(name, x.name, m0, shift, 0, self.dtype)
        return _value(b, name, self.out_quant.value(), self.dtype)


class QuantMultiheadAttention(QuantModule):
    """Self-attention like ``torch.nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)``:
    ``attn(x, x, x)`` returns ``(output, None)``. Separate q/k/v/out projections (QuantLinear,
    ``weight_bits``, ``act_bits``, ``weight_scale``), scores 1/sqrt(head_dim) requantized to ``act_bits``
    (<= 8), the integer softmax (``prob_bits``-bit unsigned probabilities, 2..8) and the weighted sum: the
    IR's linear, attn_scores, softmax, attn_apply."""

    PARTS = ("q", "k", "v", "scores", "softmax", "attn")  # its inner graph values, named f"{path}.{part}"

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, *,
                 batch_first: bool = True, weight_bits: int = 8, act_bits: int = 8, weight_scale: str = "max",
                 prob_bits: int = PROB_BITS) -> None:
        super().__init__()
        d, h = int(embed_dim), int(num_heads)
        if h < 1 or d % h:
            raise HwgenError(f"QuantMultiheadAttention: num_heads {num_heads} must divide embed_dim {embed_dim}")
        if dropout:
            raise HwgenError("QuantMultiheadAttention: dropout is not supported (it would change the integers)")
        if not batch_first:
            raise HwgenError("QuantMultiheadAttention: takes batch_first=True ([batch, time, embed_dim]) only")
        self.embed_dim, self.num_heads, self.head_dim = d, h, d // h
        self.batch_first = True
        self.prob_bits = check_bits("QuantMultiheadAttention", "prob_bits", prob_bits, 2, PROB_BITS)
        kw = dict(bias=bias, weight_bits=weight_bits, act_bits=act_bits, weight_scale=weight_scale)
        self.q_proj, self.k_proj, self.v_proj = (QuantLinear(d, d, **kw) for _ in range(3))
        self.out_proj = QuantLinear(d, d, **kw)
        self.score_quant = _act("QuantMultiheadAttention", act_bits, hi=MAX_SCORE_BITS)
        self.attn_quant = _act("QuantMultiheadAttention", act_bits)

    def _score_params(self, s_q: float, s_k: float) -> tuple[int, int]:
        return dyadic(s_q * s_k / (math.sqrt(self.head_dim) * self.score_quant.value()))

    def _apply_params(self, s_v: float) -> tuple[int, int]:
        return dyadic(2.0**-self.prob_bits * s_v / self.attn_quant.value())

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                key_padding_mask=None, need_weights: bool = True, attn_mask=None, average_attn_weights: bool = True,
                is_causal: bool = False):
        """``(output, None)``: the attention weights are not returned (they do not leave the accelerator)."""
        if (key is not None and key is not query) or (value is not None and value is not query):
            self.fail("self-attention only: call it as attn(x, x, x)")
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            self.fail("attention masks are not supported (every step attends to every step)")
        x = query
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            self.fail(f"input shape {tuple(x.shape)}: expects [batch, time, {self.embed_dim}]")
        bsz, length, d = x.shape
        h, dh = self.num_heads, self.head_dim
        if not self.quantized:
            def split(t: torch.Tensor) -> torch.Tensor:
                return t.reshape(bsz, length, h, dh).transpose(1, 2)

            q, k, v = (split(p(x)) for p in (self.q_proj, self.k_proj, self.v_proj))
            p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
            return self.out_proj((p @ v).transpose(1, 2).reshape(bsz, length, d)), None
        info_of(x, self.who())
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        iq, ik, iv = (info_of(t, self.who()) for t in (q, k, v))

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(bsz, length, h, dh).transpose(1, 2)

        sq = self.score_quant
        scores_f = sq.fake(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(dh))
        m0, shift = self._score_params(iq.scale, ik.scale)
        s_int = golden_attn_scores(iq.numpy(), ik.numpy(), h, m0, shift, sq.dtype)
        scores = emit(scores_f, s_int, sq.value(), sq.dtype)
        pdt = IntType(self.prob_bits, signed=False)
        p_int = golden_softmax(s_int, softmax_lut(sq.value(), sq.bits), SOFTMAX_RECIP_BITS, pdt)
        p = emit(torch.softmax(scores, dim=-1), p_int, 2.0**-self.prob_bits, pdt)
        aq = self.attn_quant
        a_f = aq.fake((p @ heads(v)).transpose(1, 2).reshape(bsz, length, d))
        m0, shift = self._apply_params(iv.scale)
        a = emit(a_f, golden_attn_apply(p_int, iv.numpy(), m0, shift, aq.dtype), aq.value(), aq.dtype)
        out = self.out_proj(a)
        # the integers of the inner graph values, for convert's exact check (``PARTS``)
        out._hwgen_parts = dict(zip(self.PARTS, (info_of(t, self.who()) for t in (q, k, v, scores, p, a))))
        return out, None

    def export(self, b, name, args):
        (x,) = args
        q = self.q_proj.export(b, f"{name}.q", [x])
        k = self.k_proj.export(b, f"{name}.k", [x])
        v = self.v_proj.export(b, f"{name}.v", [x])
        sq = self.score_quant
        m0, shift = self._score_params(q.scale, k.scale)
        b.attn_scores(f"{name}.scores", q.name, k.name, self.num_heads, m0, shift, sq.dtype)
        b.softmax(f"{name}.softmax", f"{name}.scores", softmax_lut(sq.value(), sq.bits), SOFTMAX_RECIP_BITS,
                  IntType(self.prob_bits, signed=False))
        aq = self.attn_quant
        m0, shift = self._apply_params(v.scale)
        b.attn_apply(f"{name}.attn", f"{name}.softmax", v.name, m0, shift, aq.dtype)
        a = _value(b, f"{name}.attn", aq.value(), aq.dtype)
        return self.out_proj.export(b, f"{name}.out", [a])


def set_quantized(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every hwgen.nn layer of ``model`` between quantized (the default) and plain float; returns
    ``model``. Switching back on keeps the scales a layer already has; a layer that never ran quantized
    initialises its output scale on the first batch it sees."""
    if not isinstance(enabled, bool):
        raise HwgenError(f"set_quantized: enabled must be True or False, not {enabled!r}")
    for m in model.modules():
        if isinstance(m, QuantModule):
            m.quantized = enabled
    return model


LAYERS = (QuantAct, QuantLinear, QuantReLU, QuantAdd, QuantLayerNorm, QuantBatchNorm1d, SinusoidalPositionalEncoding,
          LearnedPositionalEncoding, QuantMeanPool, QuantMultiheadAttention)
