"""Processes the page starts: the data dir's worker, when none runs (the page owns it: it stops with the page, its
jobs saving a checkpoint and re-queued, and stops by itself if the page is gone), kept running while the page runs
(WorkerKeeper: a worker that dies, even by SIGKILL, is replaced), and the first-start demo setup.
A worker started apart (`python app.py worker`, a service) is found and used, and never stopped by the page."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PID_FILE = "worker.pid"
_STARTED: dict[int, subprocess.Popen] = {}
"""The workers this process started, by pid."""


def _alive(pid: int) -> bool:
    """Whether `pid` is a live worker (with /proc: not a zombie, and its command line names a worker)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True
    for _ in range(5):
        try:
            stat = (proc / "stat").read_text()
            if stat[stat.rindex(")") + 2:].startswith("Z"):  # exited, not yet reaped
                return False
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            return False
        if cmdline:
            return b"worker" in cmdline
        time.sleep(0.05)  # a process being exec'd reads an empty command line for a moment
    return False


def worker_pid(data_dir: Path) -> int | None:
    try:
        pid = int((Path(data_dir) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def ensure_worker(data_dir: Path) -> int:
    """The pid of this data dir's worker, starting one (in its own session, logging to worker.log, owned by this
    process: see backend.jobs.ownership) if none runs."""
    data_dir = Path(data_dir).resolve()
    pid = worker_pid(data_dir)
    if pid:
        return pid
    from backend.jobs.starter import job_start_mode
    from backend.jobs.ownership import owner_env
    job_start_mode()  # an unknown VRFT_JOB_START stops the page with its sentence, not a silent dead worker
    log = open(data_dir / "worker.log", "ab")
    # Its own session: a Ctrl-C meant for the page reaches the worker only as the page's SIGTERM, once.
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--data-dir", str(data_dir), "worker"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **owner_env()})
    (data_dir / PID_FILE).write_text(str(proc.pid))
    _STARTED[proc.pid] = proc
    return proc.pid


RESTART_SECONDS = 10.0
"""The page starts at most one worker per this many seconds when it finds its worker gone (VRFT_WORKER_RESTART_SECONDS
overrides): a worker that dies at every start is retried, and logged, at that pace, not in a tight loop."""
RESTART_NOTE_SECONDS = 600.0
"""How long the page says that it replaced its worker."""


def _reap() -> None:
    """Forget (and reap: no zombie) the workers this process started that have exited."""
    for pid, proc in list(_STARTED.items()):
        if proc.poll() is not None:
            _STARTED.pop(pid, None)


class WorkerKeeper:
    """The page's worker, kept running: one is found or started at once (ensure_worker), then a watch thread looks
    every `poll` seconds and, when the data dir has no live worker (killed, crashed), starts another, at most once
    per `every` seconds. Each loss and start is logged (the page's output and worker.log) and `message()` says it on
    the page. A worker it starts is owned by this process like the first (it stops with the page). `stop()` ends
    the watch before the page stops its worker, so none is started after."""

    def __init__(self, data_dir: Path, every: float | None = None, poll: float = 1.0, start=None, say=print,
                 clock=time.monotonic):
        self.data_dir = Path(data_dir).resolve()
        self.every = float(os.environ.get("VRFT_WORKER_RESTART_SECONDS", RESTART_SECONDS)) if every is None else every
        self.poll, self._start, self._say, self._clock = poll, start or ensure_worker, say, clock
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.pid = self._start(self.data_dir)
        self.last_start = self._clock()
        self.gone: tuple[int, float] | None = None
        """(pid, when) of the worker found gone and not yet replaced."""
        self.restarts: list[dict] = []
        """Each replacement: {"gone": old pid, "pid": new pid, "at": wall-clock time}."""
        self.error: str | None = None
        self._thread = threading.Thread(target=self._watch, name="worker-keeper", daemon=True)
        self._thread.start()

    def _log(self, line: str) -> None:
        self._say(f"Visual-RFT Studio: {line}")
        try:
            with open(self.data_dir / "worker.log", "a") as log:
                log.write(f"[page {os.getpid()}] {datetime.now():%Y-%m-%d %H:%M:%S} {line}\n")
        except OSError:
            pass

    def check(self) -> None:
        """One look: the worker gone -> another started, unless one was started less than `every` seconds ago."""
        _reap()
        alive = worker_pid(self.data_dir)
        if alive:
            with self._lock:
                if self.gone is not None:  # back (or another page started one): nothing to replace
                    self._log(f"the worker runs again (pid {alive})")
                self.pid, self.gone = alive, None
            return
        with self._lock:
            if self._stopped.is_set():
                return
            now = self._clock()
            if self.gone is None:
                self.gone = (self.pid, time.time())
                self._log(f"the worker (pid {self.pid}) is gone; starting another"
                          + (f" in {self.every - (now - self.last_start):.0f} s"
                             if now - self.last_start < self.every else ""))
            if now - self.last_start < self.every:
                return
            self.last_start = now
            try:
                pid = self._start(self.data_dir)
            except Exception as e:  # noqa: BLE001 - said on the page and tried again after `every` seconds
                self.error = str(e) or type(e).__name__
                self._log(f"could not start a worker: {self.error}; trying again in {self.every:.0f} s")
                return
            self.restarts.append({"gone": self.gone[0], "pid": pid, "at": time.time()})
            self._log(f"started worker pid {pid} in place of pid {self.gone[0]}")
            self.pid, self.gone, self.error = pid, None, None

    def _watch(self) -> None:
        while not self._stopped.wait(self.poll):
            try:
                self.check()
            except Exception as e:  # noqa: BLE001 - the watch must go on
                self._log(f"checking the worker failed: {e}")

    def stop(self) -> int:
        """Stop watching (no worker is started after this returns); the pid of the latest worker."""
        with self._lock:
            self._stopped.set()
        self._thread.join(timeout=10)
        return self.pid

    def status(self) -> dict:
        """What the page shows: the live worker's pid (None while there is none), the replacements, the message."""
        return {"pid": worker_pid(self.data_dir), "restarts": list(self.restarts), "error": self.error,
                "message": self.message()}

    def message(self) -> str:
        """'' while the worker runs and was not replaced lately; else a line for the page."""
        if self.gone is not None:
            if self.error:
                return (f"⚠ The worker (pid {self.gone[0]}) is gone and another could not be started: {self.error} "
                        f"(see worker.log in the data dir; the page tries again every {self.every:.0f} s).")
            return (f"⚠ The worker (pid {self.gone[0]}) is gone; the page is starting another. Queued runs and "
                    "labelling jobs wait for it.")
        if self.restarts and time.time() - self.restarts[-1]["at"] < RESTART_NOTE_SECONDS:
            last = self.restarts[-1]
            return (f"⚠ The worker (pid {last['gone']}) stopped; the page started another (pid {last['pid']}) at "
                    f"{datetime.fromtimestamp(last['at']):%H:%M:%S}. Queued runs and labelling jobs go on; a run that "
                    "was training resumes from its last checkpoint.")
        return ""


def stop_started_worker(pid: int, say=print) -> bool:
    """Stop the worker this process started as `pid` (a worker it found running is not its to stop): SIGTERM, so
    its jobs save a checkpoint at their next step and their runs are queued again; then wait for it. A Ctrl-C
    meanwhile passes a second signal on (the worker stops at once, runs still re-queued); a third kills it.
    Returns whether there was such a worker."""
    proc = _STARTED.pop(pid, None)
    if proc is None:
        return False
    sent = 0
    while proc.poll() is None and sent < 3:
        if sent == 0:
            say(f"stopping the worker (pid {pid}): running jobs save a checkpoint at their next step and are queued "
                "again; press Ctrl-C again to stop at once")
        try:
            if sent < 2:
                proc.send_signal(signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGKILL)
            sent += 1
            proc.wait()
        except KeyboardInterrupt:
            continue
        except ProcessLookupError:
            break
    proc.wait()
    return True


class DemoSetup:
    """Registers the demo dataset in a thread at first start; the page shows its progress."""

    def __init__(self, ws):
        self.ws, self.state, self.error = ws, "preparing", None
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        from backend.data.demo.dataset import ensure_demo_dataset
        try:
            ensure_demo_dataset(self.ws.store, self.ws.data_dir)
            self.state = "ready"
        except Exception as e:  # noqa: BLE001 - shown on the page
            self.state, self.error = "failed", str(e)

    def message(self) -> str:
        if self.state == "ready":
            return ""
        if self.state == "failed":
            return f"⚠ The demo dataset could not be prepared: {self.error}"
        return "⏳ Preparing the demo dataset `demo-shapes` (first start only)…"
