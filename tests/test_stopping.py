"""Stopping, and no orphans: a worker stopped with SIGTERM asks its job to save a checkpoint at the next step and
exit, re-queues the run (the attempt not counted) and exits in bounded time; a second signal stops at once; a job
whose worker is killed with SIGKILL notices and stops at its next step with a checkpoint, re-queuing its run itself.
Every time the run then resumes and completes with each step stored exactly once. Real processes, real signals; the
same checks on SQLite and on PostgreSQL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from backend.data.demo.dataset import ensure_demo_dataset
from backend.data.workspace import open_workspace
from backend.engine.settings import preset
from backend.jobs.job_records import process_start_time, read_job_record
from backend.jobs.run_history import run_json
from backend.jobs.runs import create_run
from storage.models import Checkpoint, Run
from tests.conftest import ROOT
from tests.postgres import postgres_server, postgres_url  # noqa: F401 - fixtures

STEPS = 16
"""Enough steps (about 0.3 s each on the CPU demo) that a signal sent after the first lands before the last."""
STOP_BOUND = 60
"""Seconds from the signal to no process left: the job's step in progress, its checkpoint, the worker's exit."""


@pytest.fixture
def pg_ws(tmp_path, postgres_url, monkeypatch):  # noqa: F811
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    ws = open_workspace(tmp_path / "data")
    yield ws
    ws.store.close()


def _run(ws) -> int:
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    settings = preset("CPU demo", max_steps=STEPS, num_generations=2, save_steps=1, eval_steps=0)
    settings.prompts_per_step, settings.eval_max_examples, settings.max_completion_length = 1, 1, 8
    return create_run(ws.store, "demo-shapes", "demo", settings)


def _worker(ws, *args: str, job_start: str = "spawn") -> subprocess.Popen:
    """`app.py worker` as a person starts it (its own session, so that a test can clean up after it)."""
    env = {**os.environ, "VRFT_JOB_START": job_start, "OMP_NUM_THREADS": "1"}
    env.pop("VRFT_OWNER", None)
    log = open(ws.data_dir / "worker.log", "ab")
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--data-dir", str(ws.data_dir), "worker",
                             "--lease-seconds", "6", *args], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _row(ws, run_id: int) -> Run:
    with ws.store.read() as s:
        return s.get(Run, run_id)


def _wait(what, seconds: float, every: float = 0.2):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    return what()


def _job_alive(ws, run_id: int) -> int | None:
    """The run's job process, while it still runs (its recorded pid still names it)."""
    record = read_job_record(ws.data_dir / f"runs/{run_id}")
    if record and record.get("start_time") is not None and process_start_time(record["pid"]) == record["start_time"]:
        return record["pid"]
    return None


def _log(ws, run_id: int) -> str:
    train, worker = ws.data_dir / f"runs/{run_id}/train.log", ws.data_dir / "worker.log"
    return ((train.read_text(errors="replace")[-20000:] if train.exists() else "(no train.log)")
            + "\n--- worker.log ---\n" + (worker.read_text(errors="replace")[-3000:] if worker.exists() else ""))


def _training(ws, run_id: int, worker: subprocess.Popen) -> None:
    """Wait until the run has stored its first step under the worker."""
    assert _wait(lambda: _row(ws, run_id).step >= 1 or worker.poll() is not None, 240), _log(ws, run_id)
    assert worker.poll() is None, _log(ws, run_id)


def _cleanup(ws, run_id: int, *procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    pid = _job_alive(ws, run_id)
    if pid:
        os.killpg(pid, signal.SIGKILL)


def _resumes_with_every_step_once(ws, run_id: int) -> None:
    """A worker started afterwards resumes the run from its checkpoint and completes it; each step stored once."""
    again = _worker(ws, "--once")
    try:
        assert again.wait(400) == 0, _log(ws, run_id)
    finally:
        _cleanup(ws, run_id, again)
    run = run_json(ws.store, run_id)
    assert run["status"] == "completed", (run["error"], _log(ws, run_id))
    for name in ("reward", "step_time"):
        assert [p[0] for p in run["metrics"][name]] == list(range(1, STEPS + 1)), (name, run["metrics"][name])
    log = _log(ws, run_id)
    assert "resuming from step" in log
    assert f"step {STEPS}/{STEPS}: reward " in log and "{'loss'" not in log  # one readable line per step, no dicts
    assert "gemm_4bit_forward" not in log  # the CPU's bitsandbytes notice, silenced


def check_sigterm_stops_the_job_at_a_step_and_requeues_its_run(ws):
    run_id = _run(ws)
    worker = _worker(ws)
    try:
        _training(ws, run_id, worker)
        job = _job_alive(ws, run_id)
        assert job is not None
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(STOP_BOUND)
        seconds = time.monotonic() - signalled
        assert code == 0, _log(ws, run_id)
        assert _wait(lambda: _job_alive(ws, run_id) is None, 5), "the job outlived its worker"
        row = _row(ws, run_id)
        assert (row.status, row.lease_owner, row.lease_token, row.attempts) == ("queued", None, None, 0), \
            _log(ws, run_id)
        with ws.store.read() as s:  # the resume point: the step it stopped at, saved
            steps = [c.step for c in s.query(Checkpoint).filter_by(run_id=run_id)]
        assert steps and max(steps) == row.step, (steps, row.step)
        log = _log(ws, run_id)
        assert "asked to stop (SIGTERM)" in log and f"resumes from step {row.step}" in log
        print(f"SIGTERM -> worker exited in {seconds:.1f} s, job stopped at step {row.step}")
    finally:
        _cleanup(ws, run_id, worker)
    _resumes_with_every_step_once(ws, run_id)


def check_a_second_signal_stops_at_once(ws):
    run_id = _run(ws)
    worker = _worker(ws)
    try:
        _training(ws, run_id, worker)
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        worker.send_signal(signal.SIGINT)
        assert worker.wait(10) == 0, _log(ws, run_id)
        seconds = time.monotonic() - signalled
        assert seconds < 10 and _job_alive(ws, run_id) is None
        row = _row(ws, run_id)
        assert (row.status, row.attempts) == ("queued", 0), _log(ws, run_id)
        assert "second signal: stopping at once" in _log(ws, run_id)
        print(f"two signals -> worker exited in {seconds:.1f} s")
    finally:
        _cleanup(ws, run_id, worker)
    _resumes_with_every_step_once(ws, run_id)


def check_a_job_whose_worker_is_killed_stops_by_itself(ws):
    run_id = _run(ws)
    worker = _worker(ws, job_start="standby")
    try:
        _training(ws, run_id, worker)
        job = _job_alive(ws, run_id)
        assert job is not None
        killed = time.monotonic()
        os.kill(worker.pid, signal.SIGKILL)  # the worker alone: its job is in its own session
        worker.wait()
        assert _wait(lambda: _job_alive(ws, run_id) is None, STOP_BOUND, 0.5), "the job outlived its worker"
        seconds = time.monotonic() - killed
        row = _row(ws, run_id)
        log = _log(ws, run_id)
        assert "its owner (pid" in log and "its worker is gone" in log, log
        assert (row.status, row.lease_token, row.attempts) == ("queued", None, 0), log  # re-queued by the job itself
        print(f"SIGKILL of the worker -> job gone in {seconds:.1f} s, at step {row.step}")
    finally:
        _cleanup(ws, run_id, worker)
    _resumes_with_every_step_once(ws, run_id)


def test_sigterm_stops_the_job_at_a_step_and_requeues_its_run(ws):
    check_sigterm_stops_the_job_at_a_step_and_requeues_its_run(ws)


def test_a_second_signal_stops_at_once(ws):
    check_a_second_signal_stops_at_once(ws)


def test_a_job_whose_worker_is_killed_stops_by_itself(ws):
    check_a_job_whose_worker_is_killed_stops_by_itself(ws)


def test_sigterm_on_postgres(pg_ws):
    check_sigterm_stops_the_job_at_a_step_and_requeues_its_run(pg_ws)


def test_a_killed_worker_on_postgres(pg_ws):
    check_a_job_whose_worker_is_killed_stops_by_itself(pg_ws)


def _page(data_dir):
    from tests.browser import free_port
    port = free_port()
    log = open(data_dir.parent / "page.log", "ab")
    env = {k: v for k, v in os.environ.items() if k != "VRFT_OWNER"}
    page = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--data-dir", str(data_dir), "--port", str(port)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    from backend.jobs.background import worker_pid
    pid = _wait(lambda: worker_pid(data_dir), 120)
    assert pid, (data_dir.parent / "page.log").read_text()
    return page, pid


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("sig,after", [(signal.SIGINT, 2), (signal.SIGTERM, 2), (signal.SIGTERM, 0),
                                       (signal.SIGINT, 0.6)])
def test_the_page_stops_the_worker_it_started(tmp_path, sig, after):
    """Ctrl-C on `python app.py` (SIGINT; `docker stop` sends SIGTERM) stops the page and, gracefully, its worker:
    while it serves (2 s after its worker started), while it builds the page (at once) and while Gradio starts
    (0.6 s; a KeyboardInterrupt raised there landed in a finaliser and was lost, and the page served on)."""
    data_dir = tmp_path / "data"
    page, worker = _page(data_dir)
    try:
        time.sleep(after)
        page.send_signal(sig)
        assert page.wait(60) == 0, (data_dir.parent / "page.log").read_text()
        assert _wait(lambda: _gone(worker), 5), "the worker outlived the page"
        log = (data_dir / "worker.log").read_text()
        if after >= 2 or log:  # a worker still importing when the page stops dies of the SIGTERM: it held nothing
            assert "asked to stop (SIGTERM)" in log, log
    finally:
        for pid in (page.pid, worker):
            if not _gone(pid):
                os.killpg(pid, signal.SIGKILL)


def test_a_worker_whose_page_is_killed_stops(tmp_path):
    data_dir = tmp_path / "data"
    page, worker = _page(data_dir)
    try:
        page.kill()
        page.wait()
        started = time.monotonic()
        assert _wait(lambda: _gone(worker), 30), "the worker outlived the page that started it"
        assert "its page is gone" in (data_dir / "worker.log").read_text()
        print(f"page SIGKILLed -> its worker gone in {time.monotonic() - started:.1f} s")
    finally:
        if not _gone(worker):
            os.killpg(worker, signal.SIGKILL)
