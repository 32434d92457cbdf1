"""Shared by the benchmarks: a workspace with the demo dataset, and bare-TRL pieces."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.data.demo.dataset import ensure_demo_dataset  # noqa: E402
from backend.data.workspace import open_workspace  # noqa: E402


def demo_workspace():
    tmp = Path(tempfile.mkdtemp(prefix="vrft-bench-"))
    ws = open_workspace(tmp / "data")
    ensure_demo_dataset(ws.store, ws.data_dir)
    return ws


def train_now(ws, run_id: int) -> int:
    """Claim the queued run as a worker would (so it ends settled, not left queued for the next worker that opens
    this workspace), then run the app's own job in this process; the job's exit status."""
    from backend.jobs import training
    from backend.jobs.leases import claim
    assert claim(ws, "benchmark", 3600) == run_id
    return training.main(["--data-dir", str(ws.data_dir), "--run", str(run_id)])
