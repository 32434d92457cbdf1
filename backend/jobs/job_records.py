"""The job record in a run's folder: which process runs the run's job, on which host and boot, and who may kill it."""
from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

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
