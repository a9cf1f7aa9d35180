"""Hardware-aware multi-objective design-space search (Optuna NSGA-II).

A trial samples an architecture (window, d_model, heads, layers, FFN width), weight/activation bits (mixed per
group when ``ModelConfig`` has a ``precision`` field) and the number of MAC lanes; trains FP32 then QAT
briefly on a subset of the training windows; exports the integer graph; and scores it on three objectives,
all minimised: the deployed integer model's validation MSE (golden interpreter), the latency in cycles
(``hwgen.estimate.latency``) and the predicted LUTs (``hwgen.estimate.model``); DSPs, flip-flops, BRAM and energy
(``hwgen.estimate.energy``) are recorded beside them. A design that does not fit the part, a model that
diverges, or any exception fails the trial with its reason in the trial's user attribute ``failure``; the
search goes on.

The study lives in an Optuna RDB storage: by default an SQLite file (resumable: rerunning the same command
continues up to the requested number of trials), or any storage URL Optuna accepts, e.g.
``postgresql://user:password@host/db`` shared by workers on many machines (its driver, ``psycopg2-binary``,
is in requirements.txt). ``workers`` local processes share one study.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import multiprocessing
import signal
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hwgen.errors import HwgenError

OBJECTIVES = ("mse", "latency", "lut", "dsp", "energy")
DEFAULT_PARALLEL = (1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 20)
FAILED_KINDS = ("does not fit", "diverged", "invalid", "error")  # kinds that count as a finished trial


# the values a searched parameter may take (high None: no upper bound); checked before the first trial
SPACE_RANGES = {"window": (1, None), "d_model": (1, None), "heads": (1, None), "layers": (1, None),
                "ffn": (1, None), "bits_w": (2, 8), "bits_a": (2, 8), "parallel": (1, None)}


@dataclass(frozen=True)
class SearchSpace:
    """The choices of every searched parameter. ``parallel`` None: ``DEFAULT_PARALLEL`` up to the part's DSPs.
    ``mixed`` None: per-group weight bits (attn, ffn)."""

    window: tuple[int, ...] = (12, 24, 48)
    d_model: tuple[int, ...] = (8, 16, 32)
    heads: tuple[int, ...] = (1, 2, 4)
    layers: tuple[int, ...] = (1, 2)
    ffn: tuple[int, ...] = (16, 32, 64, 128)
    norm: tuple[str, ...] = ("batch",)
    bits_w: tuple[int, ...] = (3, 4, 5, 6, 8)
    bits_a: tuple[int, ...] = (4, 5, 6, 8)
    parallel: tuple[int, ...] | None = None
    mixed: bool | None = None

    def resolved(self, dsp_capacity: int) -> SearchSpace:
        """This space with ``parallel`` and ``mixed`` made concrete."""
        par = self.parallel or tuple(p for p in DEFAULT_PARALLEL if p <= dsp_capacity)
        return replace(self, parallel=par, mixed=True if self.mixed is None else self.mixed)


def parse_space(items: list[str], base: SearchSpace | None = None) -> SearchSpace:
    """``NAME=V1,V2,...`` overrides (e.g. ``d_model=8,16``) applied to ``base``; HwgenError names a bad one."""
    space = base or SearchSpace()
    names = {f.name for f in dataclasses.fields(SearchSpace)} - {"mixed"}
    for item in items:
        name, _, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if name not in names or not values.strip():
            raise HwgenError(f"--space {item!r}: expected NAME=V1,V2,... with NAME one of {', '.join(sorted(names))}")
        parts = [v.strip() for v in values.split(",") if v.strip()]
        try:
            choice = tuple(parts) if name == "norm" else tuple(int(v) for v in parts)
        except ValueError:
            raise HwgenError(f"--space {item!r}: values must be integers") from None
        space = replace(space, **{name: choice})
    return space


@dataclass(frozen=True)
class SearchSettings:
    """What defines a study (kept in the study; resuming with other settings is refused) besides ``space``."""

    dataset: str = "pm25"
    target: str = "xc7s15"
    # per trial: 10 + 3 epochs on 8,192 training windows get the reference model to validation MSE 0.067
    # (0.050 with all 25,670 windows, 0.041 fully trained) in about 8 s on one core; 3 + 1 epochs on 2,048
    # windows took 4.6 s but left it at 0.57, ranking designs by how fast they start to learn
    epochs: int = 10
    qat_epochs: int = 3
    train_windows: int = 8192
    val_windows: int = 2048
    seed: int = 0
    objectives: tuple[str, ...] = ("mse", "latency", "lut")
    space: SearchSpace = field(default_factory=SearchSpace)

    def validate(self) -> SearchSettings:
        for name in ("epochs", "qat_epochs", "train_windows", "val_windows"):
            if getattr(self, name) < 1:
                raise HwgenError(f"{name.replace('_', '-')} must be >= 1, not {getattr(self, name)}")
        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad or not self.objectives or len(set(self.objectives)) != len(self.objectives):
            raise HwgenError(f"objectives {','.join(self.objectives)!r}: choose distinct ones of {', '.join(OBJECTIVES)}")
        for f in dataclasses.fields(SearchSpace):
            value = getattr(self.space, f.name)
            if f.name != "mixed" and value is not None and len(value) == 0:
                raise HwgenError(f"search space {f.name!r} has no choices")
            low, high = SPACE_RANGES.get(f.name, (None, None))
            bad = [v for v in value or () if isinstance(v, int) and not (low <= v <= (high or v))]
            if f.name == "norm":
                bad = [v for v in value if v not in ("batch", "layer")]
            if bad:
                allowed = ("batch or layer" if f.name == "norm" else
                           f"integers {low}..{high}" if high else f"integers >= {low}")
                raise HwgenError(f"--space {f.name}: {', '.join(map(str, bad))} not allowed ({allowed})")
        return self

    def identity(self) -> dict[str, Any]:
        """The JSON form stored in the study."""
        return json_ready(dataclasses.asdict(self))


class TrialFailed(Exception):
    """A trial that cannot be scored: ``kind`` one of ``FAILED_KINDS``; the message is the reason."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind, self.reason = kind, reason


def json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


# ---------------------------------------------------------------------------------------------- one trial


def sample_params(trial, space: SearchSpace) -> dict[str, Any]:
    """Ask an Optuna trial for one point of ``space`` (resolved)."""
    params = {name: trial.suggest_categorical(name, list(getattr(space, name)))
              for name in ("window", "d_model", "heads", "layers", "ffn", "norm", "bits_w", "bits_a", "parallel")}
    if space.mixed:
        params["bits_w_attn"] = trial.suggest_categorical("bits_w_attn", list(space.bits_w))
        params["bits_w_ffn"] = trial.suggest_categorical("bits_w_ffn", list(space.bits_w))
    return params


def precision_spec(params: dict[str, Any]) -> str:
    """The ``ModelConfig.precision`` spec of per-group weight bits that differ from ``bits_w``."""
    groups = [(g, params.get(f"bits_w_{g}")) for g in ("attn", "ffn")]
    return ",".join(f"{g}.w={b}" for g, b in groups if b is not None and b != params["bits_w"])


def model_config(params: dict[str, Any], features: int):
    """The quantized ``ModelConfig`` of a parameter set (HwgenError if it is not a valid model)."""
    from hwgen.frontend.model import ModelConfig

    kw = dict(features=features, window=params["window"], d_model=params["d_model"], heads=params["heads"],
              layers=params["layers"], ffn=params["ffn"], norm=params["norm"], quantized=True,
              bits_w=params["bits_w"], bits_a=params["bits_a"])
    spec = precision_spec(params)
    if spec:
        kw["precision"] = spec
    return ModelConfig(**kw).validate()


def _spread(split, n: int):
    """At most ``n`` windows spread evenly over a split (deterministic)."""
    from hwgen.data import Split

    if len(split.x) <= n:
        return split
    idx = np.linspace(0, len(split.x) - 1, n).round().astype(np.int64)
    return Split(split.x[idx], split.y[idx], split.start[idx])


@functools.lru_cache(maxsize=8)
def _dataset(name: str, window: int):
    from hwgen.data.timeseries import load_forecast_data

    return load_forecast_data(name, None, None, None, window)


@functools.lru_cache(maxsize=4)
def _board(name: str):
    from hwgen.estimate.boards import resolve_target

    return resolve_target(name)


def _hardware(graph, parallel: int, board, dsp_slack: int = 0) -> dict[str, Any]:
    """Latency, predicted resources and energy of the design ``hwgen build --parallel`` makes of ``graph``
    (``hwgen.steps.build.candidate`` on an xc7 part: row pairs where they fit, buffers moved into distributed
    RAM where block RAM alone is short); TrialFailed if it does not fit (``dsp_slack`` DSPs of tolerance, for
    the check before training)."""
    from hwgen.estimate.energy import estimate as energy_estimate
    from hwgen.estimate.latency import estimate as latency_estimate
    from hwgen.estimate.model import predict
    from hwgen.estimate.resources import LUT_MARGIN
    from hwgen.hw import build_design
    from hwgen.steps.build import candidate

    cap = board.device.resources
    if board.device.open_flow:
        design = build_design(graph, parallel, images=False, dsp_budget=int(cap.dsp))
        res = predict(design)
    else:
        design, res = candidate(graph, board, parallel)
    limits = {"lut": LUT_MARGIN * cap.lut, "ff": cap.ff, "dsp": cap.dsp, "bram36": cap.bram36}
    slack = {"dsp": dsp_slack}
    over = [f"{res[k]:.1f} BRAM36 > {v:g}" if k == "bram36" else f"{res[k]:.0f} {k.upper()} > {v:.0f}"
            for k, v in limits.items() if res[k] > v + slack.get(k, 0)]
    if over:
        raise TrialFailed("does not fit", f"{board.part} at parallel {parallel}: predicted " + ", ".join(over))
    lat = latency_estimate(design)
    energy = energy_estimate(res, int(lat["total"]), board.clock_mhz, part=board.device.name)
    return {"latency_cycles": int(lat["total"]), "latency_us": lat["total"] / board.clock_mhz,
            "lut": float(res["lut"]), "ff": float(res["ff"]), "dsp": int(res["dsp"]),
            "bram36": float(res["bram36"]), "uj_per_inference": float(energy["uj_per_inference"]),
            "power_mw": float(energy["power_mw"]), "macs": int(lat["macs"])}


def train_and_export(params: dict[str, Any], settings: SearchSettings):
    """Train FP32 then QAT on the trial's data subset and export; returns (graph, info)."""
    from hwgen.data.timeseries import describe
    from hwgen.frontend.export import export_model
    from hwgen.frontend.train import TrainOptions, train_fp32, train_qat
    from hwgen.tasks.forecast import golden_predict

    data = _dataset(settings.dataset, params["window"])
    sub = replace(data, train=_spread(data.train, settings.train_windows), val=_spread(data.val, settings.val_windows))
    cfg = model_config(params, len(data.features))
    opts = TrainOptions(epochs=settings.epochs, qat_epochs=settings.qat_epochs, seed=settings.seed, progress=False,
                        calib_windows=min(2048, settings.train_windows))
    fp32, finfo = train_fp32(sub, replace(cfg, quantized=False), opts)
    if not math.isfinite(finfo["val_mse"]):
        raise TrialFailed("diverged", f"FP32 validation MSE is {finfo['val_mse']}")
    model, qinfo = train_qat(sub, cfg, fp32, opts)
    if not math.isfinite(qinfo["val_mse"]):
        raise TrialFailed("diverged", f"QAT validation MSE is {qinfo['val_mse']}")
    graph = export_model(model, {"model": "search", "data": describe(data, None)})
    _, pred = golden_predict(graph, sub.val.x)
    mse = float(np.mean((pred - sub.val.y) ** 2))
    if not math.isfinite(mse):
        raise TrialFailed("diverged", f"integer validation MSE is {mse}")
    return graph, {"val_mse": mse, "val_mse_units": data.mse_to_units(mse), "fp32_val_mse": float(finfo["val_mse"]),
                   "qat_val_mse": float(qinfo["val_mse"]), "val_windows": len(sub.val.x),
                   "train_windows": len(sub.train.x)}


def _precheck(params: dict[str, Any], settings: SearchSettings, board) -> None:
    """Reject a design that cannot fit before spending time on training: export the calibrated untrained
    model (same shapes and types as the trained one; a value-dependent width may add one DSP)."""
    import torch

    from hwgen.frontend.export import export_model
    from hwgen.frontend.model import TimeSeriesTransformer
    from hwgen.frontend.train import calibrate

    data = _dataset(settings.dataset, params["window"])
    torch.manual_seed(settings.seed)
    model = TimeSeriesTransformer(replace(model_config(params, len(data.features)), init="minmax"))
    calibrate(model, data.train, 64)
    _hardware(export_model(model, {}), params["parallel"], board, dsp_slack=1)


def evaluate_params(params: dict[str, Any], settings: SearchSettings, graph_dir: str | Path | None = None
                    ) -> dict[str, Any]:
    """Score one design point: every metric (objectives included). Raises TrialFailed with the reason."""
    board = _board(settings.target)
    try:
        model_config(params, len(_dataset(settings.dataset, params["window"]).features))
    except HwgenError as exc:
        raise TrialFailed("invalid", str(exc)) from None
    _precheck(params, settings, board)
    graph, info = train_and_export(params, settings)
    hw = _hardware(graph, params["parallel"], board)
    if graph_dir is not None:
        graph.save(graph_dir)
    return {**info, **hw}


def objective_values(metrics: dict[str, Any], objectives: tuple[str, ...]) -> list[float]:
    key = {"mse": "val_mse", "latency": "latency_cycles", "lut": "lut", "dsp": "dsp", "energy": "uj_per_inference"}
    return [float(metrics[key[o]]) for o in objectives]


# ---------------------------------------------------------------------------------------------- the study


def storage_url(study: str | os.PathLike | None = None, storage: str | None = None) -> str:
    """``storage`` as given, or an SQLite URL for the study file ``study`` (its folder is created)."""
    if storage:
        return storage
    path = Path(study or "runs/search.db").resolve()
    if path.is_dir():
        raise HwgenError(f"--study {path}: is a folder; give a file name such as runs/search.db")
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def redact(url: str) -> str:
    """``url`` without its password (for messages and search.json)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: keep only what follows the credentials
        return url.rsplit("@", 1)[-1]


def open_storage(url: str):
    """An Optuna RDB storage with heartbeats (a worker killed mid-trial has its trial failed, not counted)."""
    import optuna

    kw: dict[str, Any] = {}
    engine_url = url
    if url.startswith("sqlite"):
        kw["engine_kwargs"] = {"connect_args": {"timeout": 300}}  # workers queue on the file lock
    elif url.startswith("postgresql://"):
        # SQLAlchemy 2.0 reads postgresql:// with psycopg2, 2.1 with psycopg (3): use the one installed.
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            engine_url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(engine_url, heartbeat_interval=60, grace_period=300, **kw)
        except ModuleNotFoundError as exc:
            raise HwgenError(f"storage {redact(url)}: its database driver {exc.name!r} is not installed "
                             "(for postgresql:// URLs: pip install psycopg2-binary)") from None
        except Exception as exc:
            # Workers starting together on an empty database race to create Optuna's tables (optuna#1092): all
            # but one fail on a duplicate, then find the tables made.
            if attempt < 2 and isinstance(exc, (IntegrityError, ProgrammingError)):
                time.sleep(1 + attempt)
                continue
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if "DB access module" in first:
                first += " (for postgresql:// URLs: pip install psycopg2-binary)"
            raise HwgenError(f"cannot open the study storage {redact(url)}: {first}") from None


def open_study(storage, name: str, settings: SearchSettings):
    """Create the study or load it, refusing one created with other settings."""
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                    directions=["minimize"] * len(settings.objectives))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HwgenError(f"cannot create or load study {name!r}: {first}") from None
    ident = settings.identity()
    stored = study.user_attrs.get("hwgen_settings")
    if stored is None:
        study.set_user_attr("hwgen_settings", ident)
    elif stored != ident:
        flat_old, flat_new = _flatten(stored), _flatten(ident)
        key = next(k for k in sorted(set(flat_old) | set(flat_new)) if flat_old.get(k) != flat_new.get(k))
        raise HwgenError(f"study {name!r} was created with {key}={flat_old.get(key)!r}, not {flat_new.get(key)!r}: "
                         "rerun with the same settings or use another --study / --study-name")
    return study


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def finished_and_running(study) -> tuple[int, int]:
    """Trials that count toward the requested number (complete, or failed with a recorded reason other than an
    interruption) and trials running now."""
    from optuna.trial import TrialState

    done = running = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL
                                              and t.user_attrs.get("failure_kind") in FAILED_KINDS):
            done += 1
        elif t.state == TrialState.RUNNING:
            running += 1
    return done, running


def _previous(study, params: dict[str, Any]):
    """A finished trial with the same parameters whose outcome is deterministic (training is seeded)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if t.params == params and ("metrics" in t.user_attrs or t.user_attrs.get("failure_kind") in FAILED_KINDS[:3]):
            return t
    return None


def _score(trial, study, settings: SearchSettings, out: Path | None) -> list[float]:
    params = sample_params(trial, settings.space)
    prev = _previous(study, params)
    if prev is not None:
        trial.set_user_attr("duplicate_of", prev.number)
        if "metrics" in prev.user_attrs:
            trial.set_user_attr("metrics", prev.user_attrs["metrics"])
            return objective_values(prev.user_attrs["metrics"], settings.objectives)
        raise TrialFailed(prev.user_attrs["failure_kind"], prev.user_attrs["failure"])
    graph_dir = out / "graphs" / f"trial-{trial.number}" if out is not None else None
    try:
        metrics = evaluate_params(params, settings, graph_dir)
    except (TrialFailed, KeyboardInterrupt):
        raise
    except HwgenError as exc:
        raise TrialFailed("error", str(exc)) from None
    except Exception as exc:  # a trial must never stop the search
        first = (str(exc).strip().splitlines() or [""])[0]
        raise TrialFailed("error", f"{type(exc).__name__}: {first}") from None
    trial.set_user_attr("metrics", json_ready(metrics))
    return objective_values(metrics, settings.objectives)


def _bits_label(p: dict[str, Any]) -> str:
    """Weight bits: "6", or "6/a8/f4" when attention or FFN weights differ from the rest."""
    attn, ffn = p.get("bits_w_attn", p["bits_w"]), p.get("bits_w_ffn", p["bits_w"])
    return str(p["bits_w"]) if attn == ffn == p["bits_w"] else f"{p['bits_w']}/a{attn}/f{ffn}"


def _print_trial(study, t) -> None:
    attrs = t.user_attrs
    head = f"search: trial {t.number:4d} {attrs.get('seconds', 0):5.1f} s"
    p = t.params
    arch = (f"w{p.get('window')} d{p.get('d_model')} h{p.get('heads')} L{p.get('layers')} f{p.get('ffn')} "
            f"W{_bits_label(p)} A{p.get('bits_a')} P{p.get('parallel')}")
    if "metrics" in attrs:
        m = attrs["metrics"]
        dup = f" (same as trial {attrs['duplicate_of']})" if "duplicate_of" in attrs else ""
        say(f"{head}  {arch}: mse {m['val_mse']:.4f}, {m['latency_cycles']} cycles, {m['lut']:.0f} LUT, "
            f"{m['dsp']} DSP, {m['uj_per_inference']:.2f} uJ{dup}")
    else:
        say(f"{head}  {arch}: FAILED ({attrs.get('failure_kind')}: {attrs.get('failure')})")


def _quiet_optuna() -> None:
    """Our own per-trial lines replace Optuna's log; heartbeats are fine to use though 'experimental'."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def work(url: str, name: str, settings: SearchSettings, trials: int, out: str | None, worker: int = 0,
         deadline: float | None = None) -> int:
    """One worker: run trials of the study until ``trials`` have finished (counting every worker's) or the
    wall-clock ``deadline`` (time.time()) passes. Returns the number of trials this worker ran."""
    import optuna
    import torch
    from optuna.trial import TrialState

    torch.set_num_threads(1)
    _quiet_optuna()
    storage = open_storage(url)
    probe = optuna.load_study(study_name=name, storage=storage)
    # A resumed run must not replay the first run's random draws: seed from what the study holds.
    seed = settings.seed * 1_000_003 + len(probe.get_trials(deepcopy=False)) * 101 + worker
    population = max(4, min(16, trials // 3))
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.NSGAIISampler(population_size=population, seed=seed))
    out_dir = Path(out) if out else None

    def objective(trial) -> list[float]:
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        t0 = time.perf_counter()
        try:
            return _score(trial, study, settings, out_dir)
        except TrialFailed as exc:
            trial.set_user_attr("failure_kind", exc.kind)
            trial.set_user_attr("failure", exc.reason)
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("failure_kind", "interrupted")
            trial.set_user_attr("failure", "interrupted (Ctrl-C); not counted, rerun to continue")
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))

    ran = 0
    while deadline is None or time.time() < deadline:
        optuna.storages.fail_stale_trials(study)
        done, running = finished_and_running(study)
        if done + running >= trials:
            break
        study.optimize(objective, n_trials=1, catch=(TrialFailed,),
                       callbacks=[lambda s, t: _print_trial(s, t) if t.state != TrialState.RUNNING else None])
        ran += 1
    return ran


def _worker_main(url: str, name: str, settings: SearchSettings, trials: int, out: str | None, worker: int,
                 deadline: float | None) -> None:
    try:
        work(url, name, settings, trials, out, worker, deadline)
    except HwgenError as exc:
        print(f"hwgen: error: worker {worker}: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


# ---------------------------------------------------------------------------------------------- results


def pareto_front(points: list[list[float]]) -> list[int]:
    """Indices of the points no other point dominates (all objectives minimised); of equal points the first."""
    front = []
    for i, a in enumerate(points):
        dominated = any(all(x <= y for x, y in zip(b, a)) and (any(x < y for x, y in zip(b, a)) or j < i)
                        for j, b in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def summarize(study, settings: SearchSettings) -> dict[str, Any]:
    """Every trial (params, objectives, metrics, state, failure reason) and the Pareto front."""
    from optuna.trial import TrialState

    trials = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        trials.append({
            "number": t.number,
            "state": t.state.name,
            "params": dict(t.params),
            "objectives": dict(zip(settings.objectives, t.values)) if t.state == TrialState.COMPLETE else None,
            "metrics": a.get("metrics"),
            "failure_kind": a.get("failure_kind"),
            "failure": a.get("failure"),
            "duplicate_of": a.get("duplicate_of"),
            "seconds": a.get("seconds"),
            "worker": a.get("worker"),
            "started": t.datetime_start.isoformat() if t.datetime_start else None,
            "finished": t.datetime_complete.isoformat() if t.datetime_complete else None,
        })
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    front = [complete[i] for i in pareto_front([list(t["objectives"].values()) for t in complete])]
    front.sort(key=lambda t: list(t["objectives"].values()))
    kinds: dict[str, int] = {}
    for t in trials:
        if t["state"] == "FAIL":
            kinds[t["failure_kind"] or "unrecorded"] = kinds.get(t["failure_kind"] or "unrecorded", 0) + 1
    return {
        "study": study.study_name,
        "objectives": list(settings.objectives),
        "settings": settings.identity(),
        "counts": {"trials": len(trials), "complete": len(complete), "failed": sum(kinds.values()),
                   "failed_by_kind": kinds, "running": sum(t["state"] == "RUNNING" for t in trials),
                   "duplicates": sum(t["duplicate_of"] is not None for t in trials)},
        "pareto_front": [{"number": t["number"], "params": t["params"], "objectives": t["objectives"],
                          "metrics": t["metrics"]} for t in front],
        "trials": trials,
    }


def front_table(summary: dict[str, Any]) -> str:
    """The Pareto front as a text table."""
    head = (f"{'trial':>5} {'win':>4} {'d':>3} {'h':>2} {'L':>2} {'ffn':>4} {'W':>8} {'A':>2} {'P':>3} "
            f"{'val MSE':>8} {'cycles':>8} {'us':>8} {'LUT':>6} {'DSP':>4} {'uJ':>7}")
    lines = [head]
    for t in summary["pareto_front"]:
        p, m = t["params"], t["metrics"]
        w = _bits_label(p)
        lines.append(f"{t['number']:>5} {p['window']:>4} {p['d_model']:>3} {p['heads']:>2} {p['layers']:>2} "
                     f"{p['ffn']:>4} {w:>8} {p['bits_a']:>2} {p['parallel']:>3} {m['val_mse']:>8.4f} "
                     f"{m['latency_cycles']:>8} {m['latency_us']:>8.1f} {m['lut']:>6.0f} {m['dsp']:>4} "
                     f"{m['uj_per_inference']:>7.2f}")
    return "\n".join(lines)


def verify_front(summary: dict[str, Any], settings: SearchSettings, out: Path, count: int,
                 sim_windows: int = 32) -> list[dict[str, Any]]:
    """Re-check up to ``count`` Pareto points (lowest MSE first) with the real flow:
    ``hwgen.steps.build.build``, bit-exact simulation against the golden model and the Yosys estimate. A
    point whose graph is not in ``out/graphs`` (a trial run on another machine) is retrained from its
    parameters (seeded)."""
    from hwgen.steps.build import build, estimate_build, read_report, simulate_build

    results = []
    for t in summary["pareto_front"][:count]:
        n, params = t["number"], t["params"]
        graph_dir = out / "graphs" / f"trial-{n}"
        rec: dict[str, Any] = {"number": n, "parallel": params["parallel"], "retrained": False}
        say(f"search: verifying trial {n} with the real flow")
        try:
            if not (graph_dir / "graph.json").is_file():
                graph, _ = train_and_export(params, settings)
                graph.save(graph_dir)
                rec["retrained"] = True
            bdir = out / "verify" / f"trial-{n}"
            report = build(str(graph_dir), str(bdir), settings.target, params["parallel"], with_accuracy=False)
            rec["latency_cycles_model"] = report["hardware"]["latency_cycles"]
            try:
                sim = simulate_build(str(bdir), "verilator", windows=sim_windows)
                rec["sim"] = {"bit_exact": True, "windows": sim["windows"], "cycles": sim["cycles_per_inference"]}
            except HwgenError as exc:
                rec["sim"] = {"bit_exact": False, "error": str(exc)}
            try:
                estimate_build(str(bdir))
            except HwgenError as exc:
                rec["estimate_error"] = str(exc)
            r = read_report(bdir)
            res = r.get("resources") or {}
            rec["yosys"] = {k: res.get(k) for k in ("lut", "ff", "dsp", "bram36", "fits", "problems")}
            rec["predicted"] = {k: t["metrics"][k] for k in ("lut", "ff", "dsp", "bram36")}
            rec["energy_uj"] = (r.get("energy") or {}).get("uj_per_inference")
        except HwgenError as exc:
            rec["error"] = str(exc)
        results.append(rec)
    return results


def run_search(settings: SearchSettings, trials: int, out: str | os.PathLike, study: str | None = None,
               storage: str | None = None, study_name: str | None = None, workers: int = 1, verify: int = 0,
               timeout: float | None = None) -> dict[str, Any]:
    """Run (or resume) a search until the study holds ``trials`` finished trials or ``timeout`` seconds pass;
    write ``out/search.json`` and return it. ``workers`` > 1 runs that many local processes on the study.
    Ctrl-C stops the workers, writes search.json with what finished and re-raises KeyboardInterrupt."""
    from hwgen.steps.flow import write_json

    for what, value, low in (("--trials", trials, 1), ("--workers", workers, 1), ("--verify", verify, 0)):
        if not isinstance(value, int) or value < low:
            raise HwgenError(f"{what} must be an integer >= {low}, not {value!r}")
    if timeout is not None and timeout <= 0:
        raise HwgenError(f"--timeout must be positive, not {timeout!r}")
    settings.validate()
    from hwgen.data.timeseries import DATASETS

    if settings.dataset not in DATASETS:  # fail before touching the study
        raise HwgenError(f"unknown dataset {settings.dataset!r} (built in: {', '.join(DATASETS)})")
    board = _board(settings.target)
    settings = replace(settings, space=settings.space.resolved(int(board.device.resources.dsp)))
    name = study_name or f"hwgen-{settings.dataset}"
    _quiet_optuna()
    url = storage_url(study, storage)
    st = open_storage(url)
    study_obj = open_study(st, name, settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done0, _ = finished_and_running(study_obj)
    say(f"search: study {name!r} in {redact(url)}: {done0} of {trials} trials done; {workers} worker(s)")
    t0 = time.time()
    deadline = t0 + timeout if timeout else None
    interrupted = False
    try:
        if workers == 1:
            work(url, name, settings, trials, str(out), 0, deadline)
        else:
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_worker_main, args=(url, name, settings, trials, str(out), i, deadline))
                     for i in range(workers)]
            for p in procs:
                p.start()
            try:
                for p in procs:
                    p.join()
            except KeyboardInterrupt:  # a SIGINT to this process alone: pass it on, so the workers stop now
                for p in procs:
                    if p.is_alive() and p.pid is not None:
                        try:
                            os.kill(p.pid, signal.SIGINT)
                        except OSError:
                            pass
                for p in procs:
                    p.join(timeout=30)
                    if p.is_alive():
                        p.terminate()
                raise
            bad = [i for i, p in enumerate(procs) if p.exitcode not in (0, 130)]
            if bad:
                raise HwgenError(f"worker(s) {', '.join(map(str, bad))} failed (see their messages above)")
            interrupted = any(p.exitcode == 130 for p in procs)
    except KeyboardInterrupt:
        interrupted = True
    seconds = time.time() - t0
    summary = summarize(study_obj, settings)
    done1, _ = finished_and_running(study_obj)
    summary["storage"] = redact(url)
    summary["run"] = {"workers": workers, "seconds": round(seconds, 1), "trials_finished": done1 - done0,
                      "trials_per_hour": round(3600.0 * (done1 - done0) / seconds, 1) if seconds > 0 else None,
                      "interrupted": interrupted, "requested_trials": trials}
    if verify and not interrupted:
        summary["verified"] = verify_front(summary, settings, out, verify)
    write_json(out / "search.json", summary)
    if interrupted:
        say(f"search: interrupted; {done1} of {trials} trials done, kept in {redact(url)}: rerun to continue")
        raise KeyboardInterrupt
    return summary
