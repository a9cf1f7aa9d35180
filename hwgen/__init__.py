"""hwgen: quantization-aware time-series Transformers compiled to verified integer-only FPGA accelerators.

The Python API (README, "Python API"): ``hwgen.convert`` (loads torch and ``hwgen.nn`` when called),
``hwgen.load`` and ``hwgen.Accelerator`` are resolved lazily, so ``import hwgen`` stays light.
"""

__version__ = "0.1.0"

_LAZY = {"convert": "hwgen.nn.convert", "load": "hwgen.accelerator", "Accelerator": "hwgen.accelerator",
         "Build": "hwgen.accelerator"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hwgen' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted([*globals(), *_LAZY])
