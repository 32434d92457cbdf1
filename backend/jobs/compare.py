"""The comparison table for a dataset: the base model, then every completed run on it (SFT, GRPO, GRPO after
SFT) with its held-out metrics before, after and at its best step, its steps and its training time; and its
data-efficiency view: the runs grouped by method and shots (seeds averaged), base and novel classes apart, with
the points of one plot (a metric against shots, a line per method)."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from backend.data.catalog import get_dataset
from backend.engine.settings import TrainSettings
from backend.jobs.run_history import best_point, evaluations, heldout_points, metric_total
from backend.jobs.runs import run_training_set, training_set
from backend.scoring.evaluation import MAIN_METRIC, main_scores
from backend.scoring.verdict import paired_bootstrap
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


def compare(store: Store, dataset: str, metric: str | None = None, data_dir: Path | None = None) -> dict:
    """{"dataset", "rows": [{"run", "method", "model", "metrics", "steps", "seconds", ...}, ...]}: a base row
    per base model (its evaluation before training, from the first run that made one from the base), then each
    completed run, oldest first; "metrics" are the run's evaluation after training (the same held-out prompts
    for every run of the dataset), "before" and "best" beside them."""
    info = get_dataset(store, dataset)
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
                     "before": evaluated.get("before"), "best": best_point(store, run.id, run.task),
                     "seed": settings.get("seed", 0), "shots": settings.get("shots"),
                     "novel_classes": list(settings.get("novel_classes") or []),
                     "training_set": run_training_set(store, run, data_dir),
                     "prompts": [settings.get(k) for k in ("eval_max_examples", "negative_share", "classes_in_prompt",
                                                           "object_kind")]})
        rows[-1]["change"] = paired_bootstrap(*(main_scores(e or {}) or {} for e in (rows[-1]["before"],
                                                                                     rows[-1]["metrics"])))
    table = {"dataset": info["name"], "task": info["task"], "rows": [*bases.values(), *rows],
             "contrasts": contrasts(rows)}
    if metric is not None and metric not in METRICS_SHOWN[info["task"]]:
        raise ValueError(f"unknown metric '{metric}' for {info['task']} (known: {', '.join(METRICS_SHOWN[info['task']])})")
    return table | {"efficiency": efficiency(rows, info["task"], all_shots(info), metric)}


def contrasts(rows: list[dict]) -> list[dict]:
    """Differences the Compare view states with their paired interval over the same held-out images: each GRPO run
    against each SFT run of the same model, shots, novel classes and seed whose held-out prompts are the same (the same
    cap and prompt settings), after training; and each run with novel classes, its novel classes against its base
    classes, on the images that hold both."""
    out = []
    for grpo in (r for r in rows if r["method"] == "grpo" and r["init_from"] is None):
        for sft in (r for r in rows if r["method"] == "sft"):
            if (sft["model"], sft["shots"], sorted(sft["novel_classes"]), sft["seed"], sft["prompts"]) != (
                    grpo["model"], grpo["shots"], sorted(grpo["novel_classes"]), grpo["seed"], grpo["prompts"]):
                continue  # not the same question, or not the same held-out prompts
            change = paired_bootstrap(main_scores(sft["metrics"]) or {}, main_scores(grpo["metrics"]) or {})
            if change:
                out.append({"what": f"GRPO run {grpo['run']} against SFT run {sft['run']}",
                            "runs": [grpo["run"], sft["run"]], **change})
    for r in rows:
        metrics = r["metrics"] or {}
        if r["novel_classes"] and metrics.get("base") and metrics.get("novel"):
            change = paired_bootstrap(metrics["base"].get("per_image") or {}, metrics["novel"].get("per_image") or {})
            if change:
                out.append({"what": f"run {r['run']}: novel classes against base classes", "runs": [r["run"]],
                            **change})
    return out


METRICS_SHOWN = {"detection": ("mean_iou", "ap50", "map"), "classification": ("accuracy",), "grounding": ("miou",)}
"""The held-out metrics the data-efficiency table shows per task (the main one first)."""


def all_shots(dataset: dict) -> int:
    """Where "every training image" sits on the shots axis: the most training images any class has."""
    full = training_set(dataset, TrainSettings())
    return max(full["per_class"].values(), default=full["images"])


def method_label(row: dict) -> str:
    return row["method"].upper() + (" after SFT" if row.get("init_from") is not None else "")


def _mean(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(values) / len(values) if values else None


def _spread(values: list) -> float | None:
    """The runs' standard deviation (None for fewer than two)."""
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def scoped(metrics: dict | None, scope: str, name: str):
    """A metric of an evaluation on every held-out prompt ("all") or on the base / novel classes' ones."""
    metrics = metrics or {}
    return (metrics if scope == "all" else metrics.get(scope) or {}).get(name)


def efficiency(rows: list[dict], task: str, all_x: int, metric: str | None = None) -> dict:
    """The runs (compare's rows, base model row excluded) grouped by (method, model, shots, novel classes), seeds
    averaged: {"metric", "all_x", "groups": [...], "points": [...]}. Each group: its runs and seeds, the images
    and boxes trained on (mean), and for every shown metric and scope ("all", "base", "novel") the mean and the
    standard deviation over its runs, after training and at the start. Each point of the plot: {"series" (method,
    and "base"/"novel" where classes were held out), "shots" (every image: `all_x`), "value": the group's mean
    `metric` (default: the task's main one)}; a method's line starts at 0 shots from its runs' evaluation before
    training, where they started from the base model."""
    metric = metric or MAIN_METRIC[task]
    keyed: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (method_label(r), r["model"], r["shots"], tuple(r["novel_classes"]))
        keyed.setdefault(key, []).append(r)
    models = {r["model"] for r in rows}
    groups, points, starts = [], [], {}
    for (method, model, shots, novel), members in sorted(keyed.items(), key=lambda kv: (
            kv[0][0], kv[0][1], kv[0][3], kv[0][2] is None, kv[0][2] or 0)):
        scopes = ("base", "novel") if novel else ("all",)
        group = {"method": method, "model": model, "shots": shots, "novel_classes": list(novel),
                 "runs": [r["run"] for r in members], "seeds": sorted({r["seed"] for r in members}),
                 "images": _mean([r["training_set"]["images"] for r in members]),
                 "boxes": _mean([r["training_set"]["boxes"] for r in members]), "after": {}, "before": {}}
        for scope in ("all", "base", "novel") if novel else ("all",):
            for name in METRICS_SHOWN[task]:
                after = [scoped(r["metrics"], scope, name) for r in members]
                before = [scoped(r["before"], scope, name) for r in members]
                group["after"][f"{scope} {name}"] = {"mean": _mean(after), "sd": _spread(after), "n": len(after)}
                group["before"][f"{scope} {name}"] = {"mean": _mean(before), "sd": _spread(before)}
        groups.append(group)
        label = method + (f" · {model}" if len(models) > 1 else "") + (f" · novel: {', '.join(novel)}" if novel
                                                                        and len({k[3] for k in keyed}) > 1 else "")
        for scope in scopes:
            series = label + ("" if scope == "all" else f" ({scope} classes)")
            value = group["after"][f"{scope} {metric}"]["mean"]
            if value is not None:
                points.append({"series": series, "shots": all_x if shots is None else shots, "value": value})
            start = group["before"][f"{scope} {metric}"]["mean"]
            if start is not None and "after" not in method:
                starts.setdefault(series, []).append(start)
    points += [{"series": series, "shots": 0, "value": _mean(values)} for series, values in starts.items()]
    points.sort(key=lambda p: (p["series"], p["shots"]))
    return {"metric": metric, "all_x": all_x, "groups": groups, "points": points}


def _shown(value: dict) -> str:
    if value["mean"] is None:
        return "—"
    return f"{value['mean']:.3f}" + (f" ± {value['sd']:.3f}" if value.get("sd") is not None else "")


def efficiency_table(eff: dict, task: str) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the data-efficiency table, as text: a row per group (method, shots, novel classes),
    the mean ± sd over its runs (seeds) of each metric, on every prompt and, where classes were held out, on the
    base and the novel classes apart; the main metric at the start (before training) beside them."""
    groups = eff["groups"]
    novel = any(g["novel_classes"] for g in groups)
    scopes = ("all", "base", "novel") if novel else ("all",)
    main = MAIN_METRIC[task]
    several_models = len({g["model"] for g in groups}) > 1
    headers = ["method", *(["model"] if several_models else []), "shots", "novel classes", "runs", "images",
               *(["boxes"] if task == "detection" else [])]
    names = [f"{scope} {m}" for m in METRICS_SHOWN[task] for scope in scopes]
    starts = [f"{scope} {main}" for scope in scopes]
    headers += [n.removeprefix("all ") for n in names] + [f"{n.removeprefix('all ')} at start" for n in starts]
    rows = []
    for g in groups:
        row = [g["method"], *([g["model"]] if several_models else []),
               f"all ({eff['all_x']})" if g["shots"] is None else str(g["shots"]),
               ", ".join(g["novel_classes"]) or "—", ", ".join(map(str, g["runs"])), f"{g['images']:.0f}",
               *([f"{g['boxes']:.0f}"] if task == "detection" else [])]
        none = {"mean": None}
        row += [_shown(g["after"].get(n, none)) for n in names] + [_shown(g["before"].get(n, none)) for n in starts]
        rows.append(row)
    return headers, rows
