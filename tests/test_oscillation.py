"""Oscillations in QAT: tracking, dampening, iterative freezing, BatchNorm re-estimation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from hwgen.data.timeseries import Dataset, Split
from hwgen.frontend.model import ModelConfig, QLinear, TimeSeriesTransformer
from hwgen.frontend.oscillation import (OscillationControl, OscillationTracker, cosine_ramp, dampening_loss,
                                        effective_weight, quantized_linears, reestimate_batchnorm)
from hwgen.frontend.train import TrainOptions, calibrate, train_qat

torch.set_num_threads(1)

TINY = ModelConfig(features=3, window=8, d_model=8, ffn=16, quantized=True, bits_w=3, bits_a=8)


class OneLayer(nn.Module):
    """A single 4-bit QLinear 2 -> 3 with a per-channel scale of exactly 0.25."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = QLinear(ModelConfig(quantized=True, bits_w=4), 2, 3)
        self.lin.wq.scale.data.fill_(0.25)
        self.lin.wq.initialized.fill_(True)


def tiny_model(seed: int = 0, n: int = 256) -> tuple[TimeSeriesTransformer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = TimeSeriesTransformer(TINY)
    x = torch.randn(n, TINY.window, TINY.features)
    y = x[:, -1, :1] * 0.7 + 0.1 * x[:, :, 1].mean(dim=1, keepdim=True)
    model.eval()
    with torch.no_grad():
        model(x)  # calibrates every quantizer
    return model, x, y


def test_tracker_counts_flips_not_monotone_moves():
    m = OneLayer()
    w = m.lin.weight
    with torch.no_grad():
        w.zero_()
        w[0, 0] = 0.36  # integer 1 (1.44)
        w[0, 1] = -1.0  # integer -4
        w[1, 0] = 0.36
    tracker = OscillationTracker(m, momentum=0.1)
    steps = 10
    for t in range(steps):
        with torch.no_grad():
            w[0, 0] = 0.39 if t % 2 == 0 else 0.36  # 2, 1, 2, 1, ...: every move after the first reverses
            w[0, 1] += 0.25  # -3, -2, ..., 6: always up
            w[1, 0] = [0.39, 0.39, 0.36][t] if t < 3 else 0.36  # up, stay, down (reversal), then still
        tracker.update()
    freq = tracker.freq.reshape(3, 2)
    expected = 0.0
    for t in range(steps):
        expected = 0.9 * expected + 0.1 * (1.0 if t >= 1 else 0.0)
    assert freq[0, 0].item() == pytest.approx(expected, rel=1e-12)
    assert freq[0, 1].item() == 0.0  # monotone: never an oscillation
    assert freq[1, 0].item() == pytest.approx(0.1 * 0.9 ** (steps - 3), rel=1e-12)  # one reversal, at step 3
    assert freq[1, 1].item() == 0.0 and freq[2].abs().sum().item() == 0.0
    assert tracker.oscillating().reshape(3, 2)[0].tolist() == [True, False]
    assert tracker.oscillating_fraction() == pytest.approx(2 / 6)
    assert tracker.integers().reshape(3, 2)[0].tolist() == [1, 6]
    assert tracker.frozen_fraction() == 0.0


def test_tracker_sees_the_folded_embedding_integers():
    model, x, _ = tiny_model()
    tracker = OscillationTracker(model)
    names = [name for name, _, _ in quantized_linears(model)]
    assert names[0] == "embed" and quantized_linears(model)[0][2] is model.q_in
    emb = tracker.integers()[: model.embed.weight.numel()].reshape(model.embed.weight.shape)
    # the forward pass's quantized embedding weights, divided by their scale
    s_in = model.q_in.effective_scale().float()
    w_hat = model.embed.wq(model.embed.weight * s_in).detach()
    s_w = model.embed.wq.effective_scale().float().reshape(-1, 1)
    assert torch.equal(emb, torch.round(w_hat / s_w).long())
    assert not torch.equal(emb, model.embed.wq.int_repr(model.embed.weight))  # the folding matters


def test_dampening_zero_on_grid_positive_off_grid():
    m = OneLayer()
    ints = torch.tensor([[1.0, -3.0], [7.0, -8.0], [0.0, 2.0]])
    with torch.no_grad():
        m.lin.weight.copy_(ints * 0.25)
    assert dampening_loss(m).item() == 0.0
    with torch.no_grad():
        m.lin.weight[2, 1] = 12.0  # beyond qmax * s: clipped, still no distance to its grid point
    assert dampening_loss(m).item() == 0.0
    with torch.no_grad():
        m.lin.weight[0, 0] = 0.3  # 1.2 LSB: 0.2 LSB from its grid point
    loss = dampening_loss(m)
    assert loss.item() == pytest.approx(0.2**2 / 6, rel=1e-5)
    loss.backward()
    grad = m.lin.weight.grad
    assert grad[0, 0].item() > 0 and grad.abs().sum().item() == grad[0, 0].abs().item()  # pulls 1.2 back to 1
    assert m.lin.wq.scale.grad is None  # the scales are constants here


def test_dampening_on_the_folded_embedding():
    model, _, _ = tiny_model()
    with torch.no_grad():
        model.q_in.scale.copy_(torch.tensor([0.5, 0.25, 2.0]))
        for _, lin, folded in quantized_linears(model):
            lin.wq.scale.fill_(0.125)
            k = torch.randint(-4, 4, lin.weight.shape).float()
            s_in = 1.0 if folded is None else folded.effective_scale().float()
            lin.weight.copy_(k * 0.125 / s_in)
    assert dampening_loss(model).item() == 0.0
    with torch.no_grad():
        model.embed.weight[0, 0] += 0.1 * 0.125 / 0.5  # 0.1 LSB off, in the folded units
    n = sum(lin.weight.numel() for _, lin, _ in quantized_linears(model))
    assert dampening_loss(model).item() == pytest.approx(0.01 / n, rel=1e-4)


def test_ramps():
    assert [cosine_ramp(s, 100, 0.25, 0.0, 2.0) for s in (0, 10, 24)] == [0.0, 0.0, 0.0]
    assert cosine_ramp(100, 100, 0.25, 0.0, 2.0) == pytest.approx(2.0)
    assert cosine_ramp(int(62.5 * 2) // 2, 100, 0.25, 0.0, 2.0) == pytest.approx(1.0, abs=0.05)
    vals = [cosine_ramp(s, 100, 0.25, 0.1, 0.01) for s in range(101)]
    assert vals[0] == 0.1 and vals[-1] == pytest.approx(0.01) and all(a >= b for a, b in zip(vals, vals[1:]))
    model, _, _ = tiny_model()
    ctl = OscillationControl(model, 100, dampen=1.0)
    assert ctl.loss(0) is None and ctl.loss(24) is None
    assert ctl.loss(60).item() > 0


def test_frozen_integers_stay_fixed_while_training_goes_on():
    model, x, y = tiny_model(n=96)
    ctl = OscillationControl(model, total_steps=32, freeze=True, threshold=(0.5, 0.5), momentum=0.2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    scales_before = [lin.wq.scale.detach().clone() for _, lin, _ in quantized_linears(model)]

    def step(t: int) -> None:
        model.train()
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        ctl.before_step()
        opt.step()
        ctl.after_step(t)

    tracker = ctl.tracker
    for t in range(8):  # before 25% of 32 steps: tracking only
        step(t)
    assert tracker.frozen_fraction() == 0.0
    assert tracker.freeze(0.0) > 0  # freeze everything that ever oscillated, at its rounded integer EMA
    frozen = tracker.frozen.clone()
    values = tracker.integers()[frozen]
    ema = torch.floor(tracker.ema[frozen] + 0.5).long()
    assert torch.equal(values, ema.clamp(-4, 3))
    moving = tracker.integers()
    for t in range(8, 32):
        step(t)
        now = tracker.integers()
        assert torch.equal(now[frozen], values)
    assert not torch.equal(now[~tracker.frozen], moving[~tracker.frozen])  # the others kept training
    scales_after = [lin.wq.scale.detach() for _, lin, _ in quantized_linears(model)]
    assert any(not torch.equal(a, b) for a, b in zip(scales_before, scales_after))  # LSQ scales moved
    # the forward pass uses exactly the frozen integers (the folded embedding included)
    emb = model.embed
    w_hat = emb.wq(effective_weight(emb, model.q_in)).detach()
    ints = torch.round(w_hat / emb.wq.effective_scale().float().reshape(-1, 1)).long().reshape(-1)
    n = emb.weight.numel()
    assert frozen[:n].any() and torch.equal(ints[frozen[:n]], values[: int(frozen[:n].sum())])


def test_bn_reestimation_uses_the_quantized_network():
    model, x, _ = tiny_model(n=256)
    bn1 = model.encoder[0].norm1.bn
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.fill_(5.0)
            m.running_var.fill_(9.0)
    scales = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("scale")}
    inputs = []
    handle = bn1.register_forward_hook(lambda mod, args, out: inputs.append(args[0].detach()))
    used = reestimate_batchnorm(model, x, batches=50, batch=64, generator=torch.Generator().manual_seed(0))
    handle.remove()
    assert used == 4 and not model.training and bn1.momentum == 0.1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in scales.items())  # no range moved
    # the first BatchNorm's input does not depend on any BatchNorm: its statistics are the quantized
    # network's: cumulative average of 4 equal batches = the mean over all windows
    mean = torch.cat([t.transpose(0, 1).reshape(8, -1) for t in inputs], dim=1).mean(dim=1)
    var = torch.stack([t.transpose(0, 1).reshape(8, -1).var(dim=1) for t in inputs]).mean(dim=0)
    assert len(inputs) == 4 and inputs[0].shape == (64, 8, TINY.window)
    assert torch.allclose(bn1.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn1.running_var, var, rtol=1e-4)
    # ... and differ from those of the same weights unquantized
    fp = copy.deepcopy(model)
    for q in fp.quantizers():
        q.enabled = False
    for m in fp.modules():
        if isinstance(m, QLinear):
            m.wq.enabled = False
    reestimate_batchnorm(fp, x, batches=50, batch=64, generator=torch.Generator().manual_seed(0))
    assert (fp.encoder[0].norm1.bn.running_mean - mean).abs().max() > 1e-3
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            assert (m.running_mean - 5.0).abs().max() > 0.1  # every BatchNorm was reset and re-estimated


def _dataset(x: torch.Tensor, y: torch.Tensor, n_train: int) -> Dataset:
    def split(a: int, b: int) -> Split:
        return Split(x[a:b].numpy(), y[a:b].numpy(), np.arange(b - a))

    f = x.shape[-1]
    return Dataset(name="synthetic", features=tuple(f"f{i}" for i in range(f)), target="f0", window=x.shape[1],
                   horizon=1, mean=np.zeros(f), std=np.ones(f), target_mean=0.0, target_std=1.0,
                   train=split(0, n_train), val=split(n_train, len(x)), test=split(n_train, len(x)), dropped={})


def test_short_qat_logs_oscillation_history():
    torch.manual_seed(1)
    x = torch.randn(700, TINY.window, TINY.features)
    y = x[:, -1, :1] * 0.7 + 0.2 * x[:, :, 2].mean(dim=1, keepdim=True)
    data = _dataset(x, y, 600)
    fp32 = TimeSeriesTransformer(ModelConfig(**{**TINY.to_dict(), "quantized": False}))
    opts = TrainOptions(qat_epochs=2, batch=32, progress=False, dampen=0.5, freeze=True,
                        freeze_threshold=(0.05, 0.01), osc_momentum=0.1)
    model, info = train_qat(data, TINY, fp32, opts)
    hist = info["history"]
    assert len(hist) == 2
    for h in hist:
        assert 0.0 <= h["osc_fraction"] <= 1.0 and 0.0 <= h["frozen_fraction"] <= 1.0
    # 3-bit weights oscillate from the start; those above the threshold froze (after 25% of the steps)
    assert 0 < hist[0]["frozen_fraction"] <= hist[1]["frozen_fraction"]
    assert info["osc_fraction"] == hist[-1]["osc_fraction"]
    assert info["frozen_fraction"] == hist[-1]["frozen_fraction"]
    # BatchNorm re-estimation ran; its statistics were kept only if the validation loss did not get worse
    assert info["val_mse"] == min(info["val_mse_before_bn"], info["val_mse_bn_reestimated"])
    assert info["bn_reestimated"] == (info["val_mse_bn_reestimated"] <= info["val_mse_before_bn"])
    assert math.isfinite(info["val_mse"])
    from hwgen.frontend.train import validation_loss
    assert validation_loss(model, data.val) == pytest.approx(info["val_mse"], rel=1e-6)
    assert not model.training


def test_fp32_phase_has_no_oscillation_entries():
    from hwgen.frontend.train import train_fp32

    torch.manual_seed(2)
    x = torch.randn(300, TINY.window, TINY.features)
    data = _dataset(x, x[:, -1, :1], 250)
    _, info = train_fp32(data, TINY, TrainOptions(epochs=1, batch=64, progress=False))
    assert "osc_fraction" not in info and "osc_fraction" not in info["history"][0]


def test_calibrated_tracker_starts_clean():
    model, x, _ = tiny_model()
    calibrate(model, Split(x.numpy(), x[:, -1, :1].numpy(), np.arange(len(x))), 128)
    tracker = OscillationTracker(model)
    tracker.update()  # nothing moved
    assert tracker.oscillating_fraction() == 0.0 and int(tracker.last_dir.abs().sum()) == 0
    with pytest.raises(ValueError, match="momentum"):
        OscillationTracker(model, momentum=0.0)


@pytest.mark.parametrize("args,culprit", [
    (["--bits", "4", "--dampen", "x"], "--dampen"),
    (["--bits", "4", "--dampen", "-0.5"], "--dampen"),
    (["--bits", "4", "--freeze-threshold", "0.1:0.01"], "--freeze"),
    (["--bits", "4", "--freeze", "--freeze-threshold", "0.1"], "START:END"),
    (["--bits", "4", "--freeze", "--freeze-threshold", "0.1:1.5"], "(0, 1)"),
    (["--fp32", "--no-bn-reestimate"], "--no-bn-reestimate"),
])
def test_cli_oscillation_flags_bad_values(tmp_path, capsys, args, culprit):
    from hwgen.steps.cli import main

    rc = main(["train", *args, "--out", str(tmp_path / "x.pt"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("hwgen: error:") and culprit in err[0]
    assert not (tmp_path / "x.pt").exists()


def test_cli_oscillation_flags_reach_the_options():
    from hwgen.steps.cli import _oscillation_options, build_parser

    args = build_parser().parse_args(["train", "--bits", "3", "--out", "x.pt", "--dampen", "0.5", "--freeze",
                                      "--freeze-threshold", "0.2:0.02", "--no-bn-reestimate"])
    assert _oscillation_options(args) == {"dampen": 0.5, "freeze": True, "freeze_threshold": (0.2, 0.02),
                                          "bn_reestimate": False}
    args = build_parser().parse_args(["train", "--bits", "3", "--out", "x.pt"])
    defaults = TrainOptions()
    opts = _oscillation_options(args)
    assert opts == {"bn_reestimate": defaults.bn_reestimate, "freeze": False}


@pytest.mark.slow
def test_dampening_lowers_oscillations_and_freezing_freezes_on_pm25():
    """The benchmark's effect in miniature: 3-bit QAT of the shipped FP32 model on an eighth of the PM2.5
    training windows, 4 epochs. Dampening (lambda 1) leaves fewer weights oscillating at the end than the
    same run without it (measured: 0.013 vs 0.029); freezing freezes some weights."""
    from dataclasses import replace
    from pathlib import Path

    from hwgen.data import load_pm25
    from hwgen.frontend.checkpoint import load_checkpoint

    data = load_pm25()
    small = replace(data, train=replace(data.train, x=data.train.x[::8], y=data.train.y[::8]),
                    val=replace(data.val, x=data.val.x[::4], y=data.val.y[::4]))
    fp32, _ = load_checkpoint(str(Path(__file__).resolve().parents[1] / "models" / "pm25_fp32.pt"))
    cfg = replace(fp32.cfg, quantized=True, bits_w=3, bits_a=8)
    final = {}
    for name, extra in (("plain", {}), ("dampen", dict(dampen=1.0)), ("freeze", dict(freeze=True))):
        opts = TrainOptions(qat_epochs=4, patience=10, batch=64, progress=False, bn_reestimate=False,
                            calib_windows=512, **extra)
        _, info = train_qat(small, cfg, fp32, opts)
        final[name] = info["history"][-1]
    assert final["plain"]["osc_fraction"] > 0.01  # 3-bit weights do oscillate here
    assert final["dampen"]["osc_fraction"] < 0.75 * final["plain"]["osc_fraction"]
    assert final["plain"]["frozen_fraction"] == final["dampen"]["frozen_fraction"] == 0.0
    assert final["freeze"]["frozen_fraction"] > 0.0
