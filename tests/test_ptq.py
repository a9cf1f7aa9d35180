"""Post-training quantization: CLE, range setting, bias correction, AdaRound, the pipeline's checkpoints
(exported and run by the golden interpreter) and ``hwgen quantize``, on the PM2.5 reference model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwgen.steps import flow
from hwgen.steps.cli import main
from hwgen.data import load_pm25
from hwgen.errors import HwgenError
from hwgen.frontend import ptq
from hwgen.frontend.checkpoint import load_checkpoint
from hwgen.frontend.export import export_model
from hwgen.frontend.quantizer import Quantizer
from hwgen.frontend.train import predict
from hwgen.tasks.forecast import golden_predict
from hwgen.tasks.metrics import mse_mae

MODELS = Path(__file__).resolve().parent.parent / "models"
FP32 = MODELS / "pm25_fp32.pt"
SMALL = 128  # calibration windows: enough for stable ranges, fast


@pytest.fixture(scope="module")
def data():
    return load_pm25(window=24)


@pytest.fixture(scope="module")
def fp32():
    model, _ = load_checkpoint(FP32)
    return model


@pytest.fixture(scope="module")
def windows(data):
    x, y = ptq.calibration_windows(data, SMALL, seed=0)
    return x, y


@pytest.fixture(scope="module")
def ranged(fp32, data, windows):
    """W8A8 with MSE ranges (round to nearest), calibrated on SMALL windows."""
    model, _ = ptq.quantize_model(fp32, data, 8, 8, "mse", calib_windows=SMALL, progress=False)
    return model


def test_cle_preserves_function_and_equalizes_ranges(fp32, windows):
    x, _ = windows
    model = copy.deepcopy(fp32)
    layer = model.encoder[0]
    r1 = layer.ffn1.weight.detach().abs().amax(dim=1)
    r2 = layer.ffn2.weight.detach().abs().amax(dim=0)
    assert float((r1 / r2).max() / (r1 / r2).min()) > 2  # unequal before: there is something to equalize
    scales = ptq.cross_layer_equalize(model)
    assert len(scales) == 1 and bool((scales[0] > 0).all())
    assert not torch.allclose(scales[0], torch.ones(64).double())
    r1 = layer.ffn1.weight.detach().abs().amax(dim=1)
    r2 = layer.ffn2.weight.detach().abs().amax(dim=0)
    torch.testing.assert_close(r1, r2, rtol=1e-5, atol=0)
    with torch.no_grad():
        before, after = fp32(x), model(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_percentile_ranges_narrower_than_minmax(ranged, windows):
    x, _ = windows
    q_in = Quantizer(8, per_channel=True, channels=7, axis=-1, learnable=False)
    ptq.set_range(q_in, x, "minmax")
    wide = q_in.effective_scale().clone()
    ptq.set_range(q_in, x, "percentile")
    narrow = q_in.effective_scale()
    assert bool((narrow <= wide).all()) and bool((narrow < wide).any())
    assert ptq.percentile_range(q_in, x, 100.0).tolist() == x.abs().amax(dim=(0, 1)).double().tolist()
    # an activation: the attention values the model computes on real windows, before their quantizer
    seen = {}
    handle = ranged.encoder[0].q_v.register_forward_pre_hook(lambda mod, args: seen.update(v=args[0]))
    with torch.no_grad():
        ranged(x)
    handle.remove()
    v = seen["v"]
    q = Quantizer(8, learnable=False)
    ptq.set_range(q, v, "minmax")
    wide = float(q.effective_scale())
    ptq.set_range(q, v, "percentile")
    assert float(q.effective_scale()) < wide


def _layer_mean_error(model, lin, x, w_ref, b_ref):
    """Mean over calibration rows of the layer's fake-quantized output minus its FP32 output, per channel."""
    seen = {}
    handle = lin.register_forward_pre_hook(lambda mod, args: seen.update(x=args[0], q=args[1]))
    with torch.no_grad():
        model(x)
        handle.remove()
        out_q = lin(seen["x"], seen["q"])
        out_ref = F.linear(seen["x"], w_ref, b_ref)
    return (out_q - out_ref).double().reshape(-1, out_q.shape[-1]).mean(dim=0)


@pytest.mark.parametrize("name", ["embed", "encoder.0.wv", "encoder.0.ffn2"])
def test_bias_correction_reduces_mean_output_error(ranged, fp32, windows, name):
    x, _ = windows
    model = copy.deepcopy(ranged)
    lin = model.get_submodule(name)
    w_ref, b_ref = fp32.get_submodule(name).weight.detach(), fp32.get_submodule(name).bias.detach()
    before = _layer_mean_error(model, lin, x, w_ref, b_ref)
    rows, q = ptq.layer_inputs(model, lin, x)
    fold = q.effective_scale().reshape(-1) if q.per_channel else None  # the embedding folds input scales
    ptq.correct_bias(lin, ptq.effective_weight(fp32.get_submodule(name), fold), fold, rows.mean(dim=0))
    after = _layer_mean_error(model, lin, x, w_ref, b_ref)
    assert float(after.abs().mean()) < 0.5 * float(before.abs().mean())


@pytest.mark.parametrize("objective", ["layer", "output"])
def test_adaround_rounds_to_floor_or_ceil_on_the_grid(ranged, windows, objective):
    x, _ = windows
    model = copy.deepcopy(ranged)
    for name in ("embed", "encoder.0.ffn1"):
        lin = model.get_submodule(name)
        rows, q = ptq.layer_inputs(model, lin, x)
        fold = q.effective_scale().reshape(-1) if q.per_channel else None
        w = ptq.effective_weight(lin, fold)
        if objective == "layer":
            ints, stats = ptq.adaround_layer(lin.wq, w, rows[:1024])
        else:
            ints, stats = ptq.adaround_output(lin.wq, w, ptq.output_hessian(model, lin, x))
        s = lin.wq.effective_scale().reshape(-1, 1)
        floor = torch.floor(w / s).long()
        nearest = torch.clamp(torch.floor(w / s + 0.5), lin.wq.qmin, lin.wq.qmax).long()
        assert bool(((ints == floor) | (ints == floor + 1)).all())
        assert not torch.equal(ints, nearest)  # it changed something
        assert stats["error_adaround"] < stats["error_nearest"]
        ptq.write_grid_weights(lin, ints, fold)
        # the model's quantizer rounds the written weights as learned
        assert torch.equal(lin.wq.int_repr(ptq.effective_weight(lin, fold)), ints)


OPTIONS = {
    "minmax": dict(method="minmax"),
    "mse": dict(method="mse"),
    "percentile": dict(method="percentile"),
    "cle": dict(method="mse", cle=True),
    "bias_correction": dict(method="mse", bias_correction=True),
    "adaround": dict(method="mse", adaround=True),
    "adaround_output": dict(method="mse", adaround=True, adaround_objective="output"),
    "full": ptq.PIPELINES["full"],
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_exports_and_runs_on_golden(fp32, data, option):
    model, info = ptq.quantize_model(fp32, data, 8, 8, calib_windows=64, progress=False, **OPTIONS[option])
    assert model.cfg.quantized and not model.training
    assert all(bool(q.initialized) for q in model.quantizers())
    for key, value in fp32.state_dict().items():  # BatchNorm keeps the FP32 statistics
        if ".bn.running_" in key:
            assert torch.equal(model.state_dict()[key], value)
    steps = [s["step"] for s in info["steps"]]
    assert ("cle" in steps) == bool(OPTIONS[option].get("cle")) and "ranges" in steps
    graph = export_model(model)
    x, y = data.test.x[:256], data.test.y[:256]
    yi, yr = golden_predict(graph, x)
    assert yi.dtype.kind == "i" and yi.shape == (256, 1)
    fq = predict(model, x, double=True)
    # the integer model follows fake-quant (16-bit output: 512 LSB ~ 14 ug/m3 at most, on single windows)
    assert np.abs(np.floor(fq / graph.meta["output_scale"] + 0.5) - yi).max() <= 512
    assert mse_mae(yr, y)[0] < 1.5 * mse_mae(predict(fp32, x), y)[0]


def test_quantize_model_refuses_quantized_input(data):
    qat, _ = load_checkpoint(MODELS / "pm25_w8.pt")
    with pytest.raises(HwgenError, match="FP32"):
        ptq.quantize_model(qat, data, 8, 8, progress=False)


def test_cli_quantize_end_to_end(tmp_path, capsys):
    out = tmp_path / "q.pt"
    assert main(["quantize", str(FP32), "--bits", "8", "--full", "--calib-windows", "64", "--out", str(out),
                 "--quiet"]) == 0
    assert "saved" in capsys.readouterr().out
    model, meta = load_checkpoint(out)
    assert model.cfg.quantized and model.cfg.bits_w == 8 and model.cfg.bits_a == 8
    ptq_info = meta["train"]["ptq"]
    assert ptq_info["cle"] and ptq_info["adaround"] and ptq_info["calib_windows"] == 64
    assert "fp32_state_dict" in meta
    assert main(["eval", str(out), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    # the parent's FP32 weights, as QAT checkpoints hold them
    assert round(result["fp32"]["mse_units"], 2) == 440.82
    assert result["integer"]["mse_units"] < 1.5 * result["fp32"]["mse_units"]


@pytest.mark.parametrize("args,culprit", [
    ([str(MODELS / "pm25_w8.pt"), "--bits", "8"], "already quantized"),
    (["missing.pt", "--bits", "8"], "missing.pt"),
    ([str(FP32), "--bits", "8", "--adaround-objective", "output"], "--adaround"),
])
def test_cli_quantize_bad_input(tmp_path, capsys, args, culprit):
    out = tmp_path / "q.pt"
    rc = main(["quantize", *args, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("hwgen: error:") and culprit in err[0]
    assert not out.exists()


def test_cli_quantize_bits_out_of_range(tmp_path, capsys):
    out = tmp_path / "q.pt"
    with pytest.raises(SystemExit) as exc:
        main(["quantize", str(FP32), "--bits", "9", "--out", str(out)])
    assert exc.value.code == 2 and "--bits" in capsys.readouterr().err
    with pytest.raises(HwgenError, match="activation bits must be 2..8, not 1"):
        flow.quantize(str(FP32), str(out), 8, 1)
    assert not out.exists()


def test_cli_quantize_will_not_overwrite_its_input(tmp_path, capsys):
    src = tmp_path / "fp32.pt"
    src.write_bytes(FP32.read_bytes())
    assert main(["quantize", str(src), "--bits", "8", "--out", str(src), "--quiet"]) == 1
    assert "overwrite" in capsys.readouterr().err
    assert src.read_bytes() == FP32.read_bytes()


def test_peg_model_gets_group_exponents_and_exports(fp32, data):
    from dataclasses import replace

    from hwgen.frontend.model import TimeSeriesTransformer
    from hwgen.frontend.peg import shared_exponents

    peg = TimeSeriesTransformer(replace(fp32.cfg, peg_groups=4))
    peg.load_state_dict(fp32.state_dict(), strict=False)  # same FP32 function; PEG lives in the quantizers
    model, info = ptq.quantize_model(peg.eval(), data, 8, 8, "mse", calib_windows=64, progress=False)
    exponents = shared_exponents(model)
    assert exponents is not None and exponents.tolist() == info["peg"]["exponent"] and exponents.max() > 0
    x = data.test.x[:128]
    yi, _ = golden_predict(export_model(model), x)
    assert yi.shape == (128, 1)
