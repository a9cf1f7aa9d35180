"""The ``hwgen`` command line. Every command prints one line ``hwgen: error: ...`` and exits 1 on bad input."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from hwgen.errors import HwgenError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hwgen import flow
    from hwgen.frontend.model import ModelConfig
    from hwgen.frontend.train import TrainOptions

    if args.fp32 == (args.bits is not None):
        raise HwgenError("give exactly one of --bits N (quantization-aware training) or --fp32")
    features = args.features.split(",") if args.features else None
    data = flow.load_data(args.dataset, args.csv, args.target, features, args.window)
    cfg = ModelConfig(features=len(data.features), window=data.window, d_model=args.d_model, heads=args.heads,
                      layers=args.layers, ffn=args.ffn, norm=args.norm).validate()
    defaults = TrainOptions()
    opts = TrainOptions(epochs=args.epochs or defaults.epochs, qat_epochs=args.qat_epochs or defaults.qat_epochs,
                        seed=args.seed, lr=args.lr or defaults.lr, progress=not args.quiet)
    print(f"data: {data.name}: {len(data.train.x)}/{len(data.val.x)}/{len(data.test.x)} windows "
          f"(train/val/test), {sum(data.dropped.values())} dropped for missing values", file=sys.stderr)
    command = "hwgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    cfg = replace(cfg, bits_res=args.res_bits)
    info = flow.train(data, cfg, opts, args.out, args.bits, args.init_from, args.csv, command,
                      act_bits=args.act_bits)
    parts = [f"fp32 val mse {info['fp32']['val_mse']:.4f}"]
    if "qat" in info:
        parts.append(f"qat val mse {info['qat']['val_mse']:.4f}")
    print(f"saved {args.out} ({', '.join(parts)}, {info['seconds']:.0f} s)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hwgen import flow

    graph = flow.export(args.model, args.out)
    print(f"wrote {args.out}/graph.json and consts.npz: {len(graph.nodes)} nodes, "
          f"{sum(c.value.size for c in graph.consts.values())} integer constants")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from hwgen import flow

    result = flow.evaluate(args.model, args.split)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    print(f"{result['model']} on the {result['split']} split ({result['windows']} windows)")
    print(f"{'model':<12}{'MSE':>10}{'MAE':>10}{'MSE (units²)':>16}{'MAE (units)':>14}")
    for key in ("fp32", "fake_quant", "integer"):
        if key in result:
            m = result[key]
            print(f"{key:<12}{m['mse']:>10.4f}{m['mae']:>10.4f}{m['mse_units']:>16.2f}{m['mae_units']:>14.3f}")
    if "fake_quant_vs_integer" in result:
        d = result["fake_quant_vs_integer"]
        print(f"fake-quant vs integer: {100 * d['fraction_differ']:.2f}% of outputs differ, "
              f"at most {d['max_lsb']} LSB")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from hwgen.build import build

    report = build(args.model, args.out, args.board, args.parallel, with_accuracy=not args.no_eval)
    hw = report["hardware"]
    print(f"{args.out}: {hw['parallel']} multipliers, {hw['latency_cycles']} cycles per inference "
          f"({hw['latency_us']:.1f} us at {hw['clock_mhz']:g} MHz; DSP bound {hw['dsp_bound_cycles']} cycles)")
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from hwgen.build import simulate_build

    sim = simulate_build(args.build_dir, args.simulator, args.windows, args.stall, args.seed)
    print(f"{args.build_dir}: bit-exact on {sim['windows']} windows ({sim['simulator']}), "
          f"{sim['cycles_per_inference']:.0f} cycles per inference, {sim['sim_cycles_per_s']:.0f} simulated cycles/s")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from hwgen.build import estimate_build

    estimate_build(args.build_dir)
    return 0


def cmd_boards(args: argparse.Namespace) -> int:
    from hwgen.estimate.boards import list_boards, list_parts, load_board, load_part

    print(f"{'name':<26}{'part':<20}{'LUT':>7}{'DSP':>5}{'BRAM36':>8}{'clock':>8}")
    for name in list_parts():
        p = load_part(name)
        r = p.resources
        print(f"{name:<26}{p.default_part:<20}{r.lut:>7}{r.dsp:>5}{r.bram36:>8}{'':>8}")
    for name in list_boards():
        b = load_board(name)
        r = b.device.resources
        print(f"{name:<26}{b.part:<20}{r.lut:>7}{r.dsp:>5}{r.bram36:>8}{b.clock_mhz:>5g} MHz")
    return 0


def cmd_vivado(args: argparse.Namespace) -> int:
    from hwgen.build import vivado_build

    vivado_build(args.build_dir)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hwgen.summary import summary_markdown

    print(summary_markdown(args.build_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwgen", description="Compile quantization-aware time-series Transformers into verified integer-only "
        "FPGA accelerators. On bad input every command prints one line 'hwgen: error: ...' and exits 1.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (FP32, or QAT at N bits)")
    p.add_argument("--dataset", default="pm25", help="built-in dataset (default: pm25)")
    p.add_argument("--csv", help="train on your own CSV of numeric columns instead")
    p.add_argument("--target", help="target column of --csv (forecast one step ahead)")
    p.add_argument("--features", help="comma-separated input columns of --csv (default: all numeric)")
    p.add_argument("--bits", type=int, choices=range(2, 9), metavar="{2..8}", help="QAT weight/activation bits")
    p.add_argument("--act-bits", type=int, choices=range(2, 9), metavar="{2..8}",
                   help="activation bits (default: --bits); the residual stream has --res-bits")
    p.add_argument("--res-bits", type=int, choices=range(2, 17), metavar="{2..16}", default=12,
                   help="bits of the residual stream (embedding, residual adds, norms; default 12)")
    p.add_argument("--fp32", action="store_true", help="train the floating-point model only")
    p.add_argument("--init-from", help="FP32 checkpoint to fine-tune from (default: train FP32 first)")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--d-model", type=_positive, default=16)
    p.add_argument("--heads", type=_positive, default=1)
    p.add_argument("--layers", type=_positive, default=1)
    p.add_argument("--ffn", type=_positive, default=64)
    p.add_argument("--window", type=_positive, default=24)
    p.add_argument("--norm", choices=("batch", "layer"), default="batch")
    p.add_argument("--epochs", type=_positive, help="maximum FP32 epochs (default 60; early stopping on validation)")
    p.add_argument("--qat-epochs", type=_positive, help="maximum QAT epochs (default 20; early stopping)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3; QAT uses a quarter)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export a QAT checkpoint to the integer IR")
    p.add_argument("model")
    p.add_argument("--out", required=True, help="folder for graph.json and consts.npz")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="score FP32, fake-quant and the deployed integer model")
    p.add_argument("model")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("build", help="lower a QAT checkpoint (or an exported graph folder) to Verilog")
    p.add_argument("model", help="QAT checkpoint (.pt) or a folder with graph.json")
    p.add_argument("--board", default="xc7s15", help="board or part (see 'hwgen boards'; default xc7s15)")
    p.add_argument("--parallel", default="auto", help="multipliers working each cycle, or 'auto' (default)")
    p.add_argument("--out", required=True, help="build folder (replaced whole when the build succeeds)")
    p.add_argument("--no-eval", action="store_true", help="skip scoring the model on the test split")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("sim", help="simulate a build's Verilog on real test windows; == against golden")
    p.add_argument("build_dir")
    p.add_argument("--simulator", default="verilator", help="verilator (default) or icarus")
    p.add_argument("--windows", type=_positive, default=256, help="test windows to simulate (default 256)")
    p.add_argument("--stall", type=float, default=0.0, help="probability of an idle/back-pressure cycle")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("estimate", help="Yosys synth_xilinx: resources vs the part, timing proxy, energy")
    p.add_argument("build_dir")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("boards", help="list the parts and boards hwgen targets")
    p.set_defaults(func=cmd_boards)

    p = sub.add_parser("vivado", help="run the build's Vivado project (or print the command to run it)")
    p.add_argument("build_dir")
    p.set_defaults(func=cmd_vivado)

    p = sub.add_parser("report", help="summarise a build folder (Markdown on the terminal)")
    p.add_argument("build_dir")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HwgenError as exc:
        print(f"hwgen: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hwgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
