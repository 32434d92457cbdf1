"""Leases on runs: claim, heartbeat and re-queue, fenced by a token per claim and timed by the database's clock."""
from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, or_, select

from backend.data.workspace import Workspace
from backend.engine.gpus import gpus_needed
from backend.jobs.job_records import stop_orphan_job
from backend.jobs.runs import LeaseLost
from storage import db_now, locked, update_where
from storage.models import Run

MAX_ATTEMPTS = 3
"""A run whose job dies this many times (killed, out of memory) fails instead of looping."""

SETTLED = ("completed", "failed", "cancelled")


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


def _requeue_or_fail(s, run_id: int, token: str | None, why: str, max_attempts: int = MAX_ATTEMPTS,
                     stopped: bool = False) -> bool:
    """In write transaction `s`: the run, if still running under lease `token`, back to the queue (or cancelled if
    asked, or failed after `max_attempts`), its lease cleared. Returns whether it did.

    `stopped`: its job was stopped on purpose (the worker stopping, or gone), not by a fault of the run: the attempt
    does not count towards `max_attempts`."""
    run = locked(s, Run, run_id)
    if run is None or run.status != "running" or run.lease_token != token:
        return False
    run.lease_owner = run.lease_expires_at = run.lease_token = None
    if stopped:
        run.attempts = max(0, run.attempts - 1)
    if run.cancel_requested:
        run.status, run.finished_at = "cancelled", db_now(s)
    elif not stopped and run.attempts >= max_attempts:
        run.status, run.finished_at = "failed", db_now(s)
        run.error = f"the job stopped {run.attempts} times ({why}); giving up"
    else:
        run.status = "queued"
    return True


def requeue_stopped(ws: Workspace, run_id: int, token: str | None) -> bool:
    """A job stopped on purpose at a step boundary (its checkpoint saved): its run back to the queue, to resume from
    that checkpoint; the attempt not counted. Only under lease `token`; returns whether it did."""
    with ws.store.write() as s:
        return _requeue_or_fail(s, run_id, token, "stopped", stopped=True)


def lease_lapsed(ws: Workspace, run_id: int, token: str) -> bool:
    """Whether the run's lease under `token` ran out by the database's clock: nobody renews it, so the worker that
    holds it is gone (or cut off from the database), and its job must stop."""
    with ws.store.read() as s:
        t = db_now(s)
        return s.scalar(select(Run.id).where(Run.id == run_id, Run.status == "running", Run.lease_token == token,
                                             Run.lease_expires_at < t)) is not None


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
