"""Runs in storage: create, read, list, cancel, resume, delete; the job's progress and final status. What a
run records as it trains (metrics, rollouts, checkpoints, evaluations) is in backend.jobs.run_history.

Every read-then-write locks the row it decides on (`storage.locked`, `SELECT … FOR UPDATE`) or decides in the
UPDATE itself (`storage.update_where`), so two processes (page, worker, job) never overwrite each other.

Fenced writes: each claim of a run gets a fresh lease token (backend.jobs.leases.claim), which the worker hands to the
job. The job's writes (metrics, rollouts, checkpoints, evaluations, progress, its final status) pass `token=`
and are accepted only while the run is running under that token; otherwise they raise `LeaseLost` (`finish_run`
returns False), so a job whose lease went to another worker can neither write nor settle the run.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import func, select

from backend.data.catalog import get_dataset
from backend.engine.models import resolve_model
from backend.engine.settings import CHOICES, TrainSettings, check_values
from backend.scoring.rewards import REWARDS
from backend.scoring.tasks import get_task
from storage import Store, db_now, locked, update_where
from storage.models import Dataset, Run


def now() -> datetime:
    return datetime.now(timezone.utc)


class LeaseLost(RuntimeError):
    """A write for a run under a lease token that is no longer current: the run was re-queued, settled or
    claimed again (by another worker). The writer must stop working on the run, without settling it."""


def _hold_lease(s, run_id: int, token: str | None) -> None:
    """With a token: raise LeaseLost unless run `run_id` is running under it, and keep its row locked
    (`FOR UPDATE`) until this transaction ends, so that the write that follows is under a current lease.
    Without one (tools, tests, a job started by hand): no check."""
    if token is None:
        return
    held = s.scalar(select(Run.id).where(Run.id == run_id, Run.status == "running", Run.lease_token == token)
                    .with_for_update())
    if held is None:
        raise LeaseLost(f"run {run_id} is no longer leased to this job (lease {token[:8]}): "
                        "another worker re-queued or claimed it")


def create_run(store: Store, dataset: str, model: str, settings: TrainSettings) -> int:
    """Validate everything a person chose, then write one queued run."""
    info = get_dataset(store, dataset, with_samples=False)
    if info["task"] != "grounding" and not info["classes"]:  # imported before imports refused it
        raise ValueError(f"dataset '{dataset}' has no classes (no image holds a box or a label): there is nothing "
                         "to train on")
    _, family = resolve_model(model)
    task = get_task(info["task"])
    if not settings.rewards:
        settings.rewards = list(task.default_rewards)
        settings.reward_weights = list(task.default_rewards.values())
    unknown = [r for r in settings.rewards if r not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward '{unknown[0]}' (known: {', '.join(REWARDS)})")
    if not settings.reward_weights:
        settings.reward_weights = [1.0] * len(settings.rewards)
    if len(settings.reward_weights) != len(settings.rewards):
        raise ValueError(f"{len(settings.rewards)} rewards but {len(settings.reward_weights)} weights")
    check_values(settings)
    from backend.engine.gpus import check_settings
    check_settings(settings)  # generation backend, GPUs, packages: one sentence now, not a failed job later
    family.check_limits(settings.min_pixels, settings.max_pixels)
    check_method(store, model, settings)
    if info["counts"]["train"] == 0:
        raise ValueError(f"dataset '{dataset}' has no training images")
    check_subset(store, info, settings)
    with store.write() as s:
        if locked(s, Dataset, info["id"]) is None:  # deleted since it was read: no run on a missing dataset
            raise ValueError(f"dataset '{dataset}' was deleted")
        run = Run(dataset_id=info["id"], model=model, family=family.name, task=info["task"],
                  settings=settings.to_dict(), max_steps=settings.max_steps)
        s.add(run)
        s.flush()
        run.folder = f"runs/{run.id}"
        return run.id


def check_subset(store: Store, info: dict, settings: TrainSettings) -> None:
    """Shots and novel classes: a fraction becomes the classes it draws (kept in the run's settings), then one
    sentence for what cannot work (shots below 1, an unknown class, every class novel, nothing left to train on)."""
    from backend.scoring.subsets import check_novel, check_shots, choose_novel, training_samples
    check_shots(settings.shots)
    if settings.novel_fraction:
        if settings.novel_classes:
            raise ValueError("name the novel classes or give a novel fraction, not both")
        settings.novel_classes = choose_novel(info["classes"], settings.novel_fraction, settings.novel_seed)
    check_novel(settings.novel_classes, info["classes"], info["task"])
    if settings.shots is None and not settings.novel_classes:
        return
    samples = get_dataset(store, info["name"])["samples"]
    chosen = training_samples(samples, info["task"], settings.shots, settings.novel_classes, settings.seed)
    if not chosen:
        raise ValueError(f"dataset '{info['name']}' has no training images of a base class to train on")


TRAINING_SPLIT_FILE = "training_split.json"
"""In a run's folder: the ids of the training images and the classes its dataset had when the run first started."""


def pinned_dataset(dataset: dict, run_dir: Path, write: bool = False) -> dict:
    """The dataset as the run first saw it: its training split and classes pinned to those it had then. The job's first
    start writes their ids to the run's folder (`write`); a resumed job and the run's page read them, so images
    added to the dataset later (accepted labels, another import) are neither trained on by a resumed run nor
    counted as trained on. Held-out images are left as they are."""
    path = Path(run_dir) / TRAINING_SPLIT_FILE
    if path.is_file():
        pinned = json.loads(path.read_text())
        ids = set(pinned["sample_ids"])
        samples = [s for s in dataset["samples"] if s["split"] != "train" or s["id"] in ids]
        kept = set(pinned.get("classes", dataset["classes"]))
        classes = [c for c in dataset["classes"] if c in kept]
        return {**dataset, "samples": samples, "classes": classes,
                "counts": {**dataset["counts"], "train": sum(s["split"] == "train" for s in samples)}}
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sample_ids": [s["id"] for s in dataset["samples"] if s["split"] == "train"],
                                   "classes": list(dataset["classes"])}))
        tmp.replace(path)
    return dataset


def training_set(dataset: dict, settings: TrainSettings) -> dict:
    """What a run trains on: {"images", "boxes" (detection), "per_class": images holding each class, "shots",
    "novel_classes", "of_images": the training split's images}, from the same samples train_rows builds its prompts
    from (give a started run's dataset through pinned_dataset)."""
    from backend.scoring.subsets import training_samples, training_summary
    chosen = training_samples(dataset["samples"], dataset["task"], settings.shots, settings.novel_classes,
                              settings.seed)
    return {**training_summary(chosen, dataset["task"]), "shots": settings.shots,
            "novel_classes": list(settings.novel_classes), "of_images": dataset["counts"]["train"]}


def run_training_set(store: Store, run: Run, data_dir: Path | None = None) -> dict | None:
    """training_set of a run (None once its dataset is deleted); a started run's as pinned in its folder under
    `data_dir` (without one: the dataset as it is now)."""
    try:
        dataset = get_dataset(store, dataset_name(store, run))
    except ValueError:
        return None
    if run.folder and data_dir is not None:
        dataset = pinned_dataset(dataset, Path(data_dir) / run.folder)
    return training_set(dataset, TrainSettings.from_dict(run.settings))


def training_set_text(trained: dict | None) -> str:
    """'trained on 24 of 80 training images (31 boxes), 2 shots per class; novel (never trained): blue circle'."""
    if not trained:
        return "trained on: unknown (its dataset was deleted)"
    text = f"trained on {trained['images']} of {trained['of_images']} training images"
    if trained.get("boxes") is not None:
        text += f" ({trained['boxes']} boxes)"
    if trained.get("shots") is not None:
        text += f", {trained['shots']} shot{'s' if trained['shots'] != 1 else ''} per class"
    if trained.get("novel_classes"):
        text += f"; novel classes (never trained on): {', '.join(trained['novel_classes'])}"
    return text


def check_method(store: Store, model: str, settings: TrainSettings) -> None:
    """The method, and the run a GRPO run starts from (a completed SFT run of the same base model): one
    sentence for what cannot work."""
    if settings.method not in CHOICES["method"]:
        raise ValueError(f"unknown method '{settings.method}' (known: {', '.join(CHOICES['method'])})")
    if settings.method == "sft" and settings.generation_backend == "vllm":
        raise ValueError("an SFT run samples nothing while training (held-out evaluation uses HF generate): "
                         "choose generation backend 'auto' or 'hf'")
    if settings.init_from is None:
        return
    if settings.method != "grpo":
        raise ValueError("init from starts a GRPO run from an SFT run's adapter; an SFT run starts from the base model")
    try:
        source = get_run(store, settings.init_from)
    except ValueError:
        raise ValueError(f"there is no run {settings.init_from} to start from") from None
    if TrainSettings.from_dict(source.settings).method != "sft":
        raise ValueError(f"run {source.id} is not an SFT run: a GRPO run starts from a finished SFT run's adapter")
    if source.status != "completed":
        raise ValueError(f"run {source.id} is {source.status}: start from a completed SFT run")
    if source.model != model:
        raise ValueError(f"run {source.id} trained an adapter for '{source.model}', not '{model}': choose the same "
                         "base model")


def _held(run_id: int) -> int:
    """`run_id`, or ValueError ('there is no run N') for one no database column can hold (an OverflowError deep in
    the driver otherwise)."""
    if not isinstance(run_id, int) or not -2**63 <= run_id < 2**63:
        raise ValueError(f"there is no run {run_id}")
    return run_id


def get_run(store: Store, run_id: int) -> Run:
    with store.read() as s:
        run = s.get(Run, _held(run_id))
        if run is None:
            raise ValueError(f"there is no run {run_id}")
        return run


def dataset_name(store: Store, run: Run) -> str:
    with store.read() as s:
        ds = s.get(Dataset, run.dataset_id) if run.dataset_id else None
    if ds is None:
        raise ValueError(f"the dataset of run {run.id} was deleted")
    return ds.name


def run_dict(run: Run) -> dict:
    """A run's row as JSON: what `runs list` prints and the Runs table shows."""
    settings = run.settings or {}
    return {"id": run.id, "status": run.status, "model": run.model, "family": run.family, "task": run.task,
            "dataset_id": run.dataset_id, "step": run.step, "max_steps": run.max_steps, "attempts": run.attempts,
            "settings": run.settings, "error": run.error, "created_at": run.created_at.isoformat(),
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "cancel_requested": run.cancel_requested, "method": settings.get("method", "grpo"),
            "init_from": settings.get("init_from"), "step_seconds": run.step_seconds, "last_reward": run.last_reward}


def eta_seconds(run: dict) -> float | None:
    """Remaining steps x the mean of the last ten step times (kept on the run's row by upsert_metrics)."""
    if run["status"] != "running" or run.get("step_seconds") is None:
        return None
    return max(0, run["max_steps"] - run["step"]) * run["step_seconds"]


def delete_run(store: Store, data_dir: Path, run_id: int) -> None:
    """A finished run's rows and folder; a running one must be cancelled first."""
    import shutil
    with store.write() as s:
        run = locked(s, Run, _held(run_id))
        if run is None:
            raise ValueError(f"there is no run {run_id}")
        if run.status in ("queued", "running"):
            raise ValueError(f"run {run_id} is {run.status}: cancel it first")
        folder = run.folder
        s.delete(run)
    if folder:
        shutil.rmtree(Path(data_dir) / folder, ignore_errors=True)


def resume_run(store: Store, run_id: int) -> None:
    """Queue a cancelled or failed run again; it continues from its last checkpoint."""
    with store.write() as s:
        run = locked(s, Run, _held(run_id))
        if run is None:
            raise ValueError(f"there is no run {run_id}")
        if run.status not in ("cancelled", "failed"):
            raise ValueError(f"run {run_id} is {run.status}; only cancelled or failed runs resume")
        if run.dataset_id is None or locked(s, Dataset, run.dataset_id) is None:  # locked: not deleted meanwhile
            raise ValueError(f"run {run_id} cannot resume: its dataset was deleted")
        run.status, run.cancel_requested, run.error, run.finished_at, run.attempts = "queued", False, None, None, 0


def list_runs(store: Store) -> list[dict]:
    """Every run, newest first (one query)."""
    return runs_page(store, 1, None)[0]


def runs_page(store: Store, page: int, per_page: int | None, status: str | None = None,
              dataset: str | None = None) -> tuple[list[dict], int]:
    """Page `page` (from 1) of the runs, newest first, `per_page` a page (None: all), of `status` and of the
    dataset named `dataset` when given; each with its dataset's name. Returns (runs, how many match).

    One query, whatever the number of runs: what the table shows is on the run's row (ETA and newest reward
    included, kept by upsert_metrics), and the count comes with the rows (a subquery the database runs once)."""
    where = ([Run.status == status] if status else []) + ([Dataset.name == dataset] if dataset else [])
    matching = (select(func.count()).select_from(Run).outerjoin(Dataset, Run.dataset_id == Dataset.id)
                .where(*where).correlate(None))  # its own FROM, not the rows'
    q = (select(Run, Dataset.name, matching.scalar_subquery()).outerjoin(Dataset, Run.dataset_id == Dataset.id)
         .where(*where).order_by(Run.id.desc()))
    if per_page is not None:
        q = q.limit(per_page).offset((max(1, page) - 1) * per_page)
    with store.read() as s:
        rows = s.execute(q).all()
    return [run_dict(run) | {"dataset": name} for run, name, _ in rows], rows[0][2] if rows else 0


def cancel_run(store: Store, run_id: int) -> str:
    """Queued runs are cancelled at once; running ones get a flag the training callback reads."""
    with store.write() as s:
        run = locked(s, Run, _held(run_id))
        if run is None:
            raise ValueError(f"there is no run {run_id}")
        if run.status == "queued":
            run.status, run.finished_at = "cancelled", now()
        elif run.status == "running":
            run.cancel_requested = True
        return run.status


def record_step(store: Store, run_id: int, step: int, token: str | None = None) -> bool:
    """The job's progress: set the run's step; returns whether cancel was requested (read in the same
    transaction, after the write). With `token`, only while the run is running under it (else LeaseLost)."""
    with store.write() as s:
        fence = (Run.status == "running", Run.lease_token == token) if token is not None else ()
        if not update_where(s, Run, run_id, *fence, step=step) and token is not None:
            _hold_lease(s, run_id, token)  # raises LeaseLost, with its sentence
        return bool(s.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def finish_run(store: Store, run_id: int, status: str, error: str | None = None, token: str | None = None) -> bool:
    """Settle a running run as `status` (completed, cancelled, failed), clearing its lease. Only a run still
    marked running (with `token`: running under that lease) is settled: one already settled elsewhere
    (re-queued, cancelled while queued, claimed by another worker) is left as it is. Returns whether this call
    settled it. The token stays on the row: the worker that held the lease still stores the log's tail."""
    with store.write() as s:
        fence = (Run.lease_token == token,) if token is not None else ()
        return update_where(s, Run, run_id, Run.status == "running", *fence, status=status, finished_at=db_now(s),
                            error=error, lease_owner=None, lease_expires_at=None)


