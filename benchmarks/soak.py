"""Soak test of the multi-worker path, run by hand (not in CI): workers and jobs killed at random, nothing lost.

A throwaway PostgreSQL server, a shared data dir, `--workers` workers (`app.py worker`, warm standbys), `--runs`
short demo runs. For `--minutes` a random worker is stopped (SIGTERM, a graceful stop: its jobs checkpoint and
their runs are re-queued; or SIGKILL: its jobs notice and stop by themselves) or a random job is SIGKILLed, every few
seconds (`--kill-every`); workers are restarted as they end. Then the kills stop and the workers drain the queue (at most
`--drain-minutes`). At the end it prints: every run completed?, metric steps 1..N exactly once per run, no
rollout twice, and the counts of kills, re-queues and lost leases; the last line is one JSON object.
Exit status 0 when every check holds.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--runs 20] [--workers 3] [--steps 3]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from backend.data.demo.dataset import ensure_demo_dataset  # noqa: E402
from backend.data.workspace import open_workspace  # noqa: E402
from backend.engine.settings import preset  # noqa: E402
from backend.jobs.job_records import process_start_time, read_job_record  # noqa: E402
from backend.jobs.runs import create_run  # noqa: E402
from storage.models import Evaluation, MetricPoint, Rollout, Run  # noqa: E402
from tests.postgres import new_database, throwaway_server  # noqa: E402

FINAL = ("completed", "failed", "cancelled")


class Workers:
    """`app.py worker` processes, each in its own session, logging to DATA_DIR/soak-worker-N.log; restarted when
    they die."""

    def __init__(self, data_dir: Path, n: int, env: dict, lease_seconds: int) -> None:
        self.data_dir, self.env, self.lease_seconds = data_dir, env, lease_seconds
        self.procs: list[subprocess.Popen | None] = [None] * n
        self.started = 0

    def keep_alive(self) -> None:
        for i, p in enumerate(self.procs):
            if p is None or p.poll() is not None:
                if p is not None:
                    p.wait()
                log = open(self.data_dir / f"soak-worker-{i}.log", "ab")
                self.procs[i] = subprocess.Popen(
                    [sys.executable, str(ROOT / "app.py"), "--data-dir", str(self.data_dir), "worker",
                     "--lease-seconds", str(self.lease_seconds), "--max-attempts", "1000"],
                    cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True)
                log.close()
                self.started += 1

    def kill_one(self, rng: random.Random, sig: int = signal.SIGKILL) -> bool:
        alive = [p for p in self.procs if p is not None and p.poll() is None]
        if not alive:
            return False
        os.kill(rng.choice(alive).pid, sig)  # the worker only: SIGTERM stops it gracefully; after SIGKILL its job
        return True                          # notices and stops at its next step

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def live_jobs(data_dir: Path) -> list[int]:
    """Pids of the job processes recorded in the runs' folders that are still those processes."""
    pids = []
    for run_dir in sorted((data_dir / "runs").glob("*")):
        record = read_job_record(run_dir)
        if record and record.get("start_time") is not None and process_start_time(record["pid"]) == record["start_time"]:
            pids.append(record["pid"])
    return pids


def kill_job(data_dir: Path, rng: random.Random) -> bool:
    pids = live_jobs(data_dir)
    if not pids:
        return False
    try:
        os.killpg(rng.choice(pids), signal.SIGKILL)
        return True
    except OSError:
        return False


def statuses(ws) -> dict[str, int]:
    with ws.store.read() as s:
        return dict(s.execute(select(Run.status, func.count(Run.id)).group_by(Run.status)).all())


def check(ws, run_ids: list[int], steps: int) -> dict:
    """The figures: statuses, metric steps per run, rollouts stored twice, attempts."""
    with ws.store.read() as s:
        runs = {r.id: r for r in s.scalars(select(Run).where(Run.id.in_(run_ids)))}
        points = s.execute(select(MetricPoint.run_id, MetricPoint.name, MetricPoint.step)
                           .where(MetricPoint.run_id.in_(run_ids))).all()
        rollout_keys = s.execute(select(Rollout.run_id, Rollout.step, Rollout.prompt_index, Rollout.sample_index)
                                 .where(Rollout.run_id.in_(run_ids))).all()
        evaluations = s.execute(select(Evaluation.run_id, Evaluation.phase).where(Evaluation.run_id.in_(run_ids))).all()
    by_metric: dict[tuple[int, str], list[int]] = {}
    for run_id, name, step in points:
        by_metric.setdefault((run_id, name), []).append(step)
    expected = list(range(1, steps + 1))
    bad_steps = []
    for run_id in run_ids:
        for name in ("reward", "step_time"):
            got = sorted(by_metric.get((run_id, name), []))
            if got != expected:
                bad_steps.append({"run": run_id, "metric": name, "steps": got})
    duplicated_points = sum(len(v) - len(set(v)) for v in by_metric.values())
    rollouts_twice = len(rollout_keys) - len(set(rollout_keys))
    unkeyed_rollouts = sum(1 for k in rollout_keys if k[2] is None or k[3] is None)
    attempts = [runs[r].attempts for r in run_ids]
    return {
        "statuses": {st: sum(1 for r in runs.values() if r.status == st) for st in sorted({r.status for r in runs.values()})},
        "all_completed": all(runs[r].status == "completed" for r in run_ids),
        "not_completed": [{"run": r, "status": runs[r].status, "error": runs[r].error} for r in run_ids
                          if runs[r].status != "completed"],
        "metric_steps_exactly_once": not bad_steps and duplicated_points == 0,
        "metric_step_problems": bad_steps[:10],
        "duplicated_metric_points": duplicated_points,
        "rollouts": len(rollout_keys), "rollouts_stored_twice": rollouts_twice, "rollouts_without_key": unkeyed_rollouts,
        "no_rollout_twice": rollouts_twice == 0 and unkeyed_rollouts == 0,
        "runs_with_both_evaluations": sum(1 for r in run_ids if {(r, "before"), (r, "after")} <= set(evaluations)),
        "claims": sum(attempts), "requeues": sum(attempts) - sum(1 for a in attempts if a > 0),
        "max_attempts_of_a_run": max(attempts) if attempts else 0,
    }


def count_in_files(paths, text: str) -> int:
    return sum(p.read_text(errors="replace").count(text) for p in paths if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long workers and jobs are killed at random")
    p.add_argument("--drain-minutes", type=float, default=15.0, help="then at most this long for the queue to drain")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="training steps of each run (a checkpoint at every step)")
    p.add_argument("--kill-every", type=float, nargs=2, default=(2.0, 6.0), metavar=("MIN", "MAX"),
                   help="seconds between two kills, drawn uniformly")
    p.add_argument("--lease-seconds", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the data dir (logs) instead of deleting it")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="vrft-soak-"))
    data_dir = tmp / "data"
    kills = {"workers": 0, "workers_terminated": 0, "jobs": 0}
    with throwaway_server() as server:
        url = new_database(server)
        os.environ["DATABASE_URL"] = url
        ws = open_workspace(data_dir)
        ensure_demo_dataset(ws.store, ws.data_dir, n=10)
        run_ids = []
        for _ in range(args.runs):
            settings = preset("CPU demo", max_steps=args.steps, num_generations=2, save_steps=1)
            settings.prompts_per_step, settings.max_completion_length, settings.eval_max_examples = 1, 8, 1
            run_ids.append(create_run(ws.store, "demo-shapes", "demo", settings))
        env = {**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
        env.setdefault("OMP_NUM_THREADS", "1")  # several jobs share the CPU: no thread oversubscription
        workers = Workers(data_dir, args.workers, env, args.lease_seconds)
        print(f"soak: {args.runs} runs of {args.steps} steps, {args.workers} workers, kills for {args.minutes:g} min "
              f"(data dir {data_dir})", flush=True)
        try:
            chaos_end = time.time() + args.minutes * 60
            next_kill = time.time() + rng.uniform(*args.kill_every)
            last_report = 0.0
            while time.time() < chaos_end:
                workers.keep_alive()
                if time.time() >= next_kill:
                    draw = rng.random()
                    if draw < 0.25:
                        kills["workers_terminated"] += workers.kill_one(rng, signal.SIGTERM)
                    elif draw < 0.5:
                        kills["workers"] += workers.kill_one(rng)
                    else:
                        kills["jobs"] += kill_job(data_dir, rng)
                    next_kill = time.time() + rng.uniform(*args.kill_every)
                if time.time() - last_report > 30:
                    last_report = time.time()
                    print(f"  {time.time() - started:5.0f} s: {statuses(ws)}, kills {kills}", flush=True)
                time.sleep(0.2)
            print(f"kills stop after {time.time() - started:.0f} s: {statuses(ws)}; draining", flush=True)
            drain_end = time.time() + args.drain_minutes * 60
            while time.time() < drain_end:
                workers.keep_alive()  # only workers that died by themselves (none should)
                st = statuses(ws)
                if sum(n for s, n in st.items() if s in FINAL) == args.runs:
                    break
                if time.time() - last_report > 30:
                    last_report = time.time()
                    print(f"  {time.time() - started:5.0f} s: {st}", flush=True)
                time.sleep(1)
            drained = time.time()
        finally:
            workers.stop()
            for pid in live_jobs(data_dir):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        figures = check(ws, run_ids, args.steps)
        logs = list(data_dir.glob("soak-worker-*.log"))
        train_logs = list((data_dir / "runs").glob("*/train.log"))
        figures.update(
            kills_of_workers=kills["workers"], sigterms_of_workers=kills["workers_terminated"],
            kills_of_jobs=kills["jobs"], worker_starts=workers.started,
            lost_leases_stopped_by_worker=count_in_files(logs, "without settling it"),
            jobs_stopped_by_their_fence=count_in_files(train_logs, "stopping: run "),
            chaos_minutes=args.minutes, drain_s=round(drained - started - args.minutes * 60, 1),
            wall_s=round(time.time() - started, 1), runs=args.runs, steps=args.steps, workers=args.workers,
            lease_seconds=args.lease_seconds)
        ws.store.close()
    ok = figures["all_completed"] and figures["metric_steps_exactly_once"] and figures["no_rollout_twice"]
    print(f"every run completed: {'yes' if figures['all_completed'] else 'NO'} ({figures['statuses']})")
    print(f"metric steps 1..{args.steps} exactly once per run: {'yes' if figures['metric_steps_exactly_once'] else 'NO'}"
          + (f" {figures['metric_step_problems']}" if figures["metric_step_problems"] else ""))
    print(f"no rollout twice: {'yes' if figures['no_rollout_twice'] else 'NO'} ({figures['rollouts']} rollouts, "
          f"{figures['rollouts_stored_twice']} stored twice, {figures['rollouts_without_key']} without a key)")
    print(f"kills: {kills['workers']} workers SIGKILLed, {kills['workers_terminated']} sent SIGTERM, {kills['jobs']} jobs; "
          f"re-queues {figures['requeues']} "
          f"(claims {figures['claims']}, at most {figures['max_attempts_of_a_run']} attempts of one run); lost leases "
          f"stopped by a worker {figures['lost_leases_stopped_by_worker']}, jobs stopped by their fence "
          f"{figures['jobs_stopped_by_their_fence']}; {figures['wall_s']:.0f} s in all")
    if args.keep:
        print(f"kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"ok": ok, **figures}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
