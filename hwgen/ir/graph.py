"""The integer-only graph: tensors with integer types, integer constants, nodes in execution order.

A graph is immutable; passes build new graphs. On disk it is ``graph.json`` (readable description: inputs,
nodes, attributes, types, host-side I/O scaling) plus ``consts.npz`` (the integer constants).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from hwgen.errors import HwgenError
from hwgen.ir.types import IntType

FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorType:
    """Shape (without a batch dimension) and integer element type of a value."""

    shape: tuple[int, ...]
    dtype: IntType

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": str(self.dtype)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TensorType:
        return cls(tuple(int(s) for s in obj["shape"]), IntType.parse(obj["dtype"]))


@dataclass(frozen=True)
class Const:
    """An integer constant (weights, biases, multipliers, tables) and its declared type."""

    value: np.ndarray
    dtype: IntType

    def __post_init__(self) -> None:
        arr = np.asarray(self.value)
        if arr.dtype.kind not in "iu":
            raise HwgenError(f"constant of type {arr.dtype} is not integer: the IR holds integers only")
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            # astype(int64) would wrap these around to negative values that may then fit the type
            raise HwgenError(f"constant value {int(arr.max())} does not fit int64 (nor its type "
                             f"{self.dtype})")
        arr = arr.astype(np.int64)
        arr.setflags(write=False)
        object.__setattr__(self, "value", arr)
        if not self.dtype.contains(arr):
            raise HwgenError(f"constant values [{arr.min()}, {arr.max()}] do not fit its type {self.dtype}")


@dataclass(frozen=True)
class Node:
    """One operation. Its output value is named after the node.

    ``inputs`` name graph inputs, outputs of earlier nodes, or constants; ``attrs`` hold integers, booleans
    and names of constants (never arrays or floats).
    """

    op: str
    name: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    out: TensorType

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))

    def with_attrs(self, **changes: Any) -> Node:
        return Node(self.op, self.name, self.inputs, {**self.attrs, **changes}, self.out)


@dataclass(frozen=True)
class Graph:
    """An integer-only computation: one input, nodes in execution order, one output.

    ``meta`` holds host-side information that is not part of the integer computation: the model
    configuration, the input scale (how a host turns real inputs into the input integers) and the output
    scale (how it reads the output integers). Nothing inside the graph uses it.
    """

    input_name: str
    input_type: TensorType
    nodes: tuple[Node, ...]
    consts: Mapping[str, Const]
    output_name: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "consts", MappingProxyType(dict(self.consts)))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def value_type(self, name: str) -> TensorType:
        """The type of a graph input, node output or constant."""
        if name == self.input_name:
            return self.input_type
        for node in self.nodes:
            if node.name == name:
                return node.out
        if name in self.consts:
            c = self.consts[name]
            return TensorType(tuple(c.value.shape), c.dtype)
        raise KeyError(f"no value named {name!r} in the graph")

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node named {name!r} in the graph")

    @property
    def output_type(self) -> TensorType:
        return self.value_type(self.output_name)

    def replace_nodes(self, nodes: list[Node]) -> Graph:
        return Graph(self.input_name, self.input_type, tuple(nodes), self.consts, self.output_name, self.meta)

    # ---- serialisation -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": "hwgen-ir",
            "version": FORMAT_VERSION,
            "meta": _jsonable(dict(self.meta)),
            "input": {"name": self.input_name, **self.input_type.to_json()},
            "output": self.output_name,
            "consts": {
                name: {"dtype": str(c.dtype), "shape": list(c.value.shape)} for name, c in self.consts.items()
            },
            "nodes": [
                {
                    "op": n.op,
                    "name": n.name,
                    "inputs": list(n.inputs),
                    "attrs": _jsonable(dict(n.attrs)),
                    "out": n.out.to_json(),
                }
                for n in self.nodes
            ],
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``graph.json`` and ``consts.npz`` into ``directory`` atomically (temp folder, then rename)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            try:
                text = json.dumps(self.to_json(), indent=1, sort_keys=False, allow_nan=False)
            except ValueError as exc:  # an infinite or NaN number: graph.json is strict JSON
                raise HwgenError(f"graph {self.input_name!r}: cannot write a non-finite number ({exc})") from None
            (tmp / "graph.json").write_text(text + "\n")
            # np.savez writes a zip with fixed timestamps, so equal graphs give identical bytes.
            with open(tmp / "consts.npz", "wb") as fh:
                np.savez(fh, **{name: c.value for name, c in sorted(self.consts.items())})
            if directory.exists():
                for item in ("graph.json", "consts.npz"):
                    (directory / item).unlink(missing_ok=True)
                for item in tmp.iterdir():
                    os.replace(item, directory / item.name)
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Graph:
        """Read a graph written by :meth:`save`; raises HwgenError naming what is missing or corrupt."""
        directory = Path(directory)
        gpath, cpath = directory / "graph.json", directory / "consts.npz"
        for p in (gpath, cpath):
            if not p.is_file():
                raise HwgenError(f"{p}: missing (not a graph folder written by 'hwgen export' or 'hwgen build')")
        try:
            obj = json.loads(gpath.read_text())
        except (OSError, ValueError) as exc:  # ValueError covers JSONDecodeError and UnicodeDecodeError
            raise HwgenError(f"{gpath}: not readable JSON ({exc})") from None
        if not isinstance(obj, dict) or obj.get("format") != "hwgen-ir":
            fmt = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
            raise HwgenError(f"{gpath}: not an hwgen IR file (format {fmt!r})")
        if obj.get("version") != FORMAT_VERSION:
            raise HwgenError(f"{gpath}: IR version {obj.get('version')!r}; this hwgen reads version "
                             f"{FORMAT_VERSION} (export or build the model again)")
        try:
            with np.load(cpath, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            consts = {}
            for name, desc in obj["consts"].items():
                if name not in arrays:
                    raise HwgenError(f"{cpath}: constant {name!r} is missing")
                try:
                    consts[name] = Const(arrays[name], IntType.parse(desc["dtype"]))
                except HwgenError as exc:
                    raise HwgenError(f"{cpath}: constant {name!r}: {exc}") from None
                if list(consts[name].value.shape) != list(desc["shape"]):
                    raise HwgenError(f"{cpath}: constant {name!r} has shape {consts[name].value.shape}, "
                                     f"graph.json says {tuple(desc['shape'])}")
            nodes = [
                Node(n["op"], n["name"], tuple(n["inputs"]), n["attrs"], TensorType.from_json(n["out"]))
                for n in obj["nodes"]
            ]
            graph = cls(
                obj["input"]["name"],
                TensorType.from_json(obj["input"]),
                tuple(nodes),
                consts,
                obj["output"],
                obj.get("meta", {}),
            )
        except HwgenError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, OSError, EOFError,
                zipfile.BadZipFile) as exc:
            raise HwgenError(f"{directory}: corrupt graph ({type(exc).__name__}: {exc})") from None
        from hwgen.ir.verify import verify

        try:
            verify(graph)
        except HwgenError as exc:
            raise HwgenError(f"{gpath}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
            # a tampered attribute of the wrong type or range: graph.json is corrupt
            raise HwgenError(f"{gpath}: corrupt graph ({type(exc).__name__}: {str(exc)[:160]})") from None
        return graph


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, IntType):
        return str(value)
    return value
