"""Post-training quantization (PTQ) of an FP32 model, after Nagel et al., "A White Paper on Neural Network
Quantization" (2021): cross-layer equalization, range setting (min-max, MSE, percentile), AdaRound and
empirical bias correction, composed in the white paper's order by :func:`quantize_model`.

The result is an ordinary fake-quantized :class:`TimeSeriesTransformer` (``cfg.quantized``) whose quantizers
are all calibrated: what a QAT run produces, so export, evaluation and the hardware flow take it unchanged.
Everything runs in eval mode: BatchNorm keeps the FP32 model's running statistics, which export folds into
its integer per-channel affine.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from hwgen.data import Dataset
from hwgen.errors import HwgenError
from hwgen.frontend.model import EncoderLayer, QLinear, TimeSeriesTransformer
from hwgen.frontend.peg import assign_groups
from hwgen.frontend.quantizer import Quantizer

METHODS = ("minmax", "mse", "percentile")
PERCENTILE = 99.99

# Named option sets for quantize_model(**PIPELINES[name]). "full" is the combination with the lowest mean
# validation MSE on PM2.5 over W8A8 and W4A8 (three calibration seeds each; models/README.md): CLE, MSE
# ranges, AdaRound on the model's output. Bias correction lowered the test MSE at W8A8 but not the
# validation MSE, and raised the W4A8 validation MSE, so it stays off.
PIPELINES: dict[str, dict[str, Any]] = {
    "full": {"method": "mse", "cle": True, "adaround": True, "adaround_objective": "output",
             "bias_correction": False},
}

MSE_SAMPLE = 1 << 17  # per-tensor MSE range search on at most this many elements (and the extremes)
ADAROUND_OBJECTIVES = ("layer", "output")
ADAROUND_ITERS = 300
ADAROUND_OUTPUT_ITERS = 1000
ADAROUND_ROWS = 2048
# The reconstruction error is normalised by the inputs' power and s^2 (about 1 for rounding to nearest), so
# one lambda suits every layer; 10 takes every h to {0, 1} within the iterations (measured on PM2.5).
ADAROUND_LAMBDA = 10.0
ADAROUND_LR = 0.1
ADAROUND_WARMUP = 0.2  # fraction of iterations before the rounding regulariser starts
ADAROUND_BETA = (20.0, 2.0)
_ZETA, _GAMMA = 1.1, -0.1  # rectified sigmoid: h = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)


# ---- the layers and their inputs -----------------------------------------------------------------------
def linear_layers(model: TimeSeriesTransformer) -> list[tuple[str, QLinear]]:
    """Every QLinear in forward (dataflow) order, with its module name."""
    named = dict(model.named_modules())
    order = ["embed"]
    for i, _ in enumerate(model.encoder):
        order += [f"encoder.{i}.{n}" for n in ("wq", "wk", "wv", "wo", "ffn1", "ffn2")]
    order.append("head")
    return [(name, named[name]) for name in order]


def weight_quantizers(model: TimeSeriesTransformer) -> list[Quantizer]:
    return [lin.wq for _, lin in linear_layers(model)]


def activation_quantizers(model: TimeSeriesTransformer) -> list[Quantizer]:
    """All quantizers of tensors the model computes (everything but the weights and the input)."""
    skip = {id(q) for q in weight_quantizers(model)} | {id(model.q_in)}
    return [q for q in model.quantizers() if id(q) not in skip]


def _fold(lin: QLinear, x_quant: Quantizer) -> torch.Tensor | None:
    """The per-feature input scales folded into ``lin``'s weights (the embedding: see QLinear.forward), or
    None when the layer takes real inputs with one scale."""
    if x_quant.per_channel:
        return x_quant.effective_scale().reshape(-1)
    return None


def effective_weight(lin: QLinear, fold: torch.Tensor | None) -> torch.Tensor:
    """The weight the layer's quantizer sees (float64): W, or W diag(s_in) when input scales fold in."""
    w = lin.weight.detach().double()
    return w * fold.double() if fold is not None else w


def _set_effective_weight(lin: QLinear, w_eff: torch.Tensor, fold: torch.Tensor | None) -> None:
    w = w_eff / fold.double() if fold is not None else w_eff
    lin.weight.data.copy_(w.to(lin.weight.dtype))


@torch.no_grad()
def layer_inputs(model: TimeSeriesTransformer, lin: QLinear,
                 x: torch.Tensor) -> tuple[torch.Tensor, Quantizer]:
    """The rows [n, n_in] that ``lin`` multiplies when the model runs on windows ``x``, in the layer's own
    input domain (the integers x / s_in when per-feature input scales fold into the weights), and the input's
    quantizer."""
    seen: dict[str, Any] = {}

    def grab(_mod, args):
        seen["x"], seen["q"] = args[0].detach(), args[1]

    handle = lin.register_forward_pre_hook(grab)
    try:
        model(x)
    finally:
        handle.remove()
    rows = seen["x"].reshape(-1, seen["x"].shape[-1]).double()
    fold = _fold(lin, seen["q"])
    if fold is not None:
        rows = torch.floor(rows / fold.double() + 0.5)  # exactly the x_int QLinear.forward computes
    return rows, seen["q"]


# ---- cross-layer equalization --------------------------------------------------------------------------
@torch.no_grad()
def equalize_pair(first: QLinear, second: QLinear) -> torch.Tensor:
    """Cross-layer equalization of ``first`` -> ReLU -> ``second`` (FP32 weights): per channel i of the
    hidden layer, s_i = sqrt(r1_i r2_i) / r2_i with r1_i the range of output channel i of W1 and r2_i that of
    input channel i of W2; W1 <- W1 / s, b1 <- b1 / s, W2 <- W2 * s. ReLU(x / s) = ReLU(x) / s for s > 0, so
    the function is unchanged and afterwards both ranges equal sqrt(r1_i r2_i). Returns s."""
    w1, b1, w2 = first.weight.double(), first.bias.double(), second.weight.double()
    r1 = w1.abs().amax(dim=1)
    r2 = w2.abs().amax(dim=0)
    s = torch.where((r1 > 0) & (r2 > 0), torch.sqrt(r1 * r2) / r2.clamp(min=1e-300), torch.ones_like(r1))
    first.weight.copy_((w1 / s[:, None]).to(first.weight.dtype))
    first.bias.copy_((b1 / s).to(first.bias.dtype))
    second.weight.copy_((w2 * s[None, :]).to(second.weight.dtype))
    return s


def cross_layer_equalize(model: TimeSeriesTransformer) -> list[torch.Tensor]:
    """Equalize each encoder layer's FFN pair ffn1 -> ReLU -> ffn2 (before any quantizer is calibrated)."""
    return [equalize_pair(layer.ffn1, layer.ffn2) for layer in model.encoder
            if isinstance(layer, EncoderLayer)]


# ---- range setting -------------------------------------------------------------------------------------
def _group_factor(q: Quantizer, x: torch.Tensor) -> torch.Tensor | float:
    """Per-embedding-group quantizers scale channel c by 2**exponent[c]: ranges are of the base scale."""
    exponent = getattr(q, "exponent", None)
    return torch.exp2(exponent).to(x.dtype) if getattr(q, "peg", False) and exponent is not None else 1.0


@torch.no_grad()
def percentile_range(q: Quantizer, x: torch.Tensor, pct: float = PERCENTILE) -> torch.Tensor:
    """The ``pct``-th percentile of |x| (per channel for a per-channel quantizer; of x if unsigned)."""
    x = (x.detach() / _group_factor(q, x)).double()
    x = x.clamp(min=0.0) if not q.signed else x.abs()
    axis = q.axis % x.dim()
    rows = x.movedim(axis, 0).reshape(x.shape[axis], -1) if q.per_channel else x.reshape(1, -1)
    pos = pct / 100.0 * (rows.shape[1] - 1)  # linear interpolation between order statistics, as numpy's
    lo, hi = math.floor(pos), math.ceil(pos)
    a = rows.kthvalue(lo + 1, dim=1).values  # the k-th smallest: no size limit, unlike torch.quantile
    b = rows.kthvalue(hi + 1, dim=1).values if hi != lo else a
    return a + (pos - lo) * (b - a)


@torch.no_grad()
def set_range(q: Quantizer, x: torch.Tensor, method: str, pct: float = PERCENTILE) -> None:
    """Calibrate ``q`` on ``x``: "minmax" and "mse" by the quantizer's own search, "percentile" by clipping
    at the ``pct``-th percentile of |x| (symmetric quantizers)."""
    if method not in METHODS:
        raise HwgenError(f"range-setting method must be one of {', '.join(METHODS)}, not {method!r}")
    if method == "percentile":
        if not q.symmetric:
            raise HwgenError("percentile ranges are implemented for symmetric quantizers only")
        top = percentile_range(q, x, pct)
        scale = (top / q.qmax).clamp(min=1e-8).to(q.scale.dtype)
        q.scale.data.copy_(scale.expand_as(q.scale))
        q.zero_point.zero_()
        q.initialized.fill_(True)
        return
    if method == "mse" and not q.per_channel and x.numel() > MSE_SAMPLE:
        # A seeded sample of rows keeps the 36-candidate search cheap; the rows holding the extremes keep the
        # candidates' ranges; whole rows keep the last axis (per-embedding-group scales live on it).
        rows = x.detach().reshape(-1, x.shape[-1])
        flat = (rows / _group_factor(q, rows)).reshape(-1)
        pick = torch.randint(0, len(rows), (max(1, MSE_SAMPLE // rows.shape[1]),),
                             generator=torch.Generator().manual_seed(0))
        extremes = torch.stack([flat.argmin(), flat.argmax()]) // rows.shape[1]
        x = rows[torch.cat([pick, extremes])]
    saved = q.init_method
    q.init_method = method
    try:
        q.calibrate(x)
    finally:
        q.init_method = saved


def time_steps(x: torch.Tensor) -> torch.Tensor:
    """Every time step of consecutive, overlapping windows [n, L, F] once: [n + L - 1, F]."""
    return torch.cat([x[:, 0, :], x[-1, 1:, :]]) if len(x) else x.reshape(0, x.shape[-1])


@torch.no_grad()
def embedding_error(model: TimeSeriesTransformer, rows: torch.Tensor, s_in: torch.Tensor, method: str,
                    pct: float = PERCENTILE) -> float:
    """Mean squared error of the embedding's output on input ``rows`` [n, F] with per-feature input scales
    ``s_in``: inputs rounded to their integers, weights W diag(s_in) rounded to nearest on a grid set by
    ``method`` (which this sets on the embedding's weight quantizer)."""
    q, lin = model.q_in, model.embed
    rows, s_in = rows.double(), s_in.double()
    x_int = torch.clamp(torch.floor(rows / s_in + 0.5), q.qmin, q.qmax)
    w = lin.weight.detach().double()
    set_range(lin.wq, (w * s_in).float(), method, pct)
    s_w = lin.wq.effective_scale().reshape(-1, 1)
    w_q = s_w * lin.wq.int_repr(w * s_in).double()
    return float((x_int @ w_q.T - rows @ w.T).pow(2).mean())


@torch.no_grad()
def search_input_ranges(model: TimeSeriesTransformer, rows: torch.Tensor, method: str,
                        pct: float = PERCENTILE, candidates: int = 16,
                        sweeps: int = 2) -> tuple[float, float]:
    """Per-feature input ranges minimising the embedding's output error (coordinate descent from the current
    ranges, each feature's clipping range tried at k/candidates of its current one, k = 1..candidates).

    The input's per-feature scales fold into the embedding's weights (QLinear.forward), so one output
    channel's weight scale serves every feature: a rare-but-huge feature (hours of snow) makes its column
    large and leaves the others few levels. Clipping such a feature a little buys the rest many levels;
    the input's own MSE cannot see that trade, the layer's output error does. Returns the error before and
    after; leaves the input and embedding weight quantizers set."""
    q = model.q_in
    s = q.effective_scale().reshape(-1).clone()
    top = s.clone()
    best = before = embedding_error(model, rows, s, method, pct)
    for _ in range(sweeps):
        for j in range(len(s)):
            for k in range(1, candidates + 1):
                trial = s.clone()
                trial[j] = top[j] * k / candidates
                err = embedding_error(model, rows, trial, method, pct)
                if err < best:
                    best, s = err, trial
    q.scale.data.copy_(s.to(q.scale.dtype))
    embedding_error(model, rows, s, method, pct)  # the weight grid of the chosen scales
    return before, best


@torch.no_grad()
def calibrate_input(model: TimeSeriesTransformer, x: torch.Tensor, method: str,
                    pct: float = PERCENTILE) -> dict:
    """Ranges of the input quantizer from the consecutive windows ``x``, and of the embedding's weights (into
    which the input's per-feature scales fold). With "mse", the input's ranges minimise the embedding's output
    error (see :func:`search_input_ranges`) rather than the input's own error. Returns the embedding's output
    error before and after that search, and the input's clipping ranges."""
    rows = time_steps(x)  # consecutive windows overlap: each time step once is the same data, 1/L the work
    set_range(model.q_in, rows, method, pct)
    w_eff = effective_weight(model.embed, _fold(model.embed, model.q_in))
    set_range(model.embed.wq, w_eff.float(), method, pct)
    before = after = embedding_error(model, rows, model.q_in.effective_scale().reshape(-1), method, pct)
    if method == "mse":
        before, after = search_input_ranges(model, rows, method, pct)
    top = (model.q_in.effective_scale().reshape(-1) * model.q_in.qmax).tolist()
    return {"embedding_error_before": before, "embedding_error_after": after, "input_ranges": top}


@torch.no_grad()
def calibrate_weights(model: TimeSeriesTransformer, method: str, pct: float = PERCENTILE) -> None:
    """Ranges of every weight quantizer but the embedding's (see :func:`calibrate_input`), on the current
    (FP32) weights."""
    for _, lin in linear_layers(model):
        if lin is not model.embed:
            set_range(lin.wq, lin.weight.detach(), method, pct)


@torch.no_grad()
def calibrate_activations(model: TimeSeriesTransformer, x: torch.Tensor, method: str,
                          pct: float = PERCENTILE, output_top: float | None = None) -> None:
    """Ranges of every activation quantizer from one forward pass over the calibration windows ``x``: each
    quantizer is set from the tensor it sees, downstream of the already-quantized upstream ones. The
    positional-encoding constant keeps its own min-max range."""
    acts = activation_quantizers(model)
    hooks = []
    for q in acts:
        q.initialized.fill_(False)
        if q is not model.q_pe:  # a forward pre-hook sets the range from the quantizer's input, then it runs
            hooks.append(q.register_forward_pre_hook(
                lambda mod, args: None if bool(mod.initialized) else set_range(mod, args[0], method, pct)))
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    if output_top is not None:  # never clip an output the training targets reach
        q = model.q_head
        floor = torch.full_like(q.scale.data, output_top / q.qmax)
        q.scale.data.copy_(torch.maximum(q.scale.data.abs(), floor))


# ---- weight rounding -----------------------------------------------------------------------------------
def _rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)


def _grid(wq: Quantizer) -> torch.Tensor:
    """The weight quantizer's scales as a column [out, 1] (float32)."""
    s = wq.effective_scale()
    return (s.reshape(-1, 1) if wq.per_channel else s.reshape(1, 1)).float()


def learn_rounding(wq: Quantizer, w: torch.Tensor, error: Callable[[torch.Tensor], torch.Tensor],
                   iters: int = ADAROUND_ITERS, lam: float = ADAROUND_LAMBDA, lr: float = ADAROUND_LR,
                   beta: tuple[float, float] = ADAROUND_BETA, warmup: float = ADAROUND_WARMUP
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """AdaRound's optimisation (Nagel et al., 2020) of the weight ``w`` [out, in] on the grid of ``wq``: learn
    V with h(V) = clamp(sigmoid(V) * 1.2 - 0.1, 0, 1) and W~ = s * clamp(floor(W / s) + h) minimising
    error(W~) + lam * mean(1 - |2h - 1|^beta), beta annealed (cosine) from 20 to 2 after a warm-up, then
    round h to {0, 1}; should that be worse than rounding to nearest, keep rounding to nearest. ``error``
    should be about 1 for rounding to nearest, so that one lam suits every layer. Returns the integer
    weights floor(W / s) + h (clamped to the quantizer's range, int64) and statistics: the error of
    rounding to nearest and of the result, whether nearest was kept, the fraction of weights rounded the
    other way, the fraction of h still undecided before the final rounding."""
    s = _grid(wq)
    w = w.float()
    w_floor = torch.floor(w / s)
    rest = (w / s - w_floor).clamp(1e-4, 1 - 1e-4)
    # initialise h(V) to the fractional part: the warm start is the unrounded weight
    v = torch.logit((rest - _GAMMA) / (_ZETA - _GAMMA)).requires_grad_(True)
    # Adam by hand: torch.optim's first use imports the compiler stack, seconds for nothing here
    m1, m2 = torch.zeros_like(v), torch.zeros_like(v)
    b1, b2 = 0.9, 0.999
    start = int(warmup * iters)
    for it in range(iters):
        h = _rectified_sigmoid(v)
        loss = error(s * torch.clamp(w_floor + h, wq.qmin, wq.qmax))
        if it >= start:
            t = (it - start) / max(1, iters - start)
            b = beta[1] + 0.5 * (beta[0] - beta[1]) * (1 + math.cos(math.pi * t))
            loss = loss + lam * (1 - (2 * h - 1).abs().pow(b)).mean()
        (g,) = torch.autograd.grad(loss, v)
        with torch.no_grad():
            m1.mul_(b1).add_(g, alpha=1 - b1)
            m2.mul_(b2).addcmul_(g, g, value=1 - b2)
            step = lr * math.sqrt(1 - b2 ** (it + 1)) / (1 - b1 ** (it + 1))
            v.sub_(step * m1 / (m2.sqrt() + 1e-8))
    with torch.no_grad():
        soft = _rectified_sigmoid(v)
        ints = torch.clamp(w_floor + (v >= 0).float(), wq.qmin, wq.qmax)  # v >= 0 <=> h(V) >= 1/2
        nearest = torch.clamp(torch.floor(w / s + 0.5), wq.qmin, wq.qmax)
        err_nearest, err_learned = float(error(s * nearest)), float(error(s * ints))
        kept_nearest = err_learned > err_nearest  # never worse than rounding to nearest on its own error
        if kept_nearest:
            ints = nearest
        stats = {"error_nearest": err_nearest, "error_adaround": min(err_learned, err_nearest),
                 "kept_nearest": kept_nearest, "changed": float((ints != nearest).double().mean()),
                 "undecided": float(((soft > 0.01) & (soft < 0.99)).double().mean())}
    return ints.long(), stats


def adaround_layer(wq: Quantizer, w: torch.Tensor, rows: torch.Tensor, **kw) -> tuple[torch.Tensor, dict]:
    """AdaRound of one layer's weight ``w`` [out, in] on its input ``rows`` [n, in], the white paper's local
    objective ||W x - W~ x||^2 (normalised by the inputs' power and s^2). See :func:`learn_rounding`."""
    x = rows.float()
    target = x @ w.float().T
    norm = float((x.pow(2).mean() * _grid(wq).pow(2).mean()).clamp(min=1e-30))
    return learn_rounding(wq, w, lambda w_soft: (x @ w_soft.T - target).pow(2).mean() / norm, **kw)


def adaround_output(wq: Quantizer, w: torch.Tensor, hessian: torch.Tensor, **kw) -> tuple[torch.Tensor, dict]:
    """AdaRound of one layer's weight ``w`` [out, in] against the model's output: the task loss's second-order
    change d^T H d, d = vec(W~ - W), with H the Gauss-Newton matrix from :func:`output_hessian` (normalised by
    its value for rounding to nearest). This error is flat along most directions and needs more iterations
    than the layer's (ADAROUND_OUTPUT_ITERS by default). See :func:`learn_rounding`."""
    h = hessian.float()
    w = w.float()
    s = _grid(wq)
    d0 = (s * torch.clamp(torch.floor(w / s + 0.5), wq.qmin, wq.qmax) - w).reshape(-1)
    norm = float((d0 @ h @ d0).clamp(min=1e-30))

    def error(w_soft: torch.Tensor) -> torch.Tensor:
        d = (w_soft - w).reshape(-1)
        return d @ (h @ d) / norm

    kw.setdefault("iters", ADAROUND_OUTPUT_ITERS)
    return learn_rounding(wq, w, error, **kw)


def output_hessian(model: TimeSeriesTransformer, lin: QLinear, x: torch.Tensor,
                   chunk: int = 512) -> torch.Tensor:
    """The Gauss-Newton matrix of the model's output with respect to ``lin``'s weight, H = E_n[j_n j_n^T] with
    j_n = vec(d f(x_n) / d W) [out * in] (float64): for a model with one output and a squared-error loss, the
    loss's Hessian up to the residual term, AdaRound's starting point before it approximates H layer by
    layer. j_n[i, k] = sum_t g[n, t, i] x[n, t, k], with g the gradient of the output with respect to the
    layer's output and x its input rows in the layer's own domain, through the current fake-quantized model
    (straight-through rounding). Accumulated over ``chunk`` windows at a time."""
    if model.cfg.outputs != 1:
        raise HwgenError("the output-aware AdaRound objective needs a model with one output")
    n_w = lin.weight.numel()
    hess = torch.zeros(n_w, n_w, dtype=torch.float64)
    seen: dict[str, Any] = {}

    def grab(_mod, args, out):
        seen["x"], seen["q"], seen["z"] = args[0].detach(), args[1], out

    handle = lin.register_forward_hook(grab)
    try:
        for i in range(0, len(x), chunk):
            with torch.enable_grad():
                out = model(x[i : i + chunk])
                (g,) = torch.autograd.grad(out.sum(), seen["z"])  # windows are independent (eval mode)
            rows = seen["x"].double()
            fold = _fold(lin, seen["q"])
            if fold is not None:
                rows = torch.floor(rows / fold.double() + 0.5)
            if rows.dim() == 2:  # the head: one row per window
                rows, g = rows[:, None, :], g[:, None, :]
            jac = torch.einsum("nti,ntk->nik", g.double(), rows).reshape(len(rows), -1)
            hess += jac.T @ jac
    finally:
        handle.remove()
    return hess / max(1, len(x))


@torch.no_grad()
def write_grid_weights(lin: QLinear, ints: torch.Tensor, fold: torch.Tensor | None) -> None:
    """Set the layer's weight to s * ints (exactly on the quantizer's grid), then check that the quantizer
    reproduces those integers."""
    s = lin.wq.effective_scale()
    s = s.reshape(-1, 1) if lin.wq.per_channel else s.reshape(1, 1)
    _set_effective_weight(lin, s * ints.double(), fold)
    got = lin.wq.int_repr(effective_weight(lin, fold))
    if not torch.equal(got, ints):
        differ = int((got != ints).sum())
        raise RuntimeError(f"grid weights do not round-trip through the quantizer ({differ} differ)")


@torch.no_grad()
def correct_bias(lin: QLinear, w_ref: torch.Tensor, fold: torch.Tensor | None,
                 mean_x: torch.Tensor) -> torch.Tensor:
    """Empirical bias correction: b <- b - (W_q - W) E[x], with W the reference (FP32) weight and W_q the
    quantized current weight, both in the layer's input domain, and E[x] the mean input row. Returns the
    correction subtracted."""
    w_q = _grid(lin.wq).double() * lin.wq.int_repr(effective_weight(lin, fold)).double()
    delta = (w_q - w_ref) @ mean_x.double()
    lin.bias.copy_((lin.bias.double() - delta).to(lin.bias.dtype))
    return delta


# ---- the pipeline --------------------------------------------------------------------------------------
def quantized_model(fp32: TimeSeriesTransformer, bits_w: int, bits_a: int) -> TimeSeriesTransformer:
    """A fake-quantized copy of ``fp32`` (same weights and BatchNorm statistics), quantizers uncalibrated."""
    init = fp32.cfg.init if fp32.cfg.init in ("minmax", "mse") else "mse"
    cfg = replace(fp32.cfg, quantized=True, bits_w=int(bits_w), bits_a=int(bits_a), init=init).validate()
    model = TimeSeriesTransformer(cfg)
    missing, unexpected = model.load_state_dict(fp32.state_dict(), strict=False)
    qkeys = {f"{n}.{k}" for n, m in model.named_modules() if isinstance(m, Quantizer) for k in m.state_dict()}
    if unexpected or set(missing) - qkeys:
        raise HwgenError(f"the FP32 model does not match the quantized architecture "
                         f"({unexpected or missing})")
    return model.eval()


def calibration_windows(data: Dataset, windows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``windows`` training windows drawn without replacement (seeded), in time order."""
    n = len(data.train.x)
    if n == 0:
        raise HwgenError("calibration needs a non-empty training split")
    if windows < 1:
        raise HwgenError(f"calibration windows must be >= 1, not {windows}")
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(int(windows), n), replace=False))
    return torch.as_tensor(data.train.x[idx]), torch.as_tensor(data.train.y[idx])


@torch.no_grad()
def _score(model: TimeSeriesTransformer, x: torch.Tensor, y: torch.Tensor,
           ref: torch.Tensor) -> dict[str, float]:
    model.eval()
    out = model(x).double()
    return {"mse": float((out - y.double()).pow(2).mean()), "mse_vs_fp32": float((out - ref).pow(2).mean())}


def quantize_model(fp32: TimeSeriesTransformer, data: Dataset, bits_w: int, bits_a: int, method: str = "mse",
                   cle: bool = False, bias_correction: bool = False, adaround: bool = False,
                   calib_windows: int = 1024, seed: int = 0, progress: bool = True,
                   percentile: float = PERCENTILE, adaround_objective: str = "layer"
                   ) -> tuple[TimeSeriesTransformer, dict]:
    """Post-training quantization of ``fp32`` at ``bits_w`` weight / ``bits_a`` activation bits, in the white
    paper's order: the input's ranges -> CLE of the FFN pairs (``cle``, on the FP32 weights) -> weight
    ranges (symmetric, per output channel) -> activation ranges -> AdaRound (``adaround``; with
    ``adaround_objective`` "layer" against each layer's output, with "output" against the model's) -> bias
    correction (``bias_correction``) -> activation ranges again (the weights changed). ``method`` sets
    every range: "minmax", "mse" (with the input's per-feature ranges chosen for the embedding's output
    error) or "percentile" (``percentile`` of |x|).

    Activation ranges, AdaRound and bias correction use ``calib_windows`` training windows drawn with
    ``seed``. The input's ranges come from every training window and the output's range covers every
    training target: those extremes are rare, a calibration subset misses them, and clipping them costs the
    most. Returns the calibrated fake-quant model (eval mode) and an info dict: the options, and per step
    its seconds and the calibration MSE (scaled units, against the targets and against the FP32 outputs)
    before and after."""
    if method not in METHODS:
        raise HwgenError(f"range-setting method must be one of {', '.join(METHODS)}, not {method!r}")
    if adaround_objective not in ADAROUND_OBJECTIVES:
        raise HwgenError(f"AdaRound objective must be one of {', '.join(ADAROUND_OBJECTIVES)}, "
                         f"not {adaround_objective!r}")
    if not 0.0 < percentile <= 100.0:
        raise HwgenError(f"percentile must be in (0, 100], not {percentile}")
    if fp32.cfg.quantized:
        raise HwgenError("post-training quantization needs an FP32 model, not a quantized one")
    def log(message: str) -> None:
        if progress:
            print(f"quantize: {message}", file=sys.stderr, flush=True)
    fp32 = fp32.eval()
    x, y = calibration_windows(data, calib_windows, seed)
    with torch.no_grad():
        ref = fp32(x).double()
    model = quantized_model(fp32, bits_w, bits_a)
    # The model's two ends see the data itself, whose extremes (pm2.5 peaks) a random calibration subset
    # often misses: the input's ranges come from every training window (no forward pass needed), and the
    # output's range covers every training target (16 bits: the resolution costs nothing).
    x_in = torch.as_tensor(data.train.x)
    output_top = float(np.abs(data.train.y).max())
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if ".bn.running_" in k}
    steps: list[dict[str, Any]] = []
    info: dict[str, Any] = {
        "bits_w": int(bits_w), "bits_a": int(bits_a), "method": method, "percentile": percentile if method ==
        "percentile" else None, "cle": bool(cle), "bias_correction": bool(bias_correction),
        "adaround": bool(adaround), "adaround_objective": adaround_objective if adaround else None,
        "calib_windows": len(x), "seed": int(seed), "steps": steps,
        "fp32_calib_mse": float((ref - y.double()).pow(2).mean()),
    }
    total = time.perf_counter()

    def set_ranges(m: TimeSeriesTransformer) -> None:
        """Every range but the input's and the embedding's weights' (set first: CLE leaves them alone)."""
        if getattr(m.cfg, "peg_groups", 1) > 1:  # per-embedding-group exponents first, from the FP32 ranges
            info["peg"] = assign_groups(m, x)
        calibrate_weights(m, method, percentile)
        calibrate_activations(m, x, method, percentile, output_top)

    def score_if_calibrated() -> dict[str, float]:
        """The calibration error the model would have if its ranges were set now (on a copy)."""
        m = copy.deepcopy(model)
        set_ranges(m)
        return _score(m, x, y, ref)

    def step(name: str, run: Callable[[], dict | None], before: dict | None,
             after: Callable[[], dict]) -> None:
        t = time.perf_counter()
        extra = run() or {}
        seconds = time.perf_counter() - t
        entry = {"step": name, "seconds": seconds, "before": before, "after": after(), **extra}
        steps.append(entry)
        score = f"calibration mse {entry['after']['mse']:.5f}" if entry["after"] else "done"
        log(f"{name}: {score} ({seconds:.1f} s)")

    # The input's ranges first: its extremes need the whole training split, and with "mse" they are a search
    step("input_ranges", lambda: calibrate_input(model, x_in, method, percentile), None, lambda: None)

    if cle:
        def run_cle() -> dict:
            scales = cross_layer_equalize(model)
            with torch.no_grad():
                drift = float((model_fp32_view(model)(x).double() - ref).abs().max())
            return {"fp32_max_abs_change": drift,
                    "scale_range": [float(min(s.min() for s in scales)), float(max(s.max() for s in scales))]}
        step("cle", run_cle, score_if_calibrated(), score_if_calibrated)

    step("ranges", lambda: set_ranges(model), None, lambda: _score(model, x, y, ref))

    # The reference weights of the rounding steps: the FP32 (equalized) weights, in each layer's input domain.
    layers = linear_layers(model)
    folds = {name: _fold(lin, model.q_in) if lin is model.embed else None for name, lin in layers}
    w_ref = {name: effective_weight(lin, folds[name]) for name, lin in layers}
    gen = torch.Generator().manual_seed(seed)

    if adaround:
        def run_adaround() -> dict:
            per_layer = {}
            for name, lin in layers:  # in dataflow order: each layer sees its rounded predecessors
                if adaround_objective == "output":
                    ints, stats = adaround_output(lin.wq, w_ref[name], output_hessian(model, lin, x))
                else:
                    rows, _ = layer_inputs(model, lin, x)
                    if len(rows) > ADAROUND_ROWS:
                        rows = rows[torch.randperm(len(rows), generator=gen)[:ADAROUND_ROWS]]
                    ints, stats = adaround_layer(lin.wq, w_ref[name], rows)
                write_grid_weights(lin, ints, folds[name])
                per_layer[name] = stats
                log(f"adaround {name}: error {stats['error_nearest']:.4g} -> {stats['error_adaround']:.4g}, "
                    f"{100 * stats['changed']:.1f}% of weights rounded the other way")
            return {"layers": per_layer}
        step("adaround", run_adaround, _score(model, x, y, ref), lambda: _score(model, x, y, ref))

    if bias_correction:
        def run_bias() -> dict:
            per_layer = {}
            for name, lin in layers:
                rows, _ = layer_inputs(model, lin, x)
                delta = correct_bias(lin, w_ref[name], folds[name], rows.mean(dim=0))
                per_layer[name] = float(delta.abs().max())
            return {"max_abs_correction": per_layer}
        step("bias_correction", run_bias, _score(model, x, y, ref), lambda: _score(model, x, y, ref))

    if adaround or bias_correction:
        step("activation_ranges", lambda: calibrate_activations(model, x, method, percentile, output_top),
             _score(model, x, y, ref), lambda: _score(model, x, y, ref))

    for name, value in bn_before.items():
        if not torch.equal(model.state_dict()[name], value):
            raise RuntimeError(f"BatchNorm statistics {name} changed during calibration")
    uncalibrated = [n for n, m in model.named_modules()
                    if isinstance(m, Quantizer) and not bool(m.initialized)]
    if uncalibrated:
        raise RuntimeError(f"quantizers left uncalibrated: {', '.join(uncalibrated)}")
    info["seconds"] = time.perf_counter() - total
    info["calib_mse"] = steps[-1]["after"]["mse"]
    return model.eval(), info


def model_fp32_view(model: TimeSeriesTransformer) -> TimeSeriesTransformer:
    """An FP32 copy of a (fake-quantized) model's current weights: its function without quantizers."""
    fp = TimeSeriesTransformer(replace(model.cfg, quantized=False))
    fp.load_state_dict(model.state_dict(), strict=False)
    return fp.eval()
