"""The comparison table for a dataset: the base model, then every completed run on it (SFT, GRPO, GRPO after
SFT) with its held-out metrics before, after and at its best step, its steps and its training time."""
from __future__ import annotations

from sqlalchemy import func, select

from backend.data.catalog import get_dataset
from backend.jobs.run_history import best_point, evaluations, heldout_points, metric_total
from storage import Store
from storage.models import Run


def training_seconds(store: Store, run_id: int) -> float:
    """Seconds the run's job spent training and evaluating (its step times and held-out evaluations, on
    whatever device it ran): loading, queueing and a resume's repeated steps are not counted."""
    return metric_total(store, run_id, "step_time") + sum(p.seconds for p in heldout_points(store, run_id))


def compare_mark(store: Store, dataset_id: int | None) -> list:
    """[how many, newest finish] of the dataset's completed runs: the table changes only when this does."""
    with store.read() as s:
        count, newest = s.execute(select(func.count(Run.id), func.max(Run.finished_at))
                                  .where(Run.dataset_id == dataset_id, Run.status == "completed")).one()
    return [count, newest.isoformat() if newest else None]


def compare(store: Store, dataset: str) -> dict:
    """{"dataset", "rows": [{"run", "method", "model", "metrics", "steps", "seconds", ...}, ...]}: a base row
    per base model (its evaluation before training, from the first run that made one from the base), then each
    completed run, oldest first; "metrics" are the run's evaluation after training (the same held-out prompts
    for every run of the dataset), "before" and "best" beside them."""
    info = get_dataset(store, dataset, with_samples=False)
    with store.read() as s:
        runs = list(s.scalars(select(Run).where(Run.dataset_id == info["id"], Run.status == "completed")
                              .order_by(Run.id)))
    bases: dict[str, dict] = {}
    rows = []
    for run in runs:
        settings = run.settings or {}
        evaluated = evaluations(store, run.id)
        if settings.get("init_from") is None and "before" in evaluated and run.model not in bases:
            bases[run.model] = {"run": None, "method": "base", "model": run.model, "metrics": evaluated["before"],
                                "steps": 0, "seconds": 0.0, "init_from": None, "before": None, "best": None}
        rows.append({"run": run.id, "method": settings.get("method", "grpo"), "model": run.model,
                     "metrics": evaluated.get("after", {}), "steps": run.step,
                     "seconds": round(training_seconds(store, run.id), 1), "init_from": settings.get("init_from"),
                     "before": evaluated.get("before"), "best": best_point(store, run.id, run.task)})
    return {"dataset": info["name"], "task": info["task"], "rows": [*bases.values(), *rows]}
