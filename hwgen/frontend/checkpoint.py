"""Checkpoints: weights, quantizer state and the full configuration, loadable with weights_only=True."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from hwgen.errors import HwgenError
from hwgen.frontend.model import ModelConfig, TimeSeriesTransformer
from hwgen.frontend.quantizer import Quantizer

FORMAT = "hwgen-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: TimeSeriesTransformer, data: dict[str, Any],
                    train: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write atomically (temporary file, then rename). ``data`` describes the dataset and its scaling,
    ``train`` the training run (command, seed, epochs, validation loss, time); ``extra`` more entries
    (tensors and plain data only, e.g. the FP32 parent's state)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "data": data,
        "train": train,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is a shareable artefact
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def quantizer_keys(model: TimeSeriesTransformer) -> set[str]:
    """The state-dict keys that belong to quantizers (scales, zero points, flags)."""
    return {f"{name}.{key}" for name, mod in model.named_modules() if isinstance(mod, Quantizer)
            for key in mod.state_dict()}


def _check_state(path: Path, entry: str, state: dict, model: torch.nn.Module) -> None:
    """Every tensor of ``state`` that ``model`` has must be a tensor of the model's shape (HwgenError names it)."""
    expected = model.state_dict()
    for key, value in state.items():
        if key not in expected:
            continue
        if not isinstance(value, torch.Tensor):
            raise HwgenError(f"{path}: {entry} entry {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise HwgenError(f"{path}: {entry} tensor {key!r} has shape {tuple(value.shape)}, the configuration "
                             f"needs {tuple(expected[key].shape)}")


def check_output_path(path: str | os.PathLike, what: str = "--out") -> None:
    """Refuse, before any work, an output checkpoint path that cannot be written: an existing directory,
    or a parent that is a file."""
    path = Path(path)
    if path.is_dir():
        raise HwgenError(f"{what} {path}: is a directory (give a checkpoint file name, e.g. {path / 'model.pt'})")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise HwgenError(f"{what} {path}: {parent} is not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise HwgenError(f"{what} {path}: directory {parent} is not writable")
            break


def fp32_state(path: str | os.PathLike, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The FP32 parent's state of a quantized checkpoint (``load_checkpoint`` checked its shapes)."""
    if "fp32_state_dict" not in meta:
        raise HwgenError(f"{path}: quantized checkpoint has no 'fp32_state_dict' entry (the FP32 parent's "
                         "tensors, written by 'hwgen train --bits' and 'hwgen quantize')")
    return meta["fp32_state_dict"]


def load_checkpoint(path: str | os.PathLike) -> tuple[TimeSeriesTransformer, dict[str, Any]]:
    """Load a checkpoint safely (weights_only=True) and rebuild its model in eval mode.

    Returns (model, the checkpoint dict without the state). Raises HwgenError naming the file for a
    missing, corrupt, untrusted or incompatible checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        raise HwgenError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise HwgenError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        text = str(exc).lower()
        unsafe = "unsupported global" in text  # torch: "Unsupported global" / "unsupported GLOBAL x.y"
        why = "it holds objects that are not plain tensors and data (refused: untrusted)" if unsafe else \
            f"corrupt, truncated or not a torch file: {type(exc).__name__}"
        if unsafe:
            raise HwgenError(f"{path}: untrusted checkpoint, refused: it is not a plain-tensor checkpoint "
                             "(it holds pickled objects other than tensors and plain data)") from None
        raise HwgenError(f"{path}: not a loadable hwgen checkpoint ({why})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise HwgenError(f"{path}: not an hwgen checkpoint (no '{FORMAT}' marker)")
    if obj.get("version") != VERSION:
        raise HwgenError(f"{path}: checkpoint version {obj.get('version')!r} is not supported (expected {VERSION})")
    for key, kind in (("config", dict), ("data", dict), ("train", dict), ("state_dict", dict)):
        if key not in obj:
            raise HwgenError(f"{path}: checkpoint has no {key!r} entry")
        if not isinstance(obj[key], kind):
            raise HwgenError(f"{path}: checkpoint entry {key!r} is a {type(obj[key]).__name__}, not a {kind.__name__}")
    try:
        cfg = ModelConfig.from_dict(dict(obj["config"]))
        model = TimeSeriesTransformer(cfg)
        state = dict(obj["state_dict"])
        if cfg.quantized and "fp32_state_dict" in obj:  # the FP32 parent, scored by eval (fp32_state)
            if not isinstance(obj["fp32_state_dict"], dict):
                raise HwgenError(f"{path}: checkpoint entry 'fp32_state_dict' is a "
                                 f"{type(obj['fp32_state_dict']).__name__}, not a dict")
            from dataclasses import replace

            _check_state(path, "fp32_state_dict", obj["fp32_state_dict"],
                         TimeSeriesTransformer(replace(cfg, quantized=False)))
        if not cfg.quantized:  # an FP32 model's quantizers are disabled: their state means nothing
            qkeys = quantizer_keys(model)
            state = {k: v for k, v in state.items() if k not in qkeys}
            state.update({k: v for k, v in model.state_dict().items() if k in qkeys})
        _check_state(path, "state_dict", state, model)
        model.load_state_dict(state)
    except HwgenError as exc:
        raise HwgenError(exc.args[0] if str(exc).startswith(f"{path}: ") else f"{path}: {exc}") from None
    except (KeyError, RuntimeError, TypeError) as exc:
        raise HwgenError(f"{path}: checkpoint does not match its configuration ({str(exc).splitlines()[0][:160]})") from None
    model.eval()
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    return model, meta
