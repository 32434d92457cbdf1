"""The Runs tab: every run with status and ETA; one run's live view (training curves beside the held-out curve,
the zero-signal share), the rollout inspector (a step's group of G completions side by side) and the Compare
view of its dataset, all polled from storage."""
from __future__ import annotations

import math

import gradio as gr
import pandas as pd

from backend.data.workspace import Workspace
from backend.jobs.runs import cancel_run, delete_run, eta_seconds, get_run, list_runs, metrics, resume_run, run_json
from backend.scoring.advantages import zero_signal_hint
from backend.scoring.evaluation import MAIN_METRIC
from backend.scoring.rewards import REWARDS
from ui.rollout_inspector import fmt, inspector

REFRESH_SECONDS = 2.0
CHARTS = {"reward": "Reward (total and each function)", "heldout": "Held-out evaluation (greedy)",
          "kl": "KL to the reference", "completions/mean_length": "Mean completion length (tokens)",
          "loss": "Training loss (SFT)", "mean_token_accuracy": "Token accuracy on the taught answers (SFT)",
          "step_time": "Step time (s)", "frac_reward_zero_std": "Share of groups with one reward for all (no signal)"}
"""The charts in rows of two. A chart keeps its title: a plot whose title changes keeps drawing its old series."""
SHOWN = {"grpo": {"reward", "heldout", "kl", "completions/mean_length", "step_time", "frac_reward_zero_std"},
         "sft": {"heldout", "loss", "mean_token_accuracy", "step_time"}}
"""The charts each method's runs show (an SFT run samples nothing: no reward, KL or zero-signal share)."""
HELDOUT_SERIES = ("mean_iou", "miou", "accuracy", "iou50", "map", "format_rate")
"""What the held-out chart draws, of what the task reports (the main metric first)."""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def runs_table(ws: Workspace) -> list[list]:
    rows = []
    for r in list_runs(ws.store):
        eta = eta_seconds(r, metrics(ws.store, r["id"]).get("step_time", [])) if r["status"] == "running" else None
        method = r["method"].upper() + (f" from run {r['init_from']}" if r["init_from"] is not None else "")
        rows.append([r["id"], method, r["status"], f"{r['step']}/{r['max_steps']}", _duration(eta), r["model"],
                     r["task"], r["created_at"][:19].replace("T", " ")])
    return rows


def progress_html(run: dict, eta: float | None) -> str:
    pct = 100 * run["step"] / max(1, run["max_steps"])
    reward = run["metrics"].get("reward", [])
    latest = f" · reward {reward[-1][1]:.3f} at step {reward[-1][0]} ({len(reward)} points)" if reward else ""
    best = run.get("best")
    marked = (f" · <b>best</b> {best['metric']} {best['value']:.3f} at step {best['step']}" if best else "")
    method = run["method"].upper() + (f" from run {run['init_from']}" if run.get("init_from") is not None else "")
    colour = {"failed": "#ef4444", "cancelled": "#9ca3af", "completed": "#22c55e"}.get(run["status"], "#f97316")
    return (f"<div id='run-progress'><b>Run {run['id']}</b> · {method} · {run['status']} · step {run['step']}/"
            f"{run['max_steps']} · ETA {_duration(eta)}{latest}{marked}<div style='background:#e5e7eb;"
            f"border-radius:6px;height:12px;margin-top:6px'><div style='width:{pct:.1f}%;background:{colour};"
            "height:12px;border-radius:6px'></div></div></div>")


def _frame(points: dict, names: dict[str, str], domain: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """A chart's long-format frame, and the series it has points of (its legend).

    Every label of `domain` (all the series the chart can ever show) leads with one empty (NaN) point: the plot
    fixes its colour scale from the data it first draws and afterwards only swaps the data (gradio 6's
    NativePlot), so a series missing then (before a run's first step, or in the run chosen before) would
    never be drawn."""
    rows = [(step, value, label) for key, label in names.items() for step, value in points.get(key, [])]
    first = min((step for step, _, _ in rows), default=0)
    frame = pd.DataFrame([(first, math.nan, label) for label in domain] + rows, columns=["step", "value", "series"])
    # Explicit dtypes: an object column would be drawn as categories, not as a numeric axis.
    return frame.astype({"step": int, "value": float}), [label for label in domain if any(r[2] == label for r in rows)]


def chart_id(key: str) -> str:
    """The page element of a chart: chart-reward, chart-heldout, chart-frac_reward_zero_std, ..."""
    return "chart-" + key.replace("/", "-")


def chart_frames(run: dict) -> list[tuple[pd.DataFrame, list[str]]]:
    """(frame, legend) per chart (CHARTS' order): the reward chart holds the total and every reward function;
    the held-out chart the task's metrics at each evaluated step; the others one metric each."""
    points = run.get("metrics", {})
    heldout = run.get("heldout", {})
    rewards = {f"rewards/{name}/mean": name for name in REWARDS}
    frames = {"reward": _frame(points, {"reward": "total"} | rewards, ["total", *REWARDS]),
              "heldout": _frame(heldout, {k: k for k in HELDOUT_SERIES}, list(HELDOUT_SERIES))}
    return [frames[key] if key in frames else _frame(points, {key: key}, [key]) for key in CHARTS]


def chart_updates(run: dict) -> list:
    """The charts' values and legends, and which of them this run's method shows."""
    shown = SHOWN["sft" if run.get("method") == "sft" else "grpo"]
    return [gr.update(value=frame, colors_in_legend=legend, visible=key in shown)
            for key, (frame, legend) in zip(CHARTS, chart_frames(run))]


def heldout_note(run: dict) -> str:
    """How the held-out curve was made and what it costs; the best step, which predict, Test and export use."""
    points = run.get("heldout_seconds", [])
    if not points:
        return ("Held-out curve: no evaluation yet." if run.get("status") in ("queued", "running")
                else "Held-out curve: none (no held-out images, or an older run).")
    settings = run.get("settings", {})
    during = [s for step, s in points if 0 < step < run["max_steps"]]
    parts = [f"Held-out curve: greedy answers to the same first {settings.get('eval_during_max_examples', '?')} "
             f"held-out prompts at each of {len(points)} points"]
    if during:
        parts.append(f"an evaluation during training took {during[-1]:.1f} s (last)")
    ends = {"before": points[0][1] if points[0][0] == 0 else None,
            "after": points[-1][1] if points[-1][0] >= run["max_steps"] else None}
    parts += [f"{k} ({settings.get('eval_max_examples', '?')} prompts) {v:.1f} s" for k, v in ends.items() if v]
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
    keys = [k for k in (before or after) if k not in ("per_class", "count", "seconds")]
    fmt = lambda v: "—" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    rows = [[k, fmt(before.get(k)), fmt(after.get(k))] for k in keys]
    if "seconds" in before or "seconds" in after:
        rows.append(["evaluation time"] + [f"{e['seconds']:.1f} s" if "seconds" in e else "—" for e in (before, after)])
    return rows


def compare_frame(ws: Workspace, run_id: int | None) -> tuple[str, pd.DataFrame]:
    """The Compare view for the selected run's dataset: a heading and the table."""
    from backend.jobs.compare import compare
    from backend.jobs.runs import dataset_name
    empty = pd.DataFrame(columns=["run", "method", "steps", "time"])
    if run_id is None:
        return "Choose a run: its dataset's comparison appears here.", empty
    try:
        table = compare(ws.store, dataset_name(ws.store, get_run(ws.store, run_id)))
    except ValueError as e:
        return f"⚠ {e}", empty
    main = MAIN_METRIC[table["task"]]
    extra = [k for k in ("map", "ap50", "iou50", "format_rate") if any(k in r["metrics"] for r in table["rows"])]
    records = []
    for r in table["rows"]:
        before = (r["before"] or {}).get(main)
        best = r["best"]
        records.append({
            "run": "base" if r["run"] is None else str(r["run"]),
            "method": r["method"].upper() + (f" after run {r['init_from']}" if r["init_from"] is not None else ""),
            "model": r["model"], "steps": r["steps"], "time": _duration(r["seconds"]) if r["run"] else "—",
            main: fmt(r["metrics"].get(main)), f"{main} at start": fmt(before),
            f"best {main} (step)": f"{fmt(best['value'])} ({best['step']})" if best else "—",
            **{k: fmt(r["metrics"].get(k)) for k in extra}})
    heading = (f"**{table['dataset']}** ({table['task']}): the base model and every completed run, on the same "
               f"held-out prompts: each run's model after training, its score at the start, and its best evaluated "
               f"step (on the curve's first prompts). Time: training steps plus evaluations.")
    return heading, pd.DataFrame(records) if records else empty


def create_runs_tab(ws: Workspace) -> dict:
    with gr.Tab("Runs", id="runs"):
        table = gr.Dataframe(headers=["run", "method", "status", "progress", "ETA", "model", "task", "created"],
                             interactive=False, label="Runs", elem_id="runs-table")
        with gr.Row():
            picker = gr.Dropdown([], label="Run", elem_id="run-picker", scale=2, allow_custom_value=True)
            cancel = gr.Button("Cancel", variant="stop", size="sm")
            resume = gr.Button("Resume", size="sm")
            delete = gr.Button("Delete", size="sm")
            download = gr.DownloadButton("Download adapter (best)", size="sm")
        status = gr.HTML(elem_id="run-status")
        message = gr.Markdown()
        with gr.Tabs():
            with gr.Tab("Training", id="run-training"):
                plots = []
                keys = list(CHARTS)
                for row in (keys[:2], keys[2:4], keys[4:6], keys[6:]):
                    with gr.Row():
                        for key in row:
                            plots.append(gr.LinePlot(x="step", y="value", color="series", title=CHARTS[key],
                                                     height=240, elem_id=chart_id(key)))
                heldout = gr.Markdown(elem_id="heldout-note")
                signal = gr.Markdown(elem_id="zero-signal-hint")
                evaluation = gr.Dataframe(headers=["metric", "before", "after"], interactive=False,
                                          label="Held-out evaluation", elem_id="evaluation")
                log = gr.Textbox(label="Log tail", lines=10, max_lines=10, autoscroll=True, elem_id="log-tail")
            with gr.Tab("Rollout inspector", id="run-rollouts"):
                with gr.Row():
                    rollout_step = gr.Slider(0, 1, step=1, label="Step", elem_id="rollout-step", scale=2)
                    prompt = gr.Dropdown([], label="Prompt of that step", elem_id="rollout-prompt", scale=2)
                    follow = gr.Checkbox(True, label="Follow the latest step (untick to browse)", scale=1)
                summary = gr.Markdown(elem_id="rollout-summary")
                gallery = gr.Gallery(label="All G completions of the group: truth green, prediction red", columns=4,
                                     height=320, object_fit="contain", elem_id="rollout-gallery")
                cards = gr.HTML(elem_id="rollout-cards")
            with gr.Tab("Compare", id="run-compare"):
                compare_heading = gr.Markdown(elem_id="compare-heading")
                compare_table = gr.Dataframe(interactive=False, label="Held-out metrics by run", elem_id="compare-table")
        timer = gr.Timer(REFRESH_SECONDS)
        shown_group = gr.State(None)

    names = ["table", "picker", "status", *map(chart_id, CHARTS), "heldout", "signal",
             "evaluation", "summary", "gallery", "cards", "step", "prompt", "compare_heading", "compare", "log",
             "download", "shown_group"]

    def live(run_id, step, follow=True, prompt_index=None, shown_group=None):
        """Everything the live view shows, read from storage (the page holds no job state). The inspector's
        group is sent again only when it changed (`shown_group`: the browser's (run, step, prompt, rows)), so
        an open prompt list or a raw completion being read is not redrawn under the reader every tick."""
        rows = runs_table(ws)
        ids = [r[0] for r in rows]
        if run_id not in ids:
            run_id = ids[0] if ids else None
        try:
            run = run_json(ws.store, run_id) if run_id is not None else None
        except ValueError:  # deleted between the table and now
            run = None
        if run is None:
            return (rows, gr.update(choices=ids, value=None), "No runs yet: launch one in the Train tab." if not ids
                    else "Choose a run.", *chart_updates({}), "", "", [], "", [], "", gr.update(),
                    gr.update(choices=[], value=None), *compare_frame(ws, None), "", None, None)
        eta = eta_seconds(run, run["metrics"].get("step_time", []))
        step = None if follow or not step else int(step)
        steps, choices, step, prompt_index, items, text, grid = inspector(
            ws, run_id, step, None if prompt_index in (None, "") else int(prompt_index))
        # The minimum stays 0: a value the browser still holds from before is then always valid.
        slider = gr.update(maximum=max(1, steps[-1]) if steps else 1, value=step if step is not None else 0)
        tail = log_tail(ws, run_id)
        note = f"⚠ {run['error']}" if run["error"] else ""
        group = [run_id, step, prompt_index, len(items)]
        same = group == shown_group
        shown = [gr.update()] * 4 if same else [text, gr.update(value=items, columns=max(1, min(len(items), 8))),
                                                grid, gr.update(choices=choices, value=prompt_index)]
        return (rows, gr.update(choices=ids, value=run_id), progress_html(run, eta), *chart_updates(run),
                heldout_note(run), signal_note(run), evaluation_rows(run["evaluation"]), *shown[:3], slider,
                shown[3], *compare_frame(ws, run_id), tail + ("\n" + note if note else ""),
                download_path(ws, run_id, run["status"]), group)

    outputs = [table, picker, status, *plots, heldout, signal, evaluation, summary, gallery, cards, rollout_step,
               prompt, compare_heading, compare_table, log, download, shown_group]
    assert len(outputs) == len(names)
    inputs = [picker, rollout_step, follow, prompt, shown_group]
    timer.tick(live, inputs, outputs, api_visibility="private", show_progress="hidden")
    picker.change(live, inputs, outputs, api_visibility="private", show_progress="hidden")
    rollout_step.release(live, inputs, outputs, api_visibility="private", show_progress="hidden")
    prompt.input(live, inputs, outputs, api_visibility="private", show_progress="hidden")

    def act(fn, run_id):
        if run_id is None:
            return "⚠ Choose a run."
        try:
            fn(run_id)
        except ValueError as e:
            return f"⚠ {e}"
        return "✓ Done."

    cancel.click(lambda r: act(lambda i: cancel_run(ws.store, i), r), picker, message, api_visibility="private")
    resume.click(lambda r: act(lambda i: resume_run(ws.store, i), r), picker, message, api_visibility="private")
    delete.click(lambda r: act(lambda i: delete_run(ws.store, ws.data_dir, i), r), picker, message,
                 api_visibility="private", js="(r) => (r && confirm(`Delete run ${r} and its files?`)) ? r : null")
    return {"picker": picker, "live": (live, inputs, outputs), "names": names}


def log_tail(ws: Workspace, run_id: int, chars: int = 4000) -> str:
    """The end of the run's train.log; the tail stored in the row when the file is gone or unreadable."""
    log_path = ws.data_dir / f"runs/{run_id}/train.log"
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, log_path.stat().st_size - 4 * chars))
            return f.read().decode("utf-8", "replace")[-chars:]
    except OSError:
        try:
            return (get_run(ws.store, run_id).log_tail or "")[-chars:]
        except ValueError:
            return ""


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
