"""The Runs tab's live view of one run, polled from storage: progress and ETA, the training curves beside the
held-out curve, the evaluation, the rollout inspector, the log's end, the Compare view and the adapter download.

The page keeps what it was last sent in a per-session `view` (a gr.State: the run, its claim, the metric series
up to the last step read, and a mark of each other part), so a poll reads only the metric points it does not
hold, reads the log only from its end and only when the file changed, and sends (and draws) only what changed.
"""
from __future__ import annotations

import re
from bisect import bisect_left

import gradio as gr

from backend.data.workspace import Workspace
from backend.jobs.runs import eta_seconds, get_run, run_dict, runs_page
from backend.jobs.run_history import metrics, run_results, steps_with_rollouts
from backend.jobs.step_summary import step_rows
from storage.models import Run
from ui.rollout_inspector import inspector
from ui.run_views import (CHARTS, Y_TITLES, chart_colors, chart_heads, chart_id, chart_updates, compare_frame,
                          download_path, empty_charts_note, evaluation_rows, head_id, heldout_note, progress_html,
                          signal_note)

NAMES = ["picker", "status", *map(chart_id, CHARTS), *map(head_id, CHARTS), "charts_note", "heldout", "signal",
         "evaluation", "summary", "gallery", "cards", "step", "prompt", "compare_heading", "compare", "efficiency_note",
         "efficiency", "efficiency_plot", "latest", "log", "download", "view"]
"""The live view's outputs, in order (what `live_poll` returns)."""
LOG_CHARS = 4000
SCROLL_LOG_TO_END = ("() => { requestAnimationFrame(() => { const t = document.querySelector('#log-tail textarea'); "
                     "if (t) t.scrollTop = t.scrollHeight; }); }")


def create_live_view() -> dict:
    """The live view's Training, Rollout inspector and Compare tabs: {name (NAMES): component}, "follow"
    (the inspector's checkbox) and "scroll_log" (the script that shows the log's end, for the Runs tab's select)."""
    parts: dict = {}
    with gr.Tabs(overflow_behavior="wrap"):
        with gr.Tab("Training", id="run-training") as training:
            keys = list(CHARTS)
            for row in (keys[:2], keys[2:4], keys[4:6], keys[6:]):
                with gr.Row():
                    for key in row:
                        # A chart's title and legend are HTML above it (they wrap on a phone), its colours fixed.
                        with gr.Column(min_width=300, elem_classes="chart-cell"):
                            parts[head_id(key)] = gr.HTML(visible=False, elem_id=head_id(key))
                            # The held-out curve has a few points (one, early on): drawn as markers, not a line.
                            plot = gr.ScatterPlot if key == "heldout" else gr.LinePlot
                            parts[chart_id(key)] = plot(x="step", y="value", color="series", height=240,
                                                        elem_id=chart_id(key), x_axis_format="d", x_title="step",
                                                        y_title=Y_TITLES[key], visible=False, show_label=False,
                                                        color_map=chart_colors(key), colors_in_legend=[])
            parts["charts_note"] = gr.Markdown(elem_id="charts-note")
            parts["heldout"] = gr.Markdown(elem_id="heldout-note")
            parts["signal"] = gr.Markdown(elem_id="zero-signal-hint")
            parts["evaluation"] = gr.Dataframe(headers=["metric", "before", "after"], interactive=False,
                                               label="Held-out evaluation", elem_id="evaluation")
            parts["latest"] = gr.Dataframe(headers=["latest step", ""], interactive=False, elem_id="latest-step",
                                           label="Latest step")
            with gr.Accordion("Log (the end of train.log)", open=True, elem_id="log-accordion") as log_box:
                parts["log"] = gr.Textbox(show_label=False, lines=12, max_lines=12, autoscroll=True,
                                          elem_id="log-tail")
            # Shown at its end, the newest line in sight, whenever it changes or comes into view (autoscroll alone
            # leaves a log that arrives in one piece, or while its tab is hidden, at its top).
            for shown in (parts["log"].change, log_box.expand, training.select):
                shown(None, js=SCROLL_LOG_TO_END)
        with gr.Tab("Rollout inspector", id="run-rollouts"):
            with gr.Row():
                parts["step"] = gr.Slider(0, 1, step=1, label="Step", elem_id="rollout-step", scale=2)
                parts["prompt"] = gr.Dropdown([], label="Prompt of that step", elem_id="rollout-prompt", scale=2)
                parts["follow"] = gr.Checkbox(True, label="Follow the latest step (untick to browse)", scale=1)
            parts["summary"] = gr.Markdown(elem_id="rollout-summary")
            parts["gallery"] = gr.Gallery(label="All G completions of the group: truth green, prediction red",
                                          columns=4, height=320, object_fit="contain", elem_id="rollout-gallery")
            parts["cards"] = gr.HTML(elem_id="rollout-cards")
        with gr.Tab("Compare", id="run-compare"):
            parts["compare_heading"] = gr.Markdown(elem_id="compare-heading")
            parts["efficiency_note"] = gr.Markdown(elem_id="efficiency-note")
            parts["efficiency_plot"] = gr.LinePlot(x="shots", y="value", color="series", height=300, x_axis_format="d",
                                                   title="Held-out metric against shots (a line per method)",
                                                   elem_id="efficiency-plot", visible=False)
            parts["efficiency"] = gr.Dataframe(interactive=False, label="By method and shots (seeds averaged)",
                                               elem_id="efficiency-table")
            parts["compare"] = gr.Dataframe(interactive=False, label="Held-out metrics by run",
                                            elem_id="compare-table")
    parts["scroll_log"] = SCROLL_LOG_TO_END
    return parts


def new_view(run: Run) -> dict:
    """What the page holds of a run before its first poll: nothing."""
    return {"run": run.id, "claim": run.lease_token, "since": None, "metrics": {}, "heldout": None,
            "evaluation": None, "group": None, "log": None, "compare": None, "download": None, "latest": None}


def merge_points(series: dict, new: dict, since: int | None) -> tuple[dict, bool]:
    """The series held, their points of step `since` and after replaced by `new`'s (points read from step
    `since` on); and whether that changed anything."""
    out, changed = dict(series), False
    for name, points in new.items():
        held = series.get(name, [])
        cut = 0 if since is None else bisect_left(held, since, key=lambda p: p[0])
        changed = changed or held[cut:] != points
        out[name] = held[:cut] + points
    return out, changed


def read_new_points(ws: Workspace, view: dict) -> tuple[dict, bool, int | None]:
    """(the run's series, whether they changed, the step to read from next time): only the points of the last
    step held and after are read (a step may be logged in two parts; a resumed run rewrites its steps under a
    new claim, and a new claim starts the view afresh)."""
    new = metrics(ws.store, view["run"], since=view["since"])
    series, changed = merge_points(view["metrics"], new, view["since"])
    last = max((points[-1][0] for points in new.values() if points), default=view["since"])
    return series, changed, last


def chosen_run(ws: Workspace, run_id) -> Run | None:
    """The run chosen, else (none chosen, or deleted) the newest; None without runs."""
    try:
        return get_run(ws.store, int(run_id))
    except (TypeError, ValueError):
        newest = runs_page(ws.store, 1, 1)[0]
        try:
            return get_run(ws.store, newest[0]["id"]) if newest else None
        except ValueError:  # deleted in between
            return None


def live_poll(ws: Workspace, run_id, step=None, follow: bool = True, prompt_index=None, view: dict | None = None
              ) -> tuple:
    """Everything the live view shows (NAMES' order), read from storage (the page holds no job state), with
    the `view` to hold until the next poll. Parts that did not change since `view` are left as they are."""
    run = chosen_run(ws, run_id)
    if run is None:
        return no_run(ws)
    fresh = not view or [view["run"], view["claim"]] != [run.id, run.lease_token]
    view = new_view(run) if fresh else view
    if fresh:  # what the run trains on does not change: read once per run chosen
        from backend.jobs.runs import run_training_set, training_set_text
        view["trained"] = training_set_text(run_training_set(ws.store, run, ws.data_dir))
    series, changed, since = read_new_points(ws, view)
    shown = run_dict(run) | {"metrics": series}
    shown |= run_results(ws.store, shown)
    redraw = {"metrics": fresh or changed, "heldout": fresh or shown["heldout"] != view["heldout"]}
    evaluation = evaluation_rows(shown["evaluation"])
    group, slider, inspected = inspector_updates(ws, run.id, step, follow, prompt_index, view["group"])
    log_mark, log = log_update(ws, run, view["log"])
    compare_mark, compared = compare_update(ws, run, view["compare"])
    download_mark = [run.id, run.status, (shown["best"] or {}).get("step")]
    latest = latest_rows(series)
    held = dict(view, since=since, metrics=series, heldout=shown["heldout"], evaluation=evaluation, group=group,
                log=log_mark, compare=compare_mark, download=download_mark, latest=latest)
    same_id = str(run.id) == str(run_id)
    shown["trained"] = view.get("trained")
    return (gr.skip() if same_id else gr.update(value=run.id), progress_html(shown, eta_seconds(shown)),
            *chart_updates(shown, redraw), *chart_heads(shown, redraw), empty_charts_note(shown), heldout_note(shown),
            signal_note(shown),
            gr.skip() if evaluation == view["evaluation"] else evaluation, *inspected[:3], slider, inspected[3],
            *compared, gr.skip() if latest == view.get("latest") else latest, log,
            gr.skip() if download_mark == view["download"] else download_path(ws, run.id, run.status), held)


def no_run(ws: Workspace) -> tuple:
    """The live view without any run."""
    everything = {"metrics": True, "heldout": True}
    return (gr.update(value=None), "No runs yet: launch one in the Train tab.", *chart_updates({}, everything),
            *chart_heads({}, everything), "", "", "", [], "", [], "", gr.update(),
            gr.update(choices=[], value=None), *compare_frame(ws, None), [], "", None, None)


def latest_rows(series: dict) -> list[list]:
    """The latest step's key metrics, formatted (backend.jobs.step_summary): [[label, value]], the step first."""
    last = max((points[-1][0] for points in series.values() if points), default=None)
    if last is None:
        return []
    values = {name: points[-1][1] for name, points in series.items() if points and points[-1][0] == last}
    return [["step", str(last)], *step_rows(values)]


def inspector_updates(ws: Workspace, run_id: int, step, follow: bool, prompt_index, held: list | None
                      ) -> tuple[list, dict, list]:
    """(the group shown: [run, step, prompt], the step slider, [summary, gallery, cards, prompt choice]): the
    group is read and drawn again only when the run, the step or the prompt chosen changed, so an open prompt
    list or a raw completion being read is not redrawn under the reader every poll."""
    steps = steps_with_rollouts(ws.store, run_id)
    wanted = None if follow or not step else int(step)
    chosen = (wanted if wanted in steps else steps[-1]) if steps else None
    prompt = None if prompt_index in (None, "") else int(prompt_index)
    # The minimum stays 0: a value the browser still holds from before is then always valid.
    slider = gr.update(maximum=max(1, steps[-1]) if steps else 1, value=chosen if chosen is not None else 0)
    if held is not None and held[:2] == [run_id, chosen] and prompt in (None, held[2]):
        return held, slider, [gr.skip() for _ in range(4)]
    steps, choices, chosen, prompt, items, text, grid = inspector(ws, run_id, chosen, prompt, steps)
    return ([run_id, chosen, prompt], slider,
            [text, gr.update(value=items, columns=max(1, min(len(items), 8))), grid,
             gr.update(choices=choices, value=prompt)])


def log_update(ws: Workspace, run: Run, held: list | None) -> tuple[list, object]:
    """(the log's mark, the log box): the end of train.log, read again only when the file changed."""
    path = ws.data_dir / f"runs/{run.id}/train.log"
    try:
        stat = path.stat()
        mark = [stat.st_size, stat.st_mtime_ns, run.error]
    except OSError:
        mark = [None, run.log_tail, run.error]
    if mark == held:
        return mark, gr.skip()
    note = f"\n⚠ {run.error}" if run.error else ""
    return mark, log_tail(ws, run) + note


def log_tail(ws: Workspace, run: Run, chars: int = LOG_CHARS) -> str:
    """The last `chars` characters of the run's train.log as a person reads it (readable_log), read from its end
    (a seek: the file may be huge; a larger piece while progress bars and warnings leave too little); the tail
    stored in the row when the file is gone or unreadable."""
    path = ws.data_dir / f"runs/{run.id}/train.log"
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            window = 4 * chars  # enough bytes for `chars` characters of UTF-8
            while True:
                f.seek(max(0, size - window))
                shown = readable_log(f.read().decode("utf-8", "replace"))
                if len(shown) >= chars or window >= size or window >= LOG_MAX_BYTES:
                    return shown[-chars:]
                window *= 8
    except OSError:
        return readable_log(run.log_tail or "")[-chars:]


LOG_MAX_BYTES = 4 * 2**20
"""The most of train.log's end read for the page, however much of it is progress bars."""


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\d+/\d+ \[\d+:\d+<|\|\s*\d+/\d+ \[")
"""A tqdm bar however it was cut: '45%|████▌     | 9/20 [00:01<00:02, 5.1it/s]'."""
WARNING_LINE = re.compile(r"^\S+\.py:\d+: \w*Warning: ")
"""The first line `warnings.warn` writes ('path/to/lib.py:12: FutureWarning: ...'); the source line follows it."""
NO_ACTION = (
    re.compile(r"^\[transformers\] (?!.*(error|exception|traceback))", re.I),  # transformers' logger: notices
    re.compile(r"^(Warning|WARNING)(:|\s)"),
)
"""Library notices that ask nothing of the person (transformers' aligned tokens, deprecations): left out of the
page, kept in the file."""


def readable_log(text: str) -> str:
    """The log as the page shows it: ANSI colours gone, each \\r-overwritten line as a terminal would end up showing
    it, progress bars and library warnings that need no action left out (the file keeps every byte), with a last
    line saying how many lines were left out."""
    kept, bars, notices, skip_source = [], 0, 0, False
    for line in ANSI.sub("", text).split("\n"):
        if "\r" in line:  # what a terminal shows of it: its last part that holds anything
            line = next((part for part in reversed(line.split("\r")) if part.strip()), None)
            if line is None:
                continue
        if skip_source:  # the source line `warnings.warn` prints under its message
            skip_source = False
            if line.startswith((" ", "\t")):
                continue
        if PROGRESS_BAR.search(line):
            bars += 1
        elif WARNING_LINE.match(line):
            notices, skip_source = notices + 1, True
        elif any(rule.match(line) for rule in NO_ACTION):
            notices += 1
        else:
            kept.append(line)
    left = [f"{n} {what}{'s' if n != 1 else ''}" for n, what in ((bars, "progress bar"), (notices, "library notice"))
            if n]
    shown = "\n".join(kept)
    if not left:
        return shown
    return (shown + ("" if shown.endswith("\n") or not shown else "\n")
            + f"({' and '.join(left)} left out here; train.log keeps every line)\n")


def compare_update(ws: Workspace, run: Run, held: list | None) -> tuple[list, tuple]:
    """(the mark of the run's dataset's completed runs, [heading, table, efficiency note, table, plot]): built
    again only when the mark
    changed (another run of the dataset completed, or another dataset's run was chosen)."""
    from backend.jobs.compare import compare_mark
    mark = [run.dataset_id, *compare_mark(ws.store, run.dataset_id)]
    if mark == held:
        return mark, tuple(gr.skip() for _ in range(5))
    return mark, compare_frame(ws, run)
