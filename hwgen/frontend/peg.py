"""Per-embedding-group (PEG) quantization (Bondarenko et al., 2021): grouping the embedding dimensions.

A few embedding dimensions of the residual stream carry large outliers; one scale per tensor then spends most
of its levels on them. PEG splits the d dimensions into K groups (optionally after sorting them by range, so
that the outlier dimensions share a group), each with its own scale. Here every group scale is the tensor's
base scale times 2**e_k, and all PEG tensors of a model share the exponents e, so that

* residual adds, the folded BatchNorm and average pooling keep one rescale per tensor (the 2**e_c cancel),
* a linear layer reading a PEG tensor accumulates one partial sum per group and rescales each partial sum by
  an exact shift (e_k) before adding it: in hardware a left shift of the broadcast operand, no multiplier.
"""

from __future__ import annotations


import numpy as np
import torch

from hwgen.frontend.quantizer import Quantizer
from hwgen.ops import MAX_IN_SHL


def peg_quantizers(model) -> list[tuple[str, Quantizer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Quantizer) and m.peg]


def group_exponents(ranges: np.ndarray, groups: int, permute: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel group index and exponent from per-channel ranges [d].

    Channels are split into ``groups`` equal groups, contiguous or (``permute``) by ascending range; group k
    gets e_k = round(log2(R_k / R_min)) clipped to 0..MAX_IN_SHL, with R_k the largest range in the group.
    """
    r = np.maximum(np.asarray(ranges, np.float64), 1e-12)
    d = len(r)
    if groups < 1 or d % groups:
        raise ValueError(f"{groups} groups do not divide {d} channels")
    order = np.argsort(r, kind="stable") if permute else np.arange(d)
    group = np.empty(d, np.int64)
    group[order] = np.arange(d) // (d // groups)
    top = np.array([r[group == k].max() for k in range(groups)])
    e = np.clip(np.round(np.log2(top / top.min())), 0, MAX_IN_SHL).astype(np.int64)
    return group, e[group]


@torch.no_grad()
def assign_groups(model, x: torch.Tensor) -> dict:
    """Set the shared group exponents of every PEG quantizer of ``model`` from the FP32 ranges its inputs
    take on windows ``x``: per tensor, per channel max |value| normalised by the tensor's median channel
    range, then the maximum over tensors. Returns {"group": [...], "exponent": [...]} for the record."""
    pegs = peg_quantizers(model)
    if not pegs:
        return {}
    ranges: list[torch.Tensor] = []
    hooks = [q.register_forward_pre_hook(lambda mod, args: ranges.append(
        args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0))) for _, q in pegs]
    enabled = {q: q.enabled for q in model.quantizers()}
    try:
        for q in enabled:
            q.enabled = False
        model.eval()
        model(x)
    finally:
        for h in hooks:
            h.remove()
        for q, on in enabled.items():
            q.enabled = on
    norm = torch.stack([r / r.median().clamp(min=1e-12) for r in ranges]).amax(dim=0).numpy()
    cfg = model.cfg
    group, exponent = group_exponents(norm, cfg.peg_groups, cfg.peg_permute)
    for _, q in pegs:
        q.exponent.copy_(torch.as_tensor(exponent, dtype=q.exponent.dtype))
    return {"group": group.tolist(), "exponent": exponent.tolist(),
            "max_range_ratio": float(norm.max() / max(float(np.median(norm)), 1e-12)),
            "levels_gained_bits": int(exponent.max()) if len(exponent) else 0}


def shared_exponents(model) -> np.ndarray | None:
    """The exponents all PEG quantizers share (None without PEG); ValueError if they differ."""
    pegs = peg_quantizers(model)
    if not pegs:
        return None
    first = pegs[0][1].exponent.numpy().astype(np.int64)
    for name, q in pegs[1:]:
        if not np.array_equal(q.exponent.numpy().astype(np.int64), first):
            raise ValueError(f"PEG quantizer {name!r} has other group exponents than {pegs[0][0]!r}")
    return first


__all__ = ["assign_groups", "group_exponents", "peg_quantizers", "shared_exponents"]
