"""Where hwgen's data files are: board descriptions, Vivado templates and the cocotb testbenches.

Their sources are the folders ``boards/``, ``rtl_templates/`` and ``sim/`` at the top of the repository;
pyproject.toml (``[tool.setuptools.package-dir]``) maps them into the package, so an installed hwgen holds
them as ``hwgen/boards``, ``hwgen/templates`` and ``hwgen/testbenches``, found with importlib.resources.
Only when running from a source checkout (the package folder does not hold them, a pyproject.toml lies
beside it) are the source folders used. Everything that reads these files asks here.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

from hwgen.errors import HwgenError

# folder inside the installed package -> source folder at the top of a checkout (pyproject.toml maps the same)
FOLDERS = {"boards": "boards", "templates": "rtl_templates", "testbenches": "sim"}
TESTBENCH_PACKAGE = "hwgen.testbenches"


def _folder(name: str) -> Path:
    packaged = resources.files("hwgen").joinpath(name)
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    root = Path(__file__).resolve().parents[1]
    source = root / FOLDERS[name]
    if (root / "pyproject.toml").is_file() and source.is_dir():  # a source checkout
        return source
    raise HwgenError(f"hwgen's data folder {name!r} is missing from its installation "
                     f"(looked for {packaged}): reinstall hwgen from a complete wheel")


def boards_dir() -> Path:
    """The folder of part and board descriptions (``<family>/<name>.toml``)."""
    return _folder("boards")


def templates_dir() -> Path:
    """The folder of jinja2 templates for the Vivado hand-off."""
    return _folder("templates")


def testbenches_dir() -> Path:
    """The folder of the cocotb testbench modules (package :mod:`hwgen.testbenches`)."""
    return _folder("testbenches")


def testbench_module(name: str) -> str:
    """The module name the cocotb runner loads for testbench ``name`` (``"tb_top"``, ``"tb_spi"``): a module
    of the package ``hwgen.testbenches``, which the simulator's Python imports from the same ``sys.path``
    (cocotb's runner passes it on as PYTHONPATH). HwgenError when it is not importable."""
    module = f"{TESTBENCH_PACKAGE}.{name}"
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        raise HwgenError(f"testbench {module} not importable (its source is {testbenches_dir() / name}.py): "
                         f"install hwgen (from a checkout: pip install -e .)")
    return module
