"""The page: tabs wired together. No torch import on this path, so the page starts in seconds."""
from __future__ import annotations

import gradio as gr

from backend.data.workspace import Workspace
from ui.api import register_api
from ui.data_tab import create_data_tab
from ui.label_tab import create_label_tab
from ui.playground_tab import create_playground_tab
from ui.runs_tab import create_runs_tab
from ui.test_tab import create_test_tab
from ui.train_tab import create_train_tab


def build_app(ws: Workspace, demo=None, keeper=None) -> gr.Blocks:
    """The page; `demo`: the first-start demo setup (its progress shown), `keeper`: the page's WorkerKeeper (its
    worker's loss and replacement shown, and the worker_status endpoint)."""
    # Uploads are deleted from gradio's cache once imported or refused (ui/data_tab.py); anything else it holds
    # (test images, abandoned uploads) goes after a day, swept hourly.
    # analytics off: no usage report or version check to Gradio's servers (a thread of its own that outlived Ctrl-C)
    with gr.Blocks(title="Visual-RFT Studio", delete_cache=(3600, 86400), analytics_enabled=False) as app:
        gr.Markdown("## Visual-RFT Studio\nReinforcement fine-tuning of vision-language models with verifiable "
                    "rewards, on a hundred images.")
        banner = gr.Markdown(elem_id="demo-banner")
        if demo is not None:
            timer = gr.Timer(1.0)
            timer.tick(lambda: (demo.message(), gr.Timer(active=demo.state == "preparing")), None, [banner, timer],
                       api_visibility="private")
        if keeper is not None:  # a worker that died and was replaced (or is being): said on every open page
            worker_line = gr.Markdown(elem_id="worker-status")
            gr.Timer(3.0).tick(keeper.message, None, worker_line, api_visibility="private", show_progress="hidden")
        with gr.Tabs(selected="train", overflow_behavior="wrap") as tabs:  # a phone shows every tab, none behind "⋯"
            data = create_data_tab(ws)
            train = create_train_tab(ws, on_launched=lambda run_id: (
                (gr.Tabs(selected="runs"), gr.update(value=run_id)) if run_id else (gr.update(), gr.update())))
            runs = create_runs_tab(ws)
            test = create_test_tab(ws)
            label = create_label_tab(ws)
            create_playground_tab()
        button, fn, inputs, message = train["launch"]
        button.click(fn, inputs, [message, tabs, runs["picker"]], api_visibility="private")
        register_api(ws, keeper)
        # The page holds no state: every load reads datasets and runs back from storage. Each dataset and run
        # list is read again when its tab is selected (ui/*_tab.py), after the actions that change it, and once
        # the demo dataset is ready (the banner empties); the Test tab's run list follows runs finishing.
        for fn, inputs, outputs in (data["refresh"], train["refresh"], test["refresh"], label["refresh"]):
            app.load(fn, inputs, outputs, api_visibility="private")
        quiet = dict(api_visibility="private", show_progress="hidden")  # a list read again does not flash
        for changed in data["changed"]:  # import, delete
            changed.then(*train["refresh"], **quiet)
        banner.change(*data["refresh"], **quiet).then(*train["refresh"], **quiet)
        runs["on_load"](app)
    return app
