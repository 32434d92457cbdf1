"""What the Runs tab shows of one run, as page values: the progress line, the charts' frames, the held-out and
zero-signal notes, the evaluation table, the Compare view of its dataset and the adapter's download."""
from __future__ import annotations

import html
import math

import gradio as gr
import numpy as np
import pandas as pd

from backend.data.workspace import Workspace
from backend.scoring.advantages import zero_signal_hint
from backend.scoring.evaluation import MAIN_METRIC
from backend.scoring.rewards import REWARDS
from backend.scoring.verdict import within_noise
from storage.models import Run
from ui.rollout_inspector import fmt

CHARTS = {"reward": "Reward (total and each function)", "heldout": "Held-out evaluation (greedy)",
          "kl": "KL to the reference", "completions/mean_length": "Mean completion length (tokens)",
          "loss": "Training loss (SFT)", "mean_token_accuracy": "Token accuracy on the taught answers (SFT)",
          "step_time": "Step time (s)", "frac_reward_zero_std": "Share of groups with one reward for all (no signal)"}
"""The charts in rows of two. A chart keeps its title: a plot whose title changes keeps drawing its old series."""
SHOWN = {"grpo": {"reward", "heldout", "kl", "completions/mean_length", "step_time", "frac_reward_zero_std"},
         "sft": {"heldout", "loss", "mean_token_accuracy", "step_time"}}
"""The charts each method's runs show (an SFT run samples nothing: no reward, KL or zero-signal share)."""
HELDOUT_SERIES = {"mean_iou": "mean IoU (first box)", "miou": "mean IoU", "accuracy": "accuracy",
                  "iou50": "share with IoU ≥ 0.5", "map": "mAP", "format_rate": "answers in the format"}
"""What the held-out chart draws, of what the task reports (the main metric first), with its legend's words."""
LEGENDS = {"kl": "KL", "completions/mean_length": "answer length (tokens)", "loss": "loss",
           "mean_token_accuracy": "token accuracy", "step_time": "seconds per step",
           "frac_reward_zero_std": "groups with no signal"}
"""The one series of each other chart, in words (not the trainer's keys)."""
Y_TITLES = {"reward": "mean reward", "heldout": "held-out score (0–1)", "kl": "KL divergence",
            "completions/mean_length": "tokens", "loss": "loss", "mean_token_accuracy": "share of tokens",
            "step_time": "seconds", "frac_reward_zero_std": "share of groups"}
"""What each chart's y-axis measures."""


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def progress_html(run: dict, eta: float | None) -> str:
    pct = 100 * run["step"] / max(1, run["max_steps"])
    reward = run["metrics"].get("reward", [])
    latest = f" · reward {reward[-1][1]:.3f} at step {reward[-1][0]} ({len(reward)} points)" if reward else ""
    best = run.get("best")
    marked = (f" · <b>best</b> {best['metric']} {best['value']:.3f} at step {best['step']}" if best else "")
    method = run["method"].upper() + (f" from run {run['init_from']}" if run.get("init_from") is not None else "")
    colour = {"failed": "#ef4444", "cancelled": "#9ca3af", "completed": "#22c55e"}.get(run["status"], "#f97316")
    trained = f"<div id='run-trained' style='font-size:0.9em'>{html.escape(run['trained'])}</div>" if run.get(
        "trained") else ""
    failed = (f"<div id='run-error' style='color:#b91c1c;margin-top:4px'><b>Failed:</b> {html.escape(run['error'])}"
              "</div>" if run.get("error") and run["status"] == "failed" else "")
    return (f"<div id='run-progress'><b>Run {run['id']}</b> · {method} · {run['status']} · step {run['step']}/"
            f"{run['max_steps']} · ETA {duration(eta)}{latest}{marked}{trained}{failed}{verdict_html(run)}"
            f"<div style='background:#e5e7eb;border-radius:6px;height:12px;margin-top:6px'><div style='width:"
            f"{pct:.1f}%;background:{colour};height:12px;border-radius:6px'></div></div></div>")


VERDICT_COLOURS = {"improved": "#15803d", "worse": "#b91c1c", "no_change": "#92400e", "pending": "#6b7280"}


def verdict_html(run: dict) -> str:
    """The run's verdict (backend.scoring.verdict) as a line of the header; nothing for a run without held-out
    images or with a verdict still pending before it has started."""
    v = run.get("verdict")
    if not v or run["status"] == "queued":
        return ""
    from backend.scoring.verdict import verdict_sentence
    return (f"<div id='run-verdict' data-status='{v['status']}' style='margin-top:4px;color:"
            f"{VERDICT_COLOURS[v['status']]}'>{html.escape(verdict_sentence(v, why_pending(run)))}</div>")


def why_pending(run: dict) -> str:
    """What a run's verdict waits for, or why it will not come."""
    evaluated = run.get("evaluation") or {}
    if "before" not in evaluated and run["status"] != "running":
        return "no held-out evaluation (no held-out images, or a run older than the verdict)"
    if "before" in evaluated and not (evaluated["before"].get("base") or evaluated["before"]).get("per_image"):
        return "this run's evaluations were stored before the verdict existed"
    if run["status"] == "running":
        every = (run.get("settings") or {}).get("eval_steps")
        return ("it comes with the evaluation after training" if every == 0 else
                "it comes with the first held-out evaluation during training")
    return "the run ended before an evaluation after its start"


def _frame(points: dict, names: dict[str, str], domain: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """A chart's long-format frame, and the series it has points of (its legend).

    Every label of `domain` (all the series the chart can ever show) leads with one empty (NaN) point: the plot
    fixes its colour scale from the data it first draws and afterwards only swaps the data (gradio 6's
    NativePlot), so a series missing then (before a run's first step, or in the run chosen before) would
    never be drawn."""
    steps, values, labels, drawn = [], [], [], set()
    for key, label in names.items():
        held = points.get(key, [])
        drawn.update([label] if held else [])
        steps += [p[0] for p in held]
        values += [p[1] for p in held]
        labels += [label] * len(held)
    first = min(steps, default=0)
    # Built by column, with explicit dtypes: an object column would be drawn as categories, not as a numeric axis.
    frame = pd.DataFrame({"step": np.array([first] * len(domain) + steps, dtype=int),
                          "value": np.array([math.nan] * len(domain) + values, dtype=float),
                          "series": list(domain) + labels})
    return frame, [label for label in domain if label in drawn]


def chart_id(key: str) -> str:
    """The page element of a chart: chart-reward, chart-heldout, chart-frac_reward_zero_std, ..."""
    return "chart-" + key.replace("/", "-")


def chart_frame(run: dict, key: str) -> tuple[pd.DataFrame, list[str]]:
    """(frame, legend) of chart `key`: the reward chart holds the total and every reward function; the held-out
    chart the task's metrics at each evaluated step; the others one metric each."""
    if key == "reward":
        rewards = {f"rewards/{name}/mean": name for name in REWARDS}
        return _frame(run.get("metrics", {}), {"reward": "total"} | rewards, chart_domain(key))
    if key == "heldout":
        return _frame(run.get("heldout", {}), HELDOUT_SERIES, chart_domain(key))
    return _frame(run.get("metrics", {}), {key: LEGENDS[key]}, chart_domain(key))


PALETTE = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d",
           "#bab0ac")
"""Vega's tableau10: each chart's series take them in its domain's order, fixed (the legend above the chart says
which is which)."""


def chart_domain(key: str) -> list[str]:
    """Every series chart `key` can ever draw, in its legend's order."""
    if key == "reward":
        return ["total", *REWARDS]
    if key == "heldout":
        return list(HELDOUT_SERIES.values())
    return [LEGENDS[key]]


def chart_colors(key: str) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(chart_domain(key))}


def head_id(key: str) -> str:
    """The page element of a chart's title and legend: chart-head-reward, ..."""
    return "chart-head-" + key.replace("/", "-")


def chart_head(key: str, legend: list[str]) -> str:
    """A chart's title and legend as HTML above it: both wrap on a narrow screen (drawn inside the plot, they were
    cut at its edge)."""
    colors = chart_colors(key)
    keys = "".join(f"<span style='white-space:nowrap'><i style='display:inline-block;width:10px;height:10px;"
                   f"border-radius:50%;background:{colors[label]};margin-right:4px'></i>{html.escape(label)}</span>"
                   for label in legend)
    return (f"<div class='chart-head'><div class='chart-title' style='font-weight:600'>{html.escape(CHARTS[key])}"
            f"</div><div class='chart-legend' style='display:flex;flex-wrap:wrap;gap:2px 14px;font-size:0.85em'>"
            f"{keys}</div></div>")


def shown_charts(run: dict) -> list[str]:
    """The charts this run's method shows (CHARTS' order). A run with beta 0 has no reference model: no KL chart."""
    shown = SHOWN["sft" if run.get("method") == "sft" else "grpo"]
    if run.get("settings", {}).get("beta", 1) == 0:
        shown = shown - {"kl"}
    return [key for key in CHARTS if key in shown]


def has_points(run: dict, key: str) -> bool:
    if key == "heldout":
        return any(run.get("heldout", {}).get(k) for k in HELDOUT_SERIES)
    metrics = run.get("metrics", {})
    if key == "reward":
        return bool(metrics.get("reward")) or any(metrics.get(f"rewards/{name}/mean") for name in REWARDS)
    return bool(metrics.get(key))


WHOLE_TICKS_FROM = 20
"""The plot picks about one tick per 40 pixels, so a span of fewer steps gets ticks at 0.5, 1.5: below this many
steps they are printed as such ("0.5", "1"), from it as whole numbers."""


def step_axis(run: dict) -> list[int]:
    """The x range of a run's charts: from 0 to its last step, so the curves grow across the chart as the run
    trains."""
    return [0, max(1, int(run.get("max_steps") or 0))]


def step_format(run: dict) -> str:
    """The step axis' number format (d3): whole numbers, or for a short run up to one decimal without a trailing 0."""
    return "d" if step_axis(run)[1] >= WHOLE_TICKS_FROM else ".1~f"


def chart_updates(run: dict, redraw: dict[str, bool]) -> list:
    """Each chart's update (CHARTS' order): shown when this run's method has it and it has a point (an empty
    plot would draw a bare axis labelled 0.000000: `empty_charts_note` names it instead), and its frame and legend
    when its data changed (`redraw["heldout"]` for the held-out chart, `redraw["metrics"]` for the others)."""
    shown = shown_charts(run)
    updates = []
    for key in CHARTS:
        visible = key in shown and has_points(run, key)
        if visible and redraw["heldout" if key == "heldout" else "metrics"]:
            frame, legend = chart_frame(run, key)
            updates.append(gr.update(value=frame, visible=True, x_lim=step_axis(run), x_axis_format=step_format(run)))
        else:
            updates.append(gr.update(visible=visible))
    return updates


def chart_heads(run: dict, redraw: dict[str, bool]) -> list:
    """Each chart's title and legend (CHARTS' order), shown with its chart, written again when its data changed."""
    shown = shown_charts(run)
    updates = []
    for key in CHARTS:
        visible = key in shown and has_points(run, key)
        if visible and redraw["heldout" if key == "heldout" else "metrics"]:
            updates.append(gr.update(value=chart_head(key, chart_frame(run, key)[1]), visible=True))
        else:
            updates.append(gr.update(visible=visible))
    return updates


def empty_charts_note(run: dict) -> str:
    """The charts the run shows that have no point yet, named in one line instead of drawn empty."""
    empty = [CHARTS[key].split(" (")[0] for key in shown_charts(run) if not has_points(run, key)]
    if not run or not empty:
        return ""
    when = "yet" if run.get("status") in ("queued", "running") else "in this run"
    return f"*No points {when}:* {', '.join(empty)}" + (" — each chart appears with its first point." if when == "yet"
                                                         else ".")


def heldout_note(run: dict) -> str:
    """How the held-out curve was made and what it costs; the best step, which predict, Test and export use."""
    points = run.get("heldout_seconds", [])
    if not points:
        return ("Held-out curve: no evaluation yet." if run.get("status") in ("queued", "running")
                else "Held-out curve: none (no held-out images, or an older run).")
    settings = run.get("settings", {})
    during = [s for step, s in points if 0 < step < run["max_steps"]]
    cap = settings.get("eval_max_examples", "?")
    parts = [f"Held-out curve: greedy answers to the same held-out prompts (all of them, up to {cap}) at each of "
             f"{len(points)} points — before, during, best and after are measured alike"]
    if during:
        parts.append(f"an evaluation during training took {during[-1]:.1f} s (last)")
    ends = {"before": points[0][1] if points[0][0] == 0 else None,
            "after": points[-1][1] if points[-1][0] >= run["max_steps"] else None}
    parts += [f"{k} {v:.1f} s" for k, v in ends.items() if v]
    best = run.get("best")
    text = "; ".join(parts) + "."
    if best:
        text += (f" **Best: {best['metric']} {best['value']:.3f} at step {best['step']}** — the checkpoint `predict`, "
                 "the Test tab and `export` use unless told `last`.")
    return text


def signal_note(run: dict) -> str:
    if run.get("method") == "sft":
        return "An SFT run samples nothing while training: no groups, no rewards, no advantages."
    hint = zero_signal_hint(run.get("metrics", {}).get("frac_reward_zero_std", []))
    return f"⚠ {hint}" if hint else ""


def evaluation_rows(evaluation: dict) -> list[list]:
    before, after = evaluation.get("before", {}), evaluation.get("after", {})
    keys = [k for k in (before or after) if k not in ("per_class", "per_image", "count", "seconds", "base", "novel")]
    fmt = lambda v: "—" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    rows = [[k, fmt(before.get(k)), fmt(after.get(k))] for k in keys]
    for scope in ("base", "novel"):  # classes held out of training: each part apart
        inner = (before or after).get(scope) or {}
        rows += [[f"{scope} classes: {k}", fmt((before.get(scope) or {}).get(k)), fmt((after.get(scope) or {}).get(k))]
                 for k in inner if k not in ("per_class", "per_image", "count", "format_rate")]
    if "seconds" in before or "seconds" in after:
        rows.append(["evaluation time"] + [f"{e['seconds']:.1f} s" if "seconds" in e else "—" for e in (before, after)])
    return rows


def compare_frame(ws: Workspace, run: Run | None) -> tuple:
    """The Compare view for the selected run's dataset: a heading, the table of runs, and the data-efficiency
    note, table and plot (ui/compare_view.py)."""
    from backend.jobs.compare import compare
    from backend.jobs.runs import dataset_name
    from ui.compare_view import efficiency_parts
    empty = pd.DataFrame(columns=["run", "method", "steps", "time"])
    if run is None:
        return "Choose a run: its dataset's comparison appears here.", empty, *efficiency_parts(None)
    try:
        table = compare(ws.store, dataset_name(ws.store, run), data_dir=ws.data_dir)
    except ValueError as e:
        return f"⚠ {e}", empty, *efficiency_parts(None)
    main = MAIN_METRIC[table["task"]]
    extra = [k for k in ("map", "ap50", "iou50", "format_rate") if any(k in r["metrics"] for r in table["rows"])]
    records = []
    for r in table["rows"]:
        before = (r["before"] or {}).get(main)
        best = r["best"]
        records.append({
            "run": "base" if r["run"] is None else str(r["run"]),
            "method": r["method"].upper() + (f" after run {r['init_from']}" if r["init_from"] is not None else ""),
            "model": r["model"], "shots": "—" if r["run"] is None else (r.get("shots") or "all"),
            "novel classes": ", ".join(r.get("novel_classes") or []) or "—",
            "steps": r["steps"], "time": duration(r["seconds"]) if r["run"] else "—",
            main: fmt(r["metrics"].get(main)), f"{main} at start": fmt(before),
            f"best {main} (step)": f"{fmt(best['value'])} ({best['step']})" if best else "—",
            "change (90 % interval)": "—" if r["run"] is None else within_noise(r.get("change")),
            **{k: fmt(r["metrics"].get(k)) for k in extra}})
    heading = (f"**{table['dataset']}** ({table['task']}): the base model and every completed run, on the same "
               f"held-out prompts: each run's model after training, its score at the start, its best evaluated "
               f"step, and the change from start to after with its 90 % interval (the held-out images resampled, "
               f"paired): a change whose interval holds 0 is within noise. Time: training steps plus evaluations.")
    heading += "".join(f"\n- {c['what']}: {main} {within_noise(c)}" for c in table["contrasts"])
    return heading, pd.DataFrame(records) if records else empty, *efficiency_parts(table)


def download_path(ws: Workspace, run_id: int, status: str) -> str | None:
    """The best adapter's zip for a finished run; None while training, without an adapter, or when its files
    vanish."""
    if status not in ("completed", "cancelled"):
        return None
    from backend.jobs.predict import adapter_dir
    try:
        return _zip_adapter(ws, run_id, adapter_dir(ws, run_id))
    except (OSError, ValueError):  # no adapter, or its folder deleted or emptied while zipping
        return None


def _zip_adapter(ws: Workspace, run_id: int, adapter) -> str:
    """A zip of the adapter (and processor) files for the download button, rebuilt only when they changed."""
    import shutil
    import tempfile
    from pathlib import Path

    from backend.jobs.predict import copy_adapter
    # Outside the data dir: the page never serves files from there.
    out = Path(tempfile.gettempdir()) / "vrft-downloads" / f"{ws.data_dir.resolve().name}-adapter-run{run_id}.zip"
    out.parent.mkdir(exist_ok=True)
    newest = max(p.stat().st_mtime for p in adapter.rglob("*") if p.is_file())
    source = out.with_suffix(".from")  # which folder the zip holds: the best checkpoint can change
    if (not out.exists() or out.stat().st_mtime < newest or not source.exists()
            or source.read_text() != str(adapter)):
        with tempfile.TemporaryDirectory() as staging:
            copy_adapter(adapter, Path(staging) / "adapter")
            shutil.make_archive(str(out.with_suffix("")), "zip", Path(staging) / "adapter")
        source.write_text(str(adapter))
    return str(out)
