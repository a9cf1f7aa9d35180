"""Training: FP32 first, then quantization-aware fine-tuning from it; early stopping on validation."""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from hwgen.data import Dataset, Split
from hwgen.errors import HwgenError
from hwgen.frontend.model import ModelConfig, TimeSeriesTransformer


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


def mse_mae(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    err = np.asarray(pred, np.float64) - np.asarray(y, np.float64)
    return float(np.mean(err**2)), float(np.mean(np.abs(err)))


def _fit(model: TimeSeriesTransformer, data: Dataset, opts: TrainOptions, lr: float, epochs: int,
         label: str) -> dict:
    train, val = data.train, data.val
    if len(train.x) == 0 or len(val.x) == 0:
        raise HwgenError("training needs non-empty training and validation splits")
    gen = torch.Generator().manual_seed(opts.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(epochs, 1))
    x_all = torch.as_tensor(train.x)
    y_all = torch.as_tensor(train.y)
    best = (float("inf"), copy.deepcopy(model.state_dict()), 0)
    history = []
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
            loss = torch.nn.functional.mse_loss(model(x_all[idx]), y_all[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        val_mse, _ = mse_mae(predict(model, val.x), val.y)
        history.append({"epoch": epoch + 1, "train_mse": total / len(order), "val_mse": val_mse})
        if val_mse < best[0]:
            best = (val_mse, copy.deepcopy(model.state_dict()), epoch + 1)
        bar.set_postfix(train=f"{total / len(order):.4f}", val=f"{val_mse:.4f}", best=f"{best[0]:.4f}")
        if epoch + 1 - best[2] >= opts.patience:
            break
    model.load_state_dict(best[1])
    model.eval()
    return {"val_mse": best[0], "best_epoch": best[2], "epochs_run": len(history),
            "seconds": time.perf_counter() - start, "history": history}


def calibrate(model: TimeSeriesTransformer, split: Split, windows: int) -> None:
    """Initialise every quantizer's range from ``windows`` training windows (eval-mode statistics)."""
    for q in model.quantizers():
        q.initialized.fill_(False)
    model.eval()
    with torch.no_grad():
        model(torch.as_tensor(split.x[:windows]))


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
    return model, info
