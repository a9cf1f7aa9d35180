"""The ``conv1d`` op (a 1-D convolution over time, channels-last) and ``hwgen.nn.QuantConv1d``: the golden
function against independent int64 references, bad attributes refused in one line, the MAC array running
it == golden in Amaranth's simulator with the latency model exact per controller step, graphs and a
converted model bit-exact on Verilator, and the layer's export == its own quantized forward."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hwgen
import hwgen.nn as hnn
from hwgen.errors import HwgenError
from hwgen.estimate.latency import estimate
from hwgen.estimate.model import predict
from hwgen.hw.lower import build_design
from hwgen.hw.units import UNITS
from hwgen.ir.builder import GraphBuilder
from hwgen.ir.types import IntType
from hwgen.ir.verify import verify
from hwgen.ops import macs
from hwgen.ops.conv1d import conv1d, conv1d_acc, padding
from hwgen.ops.linear import linear
from hwgen.ops.rounding import requantize
from tests.test_new_ops import assert_bit_exact_on_verilator, check_exact, edge_inputs
from tests.test_nn import ConvStem, assert_export_equals_forward, data, train
from tests.test_nn import Seq as ConvSeq

I8, I6, I12 = IntType(8), IntType(6), IntType(12)


def loop_acc(x, w, b, stride, dilation, pad_left, pad_right):
    """The convolution accumulator by its definition, one tap at a time, in int64 (padding rows skipped)."""
    x, w = np.asarray(x, np.int64), np.asarray(w, np.int64)
    length, k = x.shape[-2], w.shape[1]
    rows = (length + pad_left + pad_right - dilation * (k - 1) - 1) // stride + 1
    acc = np.zeros((*x.shape[:-2], rows, w.shape[0]), np.int64)
    for r in range(rows):
        for t in range(k):
            i = r * stride + t * dilation - pad_left
            if 0 <= i < length:
                acc[..., r, :] += x[..., i, :] @ w[:, t, :].T
    return acc if b is None else acc + np.asarray(b, np.int64)


def random_case(rng):
    """(length, c_in, c_out, kernel, stride, dilation, pad_left, pad_right) with at least one output row."""
    while True:
        length, c_in, c_out, k = (int(v) for v in rng.integers(1, (13, 6, 6, 5)))
        stride, dilation = (int(v) for v in rng.integers(1, 4, size=2))
        pads = padding(k, dilation, "causal") if rng.random() < 0.3 else tuple(int(v) for v in rng.integers(0, 5, 2))
        if length + sum(pads) >= dilation * (k - 1) + 1:
            return length, c_in, c_out, k, stride, dilation, *pads


# ---- golden ----------------------------------------------------------------------------------------------------
def test_conv1d_golden_against_the_definition_and_torch():
    rng = np.random.default_rng(0)
    causal = 0
    for _ in range(300):
        length, c_in, c_out, k, stride, dilation, pl, pr = random_case(rng)
        causal += (pl, pr) == ((k - 1) * dilation, 0)
        x = rng.integers(-128, 128, size=(2, length, c_in))
        w = rng.integers(-128, 128, size=(c_out, k, c_in))
        b = rng.integers(-5000, 5000, size=c_out) if rng.random() < 0.7 else None
        acc = conv1d_acc(x, w, b, stride, dilation, pl, pr)
        assert np.array_equal(acc, loop_acc(x, w, b, stride, dilation, pl, pr))
        # torch's convolution (channels-first, weight [out, in, k]) in float64: exact below 2**53
        xt = F.pad(torch.as_tensor(x, dtype=torch.float64).transpose(1, 2), (pl, pr))
        wt = torch.as_tensor(w, dtype=torch.float64).permute(0, 2, 1)
        bt = None if b is None else torch.as_tensor(b, dtype=torch.float64)
        want = F.conv1d(xt, wt, bt, stride=stride, dilation=dilation).transpose(1, 2)
        assert np.array_equal(acc, want.numpy().astype(np.int64))
        m0, shift = rng.integers(1, 1 << 15, size=c_out), rng.integers(8, 20, size=c_out)
        y = conv1d(x, w, b, m0, shift, I8, stride, dilation, pl, pr, relu=True)
        assert np.array_equal(y, np.maximum(requantize(loop_acc(x, w, b, stride, dilation, pl, pr), m0, shift, I8), 0))
    assert causal > 30


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on its even-kernel copy
def test_conv1d_of_kernel_1_is_linear_and_the_padding_modes():
    rng = np.random.default_rng(1)
    x, w = rng.integers(-128, 128, size=(3, 7, 4)), rng.integers(-128, 128, size=(5, 1, 4))
    b, m0, shift = rng.integers(-900, 900, size=5), rng.integers(1, 1 << 15, size=5), rng.integers(10, 18, size=5)
    assert np.array_equal(conv1d(x, w, b, m0, shift, I8), linear(x, w[:, 0], b, m0, shift, I8))
    for k, d in ((1, 1), (2, 1), (3, 2), (4, 3), (5, 1)):
        assert padding(k, d, "causal") == ((k - 1) * d, 0)
        pl, pr = padding(k, d, "same")
        wk = rng.integers(-128, 128, size=(2, k, 4))
        got = conv1d_acc(x, wk, None, 1, d, pl, pr)
        want = F.conv1d(torch.as_tensor(x, dtype=torch.float64).transpose(1, 2),
                        torch.as_tensor(wk, dtype=torch.float64).permute(0, 2, 1), padding="same", dilation=d)
        assert np.array_equal(got, want.transpose(1, 2).numpy().astype(np.int64))  # torch's 'same', odd row right
        # causal: output step t sees input steps <= t only
        pl, pr = padding(k, d, "causal")
        base = conv1d_acc(x, wk, None, 1, d, pl, pr)
        assert base.shape[1] == x.shape[1]
        for t in range(x.shape[1]):
            later = x.copy()
            later[:, t + 1:] = rng.integers(-128, 128, size=later[:, t + 1:].shape)
            changed = conv1d_acc(later, wk, None, 1, d, pl, pr)
            assert np.array_equal(changed[:, : t + 1], base[:, : t + 1])
    assert padding(3, 2, 2) == (2, 2)


# ---- bad attributes ------------------------------------------------------------------------------------------
def _builder(length=6, c=3):
    return GraphBuilder("x", (length, c), I8)


def _conv(b, weight=None, **kw):
    w = np.ones((4, 3, 3), np.int64) if weight is None else weight
    return b.conv1d("c", "x", w, None, 20000, 15, I8, I8, **kw)


@pytest.mark.parametrize("kw,message", [
    ({"stride": 0}, r"stride must be >= 1, not 0"),
    ({"dilation": 0}, r"dilation must be >= 1, not 0"),
    ({"pad_left": -1}, r"pad_left must be >= 0, not -1"),
    ({"pad_right": -2}, r"pad_right must be >= 0, not -2"),
    ({"dilation": 3}, r"a window of 7 rows \(kernel 3, dilation 3\) is longer than the 6 input rows with padding "
                      r"0 \+ 0"),
    ({"weight": np.ones((4, 3, 2), np.int64)}, r"weight shape \(4, 3, 2\) is not \[out channels, kernel 3, in "
                                               r"channels 3\]"),
    ({"weight": np.ones((4, 3), np.int64)}, r"weight shape \(4, 3\) is not \[out channels, kernel, in channels\]"),
])
def test_conv1d_refuses_bad_attributes_in_one_line(kw, message):
    with pytest.raises(HwgenError) as info:
        _conv(_builder(), **kw)
    assert "\n" not in str(info.value)
    assert re.match(r"^node 'c' \(conv1d\): " + message, str(info.value)), str(info.value)


def test_conv1d_verifier_refuses_groups_a_wrong_kernel_and_non_integers():
    b = _builder()
    _conv(b, pad_left=2)
    graph = b.finish("c")
    node = graph.nodes[0]
    cases = [({"groups": 2}, r"^node 'c' \(conv1d\): groups 2 is not supported \(only 1\)"),
             ({"kernel": 2}, r"^node 'c' \(conv1d\): weight shape \(4, 3, 3\) is not \[out channels, kernel 2"),
             ({"stride": 1.5}, r"^node 'c': attribute 'stride' must be an integer$"),
             ({"pad_left": True}, r"^node 'c': attribute 'pad_left' must be an integer$"),
             ({"relu": 1}, r"^node 'c': attribute 'relu' must be true or false, not 1$"),
             ({"widths": None, "pad_right": 5}, r"^node 'c': declared shape \(6, 4\) but computes \(11, 4\)$")]
    for attrs, message in cases:
        with pytest.raises(HwgenError, match=message):
            verify(graph.replace_nodes([node.with_attrs(**attrs)]))
    key = node.attrs["m0"]
    consts = dict(graph.consts)
    consts[key] = type(consts[key])(np.ones(3, np.int64), consts[key].dtype)
    bad = type(graph)(graph.input_name, graph.input_type, graph.nodes, consts, graph.output_name)
    with pytest.raises(HwgenError, match=r"^node 'c' \(conv1d\): m0 must have one entry per output channel"):
        verify(bad)
    assert macs(graph, node) == 6 * 3 * 3 * 4


# ---- hardware ------------------------------------------------------------------------------------------------
def conv_graph(rng, length, c_in, specs, tail=True):
    """x [length, c_in] -> one conv1d per spec (c_out, k, stride, dilation, pad_left, pad_right, relu), each
    requantized so that its outputs spread over the 8-bit range, then a lut chained onto the last conv1d, an
    add beside it and a linear (a second program of the matrix unit)."""
    b = GraphBuilder("x", (length, c_in), I8)
    x = edge_inputs(rng, (length, c_in), I8)
    value, cur, cur_c = x, "x", c_in
    for i, (c_out, k, stride, dilation, pl, pr, relu) in enumerate(specs):
        w = rng.integers(-128, 128, size=(c_out, k, cur_c))
        bias = rng.integers(-3000, 3000, size=c_out)
        acc = conv1d_acc(value, w, bias, stride, dilation, pl, pr)
        m0 = rng.integers(16384, 32768, size=c_out)
        top = max(int(np.abs(acc).max()), 1)
        shift = np.full(c_out, int(np.ceil(np.log2(top * 32768 / 100))))  # |y| up to about 100
        cur = b.conv1d(f"conv{i}", cur, w, bias, m0, shift, I8, I8, stride, dilation, pl, pr, relu=relu)
        value = conv1d(value, w, bias, m0, shift, I8, stride, dilation, pl, pr, relu=relu)
        inside = (value > I8.qmin) & (value < I8.qmax)
        assert np.unique(value).size > 12 and inside.mean() > 0.8, f"conv{i}: outputs do not spread"
        cur_c = c_out
    if tail:
        b.lut("act", cur, rng.integers(-128, 128, size=256), I8)
        b.add("res", "act", cur, 16000, 15000, 0, 15, I8)
        b.linear("head", "res", rng.integers(-128, 128, size=(3, cur_c)), None, 20000, 17, I8, I8)
        cur = "head"
    return b.finish(cur), x


@pytest.mark.parametrize("c_in,spec,parallel", [
    (3, (5, 3, 1, 1, 2, 0, False), 1),  # causal
    (3, (5, 3, 2, 1, 1, 1, True), 3),  # stride 2, padding 1
    (3, (4, 3, 1, 2, 4, 0, False), 4),  # causal, dilation 2
    (3, (6, 4, 1, 1, 1, 2, True), 2),  # 'same' of an even kernel
    (3, (7, 2, 3, 2, 0, 3, False), 4),  # stride 3, dilation 2, right padding only
    (3, (3, 1, 1, 1, 0, 0, False), 2),  # kernel 1: a linear
    (1, (5, 4, 1, 2, 6, 0, False), 2),  # one input channel: every beat is a new tap
])
def test_conv1d_unit_exact_with_the_latency_model_per_step(c_in, spec, parallel):
    rng = np.random.default_rng(sum(spec[:6]) + parallel + c_in)
    graph, x = conv_graph(rng, 8, c_in, [spec])
    top = check_exact(graph, x, parallel)
    names = [n.name for n in graph.nodes]
    assert {names[i] for i in top.design.streamed} == {"act"}  # chained onto the conv1d (not the add: it
    # reads the conv1d's output beside the lut's stream)
    mm = top.design.programs["matmul"]
    assert [p.conv for p in mm] == [True, False] and mm[0].k_len == spec[1] * c_in


def test_two_conv1d_layers_and_a_linear_share_the_mac_array():
    rng = np.random.default_rng(5)
    graph, x = conv_graph(rng, 9, 4, [(6, 3, 1, 2, 4, 0, True), (5, 2, 2, 1, 1, 0, False)])
    top = check_exact(graph, x, parallel=3)
    assert [n.op for n in graph.nodes][:2] == ["conv1d", "conv1d"] and len(top.design.programs["matmul"]) == 3


def test_conv1d_latency_and_resource_model(monkeypatch):
    """A conv1d costs the cycles of a linear over its K * C_in im2col inputs; its addressing logic is in the
    resource model (added once to the units' structural terms), only for a graph that has it."""
    rng = np.random.default_rng(6)
    graph, _ = conv_graph(rng, 8, 3, [(5, 3, 2, 1, 1, 1, False)], tail=False)
    b = GraphBuilder("x", (4, 9), I8)  # the same products as a linear on the 4 im2col rows
    b.linear("lin", "x", np.ones((5, 9), np.int64), None, 20000, 15, I8, I8)
    flat = b.finish("lin")
    for p in (1, 2, 5):
        conv_design, lin_design = build_design(graph, p, images=False), build_design(flat, p, images=False)
        assert estimate(conv_design)["nodes"]["conv0"] == estimate(lin_design)["nodes"]["lin"]
        assert macs(graph, graph.nodes[0]) == macs(flat, flat.nodes[0]) == 4 * 9 * 5
        extra = UNITS["matmul"].extra_logic(conv_design)
        assert extra[0] > 100 and extra[1] > 50 and UNITS["matmul"].extra_logic(lin_design) == (0.0, 0.0)
        got = predict(conv_design)
        with monkeypatch.context() as mp:
            mp.setattr(UNITS["matmul"], "extra_logic", classmethod(lambda cls, design: (0.0, 0.0)))
            bare = predict(conv_design)
        assert (got["lut"] - bare["lut"], got["ff"] - bare["ff"]) == pytest.approx(extra)


@pytest.mark.sim
def test_conv1d_graphs_on_verilator_with_stalls(tmp_path):
    """Stride 2 with padding, then a causal conv1d of dilation 2, a lut, an add and a linear."""
    rng = np.random.default_rng(9)
    graph, _ = conv_graph(rng, 8, 4, [(6, 3, 2, 1, 1, 1, True), (5, 3, 1, 2, 4, 0, False)])
    assert [n.out.shape for n in graph.nodes[:2]] == [(4, 6), (4, 5)]
    assert_bit_exact_on_verilator(graph, rng, tmp_path, seed=4)


# ---- hwgen.nn.QuantConv1d --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {"kernel_size": 3, "padding": "causal"},
    {"kernel_size": 3, "padding": "causal", "dilation": 2, "weight_bits": 4, "act_bits": 10},
    {"kernel_size": 2, "stride": 2, "padding": 1, "bias": False, "per_channel": False},
    {"kernel_size": 4, "padding": "same", "weight_bits": 6, "act_bits": 6},
    {"kernel_size": 3, "stride": 3, "dilation": 2, "padding": "valid"},
])
def test_quant_conv1d_export_equals_its_forward(kw):
    x = data()
    conv = hnn.QuantConv1d(3, 5, **kw)
    m = train(ConvSeq(conv, hnn.QuantReLU(), hnn.QuantLinear(5, 2)), x, torch.randn(48, 1, 1))
    acc = assert_export_equals_forward(m, x)
    node = acc.graph.node("layers.0")
    pl, pr = conv.pads
    rows = (8 + pl + pr - conv.dilation * (conv.kernel_size - 1) - 1) // conv.stride + 1
    assert node.op == "conv1d" and node.out.shape == (rows, 5) and node.attrs["relu"] is True
    assert (node.attrs["stride"], node.attrs["dilation"], node.attrs["kernel"]) == (conv.stride, conv.dilation,
                                                                                     conv.kernel_size)
    assert acc.graph.consts[node.attrs["weight"]].dtype.bits == conv.weight_bits
    assert (node.attrs.get("bias") is None) == (not kw.get("bias", True))
    if kw["padding"] == "same":
        assert rows == 8 and (pl, pr) == (1, 2)
    # the exported weight is torch's [out, in, k] quantized, as [out, k, in]
    w = acc.graph.consts[node.attrs["weight"]].value
    assert w.shape == (5, conv.kernel_size, 3)


def test_quant_conv1d_folds_per_feature_input_scales_and_has_a_gradient():
    x = data() * torch.tensor([1.0, 30.0, 0.05])
    m = ConvSeq(hnn.QuantConv1d(3, 6, 3, padding="causal", weight_bits=6), hnn.QuantLinear(6, 2), channels=3)
    train(m, x, torch.randn(48, 8, 2))
    acc = assert_export_equals_forward(m, x)
    assert acc.graph.nodes[0].op == "conv1d" and len(acc.input_scale) == 3
    xg = x.clone().requires_grad_(True)
    m.train()
    m(xg).sum().backward()
    conv = m.layers[0]
    assert xg.grad.abs().sum() > 0 and conv.weight.grad.abs().sum() > 0 and conv.out_quant.scale.grad is not None


def test_quant_conv1d_forward_is_torchs_convolution_of_its_integers():
    """The layer's integers are torch's convolution (float64, exact here) of its input integers and weight
    integers, padded, strided and dilated as asked, times the dyadic multiplier m0 / 2**shift, rounded half
    up and clamped: no im2col of hwgen's involved."""
    torch.manual_seed(3)
    q, conv = hnn.QuantAct(8), hnn.QuantConv1d(3, 4, 3, stride=2, padding="causal", dilation=2, bias=False)
    h = q(data(16) * 2)
    y = conv(h)
    w_int, _, m0, shift = conv.int_params(float(h._hwgen_q.scale))
    ref = F.conv1d(F.pad(hnn.integers(h).double().transpose(1, 2), (4, 0)),
                   torch.as_tensor(w_int, dtype=torch.float64).permute(0, 2, 1), stride=2, dilation=2)
    scale = torch.as_tensor(m0 / 2.0 ** shift)  # powers of two: exact
    want = torch.clamp(torch.floor(ref.transpose(1, 2) * scale + 0.5), -128, 127).long()
    got = hnn.integers(y)
    assert got.shape == (16, 4, 4) and torch.unique(got).numel() > 20
    assert torch.equal(got, want)


def test_quant_conv1d_refuses_bad_arguments_in_one_line():
    cases = [
        (dict(groups=3), r"^QuantConv1d: groups=3 is not supported \(the accelerator's conv1d takes groups=1 only\)$"),
        (dict(padding="full"), r"^QuantConv1d: padding must be an integer >= 0, 'same', 'causal' or 'valid', not "
                               r"'full'$"),
        (dict(padding="same", stride=2), r"^QuantConv1d: padding='same' needs stride 1, not 2$"),
        (dict(padding=-1), r"^QuantConv1d: padding must be an integer >= 0, not -1$"),
        (dict(stride=0), r"^QuantConv1d: stride must be an integer >= 1, not 0$"),
        (dict(kernel_size=2.5), r"^QuantConv1d: kernel_size must be an integer >= 1, not 2\.5$"),
        (dict(weight_bits=9), r"^QuantConv1d: weight_bits must be an integer in 2\.\.8, not 9$"),
    ]
    for kw, pattern in cases:
        args = {"in_channels": 6, "out_channels": 6, "kernel_size": 3, **kw}
        with pytest.raises(HwgenError, match=pattern):
            hnn.QuantConv1d(**args)
    assert hnn.QuantConv1d(3, 4, (3,), stride=(1,)).kernel_size == 3  # torch's 1-tuples
    with pytest.raises(HwgenError, match=r"^model\.layers\.0 \(QuantConv1d\): input shape \(8, 3\) per window: "
                                         r"expects \[time, 4\]$"):
        hwgen.convert(ConvSeq(hnn.QuantConv1d(4, 2, 3)), data(4))
    with pytest.raises(HwgenError, match=r"^model\.layers\.0 \(QuantConv1d\): a window of 9 steps \(kernel_size 5, "
                                         r"dilation 2\) is longer than the 8 input steps with padding 0$"):
        hwgen.convert(ConvSeq(hnn.QuantConv1d(3, 2, 5, dilation=2)), data(4))


class FunctionalConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.embed = hnn.QuantLinear(3, 3)

    def forward(self, x):
        h = self.embed(self.q(x))
        return F.conv1d(h, h)


def test_float_conv1d_is_refused_with_quant_conv1d_named():
    with pytest.raises(HwgenError) as info:
        hwgen.convert(ConvStem(), data(4))  # a plain nn.Conv1d stem (tests/test_nn.py)
    assert "\n" not in str(info.value)
    assert re.match(r"^model\.stem: torch\.nn\.Conv1d is not quantized; use hwgen\.nn\.QuantConv1d \(channels-last: "
                    r"\[batch, time, channels\]\) \(at test_nn\.py:\d+: return self\.stem", str(info.value))
    with pytest.raises(HwgenError, match=r"^model: torch\.conv1d is not quantized; use "
                                         r"hwgen\.nn\.QuantConv1d \(at test_conv1d\.py:\d+"):
        hwgen.convert(FunctionalConv(), data(4))


class ConvForecaster(nn.Module):
    """A causal conv1d stem (per-feature input scales), a strided conv1d with ReLU, a GELU, the last step."""

    def __init__(self, d=8):
        super().__init__()
        self.q = hnn.QuantAct(8, channels=3)
        self.stem = hnn.QuantConv1d(3, d, 3, padding="causal", dilation=2, act_bits=10)
        self.down = hnn.QuantConv1d(d, d, 2, stride=2, weight_bits=4)
        self.relu = hnn.QuantReLU()
        self.ffn = hnn.QuantLinear(d, d)
        self.act = hnn.QuantGELU()
        self.last = hnn.QuantLastStep()
        self.head = hnn.QuantLinear(d, 1, act_bits=16)

    def forward(self, x):
        h = self.relu(self.down(self.stem(self.q(x))))
        return self.head(self.last(self.act(self.ffn(h))))


@pytest.fixture(scope="module")
def conv_model():
    torch.manual_seed(7)
    x = data(48)
    return train(ConvForecaster(), x, x[:, -1, :1] * 0.5, steps=8), x


def test_conv_model_converts_and_predicts_exactly(conv_model, tmp_path):
    model, x = conv_model
    acc = hwgen.convert(model, x[:16], calibration=x[16:])
    assert [n.op for n in acc.graph.nodes] == ["conv1d", "conv1d", "linear", "lut", "select_rows", "linear"]
    assert acc.graph.nodes[1].attrs["relu"] is True and acc.graph.nodes[1].out.shape == (4, 8)
    model.eval()
    with torch.no_grad():
        assert np.array_equal(acc.predict(x, integers=True), hnn.integers(model(x)).numpy())
    again = hwgen.load(acc.save(tmp_path / "g"))  # graph.json + consts.npz round trip
    assert np.array_equal(again.predict(x, integers=True), acc.predict(x, integers=True))


@pytest.mark.sim
def test_conv_model_built_and_simulated_bit_exact_with_the_latency_model_exact(conv_model, tmp_path):
    model, x = conv_model
    acc = hwgen.convert(model, x[:16])
    build = acc.build(tmp_path / "b", board="xc7s15", parallel=3)
    sim = acc.simulate(x[:4].numpy(), seed=5)  # no stalls: the cycles are the model's, per step and in total
    assert sim["windows"] == 4 and sim["mismatches"] == 0 and sim["error"] is None
    # the testbench counts the clock edges from the first input beat to the last output beat: one fewer
    # than the cycles the window spans, which the model counts (the shipped W8: 8,057 against 8,058)
    # (the windows the design took alone: the first; the others' inputs arrived while the one before computed)
    assert sim["cycles_per_inference_min_max"] == [build.report["hardware"]["latency_cycles"] - 1] * 2
    # back to back the windows leave the model's throughput_cycles apart
    assert sim["cycles_between_windows_min_max"] == [build.report["hardware"]["throughput_cycles"]] * 2
    steps = sim["cycles_per_step"]
    assert len(steps) == len(build.report["hardware"]["cycles_per_node"]) - 2  # two nodes run chained
    assert all(st["cycles"] == st["model"] for st in steps)
    sim = acc.simulate(x[4:8].numpy(), stall=0.3, seed=6)
    assert sim["windows"] == 4 and sim["mismatches"] == 0
