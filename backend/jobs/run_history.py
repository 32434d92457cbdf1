"""What a run records as it trains, and reads back: metric points (upserted by (run, step, name), with the
run row's summary kept in the same write), rollouts (once per (run, step, prompt index, sample index)),
checkpoints, the held-out curve, evaluations and the best step; a run with all of it as JSON.

Writes pass the job's lease `token=` and are accepted only under it (backend.jobs.runs: LeaseLost otherwise).
"""
from __future__ import annotations

import math
from pathlib import Path

from sqlalchemy import func, select

from backend.jobs.runs import _hold_lease, get_run, now, run_dict, run_training_set
from backend.scoring.evaluation import MAIN_METRIC, main_scores, main_value
from backend.scoring.verdict import reward_changes, verdict
from storage import Store, update_where, upsert
from storage.models import Checkpoint, Evaluation, HeldoutPoint, MetricPoint, Rollout, Run


def metrics(store: Store, run_id: int, since: int | None = None) -> dict[str, list[list[float]]]:
    """{name: [[step, value], ...]} by step; with `since`, only the points of that step and after (a page that
    holds the series up to `since` reads what is new, and `since` again: a step can be logged in two parts)."""
    q = select(MetricPoint.name, MetricPoint.step, MetricPoint.value).where(MetricPoint.run_id == run_id)
    if since is not None:
        q = q.where(MetricPoint.step >= since)
    with store.read() as s:
        rows = s.execute(q.order_by(MetricPoint.name, MetricPoint.step)).all()
    out: dict[str, list[list[float]]] = {}
    for name, step, value in rows:
        out.setdefault(name, []).append([step, value])
    return out


def metric_total(store: Store, run_id: int, name: str) -> float:
    """The sum of a run's `name` points (0 without any), added up by the database."""
    with store.read() as s:
        return s.scalar(select(func.coalesce(func.sum(MetricPoint.value), 0.0))
                        .where(MetricPoint.run_id == run_id, MetricPoint.name == name))


def evaluations(store: Store, run_id: int) -> dict:
    with store.read() as s:
        return {e.phase: e.metrics for e in s.scalars(select(Evaluation).where(Evaluation.run_id == run_id))}


def run_json(store: Store, run_id: int, with_metrics: bool = True, data_dir: Path | None = None) -> dict:
    """A run as `runs show --json` prints it; with its metrics, results and training set (run_training_set: as
    pinned in the run's folder under `data_dir`)."""
    run = get_run(store, run_id)
    out = run_dict(run)
    if with_metrics:
        out["metrics"] = metrics(store, run_id)
        out.update(run_results(store, out))
        out["training_set"] = run_training_set(store, run, data_dir)
    return out


def run_results(store: Store, run: dict) -> dict:
    """The run's evaluations, held-out curve (and each point's seconds), best step and verdict (`run`: run_dict's
    with its "metrics")."""
    points, saved = heldout_points(store, run["id"]), checkpoint_steps(store, run["id"])
    out = {"evaluation": evaluations(store, run["id"]), "heldout": heldout_series(points),
           "heldout_seconds": [[p.step, p.seconds] for p in points],
           "best": best_point(store, run["id"], run["task"], points, saved)}
    return out | {"verdict": run_verdict(run | out | {"checkpoint_steps": saved}, points)}


def run_verdict(run: dict, points: list[HeldoutPoint]) -> dict:
    """Did the run help (backend.scoring.verdict): its held-out main metric before training against its evaluation
    after training, or while it trains its latest evaluated step, paired over the same held-out prompts; and
    whether its reward rose through the format alone (its metric points, each reward weighted as it trained)."""
    task, settings = run["task"], run.get("settings") or {}
    metric = MAIN_METRIC[task]
    on_base = any("base" in p.metrics for p in points)
    evaluated = run.get("evaluation", {})
    before = main_scores(evaluated["before"]) if "before" in evaluated else None
    final = "after" in evaluated
    kept = run.get("checkpoint_steps", set())
    latest = [p for p in points if p.step >= 1 and p.step in kept]  # not a step whose weights were not kept (NaN)
    after = main_scores(evaluated["after"]) if final else main_scores(latest[-1].metrics) if latest else None
    weights = dict(zip(settings.get("rewards") or [], settings.get("reward_weights") or []))
    return verdict(f"base classes' {metric}" if on_base else metric, before, after,
                   reward_changes(run.get("metrics", {})), weights, final)


def upsert_metrics(store: Store, run_id: int, step: int, values: dict[str, float], token: str | None = None) -> None:
    """One point per (run, step, name): a resumed run overwrites, never duplicates (one INSERT … ON CONFLICT).
    A NaN or infinite value is recorded as missing (no point), never as an error. With `token`, only under that
    current lease (else LeaseLost)."""
    values = {k: v for k, v in values.items() if math.isfinite(v)}
    with store.write() as s:
        _hold_lease(s, run_id, token)
        upsert(s, MetricPoint, [{"run_id": run_id, "step": step, "name": k, "value": float(v), "created_at": now()}
                                for k, v in values.items()], ("run_id", "step", "name"), ("value", "created_at"))
        keep_summary(s, run_id, values)


STEP_TIMES_FOR_ETA = 10


def keep_summary(s, run_id: int, names) -> None:
    """Inside a write: set the run's `step_seconds` (the mean of its last STEP_TIMES_FOR_ETA step times) and
    `last_reward` (its newest reward point) from its metric points, for those of the two among `names`, in one
    UPDATE. Computed from the stored points, so a resumed run that writes its steps again stays right."""
    values = {}
    if "step_time" in names:
        recent = (select(MetricPoint.value).where(MetricPoint.run_id == run_id, MetricPoint.name == "step_time")
                  .order_by(MetricPoint.step.desc()).limit(STEP_TIMES_FOR_ETA).subquery())
        values["step_seconds"] = select(func.avg(recent.c.value)).scalar_subquery()
    if "reward" in names:
        values["last_reward"] = (select(MetricPoint.value).where(MetricPoint.run_id == run_id,
                                                                 MetricPoint.name == "reward")
                                 .order_by(MetricPoint.step.desc()).limit(1).scalar_subquery())
    if values:
        update_where(s, Run, run_id, **values)


ROLLOUT_FIELDS = ("sample_id", "image", "prompt", "completion", "parsed", "rewards", "total", "group_mean",
                  "group_std", "advantage")


def store_rollouts(store: Store, run_id: int, step: int, rows: list[dict], token: str | None = None) -> None:
    """Store a step's sampled rollouts once per (run, step, prompt_index, sample_index) (one INSERT … ON CONFLICT).

    `rows` are the training job's dicts (sample_id, image, prompt, completion, parsed, rewards, and the group's
    total, group_mean, group_std, advantage) with
    `prompt_index` (the prompt's place in the step's batch) and `sample_index` (which of its generations). A row
    without them gets (its position in `rows`, 0): the job picks the same positions of the same batch when a
    step is repeated after a resume. A step written again (a resumed run repeats the steps after its last
    checkpoint) replaces its rollouts, as it replaces its metric points: what is shown is what training kept.
    With `token`, only under that current lease (else LeaseLost).
    """
    values = []
    for i, r in enumerate(rows):
        values.append({"run_id": run_id, "step": step, "created_at": now(),
                       "prompt_index": int(r["prompt_index"]) if r.get("prompt_index") is not None else i,
                       "sample_index": int(r["sample_index"]) if r.get("sample_index") is not None else 0,
                       **{k: r.get(k) for k in ROLLOUT_FIELDS},
                       "parsed": r.get("parsed") or {}, "rewards": r.get("rewards") or {}})
    with store.write() as s:
        _hold_lease(s, run_id, token)
        upsert(s, Rollout, values, ("run_id", "step", "prompt_index", "sample_index"),
               (*ROLLOUT_FIELDS, "created_at"))


def record_checkpoint(store: Store, run_id: int, step: int, path: str, token: str | None = None) -> None:
    """A checkpoint folder (relative to the data dir) fully written at `step`: one row per (run, step).
    With `token`, only under that current lease (else LeaseLost)."""
    with store.write() as s:
        _hold_lease(s, run_id, token)
        upsert(s, Checkpoint, [{"run_id": run_id, "step": step, "path": path, "complete": True, "created_at": now()}],
               ("run_id", "step"), ("path", "complete"))


def save_evaluation(store: Store, run_id: int, phase: str, result: dict, token: str | None = None) -> None:
    """The held-out evaluation `before` or `after` training: one row per (run, phase), the newest kept.
    With `token`, only under that current lease (else LeaseLost)."""
    with store.write() as s:
        _hold_lease(s, run_id, token)
        upsert(s, Evaluation, [{"run_id": run_id, "phase": phase, "metrics": finite(result), "created_at": now()}],
               ("run_id", "phase"), ("metrics", "created_at"))


def finite(value):
    """`value` with every NaN or infinite float in it (nested dicts and lists too) as None: missing, and valid JSON
    for every database."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def latest_checkpoint(store: Store, data_dir: Path, run_id: int) -> Checkpoint | None:
    """The newest checkpoint recorded complete whose folder still holds its trainer state."""
    with store.read() as s:
        rows = s.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.complete.is_(True))
                         .order_by(Checkpoint.step.desc())).all()
    for ck in rows:
        if (Path(data_dir) / ck.path / "trainer_state.json").is_file():
            return ck
    return None


def rollouts(store: Store, run_id: int, step: int | None = None) -> list[Rollout]:
    with store.read() as s:
        q = select(Rollout).where(Rollout.run_id == run_id)
        if step is not None:
            q = q.where(Rollout.step == step)
        return list(s.scalars(q.order_by(Rollout.step, Rollout.id)))


def steps_with_rollouts(store: Store, run_id: int) -> list[int]:
    with store.read() as s:
        return list(s.scalars(select(Rollout.step).where(Rollout.run_id == run_id).distinct().order_by(Rollout.step)))


def stored_completions(store: Store, run_id: int, before_step: int) -> int:
    """Rollouts a run stored for steps before `before_step` (a resumed run counts what it keeps)."""
    with store.read() as s:
        return s.scalar(select(func.count(Rollout.id)).where(Rollout.run_id == run_id, Rollout.step < before_step))


def save_heldout_point(store: Store, run_id: int, step: int, result: dict, seconds: float,
                       token: str | None = None) -> None:
    """A point of the held-out curve at `step` (0 = before training): one per (run, step), the newest kept.
    With `token`, only under that current lease (else LeaseLost)."""
    with store.write() as s:
        _hold_lease(s, run_id, token)
        upsert(s, HeldoutPoint, [{"run_id": run_id, "step": step, "metrics": finite(result), "seconds": float(seconds),
                                  "created_at": now()}], ("run_id", "step"), ("metrics", "seconds", "created_at"))


def heldout_points(store: Store, run_id: int) -> list[HeldoutPoint]:
    with store.read() as s:
        return list(s.scalars(select(HeldoutPoint).where(HeldoutPoint.run_id == run_id).order_by(HeldoutPoint.step)))


def heldout_series(points: list[HeldoutPoint]) -> dict[str, list[list[float]]]:
    """{metric: [[step, value], ...]} of the held-out curve's numeric metrics (not per class, not the count)."""
    out: dict[str, list[list[float]]] = {}
    for p in points:
        for name, value in p.metrics.items():
            if name != "count" and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(name, []).append([p.step, value])
    return out


def checkpoint_steps(store: Store, run_id: int) -> set[int]:
    """The steps of a run's checkpoints recorded complete."""
    with store.read() as s:
        return set(s.scalars(select(Checkpoint.step).where(Checkpoint.run_id == run_id, Checkpoint.complete.is_(True))))


def best_point(store: Store, run_id: int, task: str, points: list[HeldoutPoint] | None = None,
               saved: set[int] | None = None) -> dict | None:
    """{"step", "metric", "value"}: the trained step with the best held-out main metric (MAIN_METRIC; on the base
    classes where classes were held out: the novel ones never choose) among those with a complete checkpoint; the
    later one on a tie. None before any such evaluation."""
    metric = MAIN_METRIC[task]
    points = heldout_points(store, run_id) if points is None else points
    saved = checkpoint_steps(store, run_id) if saved is None else saved
    scored = [(main_value(p.metrics, task), p.step) for p in points if p.step >= 1 and p.step in saved]
    scored = [(v, step) for v, step in scored if v is not None]
    if not scored:
        return None
    value, step = max(scored)
    on_base = any("base" in p.metrics for p in points)
    return {"step": step, "metric": f"base classes' {metric}" if on_base else metric, "value": value}
