"""Named API endpoints without a page of their own, so gradio_client can do what the page does."""
from __future__ import annotations

import gradio as gr

from backend.data.workspace import Workspace
from backend.engine.settings import preset
from backend.jobs.runs import cancel_run as cancel
from backend.jobs.runs import create_run as create
from backend.jobs.run_history import run_json


def register_api(ws: Workspace, keeper=None) -> None:
    def create_run(dataset: str, model: str = "demo", preset_name: str = "CPU demo", max_steps: int = 0,
                   rewards: str = "", method: str = "grpo", shots: int = 0, novel_classes: str = "") -> dict:
        """Queue a run (method "grpo" or "sft"); rewards as 'name=weight, ...' (empty: the task's defaults); shots:
        images per class (0: every training image); novel_classes: 'a, b' (or a JSON list, '["a, b", "c"]', for names
        that hold a comma), held out of training. Returns {"id": ...}."""
        from backend.scoring.subsets import parse_class_list
        from ui.train_tab import parse_weights
        try:
            settings = preset(preset_name, max_steps=max_steps or None, method=method or None, shots=shots or None,
                              novel_classes=parse_class_list(novel_classes) or None)
            if rewards.strip():
                settings.rewards, settings.reward_weights = parse_weights(rewards)
            return {"id": create(ws.store, dataset, model, settings)}
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def run_status(run_id: int) -> dict:
        """Status, method, step, metrics {name: [[step, value], ...]}, evaluation {before, after}, the held-out
        curve {metric: [[step, value], ...]}, the best step {step, metric, value} and error of a run."""
        try:
            return run_json(ws.store, int(run_id), data_dir=ws.data_dir)
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def cancel_run(run_id: int) -> str:
        """Stop a run at its next step (a queued run is cancelled at once). Returns its status."""
        try:
            return cancel(ws.store, int(run_id))
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def worker_status() -> dict:
        """The page's worker: {"pid": its pid (null while there is none), "restarts": [{"gone", "pid", "at"}, ...]
        (each worker the page started in place of one that died), "error", "message": what the page shows}."""
        if keeper is None:
            return {"pid": None, "restarts": [], "error": None, "message": "this page does not keep a worker"}
        return keeper.status()

    for fn in (create_run, run_status, cancel_run, worker_status):
        gr.api(fn, api_name=fn.__name__)
