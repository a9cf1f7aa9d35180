"""The fit benchmark's configurations and its counting (bench/fit.py), without Yosys."""

from __future__ import annotations

from types import SimpleNamespace

from bench.fit import BITS, N_CONFIGS, draw_configs, judge, limits, summary
from hwgen.steps.search import SearchSpace


def test_draw_is_deterministic_and_valid():
    configs = draw_configs()
    assert configs == draw_configs()
    assert len(configs) == N_CONFIGS == 30
    space = SearchSpace()
    for arch in configs:
        for name in ("window", "d_model", "heads", "layers", "ffn"):
            assert arch[name] in getattr(space, name)
        assert arch["norm"] in ("batch", "layer")
        assert arch["d_model"] % arch["heads"] == 0
        assert arch["bits_w"] == arch["bits_a"] in (4, 6, 8)
    assert {b: sum(a["bits_w"] == b for a in configs) for b in BITS} == {4: 10, 6: 10, 8: 10}
    assert len({tuple(sorted(a.items())) for a in configs}) == len(configs)
    assert draw_configs(seed=1) != configs


def test_judge_picks_binding_resource_and_overshoot():
    limit = limits(SimpleNamespace(lut=1000, dsp=20, bram36=10))
    assert limit == {"lut": 800, "dsp": 20, "bram36": 10}
    ok = judge({"lut": 800, "dsp": 10, "bram36": 2}, limit)
    assert ok["fits"] and ok["binding"] == "lut" and ok["over"] == {}
    bad = judge({"lut": 700, "dsp": 20, "bram36": 13.5}, limit)
    assert not bad["fits"] and bad["binding"] == "bram36" and bad["over"] == {"bram36": 3.5}


def _row(window, d_model, layers, bits, found, fits, binding="lut", lut=(1000, 1000), dsp=(10, 10)):
    arch = {"window": window, "d_model": d_model, "heads": 1, "layers": layers, "ffn": 16, "norm": "batch",
            "bits_w": bits, "bits_a": bits}
    return {"arch": arch, "auto": {"found": found}, "fits": fits, "binding": binding,
            "predicted": {"lut": lut[0], "dsp": dsp[0], "bram36": 2.0},
            "yosys": {"lut": lut[1], "dsp": dsp[1], "bram36": 2.0}}


def test_summary_counts():
    rows = [
        _row(12, 8, 1, 4, found=True, fits=True),
        _row(48, 32, 2, 4, found=False, fits=False, binding="bram36"),  # a target design that does not fit
        _row(24, 16, 1, 8, found=True, fits=False, binding="lut", lut=(900, 1200)),  # the model's error
        _row(24, 16, 2, 6, found=False, fits=True, dsp=(14, 13)),  # refused, yet P = 1 fits
        _row(48, 16, 1, 6, found=False, fits=False, binding="bram36"),
    ]
    got = summary(rows)
    assert got["designs"] == 5
    assert got["fit"] == 2
    assert got["auto_refused"] == 3
    assert got["auto_accepted_not_fit"] == 1
    assert got["auto_refused_but_fits_at_p1"] == 1
    assert got["not_fit_by_binding_resource"] == {"bram36": 2, "lut": 1}
    assert got["target"]["designs"] == 2
    assert got["target"]["fit"] == 1
    assert got["target"]["all_fit"] is False
    assert got["target"]["not_fit"] == [2]
    assert got["model"] == {"max_abs_lut_error": 0.25, "dsp_exact": 4, "bram36_exact": 5}
    assert summary(rows[:1])["target"]["all_fit"] is True
