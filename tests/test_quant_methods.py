"""Mixed precision and per-embedding-group (PEG) quantization: configuration, front end, export, and the
exported models of every quantization option bit-exact between golden and the emitted hardware."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hwgen.errors import HwgenError
from hwgen.frontend.checkpoint import load_checkpoint
from hwgen.frontend.export import export_model
from hwgen.frontend.model import ModelConfig, TimeSeriesTransformer, parse_precision
from hwgen.frontend.peg import assign_groups, group_exponents, peg_quantizers
from hwgen.frontend.quantizer import Quantizer
from hwgen.frontend.train import TrainOptions, calibrate, train_qat
from hwgen.golden import run

ROOT = Path(__file__).resolve().parents[1]


# ---- mixed precision -------------------------------------------------------------------------------------


def test_precision_spec_parses_and_resolves_most_specific_entry():
    assert parse_precision("attn=8, ffn.w=4,l1.ffn.a=6") == {"attn": 8, "ffn.w": 4, "l1.ffn.a": 6}
    cfg = ModelConfig(layers=2, bits_w=6, bits_a=7, precision="attn=8,ffn.w=4,l1.ffn.a=6,l1.ffn.w=3").validate()
    assert cfg.bits_for("attn", "w", 0) == 8 and cfg.bits_for("attn", "a", 1) == 8
    assert cfg.bits_for("ffn", "w", 0) == 4 and cfg.bits_for("ffn", "w", 1) == 3
    assert cfg.bits_for("ffn", "a", 0) == 7 and cfg.bits_for("ffn", "a", 1) == 6
    assert cfg.bits_for("head", "w") == 6 and cfg.bits_for("embed", "a") == 7


@pytest.mark.parametrize("spec, match", [
    ("mlp=4", "bad precision entry 'mlp=4'"), ("ffn.x=4", "bad precision entry"), ("ffn.w=9", "BITS 2..8"),
    ("ffn.w", "bad precision entry"), ("lx.ffn=4", "bad precision entry"), ("l3.ffn=4", "names a layer"),
])
def test_precision_spec_errors_name_the_entry(spec, match):
    with pytest.raises(HwgenError, match=match):
        ModelConfig(precision=spec).validate()


def test_mixed_precision_reaches_quantizers_and_the_graph():
    fp32, _ = load_checkpoint(str(ROOT / "models" / "pm25_fp32.pt"))
    cfg = replace(fp32.cfg, quantized=True, bits_w=8, bits_a=8, precision="ffn.w=4,ffn.a=6,head.w=5")
    model = TimeSeriesTransformer(cfg)
    model.load_state_dict(fp32.state_dict(), strict=False)
    x = torch.randn(64, cfg.window, cfg.features)
    calibrate(model, type("S", (), {"x": x.numpy()})(), 64)
    layer = model.encoder[0]
    assert (layer.ffn1.wq.bits, layer.ffn2.wq.bits, layer.wq.wq.bits, model.head.wq.bits) == (4, 4, 8, 5)
    assert (layer.q_ffn1.bits, layer.q_ffn2.bits, layer.q_q.bits) == (6, 6, 8)
    graph = export_model(model)
    bits = {n.name: graph.consts[n.attrs["weight"]].dtype.bits for n in graph.nodes if n.op == "linear"}
    assert bits == {"embed": 8, "l0.q": 8, "l0.k": 8, "l0.v": 8, "l0.out": 8, "l0.ffn1": 4, "l0.ffn2": 4, "head": 5}
    types = {n.name: n.out.dtype.bits for n in graph.nodes}
    assert types["l0.ffn1"] == 6 and types["l0.ffn2"] == 6 and types["l0.q"] == 8
    ints = graph.consts["l0.ffn1.weight"].value
    assert ints.min() >= -8 and ints.max() <= 7 and len(np.unique(ints)) > 8 // 2


# ---- per-embedding-group quantization ---------------------------------------------------------------------


def test_group_exponents_contiguous_and_by_range():
    ranges = np.array([1.0, 1.1, 9.0, 1.2, 1.0, 4.0, 1.0, 0.9])
    group, e = group_exponents(ranges, 1, True)
    assert (e == 0).all() and (group == 0).all()
    group, e = group_exponents(ranges, 4, False)
    assert group.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert e.tolist() == [0, 0, 3, 3, 2, 2, 0, 0]
    group, e = group_exponents(ranges, 4, True)
    # sorted by range, the two outlier channels (2 and 5) share the top group
    assert group[2] == group[5] == 3 and e[2] == e[5] == 3 and (np.delete(e, [2, 5]) == 0).all()


def test_peg_with_one_group_equals_per_tensor():
    torch.manual_seed(0)
    x = torch.randn(32, 24, 16) * torch.linspace(0.2, 5.0, 16)
    for init in ("minmax", "mse"):
        plain, peg = Quantizer(8, init=init), Quantizer(8, init=init, peg_channels=16)
        assert torch.equal(plain(x), peg(x))
        assert torch.equal(plain.int_repr(x), peg.int_repr(x))
        assert float(plain.effective_scale()) == float(peg.effective_scale())


def test_peg_groups_cut_the_error_of_outlier_channels():
    torch.manual_seed(1)
    x = torch.randn(64, 24, 16)
    x[..., 3] *= 40.0  # one outlier dimension, as in the residual stream of a Transformer
    plain = Quantizer(6, init="mse")
    peg = Quantizer(6, init="mse", peg_channels=16)
    _, e = group_exponents(x.abs().amax(dim=(0, 1)).numpy(), 4, True)
    peg.exponent.copy_(torch.as_tensor(e, dtype=torch.float32))
    fine = [c for c in range(16) if e[c] == 0]  # the 12 channels outside the outlier's group of 4
    err_plain = float((plain(x) - x).detach()[..., fine].pow(2).mean())
    err_peg = float((peg(x) - x).detach()[..., fine].pow(2).mean())
    assert e[3] >= 4 and len(fine) == 12 and err_peg < 0.01 * err_plain


def test_peg_config_needs_batchnorm_and_divisible_groups():
    with pytest.raises(HwgenError, match="divide d_model 16"):
        ModelConfig(peg_groups=3).validate()
    with pytest.raises(HwgenError, match="need norm 'batch'"):
        ModelConfig(peg_groups=4, norm="layer").validate()


# quantizer of the fake-quant model -> the graph node whose integers it describes
_NODE_OF = {"q_embed": "embed", "q_pos": "pos_add", "q_pool": "pool", "q_head": "head",
            **{f"encoder.0.{q}": f"l0.{n}" for q, n in [
                ("q_q", "q"), ("q_k", "k"), ("q_v", "v"), ("q_scores", "scores"), ("q_attn", "attn"),
                ("q_out", "out"), ("q_res1", "res1"), ("q_norm1", "norm1"), ("q_ffn1", "ffn1"),
                ("q_ffn2", "ffn2"), ("q_res2", "res2"), ("q_norm2", "norm2")]}}


def _fake_quant_integers(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """The integers every quantizer of ``model`` assigns on windows ``x`` (float64 forward)."""
    ints: dict[str, np.ndarray] = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, n=n: ints.__setitem__(n, mod.int_repr(out).numpy()))
             for n, m in model.named_modules() if isinstance(m, Quantizer)]
    try:
        model.double().eval()
        with torch.no_grad():
            model(torch.as_tensor(x, dtype=torch.float64))
    finally:
        for h in hooks:
            h.remove()
        model.float()
    return ints


def test_peg_model_exports_group_shifts_and_golden_tracks_fake_quant():
    from hwgen.data import load_pm25
    from hwgen.host.quantize import quantize_input

    fp32, _ = load_checkpoint(str(ROOT / "models" / "pm25_fp32.pt"))
    data = load_pm25()
    cfg = replace(fp32.cfg, quantized=True, peg_groups=4)
    model = TimeSeriesTransformer(cfg)
    model.load_state_dict(fp32.state_dict(), strict=False)
    calibrate(model, data.train, 512)
    pegs = peg_quantizers(model)
    assert len(pegs) == 4 + 6 * cfg.layers
    exps = {tuple(q.exponent.tolist()) for _, q in pegs}
    assert len(exps) == 1 and max(next(iter(exps))) > 0  # shared and not all zero on this model
    graph = export_model(model)
    shl = {n.name for n in graph.nodes if n.attrs.get("in_shl")}
    assert shl == {"l0.q", "l0.k", "l0.v", "l0.ffn1", "head"}
    assert graph.meta["peg_exponents"] == [int(v) for v in next(iter(exps))]
    # Node by node on real validation windows, the integer graph carries the integers of the fake-quant
    # model; they differ only where a 15-bit dyadic rescale rounds to the neighbouring integer, and that
    # grows through the residual stream. A wrong group shift or group scale breaks a node outright.
    x = data.val.x[::8][:400]
    fq = _fake_quant_integers(model, x)
    env = run(graph, quantize_input(x, graph.meta["input_scale"], cfg.bits_in), return_all=True)
    assert set(_NODE_OF.values()) <= set(env)
    for q, node in _NODE_OF.items():
        if node == "head":
            continue
        got, want = env[node].reshape(fq[q].shape), fq[q]
        assert np.mean(got == want) > 0.8, node
        assert np.mean(np.abs(got - want)) < 1.0, node
    # the head's input is 8 bits: one pooled LSB is hundreds of output LSB, so compare there in real units
    y_fq = fq["q_head"] * graph.meta["output_scale"]
    y_int = env["head"].reshape(y_fq.shape) * graph.meta["output_scale"]
    assert abs(np.mean((y_int - data.val.y[::8][:400]) ** 2) / np.mean((y_fq - data.val.y[::8][:400]) ** 2) - 1) < 0.05


def test_assign_groups_is_a_noop_without_peg():
    fp32, _ = load_checkpoint(str(ROOT / "models" / "pm25_fp32.pt"))
    model = TimeSeriesTransformer(replace(fp32.cfg, quantized=True))
    assert assign_groups(model, torch.zeros(2, model.cfg.window, model.cfg.features)) == {}


# ---- every option's exported model on the emitted hardware ------------------------------------------------

OPTIONS = {
    "peg4": dict(cfg=dict(peg_groups=4)),
    "mixed": dict(cfg=dict(precision="attn=8,ffn.w=4,ffn.a=6,head.w=6")),
    "peg_mixed_w4a4": dict(cfg=dict(peg_groups=4, bits_w=4, bits_a=4, bits_res=8, precision="attn.a=6")),
    "qat_w3_dampen_freeze": dict(cfg=dict(bits_w=3, bits_a=8), opts=dict(dampen=0.5, freeze=True,
                                                                          freeze_threshold=(0.02, 0.005))),
    "ptq_full_w6": dict(ptq=dict(bits_w=6, bits_a=8)),
    "ptq_percentile_w8": dict(ptq=dict(bits_w=8, bits_a=8, method="percentile")),
}


def _ptq_checkpoint(tmp_path, name, spec) -> str:
    from hwgen.data import load_pm25
    from hwgen.data.timeseries import describe as data_descriptor
    from hwgen.frontend import ptq
    from hwgen.frontend.checkpoint import save_checkpoint

    fp32, _ = load_checkpoint(str(ROOT / "models" / "pm25_fp32.pt"))
    data = load_pm25(window=24)
    options = dict(ptq.PIPELINES["full"]) if "method" not in spec else {"method": spec["method"]}
    model, _ = ptq.quantize_model(fp32, data, spec["bits_w"], spec["bits_a"], calib_windows=256, progress=False,
                                  **options)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(str(path), model, data_descriptor(data, None), {"ptq": {}}, {"fp32_state_dict": fp32.state_dict()})
    return str(path)


def _qat_checkpoint(tmp_path, name, cfg_extra, opts_extra=None) -> str:
    from hwgen.data import load_pm25
    from hwgen.data.timeseries import describe as data_descriptor
    from hwgen.frontend.checkpoint import save_checkpoint

    fp32, meta = load_checkpoint(str(ROOT / "models" / "pm25_fp32.pt"))
    data = load_pm25(window=24)
    small = replace(data, train=replace(data.train, x=data.train.x[:1024], y=data.train.y[:1024]),
                    val=replace(data.val, x=data.val.x[:512], y=data.val.y[:512]))
    cfg = replace(fp32.cfg, quantized=True, **cfg_extra)
    opts = TrainOptions(qat_epochs=1, progress=False, calib_windows=512, **(opts_extra or {}))
    model, info = train_qat(small, cfg, fp32, opts)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(str(path), model, data_descriptor(data, None), {"qat": {}},
                    {"fp32_state_dict": fp32.state_dict()})
    return str(path)


@pytest.mark.slow
@pytest.mark.sim
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_option_bit_exact_on_verilator(name, tmp_path):
    from hwgen.steps.build import build, simulate_build

    spec = OPTIONS[name]
    if "ptq" in spec:
        path = _ptq_checkpoint(tmp_path, name, spec["ptq"])
    else:
        path = _qat_checkpoint(tmp_path, name, spec["cfg"], spec.get("opts"))
    report = build(path, str(tmp_path / "b"), "xc7s15", 8, with_accuracy=False)
    assert report["hardware"]["parallel"] == 8
    sim = simulate_build(str(tmp_path / "b"), "verilator", windows=6, stall=0.2, seed=3)
    assert sim["windows"] == 6 and sim["mismatches"] == 0 and sim["error"] is None
