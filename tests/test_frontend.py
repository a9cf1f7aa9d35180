"""Front end: quantizers, integer kernels (bit-exact with golden), model shapes, export and checkpoints."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from hwgen.errors import HwgenError
from hwgen.frontend.checkpoint import load_checkpoint, save_checkpoint
from hwgen.frontend.export import export_model
from hwgen.host.quantize import quantize_input
from hwgen.frontend.integer_kernels import (LN_NORM_BITS, LN_RECIP_BITS, SOFTMAX_RECIP_BITS, int_layernorm_norm,
                                            int_softmax)
from hwgen.frontend.model import ModelConfig, TimeSeriesTransformer
from hwgen.frontend.quantizer import Quantizer, round_half_up
from hwgen.frontend.train import calibrate, predict
from hwgen.golden import ops, run
from hwgen.ir.dyadic import softmax_lut
from hwgen.ir.graph import Graph
from hwgen.ir.types import IntType


def test_round_half_up_ties():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49])
    assert round_half_up(x).tolist() == [1, 2, 3, 0, -1, -2, 0]


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_quantizer_grid_and_range(bits, signed):
    q = Quantizer(bits, signed=signed, learnable=False, init="minmax")
    x = torch.linspace(-3, 5, 101)
    y = q(x)
    ints = q.int_repr(x)
    assert ints.min() >= q.qmin and ints.max() <= q.qmax
    assert torch.allclose(y.double(), ints.double() * q.effective_scale(), atol=1e-6)
    # min-max: the positive extreme maps to qmax exactly
    assert int(ints.max()) == q.qmax


def test_quantizer_ste_gradient_inside_range_only():
    q = Quantizer(4, learnable=False, init="minmax")
    q.calibrate(torch.tensor([-1.0, 1.0]))
    x = torch.tensor([0.3, -0.2, 5.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0]


def test_lsq_scale_learns():
    q = Quantizer(4, learnable=True, init="minmax")
    x = torch.randn(1000)
    q.calibrate(x)
    before = float(q.scale.detach())
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        (q(x) - x * 0.5).pow(2).mean().backward()  # a target the scale can move towards
        opt.step()
    assert float(q.scale.detach()) < before


def test_mse_init_not_worse_than_minmax():
    x = torch.cat([torch.randn(5000), torch.tensor([40.0])])  # one outlier
    errs = {}
    for init in ("minmax", "mse"):
        q = Quantizer(4, learnable=False, init=init)
        q.calibrate(x)
        errs[init] = float((q(x) - x).pow(2).mean())
    assert errs["mse"] < errs["minmax"]


@pytest.mark.parametrize("kw", [dict(bits=5), dict(bits=4, signed=False), dict(bits=8, symmetric=False),
                                dict(bits=3, per_channel=True, channels=6, axis=1), dict(bits=6, peg_channels=6)])
def test_mse_search_error_equals_the_fake_quant_error_bit_for_bit(kw):
    """The MSE range search's in-place squared error is ``(_fake - x) ** 2`` exactly, for every candidate."""
    torch.manual_seed(1)
    q = Quantizer(learnable=False, **kw)
    if q.peg:
        q.exponent.copy_(torch.tensor([0.0, 1, 2, 0, 3, 1]))
    x = torch.randn(64, 6) * torch.tensor([0.1, 1, 3, 10, 0.5, 40])
    x = x.abs() if not q.signed else x
    lo, hi = q._minmax(x)
    for frac in torch.linspace(0.3, 1.0, 36):
        scale, zp = q._params_for(lo * frac, hi * frac)
        with torch.no_grad():
            assert torch.equal(q._squared_error(x, scale, zp), (q._fake(x, scale, zp) - x).pow(2))


def test_per_channel_and_asymmetric():
    w = torch.stack([torch.linspace(-1, 1, 9), torch.linspace(-8, 8, 9)])
    q = Quantizer(8, per_channel=True, channels=2, axis=0, learnable=False, init="minmax")
    q.calibrate(w)
    assert q.scale.shape == (2,) and float(q.scale[1]) == pytest.approx(8 * float(q.scale[0]))
    a = Quantizer(8, symmetric=False, learnable=False, init="minmax")
    a.calibrate(torch.tensor([0.5, 3.0]))  # the range is widened to contain zero
    assert int(a.int_repr(torch.tensor([0.0]))) == int(a.zero_point)


def test_bad_bits_rejected():
    with pytest.raises(ValueError, match="bits"):
        Quantizer(1)


@pytest.mark.parametrize("bits,scale", [(8, 0.05), (6, 0.2), (4, 0.7), (3, 1.3)])
def test_int_softmax_equals_golden(bits, scale):
    rng = np.random.default_rng(bits)
    x = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(50, 24))
    ours = int_softmax(torch.as_tensor(x), scale, 8).numpy()
    golden = ops.softmax(x, softmax_lut(scale, bits), SOFTMAX_RECIP_BITS, IntType(8, False))
    assert (ours == golden).all()


@pytest.mark.parametrize("channels", [8, 16, 64])
def test_int_layernorm_equals_golden(channels):
    rng = np.random.default_rng(channels)
    x = rng.integers(-128, 128, size=(40, channels))
    x[0] = 7  # a constant row: no division by zero
    ours = int_layernorm_norm(torch.as_tensor(x)).numpy()
    golden = ops.layernorm_parts(x, LN_NORM_BITS, LN_RECIP_BITS)[-1]
    assert (ours == golden).all()
    assert (ours[0] == 0).all()


@pytest.mark.parametrize("cfg", [
    ModelConfig(),
    ModelConfig(heads=2, layers=2, norm="layer", d_model=32, window=12, features=3),
    ModelConfig(heads=4, layers=3, d_model=8 * 4, ffn=16, window=96, features=1),
    ModelConfig(d_model=64, heads=4, window=8, features=2, ffn=128),
])
def test_model_shapes(cfg):
    for quantized in (False, True):
        m = TimeSeriesTransformer(replace(cfg, quantized=quantized))
        y = m(torch.randn(4, cfg.window, cfg.features))
        assert y.shape == (4, cfg.outputs)


@pytest.mark.parametrize("bad,match", [
    (dict(heads=3), "heads"), (dict(d_model=18, heads=4), "divisible"), (dict(layers=4), "layers"),
    (dict(window=200), "window"), (dict(norm="group"), "norm"), (dict(bits_w=9), "weight bits"),
])
def test_bad_config(bad, match):
    with pytest.raises(HwgenError, match=match):
        ModelConfig(**bad).validate()


def _calibrated(cfg: ModelConfig, seed: int = 0) -> TimeSeriesTransformer:
    torch.manual_seed(seed)
    m = TimeSeriesTransformer(replace(cfg, quantized=True))
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):  # non-trivial folded BatchNorm
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.3, 0.3)

    class _S:
        x = np.random.default_rng(seed).normal(size=(256, cfg.window, cfg.features)).astype(np.float32)

    calibrate(m, _S, 256)
    return m


CONFIGS = [ModelConfig(bits_w=8, bits_a=8), ModelConfig(bits_w=4, bits_a=4),
           ModelConfig(norm="layer", heads=2, layers=2, window=12, features=3)]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_quantized_forward_equals_golden_of_export(cfg):
    """The quantized forward (eval mode) returns exactly the deployed integer model's outputs: the golden
    interpreter of the exported graph, on every element, in float32 and float64."""
    m = _calibrated(cfg)
    g = export_model(m)
    x = np.random.default_rng(1).normal(size=(200, cfg.window, cfg.features)).astype(np.float32)
    yi = run(g, quantize_input(x, g.meta["input_scale"], cfg.bits_in)).reshape(len(x), -1)
    for double in (False, True):
        y = predict(m, x, double=double)
        assert np.array_equal(np.floor(y / g.meta["output_scale"] + 0.5), yi)


@pytest.mark.parametrize("cfg", CONFIGS[:2])
def test_validation_loss_is_the_deployed_models_loss(cfg):
    """Early stopping watches the integer model's loss: the golden interpreter of the exported graph's
    outputs in real units (rounded to float32, as the forward returns them), exactly; the fake-quant
    surrogate's (``exact = False``) differs."""
    from hwgen import tasks
    from hwgen.frontend.train import validation_loss

    m = _calibrated(cfg)
    g = export_model(m)
    rng = np.random.default_rng(2)

    class _Split:
        x = rng.normal(size=(300, cfg.window, cfg.features)).astype(np.float32)
        y = rng.normal(size=(300, cfg.outputs)).astype(np.float32)

    yi = run(g, quantize_input(_Split.x, g.meta["input_scale"], cfg.bits_in)).reshape(len(_Split.x), -1)
    real = (yi * g.meta["output_scale"]).astype(np.float32).astype(np.float64)
    want = tasks.get(cfg.task).validation_loss(real, _Split.y)
    assert validation_loss(m, _Split, batch=128) == want
    m.exact = False
    assert validation_loss(m, _Split) != want


@pytest.mark.parametrize("cfg", CONFIGS)
def test_fake_quant_surrogate_tracks_export(cfg):
    """The fake-quant surrogate (``exact = False``: what QAT's gradients follow) tracks the golden model.

    They cannot agree everywhere: the export turns each real rescale into a 15-bit dyadic multiplier
    (relative error <= 2**-15), which moves a value across a rounding boundary now and then; the
    LayerNorm affine is also rounded to integers. Measured on random calibrated models: the first layer
    (12-bit) differs on < 1% of elements by 1 LSB; such flips propagate, and one LSB of a 4-bit pooled value is
    thousands of LSB of the 16-bit output, so end to end we bound the output drift relative to the output's variance.
    """
    m = _calibrated(cfg)
    m.exact = False
    g = export_model(m)
    x = np.random.default_rng(1).normal(size=(200, cfg.window, cfg.features)).astype(np.float32)
    env = run(g, quantize_input(x, g.meta["input_scale"], cfg.bits_in), return_all=True)
    yi = env[g.output_name].reshape(len(x), -1)
    yf = np.floor(predict(m, x, double=True) / g.meta["output_scale"] + 0.5)
    assert not np.array_equal(yi, yf)  # the surrogate is not the integer model
    drift = np.mean((yi - yf) ** 2) / np.var(yf)  # measured: 0.000-0.02 on these configs
    assert drift < 0.05
    # first layer: fake-quant embedding integers vs golden
    with torch.no_grad():
        xq = m.q_in(torch.as_tensor(x, dtype=torch.float64))
        emb = m.embed.double()(xq, m.q_in)
        emb_int = m.q_embed.int_repr(emb).numpy()
    first = np.abs(emb_int - env["embed"])
    assert first.max() <= 1 and np.mean(first > 0) < 0.01  # measured 0.3-0.4% (12-bit embedding)


def test_training_forward_is_the_integer_model_with_the_batch_statistics():
    """In training mode the forward is the integer graph with each BatchNorm folded with the statistics it
    normalised this batch with; its gradient is the fake-quant surrogate's (every parameter gets one)."""
    cfg = ModelConfig(bits_w=6, bits_a=6, layers=2)
    m = _calibrated(cfg)
    x = torch.as_tensor(np.random.default_rng(2).normal(size=(64, cfg.window, cfg.features)), dtype=torch.float32)
    m.train()
    y = m(x)
    y.pow(2).mean().backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if "encoder.0.w" in n)
    # the same graph from an eval-mode copy whose running statistics are this batch's
    ref = _calibrated(cfg)
    ref.load_state_dict(m.state_dict())
    for norm, mine in zip((n for n in ref.modules() if hasattr(n, "bn")), (n for n in m.modules() if hasattr(n, "bn"))):
        mean, var = mine.batch_stats
        norm.bn.running_mean.copy_(mean)
        norm.bn.running_var.copy_(var)
    g = export_model(ref)
    yi = run(g, quantize_input(x.numpy(), g.meta["input_scale"], cfg.bits_in)).reshape(len(x), -1)
    assert np.array_equal(np.floor(y.detach().double().numpy() / g.meta["output_scale"] + 0.5), yi)
    m.eval()  # and eval mode folds the running statistics (which the training step moved)
    assert not np.array_equal(np.floor(predict(m, x.numpy()) / g.meta["output_scale"] + 0.5), yi)


def test_export_round_trip(tmp_path):
    m = _calibrated(ModelConfig(bits_w=6, bits_a=6))
    g = export_model(m, {"model": "t"})
    g.save(tmp_path / "ir")
    g2 = Graph.load(tmp_path / "ir")
    x = np.random.default_rng(2).integers(-128, 128, size=(20, 24, 7))
    assert (run(g, x) == run(g2, x)).all()
    assert g2.meta["config"]["bits_w"] == 6


def test_export_rejects_fp32_and_asymmetric():
    with pytest.raises(HwgenError, match="FP32"):
        export_model(TimeSeriesTransformer(ModelConfig()))
    m = _calibrated(ModelConfig(symmetric=False))
    with pytest.raises(HwgenError, match="asymmetric"):
        export_model(m)


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    m = _calibrated(ModelConfig(bits_w=4, bits_a=4))
    path = save_checkpoint(tmp_path / "m.pt", m, {"name": "x"}, {"seed": 0})
    m2, meta = load_checkpoint(path)
    x = torch.randn(3, 24, 7)
    assert torch.equal(m.eval()(x), m2(x)) and meta["data"] == {"name": "x"}
    with pytest.raises(HwgenError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(HwgenError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Exception("arbitrary object")))
    with pytest.raises(HwgenError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(HwgenError, match="not an hwgen checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


# ---- one export path: the model's hwgen.nn form through convert's capture -----------------------------------
def test_export_goes_through_the_twin_capture_and_refuses_a_difference_naming_the_node(monkeypatch):
    from hwgen.frontend import twin as twin_mod

    m = _calibrated(ModelConfig(bits_w=6, bits_a=6, layers=2))
    g = export_model(m)
    assert [n.name for n in g.nodes][:3] == ["embed", "pos_add", "l0.q"] and g.output_name == "head"
    original = twin_mod._TwinLinear.forward

    def off_by_one(self, x):  # the ffn2 of layer 1 computes something its export does not
        y = original(self, x)
        if self.graph_name == "l1.ffn2":
            info = getattr(y, "_hwgen_q")
            y = twin_mod.emit(y, (info.ints + 1).clamp(max=info.dtype.qmax), info.scale, info.dtype)
        return y

    monkeypatch.setattr(twin_mod._TwinLinear, "forward", off_by_one)
    twin_mod._CAPTURES.clear()
    with pytest.raises(HwgenError, match=r"node 'l1\.ffn2': the quantized torch forward differs from the integer "
                                         r"graph .* refusing to export"):
        export_model(m)


def test_the_twin_follows_the_model_as_it_trains():
    """The twin holds the model's own tensors: after an optimiser step the exported weights and scales and the
    exact forward are the new ones (no stale copy), and they equal a fresh model's export."""
    cfg = ModelConfig(bits_w=4, bits_a=8)
    m = _calibrated(cfg)
    x = torch.as_tensor(np.random.default_rng(3).normal(size=(64, cfg.window, cfg.features)), dtype=torch.float32)
    before = export_model(m)
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    m(x).pow(2).mean().backward()
    opt.step()
    m.eval()
    after = export_model(m)
    assert before.meta["output_scale"] != after.meta["output_scale"]  # the learned scales moved ...
    moved = [k for k in after.consts if not np.array_equal(before.consts[k].value, after.consts[k].value)]
    assert len(moved) >= 10  # ... and with them the multipliers (and weights) of the graph
    fresh = _calibrated(cfg)
    fresh.load_state_dict(m.state_dict())
    again = export_model(fresh)
    assert all(np.array_equal(again.consts[k].value, after.consts[k].value) for k in after.consts)
    yi = run(after, quantize_input(x.numpy(), after.meta["input_scale"], cfg.bits_in)).reshape(len(x), -1)
    assert np.array_equal(np.floor(predict(m, x.numpy()) / after.meta["output_scale"] + 0.5), yi)
