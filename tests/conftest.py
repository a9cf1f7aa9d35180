"""Test-session setup."""

from __future__ import annotations


def pytest_configure(config) -> None:
    """One torch thread for the tests that train in this process, as the CLI's torch commands use (the
    machines have 2 cores; oversubscribed OpenMP threads spin). Importing hwgen sets nothing itself."""
    import torch

    torch.set_num_threads(1)
