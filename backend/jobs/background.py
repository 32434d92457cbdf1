"""Processes the page starts: the data dir's worker, when none runs (the page owns it: it stops with the page, its
jobs saving a checkpoint and re-queued, and stops by itself if the page is gone), and the first-start demo setup.
A worker started apart (`python app.py worker`, a service) is found and used, and never stopped by the page."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PID_FILE = "worker.pid"
_STARTED: dict[int, subprocess.Popen] = {}
"""The workers this process started, by pid."""


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
    """The pid of this data dir's worker, starting one (in its own session, logging to worker.log, owned by this
    process: see backend.jobs.ownership) if none runs."""
    data_dir = Path(data_dir).resolve()
    pid = worker_pid(data_dir)
    if pid:
        return pid
    from backend.jobs.starter import job_start_mode
    from backend.jobs.ownership import owner_env
    job_start_mode()  # an unknown VRFT_JOB_START stops the page with its sentence, not a silent dead worker
    log = open(data_dir / "worker.log", "ab")
    # Its own session: a Ctrl-C meant for the page reaches the worker only as the page's SIGTERM, once.
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--data-dir", str(data_dir), "worker"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **owner_env()})
    (data_dir / PID_FILE).write_text(str(proc.pid))
    _STARTED[proc.pid] = proc
    return proc.pid


def stop_started_worker(pid: int, say=print) -> bool:
    """Stop the worker this process started as `pid` (a worker it found running is not its to stop): SIGTERM, so
    its jobs save a checkpoint at their next step and their runs are queued again; then wait for it. A Ctrl-C
    meanwhile passes a second signal on (the worker stops at once, runs still re-queued); a third kills it.
    Returns whether there was such a worker."""
    proc = _STARTED.pop(pid, None)
    if proc is None:
        return False
    sent = 0
    while proc.poll() is None and sent < 3:
        if sent == 0:
            say(f"stopping the worker (pid {pid}): running jobs save a checkpoint at their next step and are queued "
                "again; press Ctrl-C again to stop at once")
        try:
            if sent < 2:
                proc.send_signal(signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGKILL)
            sent += 1
            proc.wait()
        except KeyboardInterrupt:
            continue
        except ProcessLookupError:
            break
    proc.wait()
    return True


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
