"""The worker: claims queued runs with a lease, runs each in a child process, keeps the lease alive,
enforces cancel, and re-queues runs whose worker or job died.

The worker never imports torch (nor transformers, TRL, PEFT, bitsandbytes) and never touches CUDA: a
process forked after CUDA is initialised cannot use it. Each job is exec'd fresh; a warm standby job
process (`VRFT_JOB_START=standby`, the default) makes it start at once.

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


JOB_START_MODES = ("standby", "spawn")
STANDBY_STOP_SECONDS = 5
STANDBY_RETRY_SECONDS = 60


def job_start_mode() -> str:
    """`VRFT_JOB_START`: "standby" (the default) or "spawn"; anything else is one sentence at worker start."""
    mode = os.environ.get("VRFT_JOB_START", "standby")
    if mode not in JOB_START_MODES:
        raise ValueError(f"VRFT_JOB_START is {mode!r}; it must be 'standby' (the default: a job process kept "
                         "warm) or 'spawn' (a fresh process for each job)")
    return mode


def _job_process(ws: Workspace, args: list[str], **kw) -> subprocess.Popen:
    """`python -m backend.training` in its own session (killable as a tree). The worker itself never imports
    torch or touches CUDA: a fork after CUDA is initialised fails, so every job is exec'd fresh."""
    return subprocess.Popen([sys.executable, "-m", "backend.training", "--data-dir", str(ws.data_dir), *args],
                            cwd=ROOT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}, **kw)


class JobStarter:
    """Starts each claimed run's job process.

    In "standby" mode one job process is kept warm: it has imported the training stack and waits on its
    stdin for a line "RUN_ID LOG_PATH", so a run starts training about a second after its claim. A run
    claimed while no standby is alive gets a fresh `--run ID` process, as in "spawn" mode.
    """

    def __init__(self, ws: Workspace, mode: str) -> None:
        self.ws, self.mode = ws, mode
        self.standby: subprocess.Popen | None = None
        self.started_at = 0.0

    def warm(self) -> None:
        """Start a standby unless one is alive (its output goes to the worker's own until it gets a run).

        One that exited by itself (a broken install fails its imports) is replaced at most once a minute.
        """
        if self.mode != "standby":
            return
        if self.standby is not None:
            if self.standby.poll() is None or time.time() - self.started_at < STANDBY_RETRY_SECONDS:
                return
            print(f"the standby job process exited with status {self.standby.returncode}; starting another",
                  flush=True)
            self._stop(self.standby)
        self.standby = _job_process(self.ws, ["--standby"], stdin=subprocess.PIPE)
        self.started_at = time.time()

    def start(self, run_id: int, log, log_path: Path, warm_next: bool = True) -> subprocess.Popen:
        proc = self._hand_over(run_id, log_path)
        if proc is None:
            proc = _job_process(self.ws, ["--run", str(run_id)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        if warm_next:
            self.warm()
        return proc

    def _hand_over(self, run_id: int, log_path: Path) -> subprocess.Popen | None:
        proc, self.standby = self.standby, None
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.stdin.write(f"{run_id} {log_path}\n".encode())
                proc.stdin.close()
                return proc
            except OSError:  # it died just now: a fresh process instead
                pass
        self._stop(proc)
        return None

    def close(self) -> None:
        """Stop the standby: EOF on its stdin (it exits 0), killed if still there after a few seconds."""
        proc, self.standby = self.standby, None
        if proc is not None:
            self._stop(proc)

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(STANDBY_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            proc.wait()


def run_one(ws: Workspace, run_id: int, owner: str, lease_seconds: int, poll: float = 1.0,
            starter: JobStarter | None = None, warm_next: bool = True) -> None:
    """Run the job's child process to its end, keeping the lease; then settle the run's status.

    `starter` hands the run to its warm standby (then starts the next one unless `warm_next` is false);
    without one the job is a fresh process.
    """
    starter = starter or JobStarter(ws, "spawn")
    with ws.store.read() as s:
        folder = s.get(Run, run_id).folder
    run_dir = ws.data_dir / folder
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train.log"
    with open(log_path, "ab") as log:
        log.write(f"\n--- attempt started {now().isoformat()} by {owner} ---\n".encode())
        log.flush()
        proc = starter.start(run_id, log, log_path, warm_next)
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


def _queue_empty(ws: Workspace) -> bool:
    with ws.store.read() as s:
        return s.scalar(select(Run.id).where(Run.status == "queued").limit(1)) is None


def work(ws: Workspace, once: bool = False, lease_seconds: int = 60, idle_sleep: float = 0.5,
         stop=lambda: False) -> int:
    """The loop: maintenance, claim, run. `once` drains the queue and returns.

    The worker never imports torch: each job is its own process, handed to the warm standby (the
    default) or started fresh (`VRFT_JOB_START=spawn`). With `once`, a standby is kept only while runs
    are queued.
    """
    starter = JobStarter(ws, job_start_mode())
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    done = 0
    try:
        if not once or not _queue_empty(ws):
            starter.warm()
        while not stop():
            requeue_expired(ws)
            run_id = claim(ws, owner, lease_seconds)
            if run_id is None:
                if once:
                    break
                starter.warm()  # replaces one that died
                time.sleep(idle_sleep)
                continue
            run_one(ws, run_id, owner, lease_seconds, starter=starter, warm_next=not once or not _queue_empty(ws))
            done += 1
    finally:
        starter.close()
    return done
