"""Processes the page starts but does not own: the data dir's worker (detached, so restarting the
page never touches a running job) and the first-start demo setup."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PID_FILE = "worker.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b"worker"
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return b"worker" in cmdline


def worker_pid(data_dir: Path) -> int | None:
    try:
        pid = int((Path(data_dir) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def ensure_worker(data_dir: Path) -> int:
    """The pid of this data dir's worker, starting one (detached, logging to worker.log) if none runs."""
    data_dir = Path(data_dir).resolve()
    pid = worker_pid(data_dir)
    if pid:
        return pid
    from backend.jobs.starter import job_start_mode
    job_start_mode()  # an unknown VRFT_JOB_START stops the page with its sentence, not a silent dead worker
    log = open(data_dir / "worker.log", "ab")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--data-dir", str(data_dir), "worker"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    (data_dir / PID_FILE).write_text(str(proc.pid))
    return proc.pid


class DemoSetup:
    """Registers the demo dataset in a thread at first start; the page shows its progress."""

    def __init__(self, ws):
        self.ws, self.state, self.error = ws, "preparing", None
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        from backend.data.demo.dataset import ensure_demo_dataset
        try:
            ensure_demo_dataset(self.ws.store, self.ws.data_dir)
            self.state = "ready"
        except Exception as e:  # noqa: BLE001 - shown on the page
            self.state, self.error = "failed", str(e)

    def message(self) -> str:
        if self.state == "ready":
            return ""
        if self.state == "failed":
            return f"⚠ The demo dataset could not be prepared: {self.error}"
        return "⏳ Preparing the demo dataset `demo-shapes` (first start only)…"
