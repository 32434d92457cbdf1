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

Test-tab questions are answered by answerer processes the worker starts (backend.jobs.answerer): on a free
GPU, or on the CPU for requests that ask for it; the page itself never loads a model.

Stopping: SIGTERM or SIGINT (Ctrl-C, `systemctl stop`, `docker stop`) stops claiming, asks each job to save a
checkpoint at its next step boundary and exit (its run queued again, to resume from there, the attempt not
counted), and returns once they have, within `stop_seconds` (then they are killed, their runs re-queued from their
last checkpoint); a second signal does that at once. A worker the page started stops the same way when the page does
or is gone (backend.jobs.ownership); its jobs and answerers stop by themselves if the worker is gone.

`python app.py worker [--once] [--lease-seconds 60] [--gpus 0,1] [--max-attempts 3] [--stop-seconds 60]`;
`python app.py` (serve) starts one too.
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
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from backend.data.workspace import Workspace
from backend.engine.gpus import accelerate_config, gpus_needed, launch_command, visible_gpus
from backend.engine.settings import TrainSettings
from backend.jobs import prediction_queue
from backend.jobs.answerer import LINGER_SECONDS, Answerer, start_answerer
from backend.jobs.job_records import write_job_record
from backend.jobs.leases import (MAX_ATTEMPTS, _requeue_or_fail, claim, heartbeat, lease_token, new_token,
                                 requeue_expired)
from backend.jobs.runs import LeaseLost, get_run
from backend.jobs.starter import ROOT, JobStarter, job_env, job_start_mode, kill_tree
from backend.jobs.ownership import ORPHAN_GRACE_SECONDS, Lifeline
from backend.jobs.training import EXIT_FAILED, EXIT_STOPPED, LEASE_TOKEN_ENV
from storage import db_now, locked
from storage.models import Run

CANCEL_GRACE_SECONDS = 60
STOP_SECONDS = 60.0
"""A stopping worker waits this long for its jobs to reach a step boundary and save, then kills them."""

LOG_TAIL_CHARS = 4000


def _tail(path: Path) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - LOG_TAIL_CHARS))
        return f.read().decode("utf-8", "replace")


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
    stopping: bool = False                    # asked to stop (the worker is stopping): its run goes back to the queue

    def ask_to_stop(self) -> None:
        """SIGTERM to the job's process (backend.jobs.ownership: it stops at the next step boundary, checkpoint saved;
        under `accelerate launch`, the launcher passes it on to every process)."""
        self.stopping = True
        try:
            self.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass


@dataclass
class Slot:
    """Room for one job: a GPU of this worker (`gpu`, the CUDA_VISIBLE_DEVICES its jobs and standby get) or,
    with none, the machine (gpu None). `job` is the run it is busy with."""
    gpu: str | None
    starter: JobStarter
    job: Job | None = field(default=None, repr=False)
    answerer: Answerer | None = field(default=None, repr=False)  # answering Test-tab requests on its GPU

    def free(self) -> bool:
        return self.job is None and self.answerer is None


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
                                    stdin=subprocess.DEVNULL, env=job_env({"CUDA_VISIBLE_DEVICES": ",".join(gpus),
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
        elif code == EXIT_STOPPED or job.stopping:  # stopped on purpose: resumes from its checkpoint, not counted
            _requeue_or_fail(s, job.run_id, run.lease_token, "stopped", max_attempts, stopped=True)
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


def tend_answerers(ws: Workspace, owner: str, slots: list[Slot], cpu: Answerer | None,
                   linger: float = LINGER_SECONDS) -> Answerer | None:
    """Start answerers for queued Test-tab requests (backend.jobs.answerer): one on the CPU for those that asked
    for it (without GPUs, for all), one on a free GPU for the rest; a GPU busy training answers nothing until
    its run ends. Forgets answerers that ended. Returns the CPU answerer."""
    has_gpus = slots[0].gpu is not None
    for slot in slots:
        if slot.answerer is not None and slot.answerer.ended(ws):
            slot.answerer = None
    if cpu is not None and cpu.ended(ws):
        cpu = None
    if cpu is None and prediction_queue.pending(ws, True if has_gpus else None):
        cpu = start_answerer(ws, owner, "cpu" if has_gpus else "all", None, linger)
    if has_gpus and not any(slot.answerer for slot in slots) and prediction_queue.pending(ws, False):
        free = [slot for slot in slots if slot.free()]
        if free:
            free[0].answerer = start_answerer(ws, owner, "gpu", free[0].gpu, linger)
    return cpu


def _queue_empty(ws: Workspace) -> bool:
    with ws.store.read() as s:
        return s.scalar(select(Run.id).where(Run.status == "queued").limit(1)) is None


class Stopping:
    """A worker's stop: SIGTERM/SIGINT, or its owner (the page) gone (`lifeline`); a second signal: at once."""

    def __init__(self, handle_signals: bool):
        self.at_once = False
        self.since: float | None = None
        self.lifeline = (Lifeline(grace=ORPHAN_GRACE_SECONDS, then=self._now, owner="page")
                         if handle_signals else None)

    def _now(self) -> None:
        self.at_once = True
        print("second signal: stopping at once", flush=True)

    def reason(self) -> str | None:
        return self.lifeline.reason() if self.lifeline is not None else None


def _begin_stop(ws: Workspace, owner: str, why: str, jobs: list[Job], slots: list[Slot], cpu: Answerer | None,
                stop_seconds: float) -> None:
    """Claim nothing more; ask every job to stop at its next step boundary and every answerer after its answer;
    stop the standbys."""
    print(f"worker {owner}: {why}: claiming nothing more"
          + (f"; {len(jobs)} job{'s' if len(jobs) != 1 else ''} asked to save a checkpoint at the next step and stop "
             f"(runs {', '.join(str(j.run_id) for j in jobs)}, at most {stop_seconds:.0f} s; a second signal stops "
             "at once)" if jobs else ""), flush=True)
    for job in jobs:
        job.ask_to_stop()
    for answerer in [cpu, *(slot.answerer for slot in slots)]:
        if answerer is not None:
            answerer.ask_to_stop()
    for slot in slots:
        slot.starter.close()


def _stop_now(ws: Workspace, owner: str, jobs: list[Job], max_attempts: int) -> None:
    """Kill the jobs still running; their runs go back to the queue, to resume from their last checkpoint."""
    for job in jobs:
        print(f"worker {owner}: killing the job of run {job.run_id}; it resumes from its last checkpoint", flush=True)
        job.stopping = True
        kill_tree(job.proc)
        job.proc.wait()
        settle(ws, job, max_attempts)


def work(ws: Workspace, once: bool = False, lease_seconds: int = 60, idle_sleep: float = 0.5,
         stop=lambda: False, gpus: list[str] | None = None, poll: float = 1.0, max_attempts: int = MAX_ATTEMPTS,
         handle_signals: bool = False, stop_seconds: float = STOP_SECONDS) -> int:
    """The loop: settle ended jobs, maintenance, claim into free slots, renew leases. `once` drains the queue
    and returns; `stop()` stops claiming, and the loop returns when its running jobs have ended.

    `handle_signals` (the main thread of a worker process): SIGTERM/SIGINT, or the owner that started this worker
    gone (backend.jobs.ownership), stop it gracefully: nothing more is claimed, each job is asked to save a
    checkpoint at its next step and stop (its run queued again), and the loop returns once they have, or after
    `stop_seconds` (the rest killed, their runs re-queued); a second signal stops at once.

    `gpus`: this worker's GPUs, one job slot each (None: CUDA_VISIBLE_DEVICES, else those `nvidia-smi -L`
    lists); none means one slot, the CPU. The worker never imports torch: each job is its own process,
    handed to its slot's warm standby (the default) or started fresh (`VRFT_JOB_START=spawn`). With `once`,
    standbys are kept only while runs are queued. A run whose job dies `max_attempts` times fails.
    """
    stopping = Stopping(handle_signals)  # first: a worker that has said anything stops gracefully
    mode = job_start_mode()
    slots = make_slots(ws, mode, visible_gpus() if gpus is None else gpus)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    print(f"worker {owner}: " + (", ".join(f"GPU {s.gpu}" for s in slots) if slots[0].gpu is not None
                                 else "no GPU, one job at a time on the CPU"), flush=True)
    jobs: list[Job] = []
    done = 0
    answerer: Answerer | None = None  # on the CPU
    try:
        if not once or not _queue_empty(ws):
            for slot in slots:
                slot.starter.warm()
        while True:
            for job in [j for j in jobs if not tend(ws, j, owner, lease_seconds)]:
                settle(ws, job, max_attempts)
                jobs.remove(job)
                done += 1
            why = stopping.reason()
            if why and stopping.since is None:
                stopping.since = time.monotonic()
                _begin_stop(ws, owner, why, jobs, slots, answerer, stop_seconds)
            if stopping.since is not None:
                if stopping.at_once or time.monotonic() - stopping.since > stop_seconds:
                    _stop_now(ws, owner, jobs, max_attempts)
                    jobs.clear()
                if not jobs:
                    print(f"worker {owner}: stopped {time.monotonic() - stopping.since:.1f} s after it was asked to",
                          flush=True)
                    break
                time.sleep(min(poll, 0.2))
                continue
            if stop():
                if not jobs:
                    break
                time.sleep(poll)
                continue
            answerer = tend_answerers(ws, owner, slots, answerer, linger=1.0 if once else LINGER_SECONDS)
            free = [slot for slot in slots if slot.free()]
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
            answering = answerer is not None or any(slot.answerer for slot in slots)
            if once and not jobs and not answering:
                break
            if not once:
                for slot in free:
                    slot.starter.warm()  # replaces one that died, or one a multi-GPU job stopped
            time.sleep(poll if jobs else idle_sleep)
    finally:
        for slot in slots:
            slot.starter.close()
            if slot.answerer is not None:
                slot.answerer.stop(ws)
        if answerer is not None:
            answerer.stop(ws)
    return done
