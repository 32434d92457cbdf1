"""Shared fixtures: a fresh data dir with its database for each test."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.data.workspace import open_workspace

ROOT = Path(__file__).resolve().parent.parent

MAX_WORKERS = 4
"""`-n auto` (pytest.ini) runs this many test processes at most, one per core below that."""


def pytest_xdist_auto_num_workers(config) -> int:
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def pytest_configure(config) -> None:
    """Under xdist each test process, and every process it starts (page, worker, job), gets an equal share of the
    cores as its torch threads: two test processes of two threads each on two cores spent half the CPU spinning."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


@pytest.fixture
def ws(tmp_path):
    os.environ.pop("DATABASE_URL", None)
    workspace = open_workspace(tmp_path / "data")
    yield workspace
    workspace.store.close()


def run_cli(*args: str, data_dir: Path, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python app.py --data-dir DIR ...` as a person would run it."""
    proc = subprocess.run([sys.executable, str(ROOT / "app.py"), "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"app.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def run_job_now(ws, run_id: int) -> int:
    """Claim the queued run as a worker would, then run its job in this process; the job's exit status."""
    from backend.jobs.training import claim_and_run
    return claim_and_run(ws, run_id, "test-worker")
