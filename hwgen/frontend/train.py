"""Training: FP32 first, then quantization-aware fine-tuning from it; early stopping on validation."""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from hwgen import tasks
from hwgen.data import Dataset, Split
from hwgen.errors import HwgenError
from hwgen.frontend.model import ModelConfig, TimeSeriesTransformer
from hwgen.frontend.oscillation import OscillationControl, reestimate_batchnorm
from hwgen.frontend.peg import assign_groups


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation settings (defaults suit the PM2.5 reference model on a 2-core CPU)."""

    epochs: int = 60
    qat_epochs: int = 20
    batch: int = 256
    lr: float = 1e-3
    patience: int = 10
    seed: int = 0
    calib_windows: int = 2048
    progress: bool = True
    # Weight oscillations in QAT (hwgen.frontend.oscillation; tracking is always on in QAT):
    dampen: float = 0.0  # lambda_max of the dampening loss, ramped up after 25% of QAT (0 = off)
    freeze: bool = False  # iterative freezing of oscillating weights after 25% of QAT
    freeze_threshold: tuple[float, float] = (0.1, 0.01)  # frequency threshold, annealed start -> end
    osc_momentum: float = 0.01  # EMA momentum of the oscillation statistics (~1 epoch of PM2.5)
    bn_reestimate: bool = True  # recompute BatchNorm statistics with the quantized network after QAT
    bn_batches: int = 50


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


@torch.no_grad()
def predict(model: TimeSeriesTransformer, x: np.ndarray, batch: int = 2048, double: bool = False) -> np.ndarray:
    """Model outputs (scaled units) for windows ``x``, in eval mode; float64 arithmetic with ``double``."""
    model.eval()
    m = copy.deepcopy(model).double() if double else model
    dtype = torch.float64 if double else torch.float32
    outs = [m(torch.as_tensor(x[i : i + batch], dtype=dtype)).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float64)


def validation_loss(model: TimeSeriesTransformer, split: Split, batch: int = 2048) -> float:
    """The loss early stopping watches: the task's loss on the validation split (eval mode). An exact
    quantized model's outputs are its integer model's (``integer_forward``, rounded to float32 as the
    forward returns them), without the fake-quant forward that carries only the gradient: about half the
    time of a validation pass."""
    model.eval()
    if not model.integer_ready():
        return tasks.get(model.cfg.task).validation_loss(predict(model, split.x), split.y)
    outs = [model.integer_forward(torch.as_tensor(split.x[i : i + batch], dtype=torch.float32))
            for i in range(0, len(split.x), batch)]  # integer_forward runs without gradients
    out = np.concatenate(outs).astype(np.float32).astype(np.float64)
    return tasks.get(model.cfg.task).validation_loss(out, split.y)


def _fit(model: TimeSeriesTransformer, data: Dataset, opts: TrainOptions, lr: float, epochs: int,
         label: str) -> dict:
    train, val = data.train, data.val
    if len(train.x) == 0 or len(val.x) == 0:
        raise HwgenError("training needs non-empty training and validation splits")
    task = tasks.get(model.cfg.task)
    gen = torch.Generator().manual_seed(opts.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(epochs, 1))
    x_all = torch.as_tensor(train.x)
    y_all = torch.as_tensor(train.y)
    best = (float("inf"), copy.deepcopy(model.state_dict()), 0)
    if model.cfg.quantized:
        # QAT starts from a calibrated model that may already be the best one (on small or easy data the
        # first epochs can make it worse): it is early stopping's epoch 0.
        best = (validation_loss(model, val), copy.deepcopy(model.state_dict()), 0)
    history = []
    steps_per_epoch = sum(1 for i in range(0, len(x_all), opts.batch) if len(x_all) - i >= 2)
    osc = OscillationControl(model, epochs * steps_per_epoch, dampen=opts.dampen, freeze=opts.freeze,
                             threshold=opts.freeze_threshold, momentum=opts.osc_momentum) \
        if model.cfg.quantized else None  # QAT only: the FP32 phase is unchanged
    step = 0
    bar = tqdm(range(epochs), desc=label, unit="epoch", disable=not opts.progress, file=sys.stderr,
               dynamic_ncols=True)
    start = time.perf_counter()
    for epoch in bar:
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for i in range(0, len(order), opts.batch):
            idx = order[i : i + opts.batch]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            loss = task.loss(model(x_all[idx]), y_all[idx])
            damp = osc.loss(step) if osc is not None else None
            optim.zero_grad(set_to_none=True)
            (loss if damp is None else loss + damp).backward()
            if osc is not None:
                osc.before_step()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            if osc is not None:
                osc.after_step(step)
            step += 1
            total += float(loss.detach()) * len(idx)
        sched.step()
        val_mse = validation_loss(model, val)  # the task's loss (MSE for forecasting)
        if not (math.isfinite(total) and math.isfinite(val_mse)):  # diverged: nothing is saved
            bad = ("training", total / max(len(order), 1)) if not math.isfinite(total) else ("validation", val_mse)
            raise HwgenError(f"{label} training diverged: the {bad[0]} loss of epoch {epoch + 1} is {bad[1]} "
                             f"(not finite; learning rate {lr:g}: try a smaller --lr)")
        history.append({"epoch": epoch + 1, "train_mse": total / len(order), "val_mse": val_mse,
                        **(osc.stats() if osc is not None else {})})
        if val_mse < best[0]:
            best = (val_mse, copy.deepcopy(model.state_dict()), epoch + 1)
        shown = {"osc": f"{history[-1]['osc_fraction']:.3f}",
                 "frozen": f"{history[-1]['frozen_fraction']:.3f}"} if osc is not None else {}
        bar.set_postfix(train=f"{total / len(order):.4f}", val=f"{val_mse:.4f}", best=f"{best[0]:.4f}",
                        **shown)
        if epoch + 1 - best[2] >= opts.patience:
            break
    model.load_state_dict(best[1])
    model.eval()
    return {"val_mse": best[0], "best_epoch": best[2], "epochs_run": len(history),
            "seconds": time.perf_counter() - start, "history": history,
            **(osc.stats() if osc is not None else {})}


def calibrate(model: TimeSeriesTransformer, split: Split, windows: int) -> None:
    """Initialise every quantizer's range from ``windows`` training windows (eval-mode statistics)."""
    for q in model.quantizers():
        q.initialized.fill_(False)
    model.eval()
    with torch.no_grad():
        x = torch.as_tensor(split.x[:windows])
        if model.cfg.peg_groups > 1:
            assign_groups(model, x)  # per-embedding-group exponents from the FP32 ranges
        model.fake_forward(x)  # sets every range; the exact forward's integer run would be thrown away


def train_fp32(data: Dataset, cfg: ModelConfig, opts: TrainOptions) -> tuple[TimeSeriesTransformer, dict]:
    """Train the FP32 model from scratch."""
    seed_everything(opts.seed)
    model = TimeSeriesTransformer(replace(cfg, quantized=False))
    info = _fit(model, data, opts, opts.lr, opts.epochs, "fp32")
    return model, info


def train_qat(data: Dataset, cfg: ModelConfig, fp32: TimeSeriesTransformer, opts: TrainOptions
              ) -> tuple[TimeSeriesTransformer, dict]:
    """Quantization-aware fine-tuning, starting from the FP32 model's weights and calibrated ranges."""
    seed_everything(opts.seed)
    model = TimeSeriesTransformer(replace(cfg, quantized=True))
    missing, unexpected = model.load_state_dict(fp32.state_dict(), strict=False)
    if unexpected or any("q_" not in k and ".wq." not in k for k in missing):
        raise HwgenError(f"the FP32 model does not match the quantized architecture ({unexpected or missing})")
    calibrate(model, data.train, opts.calib_windows)
    info = _fit(model, data, opts, opts.lr / 4, opts.qat_epochs, f"qat w{cfg.bits_w}a{cfg.bits_a}")
    if opts.bn_reestimate:
        # The running statistics were averaged over a moving (and, at low bits, oscillating) set of weights;
        # recompute them with the final quantized network (Nagel et al., 2022). Like the best epoch, the new
        # statistics are kept only if the validation loss does not get worse.
        gen = torch.Generator().manual_seed(opts.seed)
        trained = copy.deepcopy(model.state_dict())
        if reestimate_batchnorm(model, data.train.x, opts.bn_batches, opts.batch, gen):
            info["val_mse_before_bn"] = info["val_mse"]
            info["val_mse_bn_reestimated"] = validation_loss(model, data.val)
            info["bn_reestimated"] = info["val_mse_bn_reestimated"] <= info["val_mse"]
            if info["bn_reestimated"]:
                info["val_mse"] = info["val_mse_bn_reestimated"]
            else:
                model.load_state_dict(trained)
    return model, info
