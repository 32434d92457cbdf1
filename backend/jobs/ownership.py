"""Whose a process is, and when it must stop: the worker (or the page) that started it names itself in the child's
environment; the child stops at its next step boundary when asked (SIGTERM, SIGINT) or when its owner is gone.

An owner is gone when its process no longer runs: told at once on Linux by a parent-death signal (prctl
PR_SET_PDEATHSIG, which only names the direct parent), and everywhere by a watch thread that checks, every second,
that the owner's pid still names the process it named (its start time) and that the child has not been re-parented.
A training job also reads its lease at each step: one that nobody renews means its worker is gone too, even where
/proc is not (backend.jobs.training_callbacks). A child whose owner is gone and that has not stopped by itself within
a bounded time ends its process group at once: no process outlives its owner for long.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from backend.jobs.job_records import process_start_time

OWNER_ENV = "VRFT_OWNER"
"""In a child's environment: "PID START_TIME" of the process that started it and owns it (the worker for a job or
an answerer, the page for the worker it started)."""
ORPHAN_GRACE_SECONDS = 300.0
"""A child whose owner is gone stops at its next step boundary; one still running this long after is ended at once
(a step that hangs, or one far longer than this)."""
WATCH_SECONDS = 1.0


def owner_env() -> dict:
    """The environment entry that makes this process the owner of a child it starts."""
    return {OWNER_ENV: f"{os.getpid()} {process_start_time(os.getpid()) or ''}".strip()}


def parse_owner(value: str | None) -> tuple[int, int | None] | None:
    try:
        pid, _, start = (value or "").strip().partition(" ")
        return int(pid), (int(start) if start else None)
    except ValueError:
        return None


def owner_alive(owner: tuple[int, int | None]) -> bool:
    """Whether the owner's pid still names its process (with /proc: the same start time; else: any process)."""
    pid, start = owner
    if start is not None and os.path.isdir("/proc"):
        return process_start_time(pid) == start
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _set_parent_death_signal(sig: int) -> bool:
    """Linux: the kernel sends `sig` to this process when its parent exits. Elsewhere nothing (the watch thread
    still notices)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(sig), 0, 0, 0) == 0  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return False


class Lifeline:
    """This process's tie to its owner (OWNER_ENV), read by the loop that must stop at a boundary: `reason()` is
    None while it may go on, else the sentence why it stops.

    SIGTERM and SIGINT ask for the stop (a second one ends the process at once); the owner's death is noticed by
    the parent-death signal and the watch thread. `grace` seconds after the owner is gone, the process group is
    ended if this process is still there. Signal handlers are installed only from the main thread."""

    def __init__(self, grace: float = ORPHAN_GRACE_SECONDS, watch: float = WATCH_SECONDS, env: dict | None = None,
                 then=None, owner: str = "worker"):
        env = os.environ if env is None else env
        self.owner_name = owner
        self.then = then
        """Called on a second SIGTERM/SIGINT instead of ending the process (the worker: stop at once, settled)."""
        self.owner = parse_owner(env.get(OWNER_ENV))
        self.parent = os.getppid()
        self.asked: str | None = None
        self.gone_at: float | None = None
        self.grace, self.watch = grace, watch
        self._wake = threading.Event()
        self._stopped = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
            if self.owner is not None and self.owner[0] == self.parent:
                signal.signal(signal.SIGUSR1, lambda *_: self._wake.set())
                _set_parent_death_signal(signal.SIGUSR1)
        if self.owner is not None:
            threading.Thread(target=self._watch, name="owner-watch", daemon=True).start()

    def _on_signal(self, signum, frame) -> None:
        if self.asked is not None:  # the second: at once
            if self.then is not None:
                self.then()
                return
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.asked = f"asked to stop ({signal.Signals(signum).name})"
        print(f"process {os.getpid()}: {self.asked}; stopping at the next step boundary", flush=True)

    def owner_gone(self) -> bool:
        if self.gone_at is not None:
            return True
        if self.owner is None:
            return False
        # Re-parented: the owner that started us as its child has exited (even if the pid were reused).
        if (self.owner[0] == self.parent and os.getppid() != self.parent) or not owner_alive(self.owner):
            self.gone_at = time.monotonic()
            print(f"process {os.getpid()}: its owner (pid {self.owner[0]}) is gone; stopping at the next step "
                  f"boundary (at the latest in {self.grace:.0f} s)", flush=True)
            return True
        return False

    def reason(self) -> str | None:
        if self.owner_gone():
            return f"its {self.owner_name} is gone"
        return self.asked

    def close(self) -> None:
        self._stopped.set()
        self._wake.set()

    def _watch(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.watch)
            self._wake.clear()
            if self._stopped.is_set():
                return
            if self.owner_gone() and time.monotonic() - self.gone_at > self.grace:
                print(f"process {os.getpid()}: still running {self.grace:.0f} s after its owner left; ending now",
                      flush=True)
                if os.getpgrp() == os.getpid():  # its own group (a session the owner started): children too
                    try:
                        os.killpg(os.getpgrp(), signal.SIGKILL)
                    except OSError:
                        pass
                os._exit(137)
