"""Latency of the Runs page's 2-second poll with many runs and long ones. Run by hand.

Fills a database (SQLite in a temp dir; `--postgres`: a throwaway PostgreSQL server) with `--runs` runs of
`--steps` steps and 8 metrics each (half of them running, spread over 10 datasets), and gives the newest
running run what the live view shows: rollouts, held-out points, checkpoints, a long log. Then it times the
functions the Runs tab's gr.Timer calls: the runs table (page 1, no filter), and the live view of that run
while its "job" writes one more step (metrics, progress, a log line; rollouts every `--rollout-every` steps)
between two polls, the worst case of a job stepping faster than the page polls. The first live poll (the
whole series read at once) is reported apart. Prints p50/p95; the last line is one JSON object. The fill
takes about 20 s on SQLite; PostgreSQL builds its indexes slower (about 10 minutes on 2 busy cores).

    .venv/bin/python benchmarks/ui_scale.py [--runs 1000] [--steps 1000] [--polls 50] [--postgres]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gradio as gr  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from sqlalchemy import DateTime, bindparam, insert, select, text  # noqa: E402

from backend.data.workspace import open_workspace  # noqa: E402
from backend.engine.settings import preset  # noqa: E402
from backend.jobs.runs import record_step
from backend.jobs.run_history import (keep_summary, record_checkpoint, save_evaluation, save_heldout_point,
                                      store_rollouts, upsert_metrics)
from storage.models import Dataset, Run  # noqa: E402

METRICS = {"reward": (0.2, 0.6), "rewards/format/mean": (0.5, 0.5), "rewards/detection_iou/mean": (0.1, 0.5),
           "kl": (0.0, 0.02), "completions/mean_length": (40.0, -10.0), "step_time": (2.0, 0.0),
           "frac_reward_zero_std": (0.5, -0.4), "loss": (0.1, -0.05)}
"""name -> (start, rise over the run): 8 metrics per step, as a GRPO run logs them."""
DATASETS = 10
RUNS_PER_STATEMENT = 50

FILL_METRICS = """
WITH RECURSIVE steps(step) AS (SELECT 1 UNION ALL SELECT step + 1 FROM steps WHERE step < :steps),
names(name, start, rise) AS (VALUES {names})
INSERT INTO metric_points (run_id, step, name, value, created_at)
SELECT r.id, steps.step, names.name,
       names.start + names.rise * steps.step / (:steps * 1.0) + ((r.id * 31 + steps.step * 17) % 97) / 1000.0, :now
FROM runs r CROSS JOIN steps CROSS JOIN names
WHERE r.id BETWEEN :first AND :last
"""
"""Every metric point of a block of runs in one statement (the database makes the rows, not Python)."""


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least a share `q` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def add_runs(ws, runs: int, steps: int) -> list[int]:
    """`runs` runs over DATASETS datasets, every other one running (at step `steps` of 2 x `steps`), the rest
    completed; their ids, oldest first."""
    now = datetime.now(timezone.utc)
    settings = preset("CPU demo", max_steps=steps).to_dict()
    with ws.store.write() as s:
        datasets = [Dataset(name=f"bench-{i}", task="detection", source_format="coco", folder=f"datasets/bench-{i}",
                            val_fraction=0.2) for i in range(DATASETS)]
        s.add_all(datasets)
        s.flush()
        rows = [{"dataset_id": datasets[i % DATASETS].id, "model": "demo", "family": "demo", "task": "detection",
                 "settings": settings, "status": "running" if i % 2 else "completed", "step": steps,
                 "max_steps": 2 * steps if i % 2 else steps, "attempts": 1, "cancel_requested": False,
                 "created_at": now, "started_at": now, "finished_at": None if i % 2 else now} for i in range(runs)]
        s.execute(insert(Run), rows)
        s.execute(text("UPDATE runs SET folder = 'runs/' || id"))
        return list(s.scalars(select(Run.id).order_by(Run.id)))


def add_metrics(ws, ids: list[int], steps: int) -> None:
    names = ", ".join(f"('{name}', {start}, {rise})" for name, (start, rise) in METRICS.items())
    statement = text(FILL_METRICS.format(names=names)).bindparams(bindparam("now", type_=DateTime(timezone=True)))
    now = datetime.now(timezone.utc)
    for i in range(0, len(ids), RUNS_PER_STATEMENT):
        block = ids[i:i + RUNS_PER_STATEMENT]
        with ws.store.write() as s:
            s.execute(statement, {"steps": steps, "first": block[0], "last": block[-1], "now": now})
    with ws.store.write() as s:
        for run_id in ids:
            keep_summary(s, run_id, ("step_time", "reward"))


def rollout_rows(step: int) -> list[dict]:
    """Two prompts of four completions each, as the job stores them."""
    return [{"image": "bench/shapes.png", "prompt": "Find every 'red circle' in the image.", "prompt_index": p,
             "sample_index": g, "completion": f"<think>step {step}</think><answer>[[10, 10, 60, 60]]</answer>",
             "parsed": {"boxes": [[10, 10, 60 + g, 60]], "think": f"step {step}"},
             "rewards": {"format": 1.0, "detection_iou": 0.1 * g}, "total": 1.0 + 0.1 * g,
             "group_mean": 1.15, "group_std": 0.11, "advantage": 0.1 * g - 0.15} for p in range(2) for g in range(4)]


def add_watched_run(ws, run_id: int, steps: int, rollout_every: int, log_mb: int) -> Path:
    """Rollouts, held-out points, checkpoints, an evaluation and a `log_mb` MB log for the run watched; its
    log's path."""
    image = Image.new("RGB", (320, 240), "white")
    ImageDraw.Draw(image).ellipse((10, 10, 60, 60), fill="red")
    (ws.data_dir / "bench").mkdir(exist_ok=True)
    image.save(ws.data_dir / "bench/shapes.png")
    for step in range(rollout_every, steps + 1, rollout_every):
        store_rollouts(ws.store, run_id, step, rollout_rows(step))
    for step in range(0, steps + 1, max(1, steps // 10)):
        save_heldout_point(ws.store, run_id, step, {"mean_iou": 0.1 + step / (4 * steps), "count": 30}, 12.0)
        if step:
            record_checkpoint(ws.store, run_id, step, f"runs/{run_id}/checkpoint-{step}")
    save_evaluation(ws.store, run_id, "before", {"mean_iou": 0.1, "format_rate": 0.5, "seconds": 30.0})
    log = ws.data_dir / f"runs/{run_id}/train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    block = "".join(f"{{'loss': 0.1, 'reward': 0.5, 'kl': 0.01, 'step': {i}}}\n" for i in range(1000)).encode()
    with open(log, "wb") as f:
        for _ in range(max(1, log_mb * 2**20 // len(block))):
            f.write(block)
    return log


def fill(ws, runs: int, steps: int, rollout_every: int, log_mb: int) -> int:
    """The database and files; the id of the run watched (the newest running one)."""
    ids = add_runs(ws, runs, steps)
    add_metrics(ws, ids, steps)
    watched = max(i for n, i in enumerate(ids) if n % 2) if runs > 1 else ids[0]
    add_watched_run(ws, watched, steps, rollout_every, log_mb)
    return watched


def runs_tab(ws) -> dict:
    """The Runs tab's timer functions, as the page wires them."""
    from ui.runs_tab import create_runs_tab
    with gr.Blocks():
        return create_runs_tab(ws)


def time_table(tab: dict, polls: int) -> list[float]:
    fn, inputs, _ = tab["table"]
    args = [c.value for c in inputs]  # the page as it opens: page 1, every status, every dataset
    times = []
    for _ in range(polls):
        t = time.perf_counter()
        fn(*args)
        times.append(1000 * (time.perf_counter() - t))
    return times


def job_step(ws, run_id: int, step: int, log: Path, rollout_every: int) -> None:
    """What a training job writes for one step (not timed)."""
    values = {name: start + rise * (step % 100) / 100 for name, (start, rise) in METRICS.items()}
    upsert_metrics(ws.store, run_id, step, values)
    if step % rollout_every == 0:
        store_rollouts(ws.store, run_id, step, rollout_rows(step))
    record_step(ws.store, run_id, step)
    with open(log, "a") as f:
        f.write(f"{{'loss': 0.1, 'reward': 0.5, 'step': {step}}}\n")


def time_live(ws, tab: dict, run_id: int, steps: int, polls: int, log: Path, rollout_every: int
              ) -> tuple[float, list[float]]:
    """The first poll of the run (ms), then one poll per new step (ms each)."""
    fn, _, _ = tab["live"]
    names = tab["names"]
    state = {"run_id": run_id, "step": None, "follow": True, "prompt": None, "view": None}

    def poll() -> float:
        t = time.perf_counter()
        shown = dict(zip(names, fn(state["run_id"], state["step"], state["follow"], state["prompt"], state["view"])))
        elapsed = 1000 * (time.perf_counter() - t)
        state["view"] = shown["view"]  # what the page's gr.State holds for the next poll
        return elapsed

    first = poll()
    times = []
    for step in range(steps + 1, steps + 1 + polls):
        job_step(ws, run_id, step, log, rollout_every)
        times.append(poll())
    return first, times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--steps", type=int, default=1000, help="metric steps stored for each run")
    p.add_argument("--polls", type=int, default=50, help="polls timed, for the table and for the live view")
    p.add_argument("--rollout-every", type=int, default=10, help="the watched run stores rollouts every N steps")
    p.add_argument("--log-mb", type=int, default=50, help="size of the watched run's log")
    p.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL server instead of SQLite")
    p.add_argument("--keep", action="store_true", help="keep the data dir instead of deleting it")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="vrft-uiscale-"))
    try:
        if args.postgres:
            from tests.postgres import new_database, throwaway_server
            with throwaway_server() as server:
                os.environ["DATABASE_URL"] = new_database(server)
                result = measure(args, tmp / "data")
        else:
            os.environ.pop("DATABASE_URL", None)
            result = measure(args, tmp / "data")
    finally:
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))
    return 0


def measure(args, data_dir: Path) -> dict:
    ws = open_workspace(data_dir)
    started = time.time()
    watched = fill(ws, args.runs, args.steps, args.rollout_every, args.log_mb)
    print(f"filled {ws.store.engine.dialect.name}: {args.runs} runs x {args.steps} steps x {len(METRICS)} metrics in "
          f"{time.time() - started:.0f} s; watching run {watched}", flush=True)
    tab = runs_tab(ws)
    table = time_table(tab, args.polls)
    log = data_dir / f"runs/{watched}/train.log"
    first, live = time_live(ws, tab, watched, args.steps, args.polls, log, args.rollout_every)
    ws.store.close()
    result = {"runs": args.runs, "steps": args.steps,
              "table_p50_ms": round(percentile(table, 0.5), 1), "table_p95_ms": round(percentile(table, 0.95), 1),
              "live_p50_ms": round(percentile(live, 0.5), 1), "live_p95_ms": round(percentile(live, 0.95), 1)}
    print(f"runs table: p50 {result['table_p50_ms']} ms, p95 {result['table_p95_ms']} ms over {args.polls} polls")
    print(f"live view of run {watched}: first poll {first:.1f} ms (the whole series); then p50 "
          f"{result['live_p50_ms']} ms, p95 {result['live_p95_ms']} ms over {args.polls} polls, a new step before each")
    return result


if __name__ == "__main__":
    sys.exit(main())
