"""The page keeps its worker: a worker that dies (even by SIGKILL) is replaced by another the page starts and owns, at
most once per N seconds, logged and said on the page, and queued runs and labelling jobs go on with it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from backend.jobs.background import PID_FILE, WorkerKeeper, worker_pid


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Stand_ins:
    """`start` for the keeper: a process whose command line names a worker (what worker_pid checks), pid file
    written, as ensure_worker does."""

    def __init__(self, data_dir):
        self.data_dir, self.procs = data_dir, []

    def __call__(self, data_dir) -> int:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "worker"])
        self.procs.append(proc)
        (data_dir / PID_FILE).write_text(str(proc.pid))
        return proc.pid

    def kill(self, pid: int) -> None:
        proc = next(p for p in self.procs if p.pid == pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_dead_worker_is_replaced_at_most_once_per_interval_logged_and_said(tmp_path):
    clock, said = Clock(), []
    starts = Stand_ins(tmp_path)
    keeper = WorkerKeeper(tmp_path, every=10, poll=3600, start=starts, say=said.append, clock=clock)
    try:
        first = keeper.pid
        assert worker_pid(tmp_path) == first and keeper.message() == ""
        keeper.check()
        assert len(starts.procs) == 1, "a live worker is left alone"

        starts.kill(first)
        clock.now += 11
        keeper.check()
        second = keeper.pid
        assert second != first and worker_pid(tmp_path) == second
        assert said[-1] == f"Visual-RFT Studio: started worker pid {second} in place of pid {first}"
        assert f"started worker pid {second} in place of pid {first}" in (tmp_path / "worker.log").read_text()
        assert keeper.message().startswith(f"⚠ The worker (pid {first}) stopped; the page started another "
                                           f"(pid {second}) at ")

        starts.kill(second)  # dies again at once: not restarted before the interval has passed
        clock.now += 3
        keeper.check()
        assert len(starts.procs) == 2 and worker_pid(tmp_path) is None
        assert said[-1] == f"Visual-RFT Studio: the worker (pid {second}) is gone; starting another in 7 s"
        assert keeper.message().startswith(f"⚠ The worker (pid {second}) is gone; the page is starting another")
        assert keeper.status()["pid"] is None
        clock.now += 7
        keeper.check()
        assert len(starts.procs) == 3 and worker_pid(tmp_path) == keeper.pid
        assert [r["gone"] for r in keeper.status()["restarts"]] == [first, second]

        starts.kill(keeper.pid)
        clock.now += 60
        assert keeper.stop() == starts.procs[-1].pid
        keeper.check()
        assert len(starts.procs) == 3, "no worker is started once the page stops"
    finally:
        keeper.stop()
        starts.close()


def test_a_worker_that_cannot_start_is_said_and_tried_again(tmp_path):
    clock, said, calls = Clock(), [], []
    starts = Stand_ins(tmp_path)

    def start(data_dir):
        calls.append(clock.now)
        if len(calls) == 2:
            raise ValueError("VRFT_JOB_START must be 'spawn' or 'fork'")
        return starts(data_dir)

    keeper = WorkerKeeper(tmp_path, every=5, poll=3600, start=start, say=said.append, clock=clock)
    try:
        starts.kill(keeper.pid)
        clock.now += 5
        keeper.check()
        assert "could not be started: VRFT_JOB_START must be 'spawn' or 'fork'" in keeper.message()
        keeper.check()
        assert len(calls) == 2, "the next try waits for the interval"
        clock.now += 5
        keeper.check()
        assert len(calls) == 3 and worker_pid(tmp_path) == keeper.pid and keeper.error is None
    finally:
        keeper.stop()
        starts.close()


def _wait(predicate, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    return None


def test_the_page_replaces_a_killed_worker_and_queued_jobs_proceed(tmp_path):
    """The real page (`python app.py`): its worker SIGKILLed, it starts another (logged, said through the page's
    worker_status endpoint and its banner), which runs a queued labelling job and a queued training run; the new
    worker is the page's own (it stops with the page)."""
    from gradio_client import Client

    from backend.data.demo.dataset import ensure_demo_dataset
    from backend.data.workspace import open_workspace
    from backend.engine.settings import preset
    from backend.jobs import label_queue
    from backend.jobs.labelling import Source
    from backend.jobs.runs import create_run, get_run
    from tests.browser import running_app
    from tests.test_label_queue import _scenes
    data = tmp_path / "data"
    ws = open_workspace(data)
    ensure_demo_dataset(ws.store, ws.data_dir, n=6)
    with running_app(data, env={"VRFT_WORKER_RESTART_SECONDS": "2"}) as (url, page):
        first = _wait(lambda: worker_pid(data), 60)
        assert first, (data / "worker.log").read_text()
        os.kill(first, signal.SIGKILL)
        second = _wait(lambda: (pid := worker_pid(data)) and pid != first and pid, 60)
        log = (data.parent / f"app-{url.rsplit(':', 1)[1]}.log")
        assert second, log.read_text()
        assert f"started worker pid {second} in place of pid {first}" in log.read_text()

        status = Client(url, verbose=False).predict(api_name="/worker_status")
        assert status["pid"] == second and [(r["gone"], r["pid"]) for r in status["restarts"]] == [(first, second)]
        assert f"The worker (pid {first}) stopped; the page started another (pid {second})" in status["message"]

        job_id = label_queue.submit(ws, Source(model="demo", classes=["red circle"]), [_scenes(tmp_path / "in", 2)])
        settings = preset("CPU demo", max_steps=1, num_generations=2, eval_steps=0)
        settings.prompts_per_step, settings.eval_max_examples, settings.max_completion_length = 1, 1, 8
        run_id = create_run(ws.store, "demo-shapes", "demo", settings)
        assert _wait(lambda: label_queue.progress(ws, job_id)["status"] in ("done", "failed"), 300), \
            (data / "worker.log").read_text()
        assert label_queue.progress(ws, job_id)["status"] == "done", (data / "worker.log").read_text()
        assert _wait(lambda: get_run(ws.store, run_id).status in ("completed", "failed"), 400), \
            (data / "worker.log").read_text()
        assert get_run(ws.store, run_id).status == "completed", get_run(ws.store, run_id).error
        assert worker_pid(data) == second
        page.send_signal(signal.SIGINT)
        assert page.wait(60) == 0
        assert _wait(lambda: worker_pid(data) is None, 10), "the worker the page started outlived it"
    ws.store.close()


def test_a_worker_found_again_clears_the_note(tmp_path):
    """Gone, then a worker runs again before the interval (another page started one): nothing is started, and the
    page no longer says it is gone."""
    clock, said = Clock(), []
    starts = Stand_ins(tmp_path)
    keeper = WorkerKeeper(tmp_path, every=10, poll=3600, start=starts, say=said.append, clock=clock)
    try:
        starts.kill(keeper.pid)
        keeper.check()
        assert "is gone" in keeper.message()
        other = starts(tmp_path)  # as another page would
        keeper.check()
        assert keeper.pid == other and keeper.message() == "" and keeper.restarts == []
        assert said[-1] == f"Visual-RFT Studio: the worker runs again (pid {other})"
    finally:
        keeper.stop()
        starts.close()
