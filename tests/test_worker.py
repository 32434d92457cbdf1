"""Leases: atomic claims, expiry, re-queue, and the attempt limit (no training needed); how jobs start:
the worker never imports torch, a job runs in the warm standby or a fresh process."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from backend.demo.dataset import ensure_demo_dataset
from backend.runs import cancel_run, create_run, run_json
from backend.settings import preset
from backend.worker import MAX_ATTEMPTS, claim, heartbeat, requeue_expired
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
        from backend.workspace import open_workspace
        from backend.worker import work
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


def test_standby_exits_quietly_at_eof_without_running_anything(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "backend.training", "--data-dir", str(data), "--standby"],
                          cwd=ROOT, input=b"", capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert b"Traceback" not in proc.stdout + proc.stderr
    assert not data.exists()  # it never even opened the workspace


def test_unknown_job_start_is_one_sentence(tmp_path, monkeypatch):
    from backend.background import ensure_worker
    sentence = ("VRFT_JOB_START is 'fork'; it must be 'standby' (the default: a job process kept warm) or 'spawn' "
                "(a fresh process for each job)")
    monkeypatch.setenv("VRFT_JOB_START", "fork")
    proc = run_cli("worker", "--once", data_dir=tmp_path / "data", check=False)
    assert proc.returncode == 1 and proc.stderr == f"error: {sentence}\n"
    with pytest.raises(ValueError) as refused:  # the page refuses to start a worker that would stop at once
        ensure_worker(tmp_path / "data")
    assert str(refused.value) == sentence and not (tmp_path / "data" / "worker.pid").exists()
