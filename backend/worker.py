"""The worker: claims queued runs with a lease, runs each in a child process, keeps the lease alive,
enforces cancel, and re-queues runs whose worker or job died.

`python app.py worker [--once] [--lease-seconds 60]`; `python app.py` (serve) starts one too.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select

from backend.runs import now
from backend.training import EXIT_FAILED
from backend.workspace import Workspace
from storage.models import Run

ROOT = Path(__file__).resolve().parent.parent
MAX_ATTEMPTS = 3
"""A run whose job dies this many times (killed, out of memory) fails instead of looping."""
CANCEL_GRACE_SECONDS = 60
LOG_TAIL_CHARS = 4000


def requeue_expired(ws: Workspace) -> list[int]:
    """Runs marked running whose lease ran out (their worker died): back to the queue.

    A job its dead worker left running on this machine is stopped first, so that a run never has
    two jobs writing its checkpoints.
    """
    with ws.store.write() as s:
        runs = s.scalars(select(Run).where(Run.status == "running", or_(Run.lease_expires_at.is_(None),
                                                                        Run.lease_expires_at < now()))).all()
        for run in runs:
            if run.folder:
                stop_orphan_job(ws.data_dir / run.folder)
            _requeue_or_fail(run, "its worker stopped")
        return [r.id for r in runs]


def stop_orphan_job(run_dir: Path) -> None:
    try:
        pid = int((run_dir / "job.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def _requeue_or_fail(run: Run, why: str) -> None:
    run.lease_owner = run.lease_expires_at = None
    if run.cancel_requested:
        run.status, run.finished_at = "cancelled", now()
    elif run.attempts >= MAX_ATTEMPTS:
        run.status, run.finished_at = "failed", now()
        run.error = f"the job stopped {run.attempts} times ({why}); giving up"
    else:
        run.status = "queued"


def claim(ws: Workspace, owner: str, lease_seconds: int) -> int | None:
    """Atomically take the oldest queued run (BEGIN IMMEDIATE on SQLite, SKIP LOCKED on PostgreSQL)."""
    with ws.store.write() as s:
        run = s.scalar(select(Run).where(Run.status == "queued").order_by(Run.id).limit(1)
                       .with_for_update(skip_locked=True))
        if run is None:
            return None
        run.status, run.lease_owner = "running", owner
        run.lease_expires_at = run.heartbeat_at = now()
        run.lease_expires_at += timedelta(seconds=lease_seconds)
        run.attempts += 1
        run.started_at = run.started_at or now()
        return run.id


def heartbeat(ws: Workspace, run_id: int, owner: str, lease_seconds: int) -> bool:
    """Extend the lease; returns whether cancel was requested. False lease = someone else took it."""
    with ws.store.write() as s:
        run = s.get(Run, run_id)
        if run.lease_owner == owner:
            run.heartbeat_at = now()
            run.lease_expires_at = run.heartbeat_at + timedelta(seconds=lease_seconds)
        return run.cancel_requested


def _tail(path: Path) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - LOG_TAIL_CHARS))
        return f.read().decode("utf-8", "replace")


def kill_tree(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class ForkedJob:
    """The job as a forked child of a worker that has already imported torch/transformers/TRL:
    it starts training in about a second instead of re-importing for several."""

    def __init__(self, ws: Workspace, run_id: int, log) -> None:
        log.flush()
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:  # the child: own session (killable as a tree), output to the run's log
            try:
                os.setsid()
                ws.store.engine.dispose(close=False)  # never touch the parent's pooled connections
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
                sys.stdout = os.fdopen(1, "w", buffering=1)
                sys.stderr = os.fdopen(2, "w", buffering=1)
                from backend import training
                code = training.main(["--data-dir", str(ws.data_dir), "--run", str(run_id)])
            except BaseException:  # noqa: BLE001 - the child must never return into the worker loop
                import traceback
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def preload() -> None:
    """Import the training stack once in the worker, so forked jobs start at once."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import backend.training  # noqa: F401


def start_job(ws: Workspace, run_id: int, log):
    if hasattr(os, "fork") and os.environ.get("VRFT_JOB_START", "fork") == "fork":
        return ForkedJob(ws, run_id, log)
    return subprocess.Popen([sys.executable, "-m", "backend.training", "--data-dir", str(ws.data_dir),
                             "--run", str(run_id)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})


def run_one(ws: Workspace, run_id: int, owner: str, lease_seconds: int, poll: float = 1.0) -> None:
    """Run the job's child process to its end, keeping the lease; then settle the run's status."""
    with ws.store.read() as s:
        folder = s.get(Run, run_id).folder
    run_dir = ws.data_dir / folder
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train.log"
    with open(log_path, "ab") as log:
        log.write(f"\n--- attempt started {now().isoformat()} by {owner} ---\n".encode())
        log.flush()
        proc = start_job(ws, run_id, log)
        (run_dir / "job.pid").write_text(str(proc.pid))
        cancel_seen = None
        last_beat = 0.0
        while proc.poll() is None:
            if time.time() - last_beat >= max(1.0, lease_seconds / 3):
                last_beat = time.time()
                if heartbeat(ws, run_id, owner, lease_seconds) and cancel_seen is None:
                    cancel_seen = time.time()
            if cancel_seen is not None and time.time() - cancel_seen > CANCEL_GRACE_SECONDS:
                kill_tree(proc)  # it did not stop at a step boundary in time
            time.sleep(poll)
    code = proc.returncode
    with ws.store.write() as s:
        run = s.get(Run, run_id)
        run.log_tail = _tail(log_path)
        if run.status != "running":
            return  # the job settled itself: completed, cancelled or failed with its sentence
        if run.cancel_requested:
            run.status, run.finished_at = "cancelled", now()
            run.lease_owner = run.lease_expires_at = None
        elif code == EXIT_FAILED or code == 0:
            run.status, run.finished_at = "failed", now()
            run.error = run.error or "the training job ended without a result (see the log)"
        else:  # killed by a signal or crashed: resume from the last checkpoint
            _requeue_or_fail(run, f"exit status {code}")


def work(ws: Workspace, once: bool = False, lease_seconds: int = 60, idle_sleep: float = 0.5,
         stop=lambda: False) -> int:
    """The loop: maintenance, claim, run. `once` drains the queue and returns."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    preload()
    done = 0
    while not stop():
        requeue_expired(ws)
        run_id = claim(ws, owner, lease_seconds)
        if run_id is None:
            if once:
                break
            time.sleep(idle_sleep)
            continue
        run_one(ws, run_id, owner, lease_seconds)
        done += 1
    return done
