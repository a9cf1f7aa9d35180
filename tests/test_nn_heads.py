"""hwgen.nn.QuantArgmax: a user's classifier with its argmax on the accelerator, converted exactly and
simulated bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import hwgen
import hwgen.nn as hnn
from hwgen.errors import HwgenError
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
