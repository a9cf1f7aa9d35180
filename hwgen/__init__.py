"""hwgen: quantization-aware time-series Transformers compiled to verified integer-only FPGA accelerators."""

__version__ = "0.1.0"
