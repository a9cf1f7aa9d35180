"""Graph capture: ``convert(model, example_input)`` traces a model built from hwgen.nn layers with
``torch.fx`` (the hwgen.nn layers as leaves), maps every call to IR ops through ``GraphBuilder``, and checks
that the model's quantized forward equals the golden interpreter on every element of every value it maps
(the example input, and calibration data when given) before it returns an ``hwgen.Accelerator``.

Anything it cannot map is refused in one line naming the module path (or function) and the source line.
"""

from __future__ import annotations

import operator
import re
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from hwgen.errors import HwgenError
from hwgen.golden import run as golden_run
from hwgen.ir.builder import GraphBuilder
from hwgen.ir.graph import Graph
from hwgen.nn.layers import QuantAct, QuantModule, QuantMultiheadAttention, QuantReLU, Value
from hwgen.nn.quant import TAG, QInfo

PASS_THROUGH = (nn.Identity,)
RELU_FUSES = ("linear", "conv1d")  # the ops with a relu flag a QuantReLU right after them becomes
CHECK_BATCH = 256  # windows per forward pass of the exact check
# torch.nn modules users reach for, and what to use instead (None: no equivalent op on the accelerator yet)
SUGGEST = {
    nn.Linear: "hwgen.nn.QuantLinear",
    nn.Conv1d: "hwgen.nn.QuantConv1d (channels-last: [batch, time, channels])",
    nn.ReLU: "hwgen.nn.QuantReLU",
    nn.GELU: "hwgen.nn.QuantGELU",
    nn.SiLU: "hwgen.nn.QuantSiLU",
    nn.Sigmoid: "hwgen.nn.QuantSigmoid",
    nn.Tanh: "hwgen.nn.QuantTanh",
    nn.LayerNorm: "hwgen.nn.QuantLayerNorm",
    nn.BatchNorm1d: "hwgen.nn.QuantBatchNorm1d",
    nn.MultiheadAttention: "hwgen.nn.QuantMultiheadAttention",
    nn.AdaptiveAvgPool1d: "hwgen.nn.QuantMeanPool",
    nn.AvgPool1d: "hwgen.nn.QuantMeanPool (the mean over all time steps)",
    nn.AdaptiveMaxPool1d: "hwgen.nn.QuantMaxPool (the maximum over all time steps)",
    nn.MaxPool1d: "hwgen.nn.QuantMaxPool(kernel_size) (channels-last, stride = kernel)",
}
FUNCTION_SUGGEST = {
    "operator.add": "hwgen.nn.QuantAdd", "torch.add": "hwgen.nn.QuantAdd", "Tensor.add": "hwgen.nn.QuantAdd",
    "torch.relu": "hwgen.nn.QuantReLU", "torch.nn.functional.relu": "hwgen.nn.QuantReLU",
    "Tensor.relu": "hwgen.nn.QuantReLU", "torch.nn.functional.gelu": "hwgen.nn.QuantGELU",
    "torch.nn.functional.silu": "hwgen.nn.QuantSiLU", "torch.sigmoid": "hwgen.nn.QuantSigmoid",
    "Tensor.sigmoid": "hwgen.nn.QuantSigmoid", "torch.tanh": "hwgen.nn.QuantTanh", "Tensor.tanh": "hwgen.nn.QuantTanh",
    "torch.mean": "hwgen.nn.QuantMeanPool", "Tensor.mean": "hwgen.nn.QuantMeanPool",
    "torch.amax": "hwgen.nn.QuantMaxPool", "Tensor.amax": "hwgen.nn.QuantMaxPool", "torch.max": "hwgen.nn.QuantMaxPool",
    "Tensor.max": "hwgen.nn.QuantMaxPool",
    "torch.nn.functional.linear": "hwgen.nn.QuantLinear", "torch.nn.functional.conv1d": "hwgen.nn.QuantConv1d",
    "torch.conv1d": "hwgen.nn.QuantConv1d", "torch.cat": "hwgen.nn.QuantCat",
    "torch.concat": "hwgen.nn.QuantCat", "torch.concatenate": "hwgen.nn.QuantCat",
    "torch.nn.functional.layer_norm": "hwgen.nn.QuantLayerNorm",
}


class _Tracer(fx.Tracer):
    """Keeps hwgen.nn layers (and torch.nn's own modules, as fx does by default) as leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantModule) or super().is_leaf_module(m, qualname)


def _where(node: fx.Node) -> str:
    """'file.py:LINE' of the model code that made ``node`` (from fx's recorded stack trace)."""
    lines = (node.stack_trace or "").splitlines()
    frames = []  # (file, line, code) of the frames outside torch
    for i, text in enumerate(lines):
        found = re.search(r'File "([^"]+)", line (\d+)', text)
        if found and not re.search(r"[/\\]torch[/\\]", found.group(1)):
            code = lines[i + 1].strip() if i + 1 < len(lines) and "File " not in lines[i + 1] else ""
            frames.append((found.group(1), found.group(2), code))
    if not frames:
        return ""
    path, line, code = frames[-1]
    return f" (at {path.rsplit('/', 1)[-1]}:{line}{': ' + code if code else ''})"


def _qualname(obj) -> str:
    if isinstance(obj, str):
        return f"Tensor.{obj}"
    mod = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__name__", repr(obj))
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    if mod.startswith("torch._C") or mod == "torch.functional":
        mod = "torch"
    return f"{mod}.{name}" if mod else name


def _class_name(m: nn.Module) -> str:
    cls = type(m)
    mod = cls.__module__
    if mod.startswith("torch.nn.modules"):
        mod = "torch.nn"
    return f"{mod}.{cls.__qualname__}"


def _refuse_module(path: str, m: nn.Module, node: fx.Node):
    hint = next((v for k, v in SUGGEST.items() if type(m) is k), None)
    if isinstance(m, nn.Dropout):
        what = "is not supported between quantized layers (it would change the integers); remove it"
    elif hint:
        what = f"is not quantized; use {hint}"
    else:
        what = ("has no integer op on the accelerator (supported: the hwgen.nn layers "
                "QuantLinear, QuantConv1d, QuantReLU, QuantAdd, QuantLayerNorm, QuantBatchNorm1d, QuantMultiheadAttention, "
                "QuantAct, SinusoidalPositionalEncoding, LearnedPositionalEncoding, QuantMeanPool, QuantMaxPool, "
                "QuantLastStep, QuantCat, QuantGELU, QuantSiLU, QuantSigmoid, QuantTanh)")
    raise HwgenError(f"model.{path}: {_class_name(m)} {what}{_where(node)}")


def _refuse_function(node: fx.Node, what: str = ""):
    name = _qualname(node.target)
    if name in ("operator.getitem", "Tensor.__getitem__", "Tensor.select", "Tensor.narrow"):
        what = what or ("(slicing) is not mapped: its result carries no integers; read out the last time "
                        "step with hwgen.nn.QuantLastStep (x[:, -1]) or pool with QuantMeanPool or QuantMaxPool")
    hint = FUNCTION_SUGGEST.get(name)
    what = what or (f"is not quantized; use {hint}" if hint else
                    "has no integer op on the accelerator: compose hwgen.nn layers only")
    raise HwgenError(f"model: {name} {what}{_where(node)}")


class Capture:
    """A traced model and the mapping of its fx nodes to the values of the integer graph it builds."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        if not isinstance(model, nn.Module):
            raise HwgenError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        self.model = model
        self.example = _batch(example, "example_input")
        for name, m in model.named_modules():
            if isinstance(m, QuantModule):
                m._hwgen_path = f"model.{name}" if name else "model"
        try:
            self.gm = fx.GraphModule(model, _Tracer().trace(model))
        except Exception as exc:  # noqa: BLE001 (any tracing failure is the model's: one line)
            raise HwgenError(f"model: torch.fx cannot trace {type(model).__name__}.forward "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        self.modules = dict(self.gm.named_modules())
        self.node_values: dict[str, str] = {}  # fx node name -> the graph value it computes

    # ---- running the model ----------------------------------------------------------------------------
    def record(self, x: torch.Tensor) -> dict[str, QInfo]:
        """Run the traced model on ``x`` (eval mode, no gradients): the tag of every fx node's output."""
        tags: dict[str, QInfo] = {}
        cap = self

        class _Recorder(fx.Interpreter):
            def run_node(self, n):
                out = super().run_node(n)
                if n.op == "call_module" and isinstance(cap.modules.get(n.target), QuantMultiheadAttention):
                    t = out[0] if isinstance(out, tuple) else out
                    for part, info in getattr(t, "_hwgen_parts", {}).items():
                        tags[f"{n.name}.{part}"] = info
                else:
                    t = out
                info = getattr(t, TAG, None) if isinstance(t, torch.Tensor) else None
                if info is not None:
                    tags[n.name] = info
                return out

        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                _Recorder(self.gm).run(x)
        except HwgenError as exc:  # fx's interpreter appends the node and the traceback: keep the first line
            raise HwgenError(str(exc).splitlines()[0]) from None
        except Exception as exc:  # noqa: BLE001 (the model's own forward failing: one line)
            raise HwgenError(f"model: the forward pass failed on the input of shape {tuple(x.shape)} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        finally:
            self.model.train(was)
        return tags

    # ---- building the graph ---------------------------------------------------------------------------
    def vet(self) -> None:
        """Refuse, before running anything, every call that has no integer op (named, with its line), and a
        model input that does not go into one input quantizer."""
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise HwgenError(f"model: forward takes {len(placeholders)} inputs; convert takes models of one "
                             "input window [batch, time, features]")
        (inp,) = placeholders
        users = list(inp.users)
        first = self.modules.get(users[0].target) if len(users) == 1 and users[0].op == "call_module" else None
        if not isinstance(first, QuantAct):
            raise HwgenError(f"model: the input {inp.name!r} must go into one hwgen.nn.QuantAct (the input "
                             f"quantizer) first{_where(users[0]) if users else ''}")
        if not first.dtype.signed or first.dtype.bits > 8:
            raise HwgenError(f"{first.who()}: the input quantizer must be signed with at most 8 bits, "
                             f"not {first.dtype}")
        for n in self.gm.graph.nodes:
            if n.op in ("placeholder", "output"):
                continue
            if n.op == "call_module":
                m = self.modules[n.target]
                if not isinstance(m, (QuantModule, *PASS_THROUGH)):
                    _refuse_module(n.target, m, n)
                if isinstance(m, QuantModule) and not m.quantized:
                    raise HwgenError(f"model.{n.target} ({type(m).__name__}): is in float mode; switch quantization on "
                                     "with hwgen.nn.set_quantized(model, True) and run calibration windows through "
                                     f"the model first{_where(n)}")
            elif n.op == "call_function" and n.target is operator.getitem:
                src = n.args[0]
                if not (isinstance(src, fx.Node) and src.op == "call_module"
                        and isinstance(self.modules.get(src.target), QuantMultiheadAttention)):
                    _refuse_function(n)
            elif n.op in ("call_function", "call_method"):
                _refuse_function(n)
            elif n.op == "get_attr":
                raise HwgenError(f"model.{n.target}: a parameter or buffer used outside an hwgen.nn layer"
                                 f"{_where(n)}")

    def build(self, finish=None) -> Graph:
        """The integer graph of the model (its quantizers calibrated on the example input if never run).
        ``finish(builder, output_value, meta)``, when given, completes and returns the graph instead of
        ``builder.finish`` (a task head after the model's output, its own metadata)."""
        self.vet()
        nodes = list(self.gm.graph.nodes)
        (inp,) = [n for n in nodes if n.op == "placeholder"]
        users = list(inp.users)
        tags = self.record(self.example)  # calibrates uninitialised scales, then the scales every value has
        info = tags[users[0].name]
        shape = tuple(self.example.shape[1:])
        b = GraphBuilder("x", shape, info.dtype)
        values: dict[str, Value] = {users[0].name: Value("x", info.scale, info.dtype, shape)}
        self.node_values = {users[0].name: "x"}
        consumers = {n.name: len(n.users) for n in nodes}
        calls: dict[str, int] = {}
        output = None
        for n in nodes:
            if n.op == "placeholder" or n.name in values:
                continue
            if n.op == "output":
                arg = n.args[0]
                if not isinstance(arg, fx.Node) or arg.name not in values:
                    raise HwgenError("model: forward must return one tensor computed by hwgen.nn layers"
                                     f"{_where(n)}")
                output = values[arg.name]
                out_node = arg
                continue
            if n.op == "call_module":
                m = self.modules[n.target]
                path = f"model.{n.target}"
                if isinstance(m, PASS_THROUGH):
                    values[n.name] = self._arg(values, n, n.args[0])
                    continue
                if not isinstance(m, QuantModule):
                    _refuse_module(n.target, m, n)
                if n.kwargs and not isinstance(m, QuantMultiheadAttention):
                    raise HwgenError(f"{path}: pass its tensors positionally, not as {', '.join(n.kwargs)}"
                                     f"{_where(n)}")
                args = [self._arg(values, n, a) for a in n.args]
                if any(isinstance(v, Value) is False for v in args):
                    raise HwgenError(f"{path}: takes tensors from hwgen.nn layers only{_where(n)}")
                if isinstance(m, QuantMultiheadAttention):
                    args = args[:1]
                calls[n.target] = calls.get(n.target, 0) + 1  # a module called again: its own nodes
                base = getattr(m, "graph_name", None) or n.target  # the node's name: the module path by default
                name = base if calls[n.target] == 1 else f"{base}.call{calls[n.target]}"
                try:
                    if isinstance(m, QuantReLU):
                        values[n.name] = self._relu(b, m, n, args[0], consumers)
                    elif isinstance(m, QuantAct) and n.name not in tags:
                        raise HwgenError(f"{path}: its input is not quantized{_where(n)}")
                    else:
                        values[n.name] = m.export(b, name, args)
                except HwgenError:
                    raise
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    raise HwgenError(f"{path}: cannot be exported ({type(exc).__name__}: {exc}){_where(n)}") from None
                if isinstance(m, QuantMultiheadAttention):
                    self.node_values.update({f"{n.name}.{p}": f"{name}.{p}" for p in m.PARTS})
                self.node_values[n.name] = values[n.name].name
                continue
            if n.op == "call_function" and n.target is operator.getitem:
                src = n.args[0]
                if (isinstance(src, fx.Node) and src.op == "call_module"
                        and isinstance(self.modules.get(src.target), QuantMultiheadAttention)):
                    if not n.users:  # `out, _ = attn(x, x, x)`: the unused weights
                        continue
                    if n.args[1] == 0:
                        values[n.name] = values[src.name]
                        self.node_values[n.name] = values[n.name].name
                        continue
                    raise HwgenError(f"model.{src.target}: its attention weights (output {n.args[1]}) are not "
                                     f"available on the accelerator{_where(n)}")
            if n.op == "call_function":
                _refuse_function(n)
            if n.op == "call_method":
                _refuse_function(n)
            if n.op == "get_attr":
                raise HwgenError(f"model.{n.target}: a parameter or buffer used outside an hwgen.nn layer"
                                 f"{_where(n)}")
            raise HwgenError(f"model: cannot map fx node {n.name!r} ({n.op}){_where(n)}")
        if output is None:
            raise HwgenError("model: forward returns nothing")
        meta = {
            "model": type(self.model).__name__,
            "source": "hwgen.nn",
            "config": _summary(self.model, b, output.name),
            "input_scale": [float(v) for v in np.broadcast_to(values[users[0].name].scale, (shape[-1],))],
            "output_scale": float(output.scale),
            "output_shape": list(tags[out_node.name].ints.shape[1:]),
        }
        self.output_node = out_node.name
        return b.finish(output.name, meta) if finish is None else finish(b, output, meta)

    @staticmethod
    def _arg(values: dict[str, Value], n: fx.Node, a: Any):
        if isinstance(a, fx.Node):
            if a.name not in values:
                raise HwgenError(f"model: {n.target}: its input {a.name!r} is not a quantized value{_where(n)}")
            return values[a.name]
        return a

    def _relu(self, b: GraphBuilder, m: QuantReLU, n: fx.Node, x: Value, consumers: dict[str, int]) -> Value:
        """A QuantReLU becomes the relu flag of the linear or conv1d node right before it (its only consumer)."""
        src = n.args[0]
        last = b.nodes[-1] if b.nodes else None
        if (last is None or last.name != x.name or last.op not in RELU_FUSES
                or consumers.get(src.name, 0) != 1):
            raise HwgenError(f"{m.who()}: must directly follow a QuantLinear or QuantConv1d whose output nothing "
                             f"else reads (the accelerator fuses ReLU into that layer){_where(n)}")
        b.nodes[-1] = last.with_attrs(relu=True)
        self.node_values.pop(src.name, None)  # the linear's own (pre-ReLU) output is no graph value now
        return x

    # ---- the exact check ------------------------------------------------------------------------------
    def check(self, graph: Graph, inputs: list[torch.Tensor]) -> int:
        """Refuse, naming the first graph value that differs, unless the model's quantized forward equals the
        golden interpreter on every element of every mapped value for every input batch. Returns the number
        of windows checked."""
        order = {n.name: i for i, n in enumerate(graph.nodes)}
        order["x"] = -1
        total = 0
        for x in inputs:
            tags = self.record(x)
            xi = tags[next(k for k, v in self.node_values.items() if v == "x")].numpy()
            env = golden_run(graph, xi, return_all=True)
            first = None
            for fx_name, value in self.node_values.items():
                got, want = tags.get(fx_name), env[value]
                if got is None:
                    raise HwgenError(f"model: value {value!r} carried no integers in the forward pass")
                g = got.numpy().reshape(len(xi), -1)
                w = np.asarray(want).reshape(len(xi), -1)
                if g.shape != w.shape or not np.array_equal(g, w):
                    if first is None or order[value] < order[first[0]]:
                        first = (value, g, w)
            if first is not None:
                value, g, w = first
                if g.shape != w.shape:
                    raise HwgenError(f"node {value!r}: the quantized forward gives shape {g.shape[1:]} per window, "
                                     f"the integer graph {w.shape[1:]}")
                win, el = (int(i[0]) for i in np.nonzero(g != w))
                raise HwgenError(f"node {value!r}: the quantized torch forward differs from the integer graph "
                                 f"({int((g != w).sum())} elements; first: window {total + win}, element {el}, "
                                 f"torch {int(g[win, el])}, graph {int(w[win, el])}); refusing to export")
            total += len(xi)
        return total


def _summary(model: nn.Module, b: GraphBuilder, output: str) -> dict[str, Any]:
    """What the build report shows of a model (the reference model's configuration keys)."""
    attn = [m for m in model.modules() if isinstance(m, QuantMultiheadAttention)]
    linears = [n for n in b.nodes if n.op in RELU_FUSES]  # the weighted layers
    inner = [n.out.dtype.bits for n in linears if n.name != output]
    return {
        "d_model": attn[0].embed_dim if attn else (linears[0].out.shape[-1] if linears else None),
        "heads": max((m.num_heads for m in attn), default=None),
        "layers": len(attn),
        "bits_w": max((b.consts[n.attrs["weight"]].dtype.bits for n in linears), default=None),
        "bits_a": max(inner, default=None),
    }


def _batch(x, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if not t.is_floating_point():
        raise HwgenError(f"{what}: must be a float tensor [batch, time, features], not {t.dtype}")
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or 0 in t.shape:
        raise HwgenError(f"{what}: must be [batch, time, features] (or one window [time, features]), "
                         f"not shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise HwgenError(f"{what}: holds NaN or infinite values")
    return t.float()
