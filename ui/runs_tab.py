"""The Runs tab: every run with status and ETA; one run's live view, polled from storage."""
from __future__ import annotations

import pandas as pd
import gradio as gr

from backend.runs import (cancel_run, delete_run, eta_seconds, get_run, list_runs, metrics, resume_run, rollouts,
                          run_json)
from backend.workspace import Workspace
from backend.draw import PREDICTION, TRUTH, draw_file

REFRESH_SECONDS = 2.0
CHARTS = {"reward": "Reward (total and each function)", "kl": "KL to the reference",
          "completions/mean_length": "Mean completion length (tokens)", "step_time": "Step time (s)"}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def runs_table(ws: Workspace) -> list[list]:
    rows = []
    for r in list_runs(ws.store):
        eta = eta_seconds(r, metrics(ws.store, r["id"]).get("step_time", [])) if r["status"] == "running" else None
        rows.append([r["id"], r["status"], f"{r['step']}/{r['max_steps']}", _duration(eta), r["model"], r["task"],
                     r["created_at"][:19].replace("T", " ")])
    return rows


def progress_html(run: dict, eta: float | None) -> str:
    pct = 100 * run["step"] / max(1, run["max_steps"])
    reward = run["metrics"].get("reward", [])
    latest = f" · reward {reward[-1][1]:.3f} at step {reward[-1][0]} ({len(reward)} points)" if reward else ""
    colour = {"failed": "#ef4444", "cancelled": "#9ca3af", "completed": "#22c55e"}.get(run["status"], "#f97316")
    return (f"<div id='run-progress'><b>Run {run['id']}</b> · {run['status']} · step {run['step']}/{run['max_steps']}"
            f" · ETA {_duration(eta)}{latest}<div style='background:#e5e7eb;border-radius:6px;height:12px;margin-top:6px'>"
            f"<div style='width:{pct:.1f}%;background:{colour};height:12px;border-radius:6px'></div></div></div>")


def chart_frames(points: dict) -> list[pd.DataFrame]:
    """One long-format frame per chart; the reward chart holds the total and every reward function."""
    def frame(names: dict[str, str]) -> pd.DataFrame:
        rows = [(step, value, label) for key, label in names.items() for step, value in points.get(key, [])]
        # Explicit dtypes: an object column would be drawn as categories, not as a numeric axis.
        return pd.DataFrame(rows, columns=["step", "value", "series"]).astype({"step": int, "value": float})
    reward_series = {"reward": "total"} | {k: k.split("/")[1] for k in points if k.startswith("rewards/") and k.endswith("/mean")}
    return [frame(reward_series)] + [frame({key: key}) for key in list(CHARTS)[1:]]


def evaluation_rows(evaluation: dict) -> list[list]:
    before, after = evaluation.get("before", {}), evaluation.get("after", {})
    keys = [k for k in (before or after) if k not in ("per_class", "count")]
    fmt = lambda v: "—" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    return [[k, fmt(before.get(k)), fmt(after.get(k))] for k in keys]


def rollout_items(ws: Workspace, run_id: int, step: int | None) -> tuple[list, str, list[int]]:
    """Gallery items (truth green, prediction red), the reasoning text, and the steps that have rollouts.

    Never raises on a missing file: an image deleted with its dataset (or by hand) is a placeholder; the
    truth comes from the row when the dataset is gone."""
    from backend.datasets.catalog import sample_json
    from storage.models import Sample
    all_rows = rollouts(ws.store, run_id)
    steps = sorted({r.step for r in all_rows})
    if not steps:
        return [], "No rollouts yet.", []
    step = step if step in steps else steps[-1]
    items, texts = [], []
    with ws.store.read() as s:
        for i, r in enumerate([r for r in all_rows if r.step == step]):
            sample = s.get(Sample, r.sample_id) if r.sample_id else None
            truth = (sample_json(sample) if sample else r.truth or {}).get("boxes", [])
            image = draw_file(ws.data_dir / r.image, [(truth, TRUTH), (r.parsed.get("boxes", []), PREDICTION)], 320)
            rewards = ", ".join(f"{k} {v:.2f}" for k, v in r.rewards.items() if v is not None)
            items.append((image, f"#{i + 1} · {rewards}"))
            texts.append(f"**#{i + 1}** — {r.prompt[:90]}…\n\n```\n{r.completion}\n```\n{rewards}")
    return items, f"#### Rollouts at step {step}\n\n" + "\n\n".join(texts), steps


def create_runs_tab(ws: Workspace) -> dict:
    with gr.Tab("Runs", id="runs"):
        table = gr.Dataframe(headers=["run", "status", "progress", "ETA", "model", "task", "created"],
                             interactive=False, label="Runs", elem_id="runs-table")
        with gr.Row():
            picker = gr.Dropdown([], label="Run", elem_id="run-picker", scale=2, allow_custom_value=True)
            cancel = gr.Button("Cancel", variant="stop", size="sm")
            resume = gr.Button("Resume", size="sm")
            delete = gr.Button("Delete", size="sm")
            download = gr.DownloadButton("Download adapter", size="sm")
        status = gr.HTML(elem_id="run-status")
        message = gr.Markdown()
        plots = []
        titles = list(CHARTS.values())
        for row in (titles[:2], titles[2:]):
            with gr.Row():
                for title in row:
                    plots.append(gr.LinePlot(x="step", y="value", color="series", title=title, height=240,
                                             elem_id=f"chart-{len(plots)}"))
        evaluation = gr.Dataframe(headers=["metric", "before", "after"], interactive=False,
                                  label="Held-out evaluation", elem_id="evaluation")
        with gr.Row():
            gallery = gr.Gallery(label="Sampled rollouts: truth green, prediction red", columns=4, height=360,
                                 object_fit="contain", elem_id="rollout-gallery", scale=3)
            with gr.Column(scale=2):
                rollout_step = gr.Slider(0, 1, step=1, label="Rollouts at step", elem_id="rollout-step")
                follow = gr.Checkbox(True, label="Follow the latest step (untick to browse)")
                reasoning = gr.Markdown(elem_id="rollout-text", height=360)
        log = gr.Textbox(label="Log tail", lines=10, max_lines=10, autoscroll=True, elem_id="log-tail")
        timer = gr.Timer(REFRESH_SECONDS)

    def live(run_id, step, follow=True):
        """Everything the live view shows, read from storage (the page holds no job state)."""
        rows = runs_table(ws)
        ids = [r[0] for r in rows]
        if run_id not in ids:
            run_id = ids[0] if ids else None
        try:
            run = run_json(ws.store, run_id) if run_id is not None else None
        except ValueError:  # deleted between the table and now
            run = None
        if run is None:
            empty = chart_frames({})
            return (rows, gr.update(choices=ids, value=None), "No runs yet: launch one in the Train tab." if not ids
                    else "Choose a run.", *empty, [], [], "", gr.update(), "", None)
        eta = eta_seconds(run, run["metrics"].get("step_time", []))
        step = None if follow or not step else int(step)
        items, text, steps = rollout_items(ws, run_id, step)
        # The minimum stays 0: a value the browser still holds from before is then always valid.
        slider = gr.update(maximum=max(1, steps[-1]) if steps else 1,
                           value=int(step) if step in steps else (steps[-1] if steps else 0))
        tail = log_tail(ws, run_id)
        note = f"⚠ {run['error']}" if run["error"] else ""
        return (rows, gr.update(choices=ids, value=run_id), progress_html(run, eta), *chart_frames(run["metrics"]),
                evaluation_rows(run["evaluation"]), items, text, slider, tail + ("\n" + note if note else ""),
                download_path(ws, run_id, run["status"]))

    outputs = [table, picker, status, *plots, evaluation, gallery, reasoning, rollout_step, log, download]
    inputs = [picker, rollout_step, follow]
    timer.tick(live, inputs, outputs, api_visibility="private", show_progress="hidden")
    picker.change(live, inputs, outputs, api_visibility="private", show_progress="hidden")
    rollout_step.release(live, inputs, outputs, api_visibility="private", show_progress="hidden")

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
    return {"picker": picker, "live": (live, inputs, outputs)}


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
    """The adapter zip for a finished run; None while training, without an adapter, or when its files vanish."""
    if status not in ("completed", "cancelled"):
        return None
    from backend.predict import adapter_dir
    try:
        return _zip_adapter(ws, run_id, adapter_dir(ws, run_id))
    except (OSError, ValueError):  # no adapter, or its folder deleted or emptied while zipping
        return None


def _zip_adapter(ws: Workspace, run_id: int, adapter) -> str:
    """A zip of the adapter for the download button (rebuilt only when the adapter changed)."""
    import shutil
    import tempfile
    from pathlib import Path
    # Outside the data dir: the page never serves files from there.
    out = Path(tempfile.gettempdir()) / "vrft-downloads" / f"{ws.data_dir.resolve().name}-adapter-run{run_id}.zip"
    out.parent.mkdir(exist_ok=True)
    newest = max(p.stat().st_mtime for p in adapter.rglob("*") if p.is_file())
    if not out.exists() or out.stat().st_mtime < newest:
        shutil.make_archive(str(out.with_suffix("")), "zip", adapter)
    return str(out)
