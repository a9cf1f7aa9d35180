"""Test-session setup."""

from __future__ import annotations


def pytest_configure(config) -> None:
    """One torch thread for the tests that train in this process, as the CLI's torch commands use (the
    machines have 2 cores; oversubscribed OpenMP threads spin). Importing hwgen sets nothing itself."""
    import torch

    torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Every test starts from torch's generator seeded with 0, so a test that draws initial weights or data
    from the global generator gives the same result in any order and any process (torch seeds itself from
    the OS otherwise)."""
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _not_quiet():
    """Every test starts with progress messages on (a test that ran a command with --quiet in the same
    process left them off), so tests that check a command's messages pass in any order."""
    from hwgen import progress

    progress.set_quiet(False)
    yield
