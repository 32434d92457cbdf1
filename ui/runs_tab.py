"""The Runs tab: the runs a page at a time, filtered by status and dataset (one query a poll, whatever their
number), and the chosen run's live view (ui/run_live.py): training curves beside the held-out curve, the
zero-signal share, the rollout inspector and the Compare view of its dataset, all polled from storage."""
from __future__ import annotations

import math

import gradio as gr

from backend.data.catalog import dataset_names
from backend.jobs.runs import cancel_run, delete_run, eta_seconds, resume_run, runs_page
from backend.data.workspace import Workspace
from ui.run_live import NAMES, create_live_view, live_poll
from ui.run_views import duration

REFRESH_SECONDS = 2.0
PER_PAGE = 20
STATUSES = ("queued", "running", "completed", "failed", "cancelled")
HEADERS = ["run", "method", "status", "progress", "ETA", "reward", "dataset", "model", "task", "created"]
COMPACT_HEADERS = ["run", "status", "reward", "dataset"]
"""The table a phone shows instead (ui/page_style.py swaps them by the screen's width): what a person watching
looks for, the rest in the run's header below."""
EVERY = ""
"""A filter's value for "no filter"."""
QUIET = {"api_visibility": "private", "show_progress": "hidden"}


def table_row(run: dict) -> list:
    """A run as the table shows it: ETA and newest reward come from its row (kept as its job writes); a failed
    run's status says why."""
    method = run["method"].upper() + (f" from run {run['init_from']}" if run["init_from"] is not None else "")
    reward = "—" if run["last_reward"] is None else f"{run['last_reward']:.3f}"
    status = f"failed: {run['error']}" if run["status"] == "failed" and run.get("error") else run["status"]
    return [run["id"], method, status, f"{run['step']}/{run['max_steps']}", duration(eta_seconds(run)),
            reward, run["dataset"] or "(deleted)", run["model"], run["task"],
            run["created_at"][:19].replace("T", " ")]


def compact_rows(rows: list[list]) -> list[list]:
    """The table's rows as a narrow screen shows them: the run with its method, the status with its progress and
    ETA, the newest reward, the dataset."""
    return [[f"{r[0]} · {r[1]}", f"{r[2]} · {r[3]}" + (f" · ETA {r[4]}" if r[4] != "—" else ""), r[5], r[6]]
            for r in rows]


def runs_table(ws: Workspace, page=1, status: str = EVERY, dataset: str = EVERY) -> tuple[list[list], int, int]:
    """(the rows of page `page` of the runs of `status` on `dataset`, newest first; the page shown; how many
    runs match). One query; a page past the last one (runs deleted, a narrower filter) shows the last one."""
    page = max(1, int(page or 1))
    runs, total = runs_page(ws.store, page, PER_PAGE, status or None, dataset or None)
    if not runs and page > 1:
        runs, total = runs_page(ws.store, 1, PER_PAGE, status or None, dataset or None)
        page = max(1, math.ceil(total / PER_PAGE))
        if page > 1:
            runs, total = runs_page(ws.store, page, PER_PAGE, status or None, dataset or None)
    return [table_row(r) for r in runs], page, total


def table_poll(ws: Workspace, page=1, status: str = EVERY, dataset: str = EVERY, moved: bool = False) -> tuple:
    """[table, pager line, the run picker's choices, the query]: what the timer, the paging buttons and the
    filters send. The query ({"page", "status", "dataset"}, held by the session) is sent back only when it
    changed: moved (a click, a filter) or had to (past the last page)."""
    rows, shown, total = runs_table(ws, page, status, dataset)
    pages = max(1, math.ceil(total / PER_PAGE))
    what = " ".join(w for w in (status, "runs" if total != 1 else "run", dataset and f"on {dataset}") if w)
    line = f"Page {shown} of {pages} · {total:,} {what}"
    query = {"page": shown, "status": status, "dataset": dataset}
    return (rows, line, gr.update(choices=[r[0] for r in rows]),
            query if moved or shown != max(1, int(page or 1)) else gr.skip())


def create_runs_tab(ws: Workspace) -> dict:
    with gr.Tab("Runs", id="runs") as tab:
        listing = create_listing()
        with gr.Row():
            picker = gr.Dropdown([], label="Run", elem_id="run-picker", scale=2, allow_custom_value=True)
            cancel = gr.Button("Cancel", variant="stop", size="sm")
            resume = gr.Button("Resume", size="sm")
            delete = gr.Button("Delete", size="sm")
            download = gr.DownloadButton("Download adapter (best)", size="sm")
        status = gr.HTML(elem_id="run-status")
        message = gr.Markdown()
        shown = create_live_view()
        timer = gr.Timer(REFRESH_SECONDS)
        view = gr.State(None)  # what this browser session was sent of the chosen run (ui/run_live.py)
    table_events = wire_listing(ws, listing, timer, picker)

    def live(run_id, step, follow=True, prompt_index=None, view_=None):
        return live_poll(ws, run_id, step, follow, prompt_index, view_)

    outputs = [{"picker": picker, "status": status, "download": download, "view": view, **shown}[n] for n in NAMES]
    inputs = [picker, shown["step"], shown["follow"], shown["prompt"], view]
    # A live event never changes the `view` it was given (it returns a new one), so several may run at once; one
    # answered after a newer choice of run is corrected by the next poll (the view no longer matches the run).
    live_queue = {"concurrency_id": "run-live", **QUIET}
    for trigger in (timer.tick, picker.change, shown["step"].release, shown["prompt"].input):
        trigger(live, inputs, outputs, **live_queue)
    wire_actions(ws, picker, message, cancel, resume, delete)
    tab.select(None, js=shown["scroll_log"])  # the log filled while the tab was hidden: shown at its end

    def on_load(app: gr.Blocks) -> None:
        """Fill the tab when the page opens, in the polls' queues."""
        for fn, inputs_, outputs_, queue in (*table_events, (live, inputs, outputs, live_queue)):
            app.load(fn, inputs_, outputs_, **queue)

    return {"picker": picker, "table": table_events[0][:3], "live": (live, inputs, outputs), "names": NAMES,
            "on_load": on_load}


def create_listing() -> dict:
    """The filters, the table and the pager; the session's query ({"page", "status", "dataset"})."""
    with gr.Row():
        status = gr.Dropdown([("every status", EVERY), *((s, s) for s in STATUSES)], value=EVERY, label="Status",
                             elem_id="runs-status-filter", scale=1)
        dataset = gr.Dropdown([("every dataset", EVERY)], value=EVERY, label="Dataset",
                              elem_id="runs-dataset-filter", scale=1)
        gr.HTML(scale=2)
    table = gr.Dataframe(headers=HEADERS, interactive=False, label="Runs (click one to watch it)",
                         elem_id="runs-table")
    compact = gr.Dataframe(headers=COMPACT_HEADERS, interactive=False, wrap=True, label="Runs (tap one to watch it)",
                           column_widths=["17%", "39%", "20%", "24%"], elem_id="runs-table-compact")
    with gr.Row(equal_height=True):
        newer = gr.Button("◀ Newer", size="sm", scale=0, min_width=100, elem_id="runs-newer")
        pager = gr.Markdown(elem_id="runs-pager")
        older = gr.Button("Older ▶", size="sm", scale=0, min_width=100, elem_id="runs-older")
    query = gr.State({"page": 1, "status": EVERY, "dataset": EVERY})
    return {"status": status, "dataset": dataset, "table": table, "compact": compact, "newer": newer, "pager": pager,
            "older": older, "query": query}


def wire_listing(ws: Workspace, parts: dict, timer: gr.Timer, picker: gr.Dropdown) -> list[tuple]:
    """The listing's events; returns what the page runs when it opens: [(fn, inputs, outputs, options)], the
    table's poll first."""
    query = parts["query"]

    def both(polled: tuple) -> tuple:
        """table_poll's answer with the compact table's rows."""
        return (*polled, compact_rows(polled[0]))

    def poll(q: dict):
        return both(table_poll(ws, **q))

    def datasets():
        return gr.update(choices=[("every dataset", EVERY), *dataset_names(ws.store)])

    def watch(event: gr.SelectData):
        return event.row_value[0]  # the row's run id

    def watch_compact(event: gr.SelectData):
        return int(str(event.row_value[0]).split(" ")[0])  # "12 · GRPO"

    # The query lives on the server (a gr.State is read when the event runs, not when the browser sent it), and
    # the table's events run one at a time (one queue, limit 1; each takes a millisecond or two): a poll sent
    # before a click or a filter and answered after it still shows what was asked for last.
    outputs = [parts["table"], parts["pager"], picker, query, parts["compact"]]
    queue = {"concurrency_id": "runs-table", "concurrency_limit": 1, **QUIET}
    timer.tick(poll, query, outputs, **queue)
    parts["newer"].click(lambda q: both(table_poll(ws, **(q | {"page": q["page"] - 1}), moved=True)), query,
                         outputs, **queue)
    parts["older"].click(lambda q: both(table_poll(ws, **(q | {"page": q["page"] + 1}), moved=True)), query,
                         outputs, **queue)
    filters = [parts["status"], parts["dataset"]]
    for chosen in filters:
        chosen.input(lambda s, d: both(table_poll(ws, 1, s, d, moved=True)), filters, outputs, **queue)
    parts["dataset"].focus(datasets, None, parts["dataset"], **QUIET)
    parts["table"].select(watch, None, picker, **QUIET)
    parts["compact"].select(watch_compact, None, picker, **QUIET)
    return [(poll, [query], outputs, queue), (datasets, None, [parts["dataset"]], QUIET)]


def cancelled_text(run_id: int, status: str) -> str:
    """What Cancel did, from the status cancel_run returns: a run that already ended has nothing to stop."""
    return {"running": "✓ Cancel requested: the run stops at its next step.", "cancelled": "✓ Cancelled."}.get(
        status, f"⚠ Run {run_id} has already ended ({status}): there is nothing to cancel.")


def wire_actions(ws: Workspace, picker, message, cancel, resume, delete) -> None:
    """Cancel, resume and delete the chosen run; one sentence back."""
    def act(fn, run_id):
        if run_id is None:
            return "⚠ Choose a run."
        try:
            said = fn(run_id)
        except ValueError as e:
            return f"⚠ {e}"
        return said or "✓ Done."

    cancel.click(lambda r: act(lambda i: cancelled_text(i, cancel_run(ws.store, i)), r), picker, message,
                 api_visibility="private")
    resume.click(lambda r: act(lambda i: resume_run(ws.store, i), r), picker, message, api_visibility="private")
    delete.click(lambda r: act(lambda i: delete_run(ws.store, ws.data_dir, i), r), picker, message,
                 api_visibility="private", js="(r) => (r && confirm(`Delete run ${r} and its files?`)) ? r : null")
