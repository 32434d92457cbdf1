"""Shared fixtures: a fresh data dir with its database for each test."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.data.workspace import open_workspace

ROOT = Path(__file__).resolve().parent.parent


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
