"""Leases: atomic claims, expiry, re-queue, and the attempt limit (no training needed); fenced leases (a token
per claim, writes accepted under the current one only, the database's clock, a worker that lost its lease stops
its job); the job record and who may kill a job; how jobs start: the worker never imports torch, a job runs in
the warm standby or a fresh process, and learns its lease token."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from backend.data.demo.dataset import ensure_demo_dataset
from backend.engine.settings import preset
from backend.jobs.leases import MAX_ATTEMPTS, claim, heartbeat, requeue_expired
from backend.jobs.runs import cancel_run, create_run
from backend.jobs.run_history import run_json
from storage import db_now
from storage.models import Checkpoint, Evaluation, MetricPoint, Rollout, Run
from tests.conftest import ROOT, run_cli


def _queued(ws, n=1):
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    return [create_run(ws.store, "demo-shapes", "demo", preset("CPU demo")) for _ in range(n)]


def test_claims_oldest_first_and_never_twice(ws):
    first, second = _queued(ws, 2)
    assert claim(ws, "a", 60) == first
    assert claim(ws, "b", 60) == second
    assert claim(ws, "c", 60) is None
    run = run_json(ws.store, first, False)
    assert run["status"] == "running" and run["attempts"] == 1


def test_expired_lease_is_requeued_and_a_live_one_is_not(ws):
    dead, alive = _queued(ws, 2)
    assert claim(ws, "dead-worker", 1) == dead
    assert claim(ws, "live-worker", 60) == alive
    time.sleep(1.2)
    assert requeue_expired(ws) == [dead]
    assert run_json(ws.store, dead, False)["status"] == "queued"
    assert run_json(ws.store, alive, False)["status"] == "running"
    assert claim(ws, "new-worker", 60) == dead  # and it is claimed again, attempt 2
    assert run_json(ws.store, dead, False)["attempts"] == 2


def test_heartbeat_extends_the_lease_and_reports_cancel(ws):
    (run_id,) = _queued(ws)
    claim(ws, "w", 1)
    assert heartbeat(ws, run_id, "w", 60) is False
    time.sleep(1.2)
    assert requeue_expired(ws) == []
    cancel_run(ws.store, run_id)
    assert heartbeat(ws, run_id, "w", 60) is True


def test_a_run_that_keeps_dying_fails(ws):
    (run_id,) = _queued(ws)
    for _ in range(MAX_ATTEMPTS):
        assert claim(ws, "w", 0) == run_id
        time.sleep(0.05)
        requeue_expired(ws)
    run = run_json(ws.store, run_id, False)
    assert run["status"] == "failed" and "giving up" in run["error"]


def test_cancel_of_a_queued_run_is_immediate(ws):
    (run_id,) = _queued(ws)
    assert cancel_run(ws.store, run_id) == "cancelled"
    assert claim(ws, "w", 60) is None


HEAVY = ("torch", "transformers", "trl", "peft", "bitsandbytes")


@pytest.mark.parametrize("job_start", ["standby", "spawn"])
def test_worker_never_imports_torch_and_its_job_completes(ws, job_start):
    """A fork after CUDA is initialised fails on every GPU machine: the worker must stay torch-free."""
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    settings = preset("CPU demo", max_steps=1, num_generations=2, save_steps=1)
    settings.prompts_per_step, settings.eval_max_examples, settings.max_completion_length = 1, 2, 16
    run_id = create_run(ws.store, "demo-shapes", "demo", settings)
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from backend.data.workspace import open_workspace
        from backend.jobs.worker import work
        done = work(open_workspace(Path({str(ws.data_dir)!r})), once=True, lease_seconds=10)
        print("RESULT", done, [m for m in {HEAVY!r} if m in sys.modules])
    """)
    env = {**os.environ, "VRFT_JOB_START": job_start}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    log = (ws.data_dir / f"runs/{run_id}/train.log").read_text()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "RESULT 1 []", proc.stdout[-3000:]
    run = run_json(ws.store, run_id)
    assert run["status"] == "completed", (run["error"], log[-3000:])
    assert [p[0] for p in run["metrics"]["reward"]] == [1]
    assert ("the worker's warm standby" in log) == (job_start == "standby")


def _small_run(ws):
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    settings = preset("CPU demo", max_steps=1, num_generations=2, save_steps=1)
    settings.prompts_per_step, settings.eval_max_examples, settings.max_completion_length = 1, 1, 8
    return create_run(ws.store, "demo-shapes", "demo", settings)


@pytest.mark.parametrize("job_start", ["standby", "spawn"])
def test_a_job_holding_a_stale_lease_token_writes_nothing_and_stops(ws, job_start):
    """The job learns its token from the worker (the standby's hand-over line; VRFT_LEASE_TOKEN for a fresh
    process) and every write carries it: handed a token that is not the run's, its first write is refused, it
    stops (exit EXIT_LEASE_LOST) and the run is left exactly as the current holder has it."""
    from backend.jobs.starter import JobStarter
    from backend.jobs.training import EXIT_LEASE_LOST
    run_id = _small_run(ws)
    assert claim(ws, "current-holder", 600, token="1" * 32) == run_id
    log_path = ws.data_dir / f"runs/{run_id}/train.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    starter = JobStarter(ws, job_start)
    starter.warm()
    with open(log_path, "ab") as log:
        proc = starter.start(run_id, log, log_path, warm_next=False, token="2" * 32)
    try:
        code = proc.wait(600)
    finally:
        starter.close()
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    log = log_path.read_text()
    assert code == EXIT_LEASE_LOST, log[-3000:]
    assert f"stopping: run {run_id} is no longer leased to this job" in log
    assert _stored(ws, run_id) == (0, 0, 0, 0)
    row = _row(ws, run_id)
    assert (row.status, row.step, row.lease_token, row.error) == ("running", 0, "1" * 32, None)


def _job(ws, run_id, token):
    """`python -m backend.jobs.training --run ID` as the worker starts it fresh, with its lease token."""
    env = {**os.environ, "VRFT_LEASE_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "backend.jobs.training", "--data-dir", str(ws.data_dir), "--run",
                           str(run_id)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_a_job_resumed_after_its_last_step_trains_no_further(ws):
    """Killed after its last checkpoint (while evaluating or saving the adapter), a run resumes from that
    checkpoint: HF's loop would train one step past max_steps and store it; the job loads the checkpoint instead,
    and every step is still stored exactly once."""
    run_id = _small_run(ws)
    assert claim(ws, "w", 600, token="h" * 32) == run_id
    first = _job(ws, run_id, "h" * 32)
    assert first.returncode == 0 and run_json(ws.store, run_id)["status"] == "completed", first.stdout[-3000:]
    with ws.store.write() as s:  # as if killed during the last evaluation: re-queued without its result
        s.get(Run, run_id).status = "queued"
        s.query(Evaluation).filter_by(run_id=run_id, phase="after").delete()
    assert claim(ws, "w", 600, token="i" * 32) == run_id
    again = _job(ws, run_id, "i" * 32)
    run = run_json(ws.store, run_id)
    assert again.returncode == 0 and run["status"] == "completed", again.stdout[-3000:]
    assert "resuming from step 1" in again.stdout
    assert {name: [p[0] for p in points] for name, points in run["metrics"].items()} == \
        {name: [1] for name in run["metrics"]}  # step 1 once; no step 2
    with ws.store.read() as s:
        assert [c.step for c in s.query(Checkpoint).filter_by(run_id=run_id)] == [1]
        assert s.query(Evaluation).filter_by(run_id=run_id, phase="after").count() == 1
    assert not (ws.data_dir / f"runs/{run_id}/checkpoints/checkpoint-2").exists()


def test_standby_exits_quietly_at_eof_without_running_anything(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "backend.jobs.training", "--data-dir", str(data), "--standby"],
                          cwd=ROOT, input=b"", capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert b"Traceback" not in proc.stdout + proc.stderr
    assert not data.exists()  # it never even opened the workspace


def test_unknown_job_start_is_one_sentence(tmp_path, monkeypatch):
    from backend.jobs.background import ensure_worker
    sentence = ("VRFT_JOB_START is 'fork'; it must be 'standby' (the default: a job process kept warm) or 'spawn' "
                "(a fresh process for each job)")
    monkeypatch.setenv("VRFT_JOB_START", "fork")
    proc = run_cli("worker", "--once", data_dir=tmp_path / "data", check=False)
    assert proc.returncode == 1 and proc.stderr == f"error: {sentence}\n"
    with pytest.raises(ValueError) as refused:  # the page refuses to start a worker that would stop at once
        ensure_worker(tmp_path / "data")
    assert str(refused.value) == sentence and not (tmp_path / "data" / "worker.pid").exists()


# ------------------------------------------------------------------ fenced leases (issue 13)
# Each function below takes a workspace, so that tests/test_postgres.py runs the same checks on PostgreSQL.

def _row(ws, run_id):
    with ws.store.read() as s:
        return s.get(Run, run_id)


def _take_over(ws, run_id, old="old-worker", new="new-worker"):
    """`old` claims the run with a lease that has already run out; it is re-queued and `new` claims it: returns
    (old token, new token)."""
    assert claim(ws, old, 0, token="a" * 32) == run_id
    time.sleep(0.05)
    assert requeue_expired(ws) == [run_id]
    assert _row(ws, run_id).lease_token is None  # queued: nobody's writes are accepted
    assert claim(ws, new, 60, token="b" * 32) == run_id
    return "a" * 32, "b" * 32


def check_each_claim_gets_a_fresh_token(ws):
    (run_id,) = _queued(ws)
    assert claim(ws, "w", 0) == run_id
    first = _row(ws, run_id).lease_token
    time.sleep(0.05)
    assert requeue_expired(ws) == [run_id]
    assert claim(ws, "w", 60) == run_id  # the same worker again: still a new lease, a new token
    second = _row(ws, run_id).lease_token
    assert first and second and first != second and len(second) == 32


def test_each_claim_gets_a_fresh_token(ws):
    check_each_claim_gets_a_fresh_token(ws)


def check_lease_times_come_from_the_database_clock(ws, monkeypatch):
    """A host whose clock is two hours slow claims a run: its lease still runs from the database's clock, so a
    host with the right time does not take it for expired (and one two hours fast does not extend it by hours)."""
    live, other = _queued(ws, 2)
    real = datetime.now(timezone.utc)
    for skew, owner, run_id in ((-2, "slow-host", live), (2, "fast-host", other)):
        with monkeypatch.context() as m:
            m.setattr("backend.jobs.worker.now", lambda: real + timedelta(hours=skew), raising=False)
            m.setattr("backend.jobs.runs.now", lambda: real + timedelta(hours=skew))
            assert claim(ws, owner, 60) == run_id
            heartbeat(ws, run_id, owner, 60)
        with ws.store.read() as s:
            t = db_now(s)
        row = _row(ws, run_id)
        expires, beat = (x if x.tzinfo else x.replace(tzinfo=timezone.utc) for x in (row.lease_expires_at, row.heartbeat_at))
        assert abs((expires - t).total_seconds() - 60) < 10, skew
        assert abs((beat - t).total_seconds()) < 10, skew
    assert requeue_expired(ws) == []  # the slow host's lease is alive


def test_lease_times_come_from_the_database_clock(ws, monkeypatch):
    check_lease_times_come_from_the_database_clock(ws, monkeypatch)


def check_a_worker_that_lost_its_lease_cannot_renew_or_settle(ws, tmp_path):
    from backend.jobs.runs import LeaseLost
    from backend.jobs.worker import Job, settle
    (run_id,) = _queued(ws)
    old, new = _take_over(ws, run_id)
    before = _row(ws, run_id)
    with pytest.raises(LeaseLost):  # its lease is another's now: not renewed, and it is told
        heartbeat(ws, run_id, "old-worker", 600)
    with pytest.raises(LeaseLost):
        heartbeat(ws, run_id, "new-worker", 600, old)  # the right owner name with a stale token: refused too
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # exit 0 without a result: settle would call it failed
    settle(ws, Job(run_id, ended, tmp_path / "no.log", [], token=old))
    after = _row(ws, run_id)
    assert (after.status, after.lease_owner, after.lease_token, after.error) == ("running", "new-worker", new, None)
    assert after.lease_expires_at == before.lease_expires_at and after.attempts == 2


def test_a_worker_that_lost_its_lease_cannot_renew_or_settle(ws, tmp_path):
    check_a_worker_that_lost_its_lease_cannot_renew_or_settle(ws, tmp_path)


def _stored(ws, run_id):
    with ws.store.read() as s:
        return tuple(s.query(m).filter_by(run_id=run_id).count() for m in (MetricPoint, Rollout, Checkpoint, Evaluation))


def check_a_stale_jobs_writes_are_refused(ws):
    """Metrics, rollouts, checkpoints, evaluations, progress and the final status: accepted with the current
    lease token only. A job still holding the old one is told (LeaseLost) and nothing of it lands."""
    from backend.jobs.runs import LeaseLost, finish_run, record_step
    from backend.jobs.run_history import record_checkpoint, save_evaluation, store_rollouts, upsert_metrics
    from tests.test_storage import _rollout_rows
    (run_id,) = _queued(ws)
    old, new = _take_over(ws, run_id)

    def write_all(token, step):
        upsert_metrics(ws.store, run_id, step, {"reward": 0.5}, token=token)
        store_rollouts(ws.store, run_id, step, _rollout_rows(2), token=token)
        record_checkpoint(ws.store, run_id, step, f"runs/{run_id}/checkpoints/checkpoint-{step}", token=token)
        save_evaluation(ws.store, run_id, "before", {"map": 0.1}, token=token)
        return record_step(ws.store, run_id, step, token=token)

    for write in (lambda: upsert_metrics(ws.store, run_id, 7, {"reward": 9.0}, token=old),
                  lambda: store_rollouts(ws.store, run_id, 7, _rollout_rows(2), token=old),
                  lambda: record_checkpoint(ws.store, run_id, 7, "elsewhere", token=old),
                  lambda: save_evaluation(ws.store, run_id, "after", {"map": 1.0}, token=old),
                  lambda: record_step(ws.store, run_id, 7, token=old)):
        with pytest.raises(LeaseLost, match=f"run {run_id} is no longer leased to this job"):
            write()
    assert _stored(ws, run_id) == (0, 0, 0, 0) and _row(ws, run_id).step == 0
    assert finish_run(ws.store, run_id, "completed", token=old) is False
    assert _row(ws, run_id).status == "running"

    assert write_all(new, 1) is False  # the current holder: every write lands
    assert _stored(ws, run_id) == (1, 2, 1, 1) and _row(ws, run_id).step == 1
    assert finish_run(ws.store, run_id, "completed", token=new) is True
    row = _row(ws, run_id)
    assert (row.status, row.lease_owner, row.lease_expires_at, row.lease_token) == ("completed", None, None, new)
    with pytest.raises(LeaseLost):  # settled: nothing more is accepted, even under its last token
        upsert_metrics(ws.store, run_id, 2, {"reward": 0.5}, token=new)


def test_a_stale_jobs_writes_are_refused(ws):
    check_a_stale_jobs_writes_are_refused(ws)


def _sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)


def check_a_worker_whose_heartbeat_finds_the_lease_gone_kills_its_job(ws, tmp_path):
    """tend(): the heartbeat says the lease is gone, so the job's process group is killed at once; settle()
    then frees the slot and leaves the run to its new holder."""
    from backend.jobs.worker import Job, Slot, settle, tend
    (run_id,) = _queued(ws)
    old, new = _take_over(ws, run_id)
    proc = _sleeper()
    try:
        slot = Slot(None, SimpleNamespace())
        job = Job(run_id, proc, tmp_path / "train.log", [slot], token=old)
        slot.job = job
        assert tend(ws, job, "old-worker", 60) is False
        assert proc.wait(10) == -9 and job.lost
        settle(ws, job)
        row = _row(ws, run_id)
        assert slot.job is None and (row.status, row.lease_token, row.attempts) == ("running", new, 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_worker_whose_heartbeat_finds_the_lease_gone_kills_its_job(ws, tmp_path):
    check_a_worker_whose_heartbeat_finds_the_lease_gone_kills_its_job(ws, tmp_path)


def check_a_run_its_job_settled_is_no_lost_lease(ws, tmp_path):
    """The job settles the run itself (completed) and takes a moment to exit: the worker's heartbeat meanwhile
    finds nothing to renew, which is not a lost lease. The job is not killed, and the run stays completed."""
    from backend.jobs.runs import finish_run
    from backend.jobs.worker import Job, Slot, settle, tend
    (run_id,) = _queued(ws)
    assert claim(ws, "w", 60, token="g" * 32) == run_id
    assert finish_run(ws.store, run_id, "completed", token="g" * 32)
    assert heartbeat(ws, run_id, "w", 60, "g" * 32) is False
    proc = _sleeper()
    try:
        job = Job(run_id, proc, tmp_path / "train.log", [Slot(None, SimpleNamespace())], token="g" * 32)
        assert tend(ws, job, "w", 60) is True and proc.poll() is None and not job.lost
    finally:
        proc.kill()
        proc.wait()
    settle(ws, job)
    assert _row(ws, run_id).status == "completed"


def test_a_run_its_job_settled_is_no_lost_lease(ws, tmp_path):
    check_a_run_its_job_settled_is_no_lost_lease(ws, tmp_path)


def test_a_live_lease_is_renewed_and_its_job_kept(ws, tmp_path):
    from backend.jobs.worker import Job, Slot, tend
    (run_id,) = _queued(ws)
    assert claim(ws, "w", 2, token="c" * 32) == run_id
    proc = _sleeper()
    try:
        job = Job(run_id, proc, tmp_path / "train.log", [Slot(None, SimpleNamespace())], token="c" * 32)
        assert tend(ws, job, "w", 60) is True and proc.poll() is None and not job.lost
        time.sleep(2.2)
        assert requeue_expired(ws) == []  # renewed for 60 s by the heartbeat
    finally:
        proc.kill()
        proc.wait()


def test_a_worker_that_cannot_reach_the_database_stops_its_job_after_a_lease(ws, tmp_path, monkeypatch):
    """No heartbeat for a whole lease (the database unreachable: a network split): by then the lease has run
    out for everyone and another worker may have the run, so the job is stopped."""
    from sqlalchemy.exc import OperationalError

    from backend.jobs import worker
    from backend.jobs.worker import Job, Slot, tend
    (run_id,) = _queued(ws)
    assert claim(ws, "w", 60, token="d" * 32) == run_id
    proc = _sleeper()
    try:
        job = Job(run_id, proc, tmp_path / "train.log", [Slot(None, SimpleNamespace())], token="d" * 32)

        def unreachable(*a, **k):
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        monkeypatch.setattr(worker, "heartbeat", unreachable)
        assert tend(ws, job, "w", 3) is True and proc.poll() is None  # a blip: kept
        job.last_ok -= 4  # ... until no heartbeat has landed for a whole lease
        job.last_beat = 0
        assert tend(ws, job, "w", 3) is False and proc.wait(10) == -9 and job.lost
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ the job record: who may kill a job

def test_the_job_record_names_host_boot_and_process_and_only_that_machine_kills(tmp_path):
    """With a shared data dir, an expired run's job.pid may be another host's, or from before a reboot, or a pid
    since reused: only the job itself, on its own host and boot, is killed."""
    import json
    import socket

    from backend.jobs.job_records import boot_id, job_pid, read_job_record, stop_orphan_job, write_job_record
    job = _sleeper()
    try:
        write_job_record(tmp_path, job.pid, 7, "e" * 32)
        record = json.loads((tmp_path / "job.pid").read_text())
        assert record["pid"] == job.pid and record["host"] == socket.gethostname() and record["run"] == 7
        assert record["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip() == boot_id()
        assert isinstance(record["start_time"], int) and job_pid(tmp_path) == job.pid
        assert not (tmp_path / "job.host").exists()  # one record, not two files

        for field, value in (("host", "another-host"), ("boot_id", "0" * 8 + "-before-a-reboot"),
                             ("start_time", record["start_time"] - 1)):  # the last: the pid was reused
            (tmp_path / "job.pid").write_text(json.dumps({**record, field: value}))
            assert stop_orphan_job(tmp_path) is False and job.poll() is None, field
        (tmp_path / "job.pid").write_text(str(job.pid))  # an older version's bare pid: whose, nobody knows
        assert read_job_record(tmp_path) == {"pid": job.pid}
        assert stop_orphan_job(tmp_path) is False and job.poll() is None

        write_job_record(tmp_path, job.pid, 7, "e" * 32)
        assert stop_orphan_job(tmp_path) is True and job.wait(10) == -9
        assert stop_orphan_job(tmp_path) is False  # gone: nothing to kill, whatever now has that pid
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()


def test_requeue_stops_the_orphan_job_of_this_machine(ws):
    """A worker died; its job lives on. When the lease expires, the job is killed before the run is re-queued."""
    from backend.jobs.job_records import write_job_record
    (run_id,) = _queued(ws)
    assert claim(ws, "dead-worker", 0) == run_id
    job = _sleeper()
    try:
        (ws.data_dir / f"runs/{run_id}").mkdir(parents=True, exist_ok=True)
        write_job_record(ws.data_dir / f"runs/{run_id}", job.pid, run_id, _row(ws, run_id).lease_token)
        time.sleep(0.05)
        assert requeue_expired(ws) == [run_id] and job.wait(10) == -9
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()


def test_the_standby_reads_its_run_and_lease_token(monkeypatch):
    import io

    from backend.jobs.training import wait_for_run
    monkeypatch.setattr(sys, "stdin", io.StringIO("12 " + "f" * 32 + " /data/runs/12/train log.txt\n"))
    assert wait_for_run() == (12, "f" * 32, "/data/runs/12/train log.txt")
    monkeypatch.setattr(sys, "stdin", io.StringIO("12 - /x.log\n"))
    assert wait_for_run() == (12, None, "/x.log")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert wait_for_run() is None


def test_max_attempts_is_the_workers_choice(ws):
    (run_id,) = _queued(ws)
    for _ in range(MAX_ATTEMPTS + 2):
        assert claim(ws, "w", 0) == run_id
        time.sleep(0.05)
        requeue_expired(ws, max_attempts=10)
    assert run_json(ws.store, run_id, False)["status"] == "queued"


def test_migration_0003_adds_the_lease_token_and_goes_back(tmp_path):
    from alembic import command

    from storage.db import _alembic_config, make_engine
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.exec_driver_sql("INSERT INTO runs (model, family, task, settings, status, step, max_steps, attempts, "
                             "cancel_requested, created_at) VALUES ('demo', 'demo', 'detection', '{}', 'running', 3, "
                             "5, 1, 0, '2026-11-30 10:00:00')")
        command.upgrade(cfg, "0003_lease_fencing")
        assert conn.exec_driver_sql("SELECT step, lease_token FROM runs").all() == [(3, None)]
        command.downgrade(cfg, "0002")
        assert conn.exec_driver_sql("SELECT step FROM runs").all() == [(3,)]
    engine.dispose()
