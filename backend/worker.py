"""The worker: claims queued runs with a lease, runs each in a child process, keeps the lease alive,
enforces cancel, and re-queues runs whose worker or job died.

The worker never imports torch (nor transformers, TRL, PEFT, bitsandbytes) and never touches CUDA: a
process forked after CUDA is initialised cannot use it. Each job is exec'd fresh; a warm standby job
process (`VRFT_JOB_START=standby`, the default) makes it start at once.

One job runs per job slot at once: a slot per GPU (`--gpus 0,1`; by default CUDA_VISIBLE_DEVICES, else every
GPU `nvidia-smi -L` lists), each job and each slot's standby seeing only its GPU; without a GPU one slot, the
CPU. A run with num_gpus > 1 takes that many free slots and starts with `accelerate launch`.

`python app.py worker [--once] [--lease-seconds 60] [--gpus 0,1]`; `python app.py` (serve) starts one too.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, select

from backend.gpus import accelerate_config, gpus_needed, launch_command, visible_gpus
from backend.runs import get_run, now
from backend.settings import TrainSettings
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
    """Kill the job recorded in `run_dir` if it was started on this machine (job.host: with a shared data dir,
    a pid from another host names some other process here)."""
    try:
        host = (run_dir / "job.host").read_text().strip() if (run_dir / "job.host").exists() else None
        if host is not None and host != socket.gethostname():
            return
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


CLAIM_WINDOW = 50
"""Queued runs a claim looks at, oldest first."""


def claim(ws: Workspace, owner: str, lease_seconds: int, free: int = 1, total: int = 1) -> int | None:
    """Atomically take the oldest queued run this worker can start now (BEGIN IMMEDIATE on SQLite, SKIP LOCKED
    on PostgreSQL), with `free` of its `total` job slots idle. A run needing more GPUs than the worker has is
    left for another worker; one needing more than are free now holds back the runs behind it, so that it is
    not starved: the worker takes nothing until its running jobs free enough slots."""
    with ws.store.write() as s:
        queued = s.scalars(select(Run).where(Run.status == "queued").order_by(Run.id).limit(CLAIM_WINDOW)
                           .with_for_update(skip_locked=True)).all()
        run = None
        for candidate in queued:
            need = gpus_needed(candidate.settings or {})
            if need > total:
                continue
            if need > free:
                return None
            run = candidate
            break
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


def _job_env(extra: dict | None = None) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **(extra or {})}


def _job_process(ws: Workspace, args: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
    """`python -m backend.training` in its own session (killable as a tree), with `env` added to the worker's
    environment. The worker itself never imports torch or touches CUDA: a fork after CUDA is initialised
    fails, so every job is exec'd fresh."""
    return subprocess.Popen([sys.executable, "-m", "backend.training", "--data-dir", str(ws.data_dir), *args],
                            cwd=ROOT, start_new_session=True, env=_job_env(env), **kw)


class JobStarter:
    """Starts each claimed run's job process (with `env`, such as its slot's CUDA_VISIBLE_DEVICES).

    In "standby" mode one job process is kept warm: it has imported the training stack and waits on its
    stdin for a line "RUN_ID LOG_PATH", so a run starts training about a second after its claim. A run
    claimed while no standby is alive gets a fresh `--run ID` process, as in "spawn" mode.
    """

    def __init__(self, ws: Workspace, mode: str, env: dict | None = None) -> None:
        self.ws, self.mode, self.env = ws, mode, env
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
        self.standby = _job_process(self.ws, ["--standby"], self.env, stdin=subprocess.PIPE)
        self.started_at = time.time()

    def start(self, run_id: int, log, log_path: Path, warm_next: bool = True) -> subprocess.Popen:
        proc = self._hand_over(run_id, log_path)
        if proc is None:
            proc = _job_process(self.ws, ["--run", str(run_id)], self.env, stdout=log, stderr=subprocess.STDOUT,
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


@dataclass
class Job:
    """A claimed run's job process while it runs: what the worker keeps to renew its lease and enforce cancel."""
    run_id: int
    proc: subprocess.Popen
    log_path: Path
    slots: list["Slot"]
    last_beat: float = 0.0
    cancel_seen: float | None = None


@dataclass
class Slot:
    """Room for one job: a GPU of this worker (`gpu`, the CUDA_VISIBLE_DEVICES its jobs and standby get) or,
    with none, the machine (gpu None). `job` is the run it is busy with."""
    gpu: str | None
    starter: JobStarter
    job: Job | None = field(default=None, repr=False)


def make_slots(ws: Workspace, mode: str, gpus: list[str]) -> list[Slot]:
    """One slot per GPU, each starting its jobs with CUDA_VISIBLE_DEVICES=<its GPU>; without GPUs one slot."""
    return ([Slot(g, JobStarter(ws, mode, {"CUDA_VISIBLE_DEVICES": g})) for g in gpus]
            or [Slot(None, JobStarter(ws, mode))])


def start_job(ws: Workspace, run_id: int, owner: str, slots: list[Slot], warm_next: bool = True) -> Job:
    """Start the claimed run's job on `slots`: one slot's job goes to its warm standby (or a fresh process);
    several (num_gpus > 1) get `accelerate launch`, one process per slot's GPU, without their standbys."""
    with ws.store.read() as s:
        run = s.get(Run, run_id)
        folder, stored = run.folder, dict(run.settings or {})
    run_dir = ws.data_dir / folder
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train.log"
    gpus = [slot.gpu for slot in slots if slot.gpu is not None]
    with open(log_path, "ab") as log:
        log.write((f"\n--- attempt started {now().isoformat()} by {owner}"
                   + (f" on GPU {','.join(gpus)}" if gpus else "") + " ---\n").encode())
        log.flush()
        if len(slots) == 1:
            proc = slots[0].starter.start(run_id, log, log_path, warm_next)
        else:
            settings = TrainSettings.from_dict(stored)
            config = None
            if settings.distributed != "ddp":
                config = run_dir / "accelerate.yaml"
                config.write_text(accelerate_config(settings))
            cmd = launch_command(settings, gpus, ws.data_dir, run_id, sys.executable, config)
            log.write(f"{' '.join(cmd)}\n".encode())
            log.flush()
            for slot in slots:  # an idle standby would hold memory on the GPUs this job needs
                slot.starter.close()
            proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=_job_env({"CUDA_VISIBLE_DEVICES": ",".join(gpus)}))
    (run_dir / "job.pid").write_text(str(proc.pid))
    (run_dir / "job.host").write_text(socket.gethostname())
    job = Job(run_id, proc, log_path, slots)
    for slot in slots:
        slot.job = job
    return job


def tend(ws: Workspace, job: Job, owner: str, lease_seconds: int) -> bool:
    """Renew a running job's lease and enforce its cancel; False once its process has ended."""
    if job.proc.poll() is not None:
        return False
    if time.time() - job.last_beat >= max(1.0, lease_seconds / 3):
        job.last_beat = time.time()
        if heartbeat(ws, job.run_id, owner, lease_seconds) and job.cancel_seen is None:
            job.cancel_seen = time.time()
    if job.cancel_seen is not None and time.time() - job.cancel_seen > CANCEL_GRACE_SECONDS:
        kill_tree(job.proc)  # it did not stop at a step boundary in time
    return True


def settle(ws: Workspace, job: Job) -> None:
    """After the job's process ended: free its slots, then settle the run's status."""
    for slot in job.slots:
        slot.job = None
    code = job.proc.returncode
    with ws.store.write() as s:
        run = s.get(Run, job.run_id)
        run.log_tail = _tail(job.log_path)
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


def run_one(ws: Workspace, run_id: int, owner: str, lease_seconds: int, poll: float = 1.0,
            starter: JobStarter | None = None, warm_next: bool = True) -> None:
    """Run one claimed run's job to its end on one slot (the machine), keeping the lease; then settle it.

    `starter` hands the run to its warm standby (then starts the next one unless `warm_next` is false);
    without one the job is a fresh process.
    """
    job = start_job(ws, run_id, owner, [Slot(None, starter or JobStarter(ws, "spawn"))], warm_next)
    while tend(ws, job, owner, lease_seconds):
        time.sleep(poll)
    settle(ws, job)


def _queue_empty(ws: Workspace) -> bool:
    with ws.store.read() as s:
        return s.scalar(select(Run.id).where(Run.status == "queued").limit(1)) is None


def work(ws: Workspace, once: bool = False, lease_seconds: int = 60, idle_sleep: float = 0.5,
         stop=lambda: False, gpus: list[str] | None = None, poll: float = 1.0) -> int:
    """The loop: settle ended jobs, maintenance, claim into free slots, renew leases. `once` drains the queue
    and returns; `stop()` stops claiming, and the loop returns when its running jobs have ended.

    `gpus`: this worker's GPUs, one job slot each (None: CUDA_VISIBLE_DEVICES, else those `nvidia-smi -L`
    lists); none means one slot, the CPU. The worker never imports torch: each job is its own process,
    handed to its slot's warm standby (the default) or started fresh (`VRFT_JOB_START=spawn`). With `once`,
    standbys are kept only while runs are queued.
    """
    mode = job_start_mode()
    slots = make_slots(ws, mode, visible_gpus() if gpus is None else gpus)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    print(f"worker {owner}: " + (", ".join(f"GPU {s.gpu}" for s in slots) if slots[0].gpu is not None
                                 else "no GPU, one job at a time on the CPU"), flush=True)
    jobs: list[Job] = []
    done = 0
    try:
        if not once or not _queue_empty(ws):
            for slot in slots:
                slot.starter.warm()
        while True:
            for job in [j for j in jobs if not tend(ws, j, owner, lease_seconds)]:
                settle(ws, job)
                jobs.remove(job)
                done += 1
            if stop():
                if not jobs:
                    break
                time.sleep(poll)
                continue
            free = [slot for slot in slots if slot.job is None]
            run_id = None
            if free:
                requeue_expired(ws)
                run_id = claim(ws, owner, lease_seconds, free=len(free), total=len(slots))
            if run_id is not None:
                need = gpus_needed(get_run(ws.store, run_id).settings or {})
                jobs.append(start_job(ws, run_id, owner, free[:need], warm_next=not once or not _queue_empty(ws)))
                continue
            if once and not jobs:
                break
            if not once:
                for slot in free:
                    slot.starter.warm()  # replaces one that died, or one a multi-GPU job stopped
            time.sleep(poll if jobs else idle_sleep)
    finally:
        for slot in slots:
            slot.starter.close()
    return done
