"""The ``hwgen`` command line. Every command prints one line ``hwgen: error: ...`` and exits 1 on bad input."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from hwgen import jsonio
from hwgen.errors import HwgenError
from hwgen.progress import enabled as progress_enabled
from hwgen.progress import set_quiet


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _windows_or_all(text: str) -> int | None:
    """``--windows`` of ``hwgen sim``: a positive integer, or ``all`` (None: every window there is); anything
    else is a HwgenError (one ``hwgen: error:`` line, not argparse's usage block)."""
    if str(text).strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise HwgenError(f"--windows needs a positive integer or 'all', not {text!r}")
    return value


def _oscillation_options(args: argparse.Namespace) -> dict:
    """TrainOptions fields of the QAT oscillation flags, checked (HwgenError names the bad flag)."""
    given = [flag for flag, on in (("--dampen", args.dampen is not None), ("--freeze", args.freeze),
                                   ("--freeze-threshold", args.freeze_threshold is not None),
                                   ("--no-bn-reestimate", args.no_bn_reestimate)) if on]
    if given and args.bits is None:
        raise HwgenError(f"{given[0]} applies to quantization-aware training only (give --bits N)")
    out: dict = {"bn_reestimate": not args.no_bn_reestimate, "freeze": bool(args.freeze)}
    if args.dampen is not None:
        try:
            out["dampen"] = float(args.dampen)
        except ValueError:
            raise HwgenError(f"--dampen needs a number, not {args.dampen!r}") from None
        if not 0.0 <= out["dampen"] < float("inf"):
            raise HwgenError(f"--dampen must be a finite number >= 0, not {args.dampen!r}")
    if args.freeze_threshold is not None:
        if not args.freeze:
            raise HwgenError("--freeze-threshold needs --freeze")
        try:
            start, end = (float(v) for v in args.freeze_threshold.split(":"))
        except ValueError:
            raise HwgenError(f"--freeze-threshold needs START:END, not {args.freeze_threshold!r}") from None
        if not (0 < start < 1 and 0 < end < 1):
            raise HwgenError(f"--freeze-threshold values must be in (0, 1), not {args.freeze_threshold!r}")
        out["freeze_threshold"] = (start, end)
    return out


def _torch_step() -> None:
    """A command that trains, quantizes, exports or scores torch models: one torch thread. The machines have
    2 cores and training often shares them; oversubscribed OpenMP threads spin and slow a small model down
    by an order of magnitude. (Set here, not on import, so that importing hwgen changes no global state.)"""
    import torch

    torch.set_num_threads(1)


def cmd_train(args: argparse.Namespace) -> int:
    from hwgen import tasks
    from hwgen.frontend.model import ModelConfig
    from hwgen.frontend.train import TrainOptions
    from hwgen.steps import flow

    if args.fp32 == (args.bits is not None):
        raise HwgenError("give exactly one of --bits N (quantization-aware training) or --fp32")
    task = tasks.get(args.task)
    if args.horizon is not None and task.default_horizon is None:
        raise HwgenError("--horizon works with --task anomaly only")
    oscillation = _oscillation_options(args)
    if args.lr is not None and not 0.0 < args.lr < float("inf"):  # also refuses nan
        raise HwgenError(f"--lr must be a finite number > 0, not {args.lr!r}")
    from hwgen.frontend.checkpoint import check_output_path

    check_output_path(args.out)  # before any training, not after it
    task.check_train_args(args)
    _torch_step()
    dataset = None if args.csv else (args.dataset or task.default_dataset)
    horizon = task.default_horizon if args.horizon is None else args.horizon
    features = args.features.split(",") if args.features else None
    data = task.load_data(dataset, args.csv, args.target, args.window, args.seed, horizon or 0, features)
    cfg = ModelConfig(features=len(data.features), window=data.window, d_model=args.d_model, heads=args.heads,
                      layers=args.layers, ffn=args.ffn, norm=args.norm, bits_res=args.res_bits,
                      precision=args.precision or "", peg_groups=args.peg_groups,
                      peg_permute=not args.no_peg_permute)
    defaults = TrainOptions()
    epochs, qat_epochs = task.default_epochs or (defaults.epochs, defaults.qat_epochs)
    opts = TrainOptions(epochs=args.epochs or epochs, qat_epochs=args.qat_epochs or qat_epochs, seed=args.seed,
                        lr=defaults.lr if args.lr is None else args.lr, progress=progress_enabled(),
                        **oscillation)
    print(task.data_line(data), file=sys.stderr)
    command = "hwgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    info = flow.train(data, task, cfg, opts, args.out, args.bits, command, csv=args.csv, dataset=dataset,
                      init_from=args.init_from, act_bits=args.act_bits, quantile=args.threshold_quantile)
    parts = [f"fp32 val {task.loss_name} {info['fp32']['val_mse']:.4f}"]
    if "qat" in info:
        parts.append(f"qat val {task.loss_name} {info['qat']['val_mse']:.4f}")
    if "threshold" in info:
        parts.append(f"integer threshold {info['threshold']}")
    print(f"saved {args.out} ({', '.join(parts)}, {info['seconds']:.0f} s)")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from hwgen.frontend.ptq import PIPELINES
    from hwgen.steps import flow

    opts = {"method": args.method or "mse", "cle": args.cle, "bias_correction": args.bias_correction,
            "adaround": args.adaround, "adaround_objective": args.adaround_objective or "layer"}
    if args.adaround_objective and not (args.adaround or args.full):
        raise HwgenError("--adaround-objective needs --adaround (or --full)")
    if args.full:  # the pipeline's steps, plus any flag given; an explicit --method/--adaround-objective wins
        full = PIPELINES["full"]
        opts.update({k: opts[k] or full[k] for k in ("cle", "bias_correction", "adaround")})
        opts["method"] = args.method or full["method"]
        opts["adaround_objective"] = args.adaround_objective or full["adaround_objective"]
    command = "hwgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    _torch_step()
    info = flow.quantize(args.model, args.out, args.bits, args.act_bits, calib_windows=args.calib_windows,
                         seed=args.seed, command=command, progress=progress_enabled(), **opts)
    ptq = info["ptq"]
    applied = [ptq["method"]] + [name for name in ("cle", "adaround", "bias_correction") if ptq[name]]
    applied = [f"adaround ({ptq['adaround_objective']})" if a == "adaround" else a for a in applied]
    print(f"saved {args.out} (W{ptq['bits_w']}A{ptq['bits_a']}, {' + '.join(applied)}; calibration mse "
          f"{ptq['fp32_calib_mse']:.4f} FP32 -> {ptq['calib_mse']:.4f}, {info['seconds']:.0f} s)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hwgen.steps import flow

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise HwgenError(f"{out}: exists and is not a folder (give a folder for graph.json and consts.npz)")
    _torch_step()
    graph = flow.export(args.model, args.out, class_scores=not args.index_only)
    print(f"wrote {args.out}/graph.json and consts.npz: {len(graph.nodes)} nodes, "
          f"{sum(c.value.size for c in graph.consts.values())} integer constants")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from hwgen import progress, tasks
    from hwgen.steps import flow

    _torch_step()
    with progress.step(f"eval: scoring {args.model} on the {args.split} split"):
        result = flow.evaluate(args.model, args.split)
    if args.json:
        print(jsonio.dumps(result, f"eval --json of {args.model}", indent=2, sort_keys=True))
        return 0
    print(tasks.get(result.get("task", "forecast")).format_eval(result))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from hwgen.steps.build import build

    if not Path(args.model).is_dir():  # a checkpoint: exported with torch now
        _torch_step()
    report = build(args.model, args.out, args.board, args.parallel, with_accuracy=not args.no_eval,
                   class_scores=not args.index_only, force=args.force)
    hw = report["hardware"]
    print(f"{args.out}: {hw['parallel']} multipliers, {hw['latency_cycles']} cycles per inference "
          f"({hw['latency_us']:.1f} us at {hw['clock_mhz']:g} MHz; DSP bound {hw['dsp_bound_cycles']} cycles); "
          f"back to back one window per {hw['throughput_cycles']} cycles "
          f"({hw['inferences_per_second']:,.0f} inferences/s)")
    return 0


def _input_windows(path: str, build_dir: str):
    """The windows of a .npy file as the build's input integers (float windows quantized with the graph's
    input scale; integers as they are); HwgenError naming the file."""
    import numpy as np

    from hwgen.accelerator import input_integers
    from hwgen.steps.build import load_build

    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise HwgenError(f"{path}: not a readable .npy array ({exc})") from None
    xi = input_integers(load_build(build_dir), arr, path)
    return xi[None] if xi.ndim == 2 else xi


def cmd_sim(args: argparse.Namespace) -> int:
    from hwgen.steps.build import simulate_build

    if not 0.0 <= args.stall < 1.0:
        raise HwgenError(f"--stall must be a probability in [0, 1), not {args.stall!r}")
    windows = _windows_or_all(args.windows)  # None: all of them
    inputs = None
    if args.inputs:
        inputs = _input_windows(args.inputs, args.build_dir)[:windows]
    sim = simulate_build(args.build_dir, args.simulator, windows, args.stall, args.seed, inputs=inputs)
    print(f"{args.build_dir}: bit-exact on {sim['windows']} windows ({sim['simulator']}), "
          f"{sim['cycles_per_inference']:.0f} cycles per inference"
          + (f", {sim['cycles_between_windows']:.0f} between windows back to back"
             if sim.get("cycles_between_windows") is not None else "")
          + f", {sim['sim_cycles_per_s']:.0f} simulated cycles/s")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from hwgen.steps.build import estimate_build

    estimate_build(args.build_dir)
    return 0


def cmd_boards(args: argparse.Namespace) -> int:
    from hwgen.estimate.boards import list_boards, list_parts, load_board, load_part

    print(f"{'name':<26}{'part':<20}{'LUT':>7}{'DSP':>5}{'BRAM36':>8}{'clock':>8}  flow")
    for name in list_parts():
        p = load_part(name)
        r = p.resources
        flow = "hwgen impl (open)" if p.open_flow else "hwgen vivado"
        print(f"{name:<26}{p.default_part:<20}{r.lut:>7}{r.dsp:>5}{r.bram36:>8.1f}{'':>8}  {flow}")
    for name in list_boards():
        b = load_board(name)
        r = b.device.resources
        flow = "hwgen impl (open)" if b.device.open_flow else "hwgen vivado"
        print(f"{name:<26}{b.part:<20}{r.lut:>7}{r.dsp:>5}{r.bram36:>8.1f}{b.clock_mhz:>5g} MHz  {flow}")
    print("LUT: LUT6 (Spartan-7) or LUT4 (ECP5, iCE40, Gowin); DSP: DSP48E1, MULT18X18D, SB_MAC16 or MULT18X18; "
          "BRAM36: block RAM in 36-Kb units")
    return 0


def cmd_impl(args: argparse.Namespace) -> int:
    from hwgen.steps.impl import implement_build

    implement_build(args.build_dir, args.board, args.clock_mhz, args.seed)
    return 0


def cmd_vivado(args: argparse.Namespace) -> int:
    from hwgen.steps.build import vivado_build

    vivado_build(args.build_dir)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hwgen.report.html import render_report
    from hwgen.report.summary import summary_markdown
    from hwgen.steps.build import load_build

    load_build(args.build_dir)  # a missing folder or graph, or a changed graph: one error line
    if not (Path(args.build_dir) / "report.json").is_file():
        raise HwgenError(f"{args.build_dir}: no report.json in the build folder (make it with "
                         f"'hwgen build MODEL --out {args.build_dir}')")
    print(summary_markdown(args.build_dir))
    path = render_report(args.build_dir, max_windows=args.windows)
    print(f"\nreport: {path}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from hwgen.steps.search import SearchSettings, front_table, parse_space, run_search

    _torch_step()
    settings = SearchSettings(dataset=args.dataset, target=args.target, epochs=args.epochs,
                              qat_epochs=args.qat_epochs, train_windows=args.train_windows,
                              val_windows=args.val_windows, seed=args.seed,
                              objectives=tuple(o.strip() for o in args.objectives.split(",")),
                              space=parse_space(args.space or []))
    summary = run_search(settings, args.trials, args.out, study=args.study, storage=args.storage,
                         study_name=args.study_name, workers=args.workers, verify=args.verify, timeout=args.timeout)
    c, run = summary["counts"], summary["run"]
    print(f"{summary['study']}: {c['complete']} complete, {c['failed']} failed ({c['failed_by_kind']}); this run "
          f"{run['trials_finished']} trials in {run['seconds']:.0f} s; Pareto front ({', '.join(summary['objectives'])}):")
    print(front_table(summary))
    for v in summary.get("verified", []):
        sim, yosys = v.get("sim") or {}, v.get("yosys") or {}
        print(f"verified trial {v['number']}: " + (v["error"] if "error" in v else
              f"bit-exact {sim.get('bit_exact')}, {sim.get('cycles')} cycles (model {v.get('latency_cycles_model')}), "
              f"Yosys {yosys.get('lut')} LUT / {yosys.get('dsp')} DSP (model {v['predicted']['lut']:.0f} / "
              f"{v['predicted']['dsp']}), fits {yosys.get('fits')}"))
    print(f"wrote {Path(args.out) / 'search.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from hwgen.tasks import TASKS

    parser = argparse.ArgumentParser(
        prog="hwgen", description="Compile quantization-aware time-series Transformers into verified integer-only "
        "FPGA accelerators. On bad input every command prints one line 'hwgen: error: ...' and exits 1.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (FP32, or QAT at N bits)")
    p.add_argument("--task", choices=tuple(TASKS), default="forecast",
                   help="forecast (default), classify (class index and scores) or anomaly (score and flag)")
    p.add_argument("--dataset", help="built-in dataset: pm25 (forecast, the default); basicmotions (the "
                   "classify default), gunpoint, italypowerdemand; kdd135 (the anomaly default), mitdb")
    p.add_argument("--csv", help="train on your own CSV of numeric columns instead")
    p.add_argument("--target", help="target column of --csv (forecast one step ahead); the label column for "
                   "--task classify/anomaly (CSV layouts: hwgen.data.tasks)")
    p.add_argument("--threshold-quantile", type=float, default=1.0,
                   help="anomaly threshold: this quantile of the scores of the normal (training and validation) "
                   "windows (default 1.0: their largest score)")
    p.add_argument("--horizon", type=int, metavar="H",
                   help="anomaly: forecast the H steps after each window and score their error (the accelerator "
                   "then takes window + H steps; default 4); 0 scores the reconstruction of the window instead")
    p.add_argument("--features", help="comma-separated input columns of --csv (default: all numeric)")
    p.add_argument("--bits", type=int, choices=range(2, 9), metavar="{2..8}", help="QAT weight/activation bits")
    p.add_argument("--act-bits", type=int, choices=range(2, 9), metavar="{2..8}",
                   help="activation bits (default: --bits); the residual stream has --res-bits")
    p.add_argument("--res-bits", type=int, choices=range(2, 17), metavar="{2..16}", default=12,
                   help="bits of the residual stream (embedding, residual adds, norms; default 12)")
    p.add_argument("--precision", metavar="SPEC",
                   help="mixed precision: per-group bits overriding --bits/--act-bits, e.g. 'attn=8,ffn.w=4' or "
                   "'l0.ffn.a=6' (groups embed, attn, ffn, head; .w weights, .a activations, both if omitted)")
    p.add_argument("--peg-groups", type=_positive, default=1, metavar="K",
                   help="per-embedding-group quantization of the residual stream and FFN input/output: K groups "
                   "of the d_model dimensions with power-of-two scale ratios (default 1 = per-tensor)")
    p.add_argument("--no-peg-permute", action="store_true",
                   help="PEG: contiguous groups instead of grouping the dimensions by range")
    p.add_argument("--fp32", action="store_true", help="train the floating-point model only")
    p.add_argument("--init-from", help="FP32 checkpoint to fine-tune from (default: train FP32 first)")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--d-model", type=_positive, default=16)
    p.add_argument("--heads", type=_positive, default=1)
    p.add_argument("--layers", type=_positive, default=1)
    p.add_argument("--ffn", type=_positive, default=64)
    p.add_argument("--window", type=_positive,
                   help="window steps (default 24; per dataset for classify/anomaly, where longer series are "
                   "downsampled to fit)")
    p.add_argument("--norm", choices=("batch", "layer"), default="batch")
    p.add_argument("--epochs", type=_positive, help="maximum FP32 epochs (default 60; early stopping on validation)")
    p.add_argument("--qat-epochs", type=_positive, help="maximum QAT epochs (default 20; early stopping)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3; QAT uses a quarter)")
    p.add_argument("--dampen", metavar="LAMBDA",
                   help="QAT: dampen weight oscillations with this maximum regulariser weight (ramped up "
                   "after 25%% of QAT; e.g. 1; default 0 = off)")
    p.add_argument("--freeze", action="store_true",
                   help="QAT: freeze the integer value of weights that oscillate (after 25%% of QAT)")
    p.add_argument("--freeze-threshold", metavar="START:END",
                   help="QAT with --freeze: oscillation frequency above which a weight freezes, annealed "
                   "from START to END (default 0.1:0.01)")
    p.add_argument("--no-bn-reestimate", action="store_true",
                   help="QAT: keep the BatchNorm statistics from training (default: recompute them with the "
                   "final quantized network, kept if the validation loss does not get worse)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("quantize", help="post-training quantization of an FP32 checkpoint (no training)",
                       description="Quantize an FP32 checkpoint without training (Nagel et al. 2021): ranges "
                       "from calibration windows of its training data, optionally cross-layer equalization, "
                       "AdaRound and bias correction. The result takes export, eval and build like a QAT "
                       "checkpoint.")
    p.add_argument("model", help="FP32 checkpoint (.pt), e.g. from 'hwgen train --fp32'")
    p.add_argument("--bits", type=int, choices=range(2, 9), metavar="{2..8}", required=True,
                   help="weight bits")
    p.add_argument("--act-bits", type=int, choices=range(2, 9), metavar="{2..8}",
                   help="activation bits (default: --bits); the residual stream keeps the model's own width")
    p.add_argument("--method", choices=("minmax", "mse", "percentile"),
                   help="range setting: minmax, mse (search the clipping range; the default) or percentile "
                   "(99.99th percentile of |x|)")
    p.add_argument("--cle", action="store_true", help="cross-layer equalization of each FFN pair first")
    p.add_argument("--bias-correction", action="store_true",
                   help="empirical bias correction: b -= (W_q - W) E[x] per layer")
    p.add_argument("--adaround", action="store_true", help="learn each weight's rounding (AdaRound)")
    p.add_argument("--adaround-objective", choices=("layer", "output"),
                   help="AdaRound's error: layer (each layer's own output, the paper's; the default) or "
                   "output (the model's output, through its Gauss-Newton Hessian; better on PM2.5)")
    p.add_argument("--full", action="store_true",
                   help="the full pipeline, best measured on PM2.5: --cle, MSE ranges, --adaround "
                   "--adaround-objective output (hwgen.frontend.ptq.PIPELINES['full'])")
    p.add_argument("--calib-windows", type=_positive, default=1024,
                   help="training windows to calibrate on (default 1024)")
    p.add_argument("--seed", type=int, default=0, help="picks the calibration windows (default 0)")
    p.add_argument("--out", required=True, help="quantized checkpoint to write (.pt)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("export", help="export a QAT checkpoint to the integer IR")
    p.add_argument("model")
    p.add_argument("--out", required=True, help="folder for graph.json and consts.npz")
    p.add_argument("--index-only", action="store_true",
                   help="classifier: return the class index alone (default: the index, then the class scores)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="score FP32, fake-quant and the deployed integer model")
    p.add_argument("model")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("build", help="lower a QAT checkpoint (or an exported graph folder) to Verilog")
    p.add_argument("model", help="QAT checkpoint (.pt) or a folder with graph.json")
    p.add_argument("--board", default="xc7s15", help="board or part (see 'hwgen boards'; default xc7s15)")
    p.add_argument("--parallel", default="auto", help="multipliers working each cycle, or 'auto' (default)")
    p.add_argument("--out", required=True, help="build folder (replaced whole when the build succeeds)")
    p.add_argument("--no-eval", action="store_true", help="skip scoring the model on the test split")
    p.add_argument("--force", action="store_true",
                   help="replace --out even when it is not a previous build folder (never one holding the "
                   "model), and build a --parallel the resource model predicts not to fit")
    p.add_argument("--index-only", action="store_true",
                   help="classifier: the accelerator returns the class index alone (default: the index, then "
                   "the class scores)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("sim", help="simulate a build's Verilog on real test windows; == against golden")
    p.add_argument("build_dir")
    p.add_argument("--simulator", default="verilator", help="verilator (default) or icarus")
    p.add_argument("--windows", default="256", metavar="N|all",
                   help="test windows to simulate, or 'all' for the whole test split (with --inputs: every "
                        "window of the file) (default 256)")
    p.add_argument("--inputs", metavar="FILE.npy",
                   help="simulate these windows ([N, time, features]; floats are quantized with the graph's "
                        "input scale, integers taken as the input integers) instead of the dataset's test windows")
    p.add_argument("--stall", type=float, default=0.0, help="probability of an idle/back-pressure cycle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("estimate", help="Yosys synth_xilinx: resources vs the part, timing proxy, energy")
    p.add_argument("build_dir")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("boards", help="list the parts and boards hwgen targets")
    p.set_defaults(func=cmd_boards)

    p = sub.add_parser("impl", help="open implementation: Yosys, nextpnr place and route, post-route timing and a "
                       "bitstream (ECP5, iCE40, Gowin boards)")
    p.add_argument("build_dir")
    p.add_argument("--board", help="board to implement on (default: the build's; on a Spartan-7 build e.g. "
                   "ulx3s_85f implements the same Verilog on an ECP5 as a proxy)")
    p.add_argument("--clock-mhz", type=float, help="clock target (default: the board's clock)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_impl)

    p = sub.add_parser("vivado", help="run the build's Vivado project (or print the command to run it)")
    p.add_argument("build_dir")
    p.set_defaults(func=cmd_vivado)

    p = sub.add_parser("report", help="summarise a build folder: Markdown on the terminal and a "
                       "self-contained BUILD_DIR/report.html")
    p.add_argument("build_dir")
    p.add_argument("--windows", type=_positive, default=500,
                   help="test windows to predict for the predictions-vs-truth plot (default 500)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("search", help="hardware-aware multi-objective design-space search (Optuna NSGA-II)",
                       description="Search architectures, bit widths and parallelism for low validation MSE, "
                       "latency and LUTs. Resumable: rerun the same command to continue up to --trials. "
                       "Distributed: run it on many machines with one --storage URL (e.g. "
                       "postgresql://user:pass@host/db; its driver psycopg2-binary comes with hwgen).")
    p.add_argument("--dataset", default="pm25", help="built-in dataset (default: pm25)")
    p.add_argument("--trials", type=int, default=40, help="finished trials the study should hold (default 40)")
    p.add_argument("--study", default="runs/search.db", help="SQLite study file (default runs/search.db)")
    p.add_argument("--storage", help="Optuna storage URL instead of --study (shared by many machines)")
    p.add_argument("--study-name", help="study name within the storage (default hwgen-DATASET)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--epochs", type=_positive, default=10, help="FP32 epochs per trial (default 10)")
    p.add_argument("--qat-epochs", type=_positive, default=3, help="QAT epochs per trial (default 3)")
    p.add_argument("--train-windows", type=_positive, default=8192, help="training windows per trial (default 8192)")
    p.add_argument("--val-windows", type=_positive, default=2048, help="validation windows scored (default 2048)")
    p.add_argument("--target", default="xc7s15", help="board or part the design must fit (default xc7s15)")
    p.add_argument("--objectives", default="mse,latency,lut",
                   help="comma-separated, of mse, latency, lut, dsp, energy (default mse,latency,lut)")
    p.add_argument("--space", action="append", metavar="NAME=V1,V2",
                   help="choices of one parameter (window, d_model, heads, layers, ffn, norm, bits_w, bits_a, "
                   "parallel); repeatable")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--verify", type=int, default=0,
                   help="re-check up to N Pareto points with build, simulation and the Yosys estimate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for search.json, trial graphs and verified builds")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_search)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_quiet(getattr(args, "quiet", False))
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return rc
    except HwgenError as exc:
        print(f"hwgen: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hwgen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `hwgen eval ... | head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except OSError as exc:  # e.g. stdout on a full disk (ENOSPC): one line, and no second error at exit
        import os

        if exc.filename is not None:  # a file hwgen reads or writes
            what = f"{exc.filename}: {exc.strerror or exc}"
        else:
            what = f"cannot write the output ({exc.strerror or exc})"
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except OSError:
                pass
        print(f"hwgen: error: {what}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
