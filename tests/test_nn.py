"""hwgen.nn and the Python API: each layer's export equals its own quantized forward (==), a model written the
way a user would is converted, built and simulated bit-exact on Verilator, unsupported modules and functions
are named, an export that would differ is refused naming the node, and the README's example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import hwgen
import hwgen.nn as hnn
from hwgen.errors import HwgenError
from hwgen.nn.capture import Capture

ROOT = Path(__file__).resolve().parents[1]


def data(n=48, steps=8, features=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, steps, features, generator=g)


def train(model, x, y, steps=6, lr=1e-2):
    """A few steps of an ordinary torch loop (so scales, weights and BatchNorm statistics move)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def assert_export_equals_forward(model, x):
    """convert, then the graph's golden outputs == the model's own forward integers, element for element."""
    acc = hwgen.convert(model, x)
    model.eval()
    with torch.no_grad():
        want = hnn.integers(model(x)).numpy()
    got = acc.predict(x.numpy(), integers=True)
    assert got.shape == want.shape
    assert np.array_equal(got, want)
    # the integers fed in directly, too
    xi = hnn.integers(model.q(x)).numpy() if hasattr(model, "q") else None
    if xi is not None:
        assert np.array_equal(acc.predict(xi, integers=True), want)
    return acc


class Seq(nn.Module):
    """QuantAct, then ``layers`` in sequence."""

    def __init__(self, *layers, bits=8, channels=None):
        super().__init__()
        self.q = hnn.QuantAct(bits, channels=channels)
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        h = self.q(x)
        for layer in self.layers:
            h = layer(h)
        return h


# ---- each layer: export == its own quantized forward ----------------------------------------------------------
@pytest.mark.parametrize("wbits,abits,per_channel", [(8, 8, True), (4, 6, False), (2, 3, True), (3, 16, True)])
def test_quant_linear(wbits, abits, per_channel):
    x = data()
    m = Seq(hnn.QuantLinear(3, 5, weight_bits=wbits, act_bits=abits, per_channel=per_channel))
    train(m, x, torch.randn(48, 8, 5))
    acc = assert_export_equals_forward(m, x)
    node = acc.graph.node("layers.0")
    assert node.op == "linear" and acc.graph.consts[node.attrs["weight"]].dtype.bits == wbits
    assert node.out.dtype.bits == abits


def test_per_feature_input_scales_fold_into_the_linear():
    x = data() * torch.tensor([1.0, 30.0, 0.05])  # features of very different ranges
    m = Seq(hnn.QuantLinear(3, 6, weight_bits=6), hnn.QuantReLU(), hnn.QuantLinear(6, 2))
    m.q = hnn.QuantAct(8, channels=3)
    train(m, x, torch.randn(48, 8, 2))
    acc = assert_export_equals_forward(m, x)
    scales = acc.input_scale
    assert len(scales) == 3 and scales[1] > 10 * scales[0] > 10 * scales[2]
    assert np.array_equal(acc.predict(x.numpy(), integers=True), acc.predict(hnn.integers(m.q(x)), integers=True))
    bn = Seq(hnn.QuantBatchNorm1d(3), hnn.QuantLinear(3, 2))  # a folded BatchNorm takes them per channel
    bn.q = hnn.QuantAct(8, channels=3)
    assert_export_equals_forward(train(bn, x, torch.randn(48, 8, 2)), x)
    bad = Seq(hnn.QuantLayerNorm(3))
    bad.q = hnn.QuantAct(8, channels=3)
    with pytest.raises(HwgenError, match=r"model\.layers\.0 \(QuantLayerNorm\): its input has one scale per feature"):
        hwgen.convert(bad, x)


def test_quant_linear_relu_fused():
    x = data()
    m = Seq(hnn.QuantLinear(3, 6), hnn.QuantReLU(), hnn.QuantLinear(6, 2, bias=False))
    train(m, x, torch.randn(48, 8, 2))
    acc = assert_export_equals_forward(m, x)
    assert [n.op for n in acc.graph.nodes] == ["linear", "linear"]
    assert acc.graph.nodes[0].attrs["relu"] is True


class TwoBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.a = hnn.QuantLinear(3, 4, act_bits=6)
        self.b = hnn.QuantLinear(3, 4, act_bits=8)
        self.add = hnn.QuantAdd(act_bits=10)

    def forward(self, x):
        h = self.q(x)
        return self.add(self.a(h), self.b(h))


def test_quant_add():
    x = data()
    acc = assert_export_equals_forward(train(TwoBranch(), x, torch.randn(48, 8, 4)), x)
    assert acc.graph.nodes[-1].op == "add"


@pytest.mark.parametrize("abits", [8, 5])
def test_quant_layernorm(abits):
    x = data()
    m = Seq(hnn.QuantLinear(3, 8, act_bits=12), hnn.QuantLayerNorm(8, act_bits=abits))
    train(m, x, torch.randn(48, 8, 8))
    assert assert_export_equals_forward(m, x).graph.nodes[-1].op == "layernorm"


def test_quant_batchnorm_folded_to_affine():
    x = data()
    m = Seq(hnn.QuantLinear(3, 8, act_bits=10), hnn.QuantBatchNorm1d(8, act_bits=8))
    train(m, x, torch.randn(48, 8, 8) * 3 + 1)
    assert float(m.layers[1].running_mean.abs().sum()) > 0  # statistics tracked, then folded
    assert assert_export_equals_forward(m, x).graph.nodes[-1].op == "affine"


@pytest.mark.parametrize("heads,abits", [(1, 8), (2, 8), (4, 5)])
def test_quant_multihead_attention(heads, abits):
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = hnn.QuantAct(8)
            self.embed = hnn.QuantLinear(3, 8)
            self.attn = hnn.QuantMultiheadAttention(8, heads, weight_bits=6, act_bits=abits)

        def forward(self, x):
            h = self.embed(self.q(x))
            out, _ = self.attn(h, h, h)
            return out

    x = data()
    acc = assert_export_equals_forward(train(Attn(), x, torch.randn(48, 8, 8)), x)
    ops = [n.op for n in acc.graph.nodes]
    assert ops == ["linear"] * 4 + ["attn_scores", "softmax", "attn_apply", "linear"]
    assert acc.graph.node("attn.scores").attrs["heads"] == heads


def test_quant_act_requantizes_as_affine():
    x = data()
    m = Seq(hnn.QuantLinear(3, 4, act_bits=12), hnn.QuantAct(5))
    train(m, x, torch.randn(48, 8, 4))
    acc = assert_export_equals_forward(m, x)
    assert acc.graph.nodes[-1].op == "affine" and acc.graph.nodes[-1].out.dtype.bits == 5


@pytest.mark.parametrize("cls", [hnn.SinusoidalPositionalEncoding, hnn.LearnedPositionalEncoding])
def test_positional_encodings(cls):
    x = data()
    m = Seq(hnn.QuantLinear(3, 8, act_bits=10), cls(8, max_len=12, pe_bits=6, act_bits=10))
    train(m, x, torch.randn(48, 8, 8))
    acc = assert_export_equals_forward(m, x)
    node = acc.graph.nodes[-1]
    assert node.op == "add" and acc.graph.consts[node.inputs[1]].value.shape == (8, 8)


def test_mean_pool():
    x = data()
    m = Seq(hnn.QuantLinear(3, 8, act_bits=10), hnn.QuantMeanPool(act_bits=7), hnn.QuantLinear(8, 2, act_bits=16))
    train(m, x, torch.randn(48, 2))
    acc = assert_export_equals_forward(m, x)
    assert [n.op for n in acc.graph.nodes] == ["linear", "avgpool", "linear"]
    assert acc.predict(x.numpy()).shape == (48, 2) and acc.predict(x[0].numpy()).shape == (2,)


def test_a_module_called_twice_gets_a_node_per_call():
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = hnn.QuantAct(8)
            self.a, self.b = hnn.QuantLinear(3, 4), hnn.QuantLinear(3, 4)
            self.add = hnn.QuantAdd(act_bits=10)

        def forward(self, x):
            h = self.q(x)
            b = self.b(h)
            return self.add(self.add(self.a(h), b), b)

    x = data()
    acc = assert_export_equals_forward(train(Reuse(), x, torch.randn(48, 8, 4)), x)
    assert [n.name for n in acc.graph.nodes] == ["b", "a", "add", "add.call2"]


def test_forward_in_training_mode_is_the_integer_model_of_that_step():
    """Training-mode forward values are integers times the scale too (the STE carries the gradient)."""
    x = data()
    m = Seq(hnn.QuantLinear(3, 4), hnn.QuantReLU())
    y = m(x)
    ints = hnn.integers(y)
    assert torch.equal(y.detach(), (ints.double() * m.layers[0].out_quant.value()).float())
    y.sum().backward()
    assert m.layers[0].weight.grad is not None and m.layers[0].out_quant.scale.grad is not None


# ---- a model written the way a user would -----------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.norm1 = hnn.QuantLayerNorm(d)
        self.attn = hnn.QuantMultiheadAttention(d, heads)
        self.add1 = hnn.QuantAdd(act_bits=12)
        self.norm2 = hnn.QuantLayerNorm(d)
        self.ffn1 = hnn.QuantLinear(d, ffn)
        self.act = hnn.QuantReLU()
        self.ffn2 = hnn.QuantLinear(ffn, d)
        self.add2 = hnn.QuantAdd(act_bits=12)

    def forward(self, x):
        h = self.norm1(x)
        a, _ = self.attn(h, h, h)
        x = self.add1(x, a)
        f = self.ffn2(self.act(self.ffn1(self.norm2(x))))
        return self.add2(x, f)


class Forecaster(nn.Module):
    def __init__(self, features=3, d=16, heads=2, ffn=32, window=8, layers=1):
        super().__init__()
        self.quant = hnn.QuantAct(8, channels=features)  # one scale per input feature
        self.embed = hnn.QuantLinear(features, d, act_bits=12)
        self.pos = hnn.SinusoidalPositionalEncoding(d, max_len=window, act_bits=12)
        self.blocks = nn.ModuleList([Block(d, heads, ffn) for _ in range(layers)])
        self.pool = hnn.QuantMeanPool()
        self.head = hnn.QuantLinear(d, 1, act_bits=16)

    def forward(self, x):
        h = self.pos(self.embed(self.quant(x)))
        for b in self.blocks:
            h = b(h)
        return self.head(self.pool(h))


@pytest.fixture(scope="module")
def user_model():
    torch.manual_seed(0)
    x = data(64)
    model = train(Forecaster(), x, x[:, -1, :1] * 0.5, steps=15)
    return model, x


def test_user_model_converts_and_predicts_exactly(user_model, tmp_path):
    model, x = user_model
    acc = hwgen.convert(model, x[:16], calibration=x[16:])
    assert acc.graph.meta["checked_windows"] == 64
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert np.array_equal(acc.predict(x, integers=True), hnn.integers(out).numpy())
    assert np.allclose(acc.predict(x), out.numpy(), rtol=0, atol=1e-6 * float(out.abs().max()))
    saved = acc.save(tmp_path / "g")
    again = hwgen.load(saved)
    assert np.array_equal(again.predict(x.numpy(), integers=True), acc.predict(x, integers=True))


def test_user_model_builds_at_parallel_auto_deterministically(user_model, tmp_path):
    model, x = user_model
    acc = hwgen.convert(model, x[:16])
    first = acc.build(tmp_path / "b", parallel="auto")
    hw, m = first.report["hardware"], first.report["model"]
    assert 1 <= hw["parallel"] <= 20 and hw["part"].startswith("xc7s15")
    assert (m["d_model"], m["heads"], m["layers"], m["bits_w"], m["window"], m["features"]) == (16, 2, 1, 8, 8, 3)
    verilog = (first.path / "rtl" / "hwgen_top.v").read_bytes()
    again = hwgen.convert(model, x[:16]).build(tmp_path / "b", parallel="auto")  # replaces its own build
    assert (again.path / "rtl" / "hwgen_top.v").read_bytes() == verilog
    with pytest.raises(HwgenError, match="--parallel must be >= 1, not 0"):
        acc.build(tmp_path / "c", parallel=0)


@pytest.mark.sim
def test_user_model_built_and_simulated_bit_exact_on_verilator(user_model, tmp_path, capsys):
    model, x = user_model
    acc = hwgen.convert(model, x[:16])
    build = acc.build(tmp_path / "b", board="xc7s15", parallel=4)
    assert build.report["hardware"]["parallel"] == 4 and (build.path / "rtl" / "hwgen_top.v").is_file()
    sim = acc.simulate(x[:3].numpy(), stall=0.2, seed=1)  # user windows, not a dataset's
    assert sim["windows"] == 3 and sim["mismatches"] == 0 and sim["error"] is None
    # the build folder loads back with its build: simulate integers given directly
    again = hwgen.load(build.path)
    xi = again.graph.meta["input_scale"]
    assert again.last_build is not None and len(xi) == 3
    sim = again.simulate(np.zeros((1, 8, 3), np.int64))
    assert sim["mismatches"] == 0
    # and from the command line, windows from a .npy file (the compiled simulator is reused)
    from hwgen.steps.cli import main

    np.save(tmp_path / "w.npy", x[3:5].numpy())
    assert main(["sim", str(build.path), "--inputs", str(tmp_path / "w.npy"), "--quiet"]) == 0
    assert build.report["sim"]["windows"] == 2 and build.report["sim"]["mismatches"] == 0
    np.save(tmp_path / "bad.npy", np.zeros((2, 8, 4)))
    assert main(["sim", str(build.path), "--inputs", str(tmp_path / "bad.npy"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hwgen: error: ") and "does not match the accelerator's input" in err[-1]


# ---- refusing what cannot be mapped, by name and source line --------------------------------------------------
class WithGelu(Forecaster):
    def __init__(self):
        super().__init__()
        self.blocks[0].act = nn.GELU()


class ConvStem(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.stem = nn.Conv1d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.stem(self.q(x))


class PlainLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.embed = hnn.QuantLinear(3, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.embed(self.q(x)))


class Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.embed = hnn.QuantLinear(3, 8)

    def forward(self, x):
        return torch.sigmoid(self.embed(self.q(x)))


class PlusResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.embed = hnn.QuantLinear(3, 8)
        self.ffn = hnn.QuantLinear(8, 8)

    def forward(self, x):
        h = self.embed(self.q(x))
        return h + self.ffn(h)


class MaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.pool = nn.MaxPool1d(2)

    def forward(self, x):
        return self.pool(self.q(x))


class LastStep(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.embed = hnn.QuantLinear(3, 8)

    def forward(self, x):
        return self.embed(self.q(x))[:, -1]


class NoInputQuant(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = hnn.QuantLinear(3, 8)

    def forward(self, x):
        return self.embed(x)


class ReluAfterNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = hnn.QuantAct(8)
        self.norm = hnn.QuantLayerNorm(3)
        self.act = hnn.QuantReLU()

    def forward(self, x):
        return self.act(self.norm(self.q(x)))


@pytest.mark.parametrize("cls,pattern", [
    (WithGelu, r"^model\.blocks\.0\.act: torch\.nn\.GELU is not quantized; use hwgen\.nn\.QuantGELU "
               r"\(at test_nn\.py:\d+: f = self\.ffn2\(self\.act\(self\.ffn1"),
    (ConvStem, r"^model\.stem: torch\.nn\.Conv1d is not quantized; use hwgen\.nn\.QuantConv1d \(channels-last: .*"
               r"\(at test_nn\.py:\d+: return self\.stem"),
    (PlainLinear, r"^model\.head: torch\.nn\.Linear is not quantized; use hwgen\.nn\.QuantLinear "
                  r"\(at test_nn\.py:\d+: return self\.head"),
    (Sigmoid, r"^model: torch\.sigmoid is not quantized; use hwgen\.nn\.QuantSigmoid \(at test_nn\.py:\d+: "
              r"return torch\.sigmoid"),
    (PlusResidual, r"^model: operator\.add is not quantized; use hwgen\.nn\.QuantAdd \(at test_nn\.py:\d+: "
                   r"return h \+ self\.ffn"),
    (MaxPool, r"^model\.pool: torch\.nn\.MaxPool1d is not quantized; use hwgen\.nn\.QuantMaxPool\(kernel_size\)"),
    (LastStep, r"^model: operator\.getitem \(slicing\) is not mapped: .*hwgen\.nn\.QuantLastStep \(x\[:, -1\]\) .*"
               r"QuantMaxPool \(at test_nn\.py:\d+: return self\.embed\(self\.q\(x\)\)\[:, -1\]"),
    (NoInputQuant, r"^model: the input 'x' must go into one hwgen\.nn\.QuantAct"),
    (ReluAfterNorm, r"^model\.act \(QuantReLU\): must directly follow a QuantLinear"),
])
def test_unsupported_modules_and_functions_are_named(cls, pattern):
    with pytest.raises(HwgenError) as info:
        hwgen.convert(cls(), data(4))
    message = str(info.value)
    assert "\n" not in message
    assert re.search(pattern, message), message


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(HwgenError, match="must be a torch.nn.Module"):
        hwgen.convert(lambda x: x, data(2))
    with pytest.raises(HwgenError, match=r"\[batch, time, features\]"):
        hwgen.convert(Seq(hnn.QuantLinear(3, 2)), torch.zeros(3))
    with pytest.raises(HwgenError, match="NaN"):
        hwgen.convert(Seq(hnn.QuantLinear(3, 2)), torch.full((2, 8, 3), float("nan")))
    with pytest.raises(HwgenError, match="weight_bits must be an integer in 2..8"):
        hnn.QuantLinear(3, 2, weight_bits=9)
    with pytest.raises(HwgenError, match="num_heads 3 must divide embed_dim 8"):
        hnn.QuantMultiheadAttention(8, 3)
    with pytest.raises(HwgenError, match="QuantAct"):
        NoInputQuant()(data(2))  # eager forward without an input quantizer
    h = Seq(hnn.QuantLinear(3, 8))(data(2))
    attn = hnn.QuantMultiheadAttention(8, 2)
    with pytest.raises(HwgenError, match="attention masks are not supported"):
        attn(h, h, h, attn_mask=torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(HwgenError, match="self-attention only"):
        attn(h, Seq(hnn.QuantLinear(3, 8))(data(2)), h)
    with pytest.raises(HwgenError, match=r"^model\.layers\.0 \(QuantLinear\): input has 3 features, the layer "
                                         r"takes 4$"):
        hwgen.convert(Seq(hnn.QuantLinear(4, 2)), data(4))

    class Branchy(Seq):
        def forward(self, x):
            h = self.q(x)
            if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                h = self.layers[0](h)
            return h

    with pytest.raises(HwgenError, match=r"^model: torch\.fx cannot trace Branchy\.forward \(TraceError: "):
        hwgen.convert(Branchy(hnn.QuantLinear(3, 2)), data(4))
    acc = hwgen.convert(Seq(hnn.QuantLinear(3, 2)), data(4))
    with pytest.raises(HwgenError, match="does not match the accelerator's input"):
        acc.predict(np.zeros((8, 4)))
    with pytest.raises(HwgenError, match="leave the input type i8"):
        acc.predict(np.full((8, 3), 300))
    with pytest.raises(HwgenError, match="no build yet"):
        acc.simulate(np.zeros((8, 3)))


# ---- today's exporter of the reference model refuses what it would not translate -------------------------
def test_reference_exporter_refuses_other_models_and_changed_structure():
    from hwgen.frontend.export import export_model
    from hwgen.frontend.model import ModelConfig, TimeSeriesTransformer

    cfg = ModelConfig(features=3, window=8, d_model=8, ffn=8, quantized=True)

    class ConvStem(TimeSeriesTransformer):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.stem = nn.Conv1d(3, 3, 3, padding=1)

        def forward(self, x):
            return super().forward(self.stem(x.transpose(1, 2)).transpose(1, 2))

    class StemOnly(TimeSeriesTransformer):  # forward not overridden, a module added
        def __init__(self, cfg):
            super().__init__(cfg)
            self.stem = nn.Conv1d(3, 3, 3, padding=1)

    gelu = TimeSeriesTransformer(cfg)
    gelu.encoder[0].act = nn.GELU()
    replaced = TimeSeriesTransformer(cfg)
    replaced.head = nn.Linear(8, 1)
    cases = [
        (Forecaster(), r"^export takes hwgen's TimeSeriesTransformer, not Forecaster: .*hwgen\.convert"),
        (ConvStem(cfg), r"^model: ConvStem overrides TimeSeriesTransformer\.forward"),
        (StemOnly(cfg), r"^model\.stem: torch\.nn\.modules\.conv\.Conv1d is not part of the TimeSeriesTransformer"),
        (gelu, r"^model\.encoder\.0\.act: torch\.nn\.modules\.activation\.GELU is not part of"),
        (replaced, r"^model\.head: torch\.nn\.modules\.linear\.Linear replaces the QLinear of"),
    ]
    state = torch.random.get_rng_state()
    for model, pattern in cases:
        with pytest.raises(HwgenError, match=pattern):
            export_model(model)
    assert torch.equal(torch.random.get_rng_state(), state)  # the check draws no random numbers


# ---- an export that would differ is refused, naming the node ------------------------------------------------
def test_tampered_scale_is_refused_naming_the_node(user_model):
    model, x = user_model
    cap = Capture(model, x[:8])
    graph = cap.build()
    assert cap.check(graph, [x[:8]]) == 8
    q = model.blocks[0].ffn2.out_quant
    saved = q.scale.detach().clone()
    try:
        with torch.no_grad():
            q.scale.mul_(1.07)  # the model's forward now rescales differently from the graph built before
        with pytest.raises(HwgenError, match=r"^node 'blocks\.0\.ffn2': the quantized torch forward differs from "
                                             r"the integer graph \(\d+ elements; first: window \d+"):
            cap.check(graph, [x[:8]])
    finally:
        with torch.no_grad():
            q.scale.copy_(saved)


def test_tampered_graph_constant_is_refused_naming_the_node(user_model):
    model, x = user_model
    cap = Capture(model, x[:8])
    graph = cap.build()
    node = graph.node("blocks.0.attn.q")
    key = node.attrs["bias"]
    consts = dict(graph.consts)
    c = consts[key]
    consts[key] = type(c)(c.value + 40, c.dtype)
    tampered = type(graph)(graph.input_name, graph.input_type, graph.nodes, consts, graph.output_name, graph.meta)
    with pytest.raises(HwgenError, match=r"^node 'blocks\.0\.attn\.q': the quantized torch forward differs"):
        cap.check(tampered, [x[:8]])


# ---- import hwgen stays light -------------------------------------------------------------------------------
def test_import_hwgen_loads_no_torch(tmp_path):
    acc = hwgen.convert(Seq(hnn.QuantLinear(3, 2)), data(4))
    acc.save(tmp_path / "g")
    code = ("import sys, numpy as np, hwgen; assert 'torch' not in sys.modules; "
            f"acc = hwgen.load({str(tmp_path / 'g')!r}); print(acc.predict(np.zeros((8, 3))).shape); "
            "assert 'torch' not in sys.modules and 'hwgen.nn' not in sys.modules; "
            "assert isinstance(acc, hwgen.Accelerator)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(8, 2)"
    with pytest.raises(AttributeError):
        hwgen.no_such_thing  # noqa: B018


# ---- the README's example -----------------------------------------------------------------------------------
def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.slow
@pytest.mark.sim
def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "readme"}
    exec(compile(readme_example(), "README.md", "exec"), scope)
    out = capsys.readouterr().out
    assert "\n0\n" in out  # the simulation's mismatches
    # the model: a causal conv1d stem, pre-norm 2-head attention, a GELU FFN, the last step into the head
    nodes = scope["acc"].graph.nodes
    ops = [n.op for n in nodes]
    assert ops[:3] == ["conv1d", "add", "layernorm"] and ops[-2:] == ["select_rows", "linear"]
    stem = nodes[0]
    assert (stem.attrs["kernel"], stem.attrs["pad_left"], stem.attrs["pad_right"], stem.out.shape) == (3, 2, 0, (8, 16))
    assert ops.count("lut") == 1 and ops[ops.index("lut") - 1] == "linear"
    assert [n.attrs["heads"] for n in nodes if n.op == "attn_scores"] == [2]
    assert nodes[ops.index("attn_scores") - 4].op == "layernorm"  # the norm before q, k, v
    assert (tmp_path / "my_graph" / "graph.json").is_file()
    assert (tmp_path / "my_build" / "rtl" / "hwgen_top.v").is_file()
