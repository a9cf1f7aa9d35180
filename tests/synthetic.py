"""Random integer Transformer graphs with calibrated rescales: test inputs for golden, hw and sim.

The constants are random, but every rescale is chosen from the values a batch of random inputs actually
produces, so activations use their range without saturating everywhere (as in a trained model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwgen.golden import ops
from hwgen.ir.builder import GraphBuilder
from hwgen.ir.dyadic import common_dyadic, dyadic, dyadic_array, softmax_lut
from hwgen.ir.graph import Graph
from hwgen.ir.types import IntType


@dataclass(frozen=True)
class SyntheticConfig:
    """Architecture and bit widths of a synthetic Transformer graph."""

    window: int = 8
    features: int = 3
    d_model: int = 8
    heads: int = 1
    layers: int = 1
    ffn: int = 16
    outputs: int = 1
    norm: str = "batch"  # or "layer"
    bits_w: int = 8
    bits_a: int = 8
    bits_in: int = 8
    bits_prob: int = 8
    bits_out: int = 16
    peg_shl: int = 0  # > 0: linears reading the residual stream get per-group input shifts in 0..peg_shl


def _scale_for(acc: np.ndarray, dtype: IntType, coverage: float = 0.999) -> float:
    """The real rescale mapping the ``coverage`` quantile of |acc| onto dtype.qmax."""
    top = float(np.quantile(np.abs(acc), coverage)) if acc.size else 1.0
    return dtype.qmax / max(top, 1.0)


def random_graph(cfg: SyntheticConfig, seed: int = 0, batch: int = 64) -> tuple[Graph, np.ndarray]:
    """A verified random graph for ``cfg`` and a batch of random inputs it was calibrated on."""
    rng = np.random.default_rng(seed)
    ta, tw = IntType(cfg.bits_a), IntType(cfg.bits_w)
    tin = IntType(cfg.bits_in)
    tu = IntType(cfg.bits_a, signed=False)
    b = GraphBuilder("x", (cfg.window, cfg.features), tin)
    x = rng.integers(tin.qmin, tin.qmax + 1, size=(batch, cfg.window, cfg.features))
    env = {"x": x}

    def weights(n: int, k: int) -> np.ndarray:
        return rng.integers(tw.qmin, tw.qmax + 1, size=(n, k))

    def lin(name, src, n, dtype=ta, relu=False, peg=False) -> str:
        k = env[src].shape[-1]
        w = weights(n, k)
        bias = rng.integers(-(1 << (cfg.bits_w + 2)), 1 << (cfg.bits_w + 2), size=n)
        shl = rng.integers(0, cfg.peg_shl + 1, size=k) if peg and cfg.peg_shl else None
        acc = ops.linear_acc(env[src], w, bias, shl)
        m0, sh = dyadic_array(np.array([_scale_for(acc[..., i], dtype) for i in range(n)]))
        b.linear(name, src, w, bias, m0, sh, dtype, tw, relu=relu, in_shl=shl)
        env[name] = ops.linear(env[src], w, bias, m0, sh, dtype, relu=relu, in_shl=shl)
        return name

    def add(name, a, c) -> str:
        va = env[a] if a in env else b.consts[a].value
        vc = env[c] if c in env else b.consts[c].value
        wa, wc = rng.uniform(0.5, 1.0, size=2)
        s = _scale_for(wa * va + wc * vc, ta)
        ma, mc, shift = common_dyadic(wa * s, wc * s)
        b.add(name, a, c, ma, mc, 0, shift, ta)
        env[name] = ops.add(va, vc, ma, mc, 0, shift, ta)
        return name

    def norm(name, src) -> str:
        c = env[src].shape[-1]
        if cfg.norm == "layer":
            gamma = rng.integers(1 << 10, 1 << 12, size=c) * rng.choice([-1, 1], size=c)
            beta = rng.integers(-(1 << 14), 1 << 14, size=c)
            norm_bits, recip_bits = 8, 24
            acc = ops.layernorm_parts(env[src], norm_bits, recip_bits)[-1] * gamma + beta
            _, sh = dyadic(_scale_for(acc, ta))
            shift = max(1, sh - 15 + 1)
            b.layernorm(name, src, gamma, beta, shift, norm_bits, recip_bits, ta)
            env[name] = ops.layernorm(env[src], gamma, beta, shift, norm_bits, recip_bits, ta)
        else:
            mul = rng.integers(1 << 12, 1 << 14, size=c) * rng.choice([-1, 1], size=c)
            bias = rng.integers(-(1 << 16), 1 << 16, size=c)
            acc = ops.affine_acc(env[src], mul, bias)
            shift = np.array([max(1, dyadic(_scale_for(acc[..., i], ta))[1] - 15 + 1) for i in range(c)])
            b.affine(name, src, mul, bias, shift, ta)
            env[name] = ops.affine(env[src], mul, bias, shift, ta)
        return name

    h = lin("embed", "x", cfg.d_model)
    pe = b.const("pos", rng.integers(ta.qmin, ta.qmax + 1, size=(cfg.window, cfg.d_model)), ta)
    h = add("pos_add", h, pe)
    for layer in range(cfg.layers):
        p = f"l{layer}."
        q, k, v = (lin(p + n, h, cfg.d_model, peg=True) for n in ("q", "k", "v"))
        acc = ops.attn_scores_acc(env[q], env[k], cfg.heads)
        m0, sh = dyadic(_scale_for(acc, ta))
        b.attn_scores(p + "scores", q, k, cfg.heads, m0, sh, ta)
        env[p + "scores"] = ops.attn_scores(env[q], env[k], cfg.heads, m0, sh, ta)
        tp = IntType(cfg.bits_prob, signed=False)
        lut = softmax_lut(rng.uniform(0.02, 0.2), cfg.bits_a)
        b.softmax(p + "softmax", p + "scores", lut, 31, tp)
        env[p + "softmax"] = ops.softmax(env[p + "scores"], lut, 31, tp)
        acc = ops.attn_apply_acc(env[p + "softmax"], env[v])
        m0, sh = dyadic(_scale_for(acc, ta))
        b.attn_apply(p + "attn", p + "softmax", v, m0, sh, ta)
        env[p + "attn"] = ops.attn_apply(env[p + "softmax"], env[v], m0, sh, ta)
        o = lin(p + "out", p + "attn", cfg.d_model)
        h = norm(p + "norm1", add(p + "res1", h, o))
        f = lin(p + "ffn1", h, cfg.ffn, dtype=tu, relu=True, peg=True)
        f = lin(p + "ffn2", f, cfg.d_model)
        h = norm(p + "norm2", add(p + "res2", h, f))
    acc = ops.avgpool_acc(env[h], 0)
    m0, sh = dyadic(_scale_for(acc, ta))
    b.avgpool("pool", h, m0, sh, 0, ta)
    env["pool"] = ops.avgpool(env[h], m0, sh, 0, ta)
    lin("head", "pool", cfg.outputs, dtype=IntType(cfg.bits_out), peg=True)
    graph = b.finish("head", meta={"synthetic": {"seed": seed, **cfg.__dict__}})
    return graph, x
