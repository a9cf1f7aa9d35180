"""hwgen.nn.QuantArgmax: a user's classifier with its argmax on the accelerator, converted exactly and
simulated bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import hwgen
import hwgen.nn as hnn
from hwgen.accelerator import input_integers
from hwgen.errors import HwgenError
from hwgen.golden import run
from tests.test_nn import data

CLASSES = 5


class Classifier(nn.Module):
    """Window 8 x 3 features -> LayerNorm encoder-free classifier: embed, ReLU FFN, mean pool, 5 scores."""

    def __init__(self, d=8):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.embed = hnn.QuantLinear(3, d, act_bits=8)
        self.ffn = hnn.QuantLinear(d, d, weight_bits=4)
        self.relu = hnn.QuantReLU()
        self.norm = hnn.QuantLayerNorm(d)
        self.pool = hnn.QuantMeanPool()
        self.head = hnn.QuantLinear(d, CLASSES, act_bits=12)

    def forward(self, x):
        return self.head(self.pool(self.norm(self.relu(self.ffn(self.embed(self.q(x)))))))


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(2)
    x = data(64)
    labels = (x[:, :, 0].mean(1) * 4).round().clamp(-2, 2).long() + 2  # 5 classes from the first feature
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(10):  # an ordinary torch loop on the scores
        loss = nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, x


@pytest.mark.parametrize("scores", [False, True])
def test_argmax_head_converts_and_predicts_the_index_of_the_largest_score(classifier, scores):
    model, x = classifier
    deployed = nn.Sequential(model, hnn.QuantArgmax(scores=scores))
    acc = hwgen.convert(deployed, x[:16], calibration=x[16:])
    assert [n.op for n in acc.graph.nodes][-1] == "argmax"
    model.eval()
    with torch.no_grad():
        logits = hnn.integers(model(x)).numpy()
        out = deployed(x)
    got = acc.predict(x, integers=True).reshape(len(x), -1)
    assert np.array_equal(got, hnn.integers(out).numpy())
    first = logits.argmax(axis=1)  # numpy: the first of equal maxima, as the op's ties
    assert np.array_equal(got[:, 0], first)
    if scores:
        assert np.array_equal(got[:, 1:], logits)
    assert len(set(first.tolist())) > 1  # the trained model does not answer one class for everything
    assert np.array_equal(acc.predict(x).reshape(len(x), -1)[:, 0], first)  # scale 1: the index itself


def test_argmax_refuses_a_tensor_over_time_and_a_bad_flag(classifier):
    model, x = classifier

    class OverTime(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = hnn.QuantAct(8)
            self.argmax = hnn.QuantArgmax()

        def forward(self, x):
            return self.argmax(self.q(x))

    with pytest.raises(HwgenError, match=r"model\.argmax \(QuantArgmax\): input shape .*pool over time first"):
        hwgen.convert(OverTime(), x[:4])
    with pytest.raises(HwgenError, match="scores must be True or False"):
        hnn.QuantArgmax(scores="yes")


@pytest.mark.sim
def test_argmax_classifier_built_and_simulated_bit_exact_on_verilator(classifier, tmp_path):
    model, x = classifier
    acc = hwgen.convert(nn.Sequential(model, hnn.QuantArgmax(scores=True)), x[:16])
    build = acc.build(tmp_path / "b", board="xc7s15", parallel=4)
    assert build.report["hardware"]["parallel"] == 4
    sim = acc.simulate(x[:6].numpy(), stall=0.2, seed=3)
    assert sim["windows"] == 6 and sim["mismatches"] == 0 and sim["error"] is None


# ---- float first, quantize after training (hwgen.nn.set_quantized) ----------------------------------------
def test_float_mode_is_the_plain_torch_model_and_quantizing_after_training_converts_exactly():
    torch.manual_seed(4)
    x = data(64)
    model = hnn.set_quantized(Classifier(), False)
    ref = nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 8), nn.ReLU(), nn.LayerNorm(8))
    for mine, theirs in zip((model.embed, model.ffn), (ref[0], ref[1])):
        theirs.load_state_dict({"weight": mine.weight.detach(), "bias": mine.bias.detach()})
    with torch.no_grad():
        want = model.head(ref(x).mean(dim=1))
        got = model(x)
    assert torch.equal(got, want) and not hasattr(got, "_hwgen_q")  # plain float, no integers
    labels = (x[:, :, 0].mean(1) * 4).round().clamp(-2, 2).long() + 2
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(10):  # float training
        loss = nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with pytest.raises(HwgenError, match=r"model\.q \(QuantAct\): is in float mode; switch quantization on"):
        hwgen.convert(model, x[:8])
    model.eval()
    with torch.no_grad():
        float_scores = model(x)
    hnn.set_quantized(model, True)
    model.eval()
    with torch.no_grad():
        model(x)  # calibration: every output scale initialised on this batch
    acc = hwgen.convert(model, x[:16], calibration=x[16:])
    with torch.no_grad():
        assert np.array_equal(acc.predict(x, integers=True).reshape(len(x), -1), hnn.integers(model(x)).numpy())
        quant_scores = model(x)
    # post-training quantization keeps the float model's answers (measured: 59 of 64 windows, scores within
    # 3.8% of their range) -- and is not the float model itself
    assert (quant_scores.argmax(1) == float_scores.argmax(1)).float().mean() >= 0.85
    assert not torch.equal(quant_scores, float_scores)
    assert (quant_scores - float_scores).abs().max() < 0.1 * (float_scores.max() - float_scores.min())
    with pytest.raises(HwgenError, match="enabled must be True or False"):
        hnn.set_quantized(model, "yes")


@pytest.mark.parametrize("layer,shape", [
    (lambda: hnn.QuantMultiheadAttention(8, 2), (4, 6, 8)),
    (lambda: hnn.QuantConv1d(8, 4, 3, padding="causal"), (4, 6, 8)),
    (lambda: hnn.QuantBatchNorm1d(8), (4, 6, 8)),
    (lambda: hnn.SinusoidalPositionalEncoding(8, 16), (4, 6, 8)),
    (lambda: hnn.QuantGELU(), (4, 6, 8)),
    (lambda: hnn.QuantMaxPool(2), (4, 6, 8)),
    (lambda: hnn.QuantLastStep(), (4, 6, 8)),
])
def test_float_mode_of_each_layer_matches_its_torch_counterpart(layer, shape):
    torch.manual_seed(0)
    m = hnn.set_quantized(layer(), False)
    x = torch.randn(*shape)
    with torch.no_grad():
        y = m(x, x, x)[0] if isinstance(m, hnn.QuantMultiheadAttention) else m(x)
        if isinstance(m, hnn.QuantMultiheadAttention):
            ref = nn.MultiheadAttention(8, 2, batch_first=True)
            ref.in_proj_weight.copy_(torch.cat([m.q_proj.weight, m.k_proj.weight, m.v_proj.weight]))
            ref.in_proj_bias.copy_(torch.cat([m.q_proj.bias, m.k_proj.bias, m.v_proj.bias]))
            ref.out_proj.weight.copy_(m.out_proj.weight)
            ref.out_proj.bias.copy_(m.out_proj.bias)
            want = ref(x, x, x, need_weights=False)[0]
        elif isinstance(m, hnn.QuantConv1d):
            want = nn.functional.conv1d(nn.functional.pad(x.transpose(1, 2), (2, 0)), m.weight, m.bias).transpose(1, 2)
        elif isinstance(m, hnn.QuantBatchNorm1d):
            want = nn.functional.batch_norm(x.reshape(-1, 8), m.running_mean.clone(), m.running_var.clone(), m.weight,
                                            m.bias, False).reshape(x.shape)
            m.eval()
            y = m(x)
        elif isinstance(m, hnn.SinusoidalPositionalEncoding):
            want = x + m.pe[:6]
        elif isinstance(m, hnn.QuantGELU):
            want = nn.functional.gelu(x)
        elif isinstance(m, hnn.QuantMaxPool):
            want = nn.functional.max_pool1d(x.transpose(1, 2), 2).transpose(1, 2)
        else:
            want = x[:, -1]
    assert torch.allclose(y, want, atol=1e-6) and not hasattr(y, "_hwgen_q")


# ---- learned weight scales, unsigned outputs, softmax probability bits -------------------------------------
class Mixed(nn.Module):
    """Learned (LSQ) weight scales everywhere, an unsigned FFN activation and 5-bit softmax probabilities."""

    def __init__(self, d=8):
        super().__init__()
        self.q = hnn.QuantAct(8, channels=3)  # per-feature input scales fold into the stem's learned scales
        self.stem = hnn.QuantConv1d(3, d, 3, padding="causal", weight_bits=4, weight_scale="lsq")
        self.attn = hnn.QuantMultiheadAttention(d, 2, weight_bits=4, weight_scale="lsq", prob_bits=5)
        self.add = hnn.QuantAdd(act_bits=10)
        self.ffn1 = hnn.QuantLinear(d, 16, weight_bits=3, weight_scale="lsq", act_signed=False)
        self.relu = hnn.QuantReLU()
        self.ffn2 = hnn.QuantLinear(16, d, weight_bits=3, weight_scale="lsq")
        self.add2 = hnn.QuantAdd(act_bits=10)
        self.pool = hnn.QuantMeanPool()
        self.head = hnn.QuantLinear(d, 1, act_bits=16, weight_scale="lsq")

    def forward(self, x):
        h = self.stem(self.q(x))
        a, _ = self.attn(h, h, h)
        h = self.add(h, a)
        h = self.add2(h, self.ffn2(self.relu(self.ffn1(h))))
        return self.head(self.pool(h))


@pytest.fixture(scope="module")
def mixed():
    torch.manual_seed(5)
    x = data(64) * torch.tensor([1.0, 20.0, 0.1])
    y = x[:, -1, :1] * 0.5 + x[:, -2, 1:2] * 0.02
    model = Mixed()
    with torch.no_grad():
        model(x)  # the first forward initialises every scale (MSE search)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("wq.quant.scale")}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(8):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, x, before


def test_learned_weight_scales_unsigned_outputs_and_probability_bits_convert_exactly(mixed):
    model, x, before = mixed
    assert len(before) == 8  # stem, q/k/v/out, ffn1, ffn2, head: the learned weight scales ...
    moved = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert len(moved) == 8  # ... are trained after their initialisation (LSQ gradients reach them)
    acc = hwgen.convert(model, x[:16], calibration=x[16:])
    g = acc.graph
    by = {n.name: n for n in g.nodes}
    assert by["attn.softmax"].out.dtype.bits == 5 and not by["attn.softmax"].out.dtype.signed
    assert not by["ffn1"].out.dtype.signed and by["ffn1"].attrs.get("relu")
    w = g.consts[by["ffn1"].attrs["weight"]].value
    assert w.min() >= -4 and w.max() <= 3  # 3-bit weights
    model.eval()
    with torch.no_grad():
        assert np.array_equal(acc.predict(x, integers=True), hnn.integers(model(x)).numpy())
    env = run(g, input_integers(g, x.numpy()), return_all=True)
    assert env["ffn1"].min() == 0 and env["ffn1"].max() > 2**7 - 1  # unsigned: the 8th bit is used


def test_bad_weight_scale_and_probability_bits_are_refused():
    with pytest.raises(HwgenError, match="QuantLinear: weight_scale must be one of 'max', 'lsq', not 'mse'"):
        hnn.QuantLinear(3, 4, weight_scale="mse")
    with pytest.raises(HwgenError, match="QuantMultiheadAttention: prob_bits must be an integer in 2..8"):
        hnn.QuantMultiheadAttention(8, 2, prob_bits=9)


@pytest.mark.sim
def test_mixed_model_built_and_simulated_bit_exact_on_verilator(mixed, tmp_path):
    model, x, _ = mixed
    acc = hwgen.convert(model, x[:16])
    acc.build(tmp_path / "b", board="xc7s15", parallel=4)
    sim = acc.simulate(x[:4].numpy(), stall=0.2, seed=2)
    assert sim["windows"] == 4 and sim["mismatches"] == 0 and sim["error"] is None
