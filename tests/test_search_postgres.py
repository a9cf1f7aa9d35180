"""hwgen search on a PostgreSQL storage: two `hwgen search` processes (as on two machines) share one study
through --storage postgresql://...; a third run resumes it and finds it done. Needs a server: the URL in
HWGEN_TEST_POSTGRES_URL (scripts/postgres.sh starts one and prints it; .ci/run does both)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from hwgen.steps.search import SearchSettings, SearchSpace, open_storage, run_search

URL = os.environ.get("HWGEN_TEST_POSTGRES_URL", "")
NO_SERVER = ("no PostgreSQL server: set HWGEN_TEST_POSTGRES_URL=postgresql://... (scripts/postgres.sh starts one "
             "and prints its URL)")
pytestmark = pytest.mark.skipif(not URL, reason=NO_SERVER)

TINY = SearchSpace(window=(8,), d_model=(8,), heads=(1, 2), layers=(1,), ffn=(8, 16), bits_w=(4, 8), bits_a=(8,),
                   parallel=(1, 2))
FAST = SearchSettings(epochs=1, qat_epochs=1, train_windows=256, val_windows=128, space=TINY)
FAST_ARGS = ["--epochs", "1", "--qat-epochs", "1", "--train-windows", "256", "--val-windows", "128",
             "--space", "window=8", "--space", "d_model=8", "--space", "heads=1,2", "--space", "layers=1",
             "--space", "ffn=8,16", "--space", "bits_w=4,8", "--space", "bits_a=8", "--space", "parallel=1,2"]


@pytest.fixture
def study_name():
    """A fresh study in the shared database, deleted afterwards."""
    import optuna

    name = f"hwgen-test-{uuid.uuid4().hex[:12]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=open_storage(URL))
    except KeyError:  # never created
        pass


@pytest.mark.slow  # two `hwgen search` processes importing torch: about 15 s on 2 busy cores
def test_two_machines_share_one_postgres_study(tmp_path, study_name):
    procs = []
    for machine in ("a", "b"):
        log = (tmp_path / f"{machine}.log").open("w")
        cmd = [sys.executable, "-m", "hwgen", "search", "--storage", URL, "--study-name", study_name,
               "--trials", "4", "--out", str(tmp_path / machine), *FAST_ARGS]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        for proc, log in procs:
            proc.wait(timeout=600)
            log.close()
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
    for (proc, _), machine in zip(procs, "ab"):
        assert proc.returncode == 0, (tmp_path / f"{machine}.log").read_text()[-2000:]
    # A third run on the same study (same settings) has nothing left to do and summarises every trial.
    summary = run_search(FAST, 4, tmp_path / "out", storage=URL, study_name=study_name)
    assert summary["run"]["trials_finished"] == 0
    assert summary["storage"].startswith("postgresql://") and URL.rsplit("@", 1)[-1] in summary["storage"]
    finished = [t for t in summary["trials"] if t["state"] == "COMPLETE" or t["failure_kind"]]
    assert len(finished) in (4, 5)  # a worker may start one trial while the other finishes the last
    assert len({t["worker"] for t in finished}) == 2
    assert summary["pareto_front"]
