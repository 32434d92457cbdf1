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
