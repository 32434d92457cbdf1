"""The worker: claims queued runs with a lease, runs each in a child process, keeps the lease alive,
enforces cancel, and re-queues runs whose worker or job died.

The worker never imports torch (nor transformers, TRL, PEFT, bitsandbytes) and never touches CUDA: a
process forked after CUDA is initialised cannot use it. Each job is exec'd fresh; a warm standby job
process (`VRFT_JOB_START=standby`, the default) makes it start at once.

One job runs per job slot at once: a slot per GPU (`--gpus 0,1`; by default CUDA_VISIBLE_DEVICES, else every
GPU `nvidia-smi -L` lists), each job and each slot's standby seeing only its GPU; without a GPU one slot, the
CPU. A run with num_gpus > 1 takes that many free slots and starts with `accelerate launch`.

Leases are fenced: each claim writes a fresh token on the run; the job is handed it (the standby's hand-over line,
or VRFT_LEASE_TOKEN) and every write for the run, the worker's and the job's, is accepted only under it
(backend.jobs.runs.LeaseLost otherwise). Lease times are the database's clock (storage.db_now), one clock for every
host. A worker whose heartbeat finds its lease gone kills its job's process group and leaves the run alone.
Each job's `job.pid` records its pid, host, boot id and process start time: only a worker on that host, same
boot, kills it, and only while that pid is still that process.

`python app.py worker [--once] [--lease-seconds 60] [--gpus 0,1] [--max-attempts 3]`; `python app.py` (serve)
starts one too.
"""
from __future__ import annotations

import json
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

from sqlalchemy import func, or_, select
from sqlalchemy.exc import DBAPIError

from backend.data.workspace import Workspace
from backend.engine.gpus import accelerate_config, gpus_needed, launch_command, visible_gpus
from backend.engine.settings import TrainSettings
from backend.jobs.runs import LeaseLost, get_run
from backend.jobs.training import EXIT_FAILED, LEASE_TOKEN_ENV
from storage import db_now, locked, update_where
from storage.models import Run

ROOT = Path(__file__).resolve().parent.parent.parent
MAX_ATTEMPTS = 3
"""A run whose job dies this many times (killed, out of memory) fails instead of looping."""
CANCEL_GRACE_SECONDS = 60
SETTLED = ("completed", "failed", "cancelled")
LOG_TAIL_CHARS = 4000


def requeue_expired(ws: Workspace, max_attempts: int = MAX_ATTEMPTS) -> list[int]:
    """Runs marked running whose lease ran out by the database's clock (their worker died, or lost touch):
    back to the queue, their lease token cleared, so that nothing their old job writes is accepted any more.

    The rows are locked while deciding (a heartbeat arriving meanwhile waits, then finds its lease gone). A job
    its dead worker left running on this machine is stopped first, so that a run never has two jobs writing
    its checkpoints; one on another host stops itself at its next write (LeaseLost).
    """
    with ws.store.write() as s:
        t = db_now(s)
        expired = s.execute(select(Run.id, Run.lease_token, Run.folder)
                            .where(Run.status == "running", or_(Run.lease_expires_at.is_(None), Run.lease_expires_at < t))
                            .order_by(Run.id).with_for_update(skip_locked=True)).all()
        requeued = []
        for run_id, token, folder in expired:
            if folder:
                stop_orphan_job(ws.data_dir / folder)
            if _requeue_or_fail(s, run_id, token, "its worker stopped", max_attempts):
                requeued.append(run_id)
        return requeued


JOB_RECORD = "job.pid"
"""In a run's folder: JSON {pid, host, boot_id, start_time, run, token} of the job process last started for it."""


def boot_id() -> str | None:
    """This machine's boot id (Linux): a pid means nothing across hosts or reboots."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def process_start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22): tells a pid that was
    reused from the process it named. None when there is no such process (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def write_job_record(run_dir: Path, pid: int, run_id: int | None = None, token: str | None = None) -> None:
    """Record the job process of `run_dir`: its pid, this host, this boot, its start time (replaced whole:
    written aside, then renamed)."""
    record = {"pid": pid, "host": socket.gethostname(), "boot_id": boot_id(), "start_time": process_start_time(pid),
              "run": run_id, "token": token}
    tmp = run_dir / f".{JOB_RECORD}.{os.getpid()}"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, run_dir / JOB_RECORD)


def read_job_record(run_dir: Path) -> dict | None:
    """The job record of `run_dir`; None when there is none or it is unreadable (a bare pid written by an
    older version is {"pid": N} without host: never killed by `stop_orphan_job`)."""
    try:
        text = (Path(run_dir) / JOB_RECORD).read_text().strip()
        record = json.loads(text)
    except (OSError, ValueError):
        return None
    if isinstance(record, int):
        return {"pid": record}
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def job_pid(run_dir: Path) -> int | None:
    """The pid of the job last started for `run_dir` (whatever host it was on)."""
    record = read_job_record(run_dir)
    return record["pid"] if record else None


def stop_orphan_job(run_dir: Path) -> bool:
    """Kill the job recorded in `run_dir` (its process group) if it was started on this machine since its last
    boot and its pid still names that process. With a shared data dir, a pid from another host (or from before a
    reboot, or one since reused) names some other process here. Returns whether it sent the signal."""
    record = read_job_record(run_dir)
    if not record or record.get("host") != socket.gethostname() or record.get("boot_id") != boot_id():
        return False
    pid = record["pid"]
    started = process_start_time(pid)
    if started is None or (record.get("start_time") is not None and started != record["start_time"]):
        return False  # gone, or the pid now names another process
    try:
        os.killpg(pid, signal.SIGKILL)
        return True
    except OSError:
        return False


def _requeue_or_fail(s, run_id: int, token: str | None, why: str, max_attempts: int = MAX_ATTEMPTS) -> bool:
    """In write transaction `s`: the run, if still running under lease `token`, back to the queue (or cancelled if
    asked, or failed after `max_attempts`), its lease cleared. Returns whether it did."""
    run = locked(s, Run, run_id)
    if run is None or run.status != "running" or run.lease_token != token:
        return False
    run.lease_owner = run.lease_expires_at = run.lease_token = None
    if run.cancel_requested:
        run.status, run.finished_at = "cancelled", db_now(s)
    elif run.attempts >= max_attempts:
        run.status, run.finished_at = "failed", db_now(s)
        run.error = f"the job stopped {run.attempts} times ({why}); giving up"
    else:
        run.status = "queued"
    return True


CLAIM_WINDOW = 50
"""Queued runs a claim looks at, oldest first."""


def new_token() -> str:
    return uuid.uuid4().hex


def claim(ws: Workspace, owner: str, lease_seconds: int, free: int = 1, total: int = 1,
          token: str | None = None) -> int | None:
    """Atomically take the oldest queued run this worker can start now (BEGIN IMMEDIATE on SQLite, SKIP LOCKED
    on PostgreSQL), with `free` of its `total` job slots idle. A run needing more GPUs than the worker has is
    left for another worker; one needing more than are free now holds back the runs behind it, so that it is
    not starved: the worker takes nothing until its running jobs free enough slots.

    The claim writes lease `token` (a fresh one if None) on the run, and a lease of `lease_seconds` by the
    database's clock; every later write for this attempt must carry the token."""
    token = token or new_token()
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
        t = db_now(s)
        # Compare-and-set on the locked row: still queued, so no one else took it.
        if not update_where(s, Run, run.id, Run.status == "queued", status="running", lease_owner=owner,
                            lease_token=token, heartbeat_at=t, lease_expires_at=t + timedelta(seconds=lease_seconds),
                            attempts=Run.attempts + 1, started_at=func.coalesce(Run.started_at, t)):
            return None
        return run.id


def lease_token(ws: Workspace, run_id: int) -> str | None:
    """The run's current lease token (None when it is not leased)."""
    with ws.store.read() as s:
        return s.scalar(select(Run.lease_token).where(Run.id == run_id))


def heartbeat(ws: Workspace, run_id: int, owner: str, lease_seconds: int, token: str | None = None) -> bool:
    """Extend the lease by `lease_seconds` from the database's clock; returns whether cancel was requested.

    Only the current lease holder may: the run must still be running, leased to `owner` (and, with `token`,
    under that lease). A run its own job has just settled (under this token) has nothing left to renew: no
    error, its job is ending by itself. Otherwise LeaseLost: the run was re-queued or claimed again, and the
    caller must stop its job without settling the run. One compare-and-set UPDATE."""
    with ws.store.write() as s:
        t = db_now(s)
        fence = (Run.lease_token == token,) if token is not None else ()
        renewed = update_where(s, Run, run_id, Run.status == "running", Run.lease_owner == owner, *fence,
                               heartbeat_at=t, lease_expires_at=t + timedelta(seconds=lease_seconds))
        row = s.execute(select(Run.status, Run.lease_token, Run.cancel_requested).where(Run.id == run_id)).one_or_none()
        if not renewed and not (row is not None and row.status in SETTLED and token is not None
                                and row.lease_token == token):
            raise LeaseLost(f"run {run_id} is no longer leased to worker {owner}")
        return bool(row.cancel_requested)


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
    """`python -m backend.jobs.training` in its own session (killable as a tree), with `env` added to the worker's
    environment. The worker itself never imports torch or touches CUDA: a fork after CUDA is initialised
    fails, so every job is exec'd fresh."""
    return subprocess.Popen([sys.executable, "-m", "backend.jobs.training", "--data-dir", str(ws.data_dir), *args],
                            cwd=ROOT, start_new_session=True, env=_job_env(env), **kw)


class JobStarter:
    """Starts each claimed run's job process (with `env`, such as its slot's CUDA_VISIBLE_DEVICES).

    In "standby" mode one job process is kept warm: it has imported the training stack and waits on its
    stdin for a line "RUN_ID LEASE_TOKEN LOG_PATH", so a run starts training about a second after its claim. A
    run claimed while no standby is alive gets a fresh `--run ID` process, as in "spawn" mode, with its lease
    token in VRFT_LEASE_TOKEN.
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

    def start(self, run_id: int, log, log_path: Path, warm_next: bool = True, token: str | None = None,
              record=lambda pid: None) -> subprocess.Popen:
        """Start the run's job; `record(pid)` is called before the standby is handed the run (a fresh process:
        right after it starts), so that a worker killed meanwhile leaves no unrecorded job behind."""
        proc = self._hand_over(run_id, log_path, token, record)
        if proc is None:
            proc = _job_process(self.ws, ["--run", str(run_id)], {**(self.env or {}), LEASE_TOKEN_ENV: token or ""},
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            record(proc.pid)
        if warm_next:
            self.warm()
        return proc

    def _hand_over(self, run_id: int, log_path: Path, token: str | None, record) -> subprocess.Popen | None:
        proc, self.standby = self.standby, None
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                record(proc.pid)
                proc.stdin.write(f"{run_id} {token or '-'} {log_path}\n".encode())
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
    token: str | None = None
    last_beat: float = 0.0                   # time.monotonic() of the last heartbeat tried
    last_ok: float = field(default_factory=time.monotonic)  # ... and of the last one the database answered
    cancel_seen: float | None = None
    lost: bool = False                        # its lease went to someone else: killed, the run left alone


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


def start_job(ws: Workspace, run_id: int, owner: str, slots: list[Slot], warm_next: bool = True,
              token: str | None = None) -> Job:
    """Start the claimed run's job on `slots`: one slot's job goes to its warm standby (or a fresh process);
    several (num_gpus > 1) get `accelerate launch`, one process per slot's GPU, without their standbys. The job
    is given lease `token` (the claim's); its pid, host and boot go to the run's job record."""
    with ws.store.read() as s:
        run = s.get(Run, run_id)
        folder, stored = run.folder, dict(run.settings or {})
    run_dir = ws.data_dir / folder
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train.log"
    gpus = [slot.gpu for slot in slots if slot.gpu is not None]
    with open(log_path, "ab") as log:
        log.write((f"\n--- attempt started {time.strftime('%Y-%m-%dT%H:%M:%S%z')} by {owner}"
                   + (f" on GPU {','.join(gpus)}" if gpus else "") + " ---\n").encode())
        log.flush()
        if len(slots) == 1:
            proc = slots[0].starter.start(run_id, log, log_path, warm_next, token,
                                          lambda pid: write_job_record(run_dir, pid, run_id, token))
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
                                    stdin=subprocess.DEVNULL, env=_job_env({"CUDA_VISIBLE_DEVICES": ",".join(gpus),
                                                                            LEASE_TOKEN_ENV: token or ""}))
            write_job_record(run_dir, proc.pid, run_id, token)
    job = Job(run_id, proc, log_path, slots, token)
    for slot in slots:
        slot.job = job
    return job


def _lose(job: Job, owner: str, why: str) -> None:
    print(f"worker {owner}: {why}; stopping the job of run {job.run_id} without settling it", flush=True)
    job.lost = True
    kill_tree(job.proc)
    job.proc.wait()


def tend(ws: Workspace, job: Job, owner: str, lease_seconds: int) -> bool:
    """Renew a running job's lease and enforce its cancel; False once its process has ended.

    A heartbeat that finds the lease gone (LeaseLost) kills the job's process group at once and marks the job
    lost: `settle` then leaves the run to whoever holds it now. When the database cannot be reached, the job is
    stopped once no heartbeat has succeeded for a whole lease (by then the lease has expired for everyone)."""
    if job.proc.poll() is not None:
        return False
    if time.monotonic() - job.last_beat >= max(1.0, lease_seconds / 3):
        job.last_beat = time.monotonic()
        try:
            cancel = heartbeat(ws, job.run_id, owner, lease_seconds, job.token)
        except LeaseLost as e:
            _lose(job, owner, str(e))
            return False
        except DBAPIError as e:
            if time.monotonic() - job.last_ok > lease_seconds:
                _lose(job, owner, f"no heartbeat reached the database for {lease_seconds} s")
                return False
            print(f"worker {owner}: heartbeat of run {job.run_id} failed: {str(e).splitlines()[0]}", flush=True)
            return True
        job.last_ok = time.monotonic()
        if cancel and job.cancel_seen is None:
            job.cancel_seen = time.time()
    if job.cancel_seen is not None and time.time() - job.cancel_seen > CANCEL_GRACE_SECONDS:
        kill_tree(job.proc)  # it did not stop at a step boundary in time
    return True


def settle(ws: Workspace, job: Job, max_attempts: int = MAX_ATTEMPTS) -> None:
    """After the job's process ended: free its slots, then settle the run's status, only if this worker's lease
    (the job's token) is still the run's: a job that lost its lease leaves the run to its new holder."""
    for slot in job.slots:
        slot.job = None
    if job.lost:
        return
    code = job.proc.returncode
    with ws.store.write() as s:
        run = locked(s, Run, job.run_id)
        if run is None or (job.token is not None and run.lease_token != job.token):
            return  # deleted, or re-queued / claimed again since: not this worker's to touch
        run.log_tail = _tail(job.log_path)
        s.flush()
        if run.status != "running":
            return  # the job settled itself: completed, cancelled or failed with its sentence
        if run.cancel_requested:
            run.status, run.finished_at = "cancelled", db_now(s)
            run.lease_owner = run.lease_expires_at = None
        elif code == EXIT_FAILED or code == 0:
            run.status, run.finished_at = "failed", db_now(s)
            run.lease_owner = run.lease_expires_at = None
            run.error = run.error or "the training job ended without a result (see the log)"
        else:  # killed by a signal or crashed: resume from the last checkpoint
            _requeue_or_fail(s, job.run_id, run.lease_token, f"exit status {code}", max_attempts)


def run_one(ws: Workspace, run_id: int, owner: str, lease_seconds: int, poll: float = 1.0,
            starter: JobStarter | None = None, warm_next: bool = True, token: str | None = None) -> None:
    """Run one claimed run's job to its end on one slot (the machine), keeping the lease; then settle it.

    `starter` hands the run to its warm standby (then starts the next one unless `warm_next` is false);
    without one the job is a fresh process. `token`: the claim's lease token (None: read the current one).
    """
    token = token or lease_token(ws, run_id)
    job = start_job(ws, run_id, owner, [Slot(None, starter or JobStarter(ws, "spawn"))], warm_next, token)
    while tend(ws, job, owner, lease_seconds):
        time.sleep(poll)
    settle(ws, job)


def _queue_empty(ws: Workspace) -> bool:
    with ws.store.read() as s:
        return s.scalar(select(Run.id).where(Run.status == "queued").limit(1)) is None


def work(ws: Workspace, once: bool = False, lease_seconds: int = 60, idle_sleep: float = 0.5,
         stop=lambda: False, gpus: list[str] | None = None, poll: float = 1.0, max_attempts: int = MAX_ATTEMPTS) -> int:
    """The loop: settle ended jobs, maintenance, claim into free slots, renew leases. `once` drains the queue
    and returns; `stop()` stops claiming, and the loop returns when its running jobs have ended.

    `gpus`: this worker's GPUs, one job slot each (None: CUDA_VISIBLE_DEVICES, else those `nvidia-smi -L`
    lists); none means one slot, the CPU. The worker never imports torch: each job is its own process,
    handed to its slot's warm standby (the default) or started fresh (`VRFT_JOB_START=spawn`). With `once`,
    standbys are kept only while runs are queued. A run whose job dies `max_attempts` times fails.
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
                settle(ws, job, max_attempts)
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
                requeue_expired(ws, max_attempts)
                token = new_token()
                run_id = claim(ws, owner, lease_seconds, free=len(free), total=len(slots), token=token)
            if run_id is not None:
                need = gpus_needed(get_run(ws.store, run_id).settings or {})
                jobs.append(start_job(ws, run_id, owner, free[:need], warm_next=not once or not _queue_empty(ws),
                                      token=token))
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
