"""Starting a job's process: exec'd fresh or handed to a warm standby, in its own session; never a fork, never torch here."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backend.data.workspace import Workspace
from backend.jobs.ownership import owner_env
from backend.jobs.training import LEASE_TOKEN_ENV

ROOT = Path(__file__).resolve().parent.parent.parent


def kill_tree(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


JOB_START_MODES = ("standby", "spawn")
STANDBY_RETRY_SECONDS = 60


def job_start_mode() -> str:
    """`VRFT_JOB_START`: "standby" (the default) or "spawn"; anything else is one sentence at worker start."""
    mode = os.environ.get("VRFT_JOB_START", "standby")
    if mode not in JOB_START_MODES:
        raise ValueError(f"VRFT_JOB_START is {mode!r}; it must be 'standby' (the default: a job process kept "
                         "warm) or 'spawn' (a fresh process for each job)")
    return mode


def job_env(extra: dict | None = None) -> dict:
    """The environment of a process the worker starts (job, answerer): the worker's own, unbuffered output,
    no tokenizer threads, this process named as its owner (backend.jobs.ownership), and `extra`."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **owner_env(), **(extra or {})}


def _job_process(ws: Workspace, args: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
    """`python -m backend.jobs.training` in its own session (killable as a tree), with `env` added to the worker's
    environment. The worker itself never imports torch or touches CUDA: a fork after CUDA is initialised
    fails, so every job is exec'd fresh."""
    return subprocess.Popen([sys.executable, "-m", "backend.jobs.training", "--data-dir", str(ws.data_dir), *args],
                            cwd=ROOT, start_new_session=True, env=job_env(env), **kw)


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
        """Stop the standby at once: it holds no run and has written nothing (waiting for EOF to reach it meant
        waiting for its imports, up to 5 s of every stop)."""
        proc, self.standby = self.standby, None
        if proc is not None:
            self._stop(proc)

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        if proc.poll() is None:
            kill_tree(proc)
        proc.wait()
