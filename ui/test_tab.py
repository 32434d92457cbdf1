"""The Test tab: a tuned run (or a base model) on new images, side by side with its base model."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from backend.data.workspace import Workspace
from backend.engine.families import KNOWN_MODELS
from backend.jobs.runs import list_runs
from backend.scoring.draw import PREDICTION, draw_boxes

BASE = "base model only"
REFRESH_SECONDS = 5.0
"""How often the run list is read again, so that a run finishing shows while the tab is open."""


def _label(r: dict) -> str:
    return f"run {r['id']} · {r['method'].upper()} · {r['model']} · {r['task']} · {r['status']}"


def run_choices(ws: Workspace) -> list[tuple[str, str]]:
    return [(_label(r), str(r["id"])) for r in list_runs(ws.store) if r["status"] in ("completed", "cancelled",
                                                                                      "running")]


def predict_images(ws: Workspace, run: str | None, model: str | None, paths: list[str] | None, category: str,
                   question: str, compare: bool, checkpoint: str = "best") -> tuple[list, str]:
    """Gallery items (tuned, then base when comparing) and the reasoning text; a run's `checkpoint` is its best
    (the default) or last adapter."""
    from backend.jobs.predict import predict
    if not paths:
        raise ValueError("upload at least one image")
    category, question = (category or "").strip(), (question or "").strip()
    ask = {"category": category or None, "question": None if category else question or None}
    sources: list[tuple[str, dict]] = []
    if run and run != BASE:
        sources.append((f"run {run}", {"run_id": int(run), "checkpoint": checkpoint}))
        if compare:  # the run's base model, asked exactly as the run is: the same loaded model, adapter off
            sources.append(("base", {"run_id": int(run), "base": True, "checkpoint": checkpoint}))
    else:
        if not (model or "").strip():
            raise ValueError("choose a run or a base model")
        sources.append(("base", {"model": model.strip()}))
    items, texts = [], []
    for path in paths:
        for name, src in sources:
            result = predict(ws, Path(path), **src, **ask)
            used = result.get("checkpoint")
            name_used = f"{name} ({used['which']}, step {used['step']})" if used else name
            items.append((draw_boxes(path, [(result.get("boxes", []), PREDICTION)]),
                          f"{Path(path).name} · {name_used} · {len(result.get('boxes', []))} boxes"))
            texts.append(f"**{Path(path).name} · {name_used}**\n\n> {result['think'] or '(no reasoning)'}\n\n"
                         f"answer: `{result['answer']}`")
    return items, "\n\n".join(texts)


def create_test_tab(ws: Workspace) -> dict:
    with gr.Tab("Test", id="test") as tab:
        with gr.Row():
            with gr.Column():
                run = gr.Dropdown([], label="Tuned run", elem_id="test-run", allow_custom_value=True)
                model = gr.Dropdown(["demo", *KNOWN_MODELS], value="demo", allow_custom_value=True,
                                    label="…or a base model (when no run is chosen)")
                images = gr.File(file_count="multiple", file_types=["image"], label="New images",
                                 elem_id="test-images")
                category = gr.Textbox(label="Category to detect", placeholder="red circle")
                question = gr.Textbox(label="…or a question / description")
                checkpoint = gr.Radio([("best held-out step", "best"), ("last step", "last")], value="best",
                                      label="Checkpoint of the run", elem_id="test-checkpoint")
                compare = gr.Checkbox(True, label="Side by side with the base model")
                go = gr.Button("Predict", variant="primary", elem_id="predict")
            with gr.Column():
                message = gr.Markdown()
                gallery = gr.Gallery(label="Predicted boxes (red)", columns=2, height=480, object_fit="contain",
                                     elem_id="test-gallery")
                reasoning = gr.Markdown(elem_id="test-reasoning")
        listed = gr.State([])  # the run choices last sent to this browser
        timer = gr.Timer(REFRESH_SECONDS)

    def on_predict(r, m, paths, c, q, cmp, ck):
        try:
            items, text = predict_images(ws, r, m, paths, c or "", q or "", cmp, ck or "best")
        except ValueError as e:
            return f"⚠ {e}", [], ""
        return "", items, text

    go.click(on_predict, [run, model, images, category, question, compare, checkpoint], [message, gallery, reasoning],
             api_name="predict")

    def on_refresh(current, shown):
        """The runs to test as storage has them now (`shown`: the choices this browser holds). Nothing is sent
        while they are the same, so an open list is not redrawn under the reader. The choice is kept while it
        exists; "base model only" counts as chosen only when there was a run to choose instead, else the
        newest run is taken."""
        choices = [(BASE, BASE)] + run_choices(ws)
        if choices == shown:
            return gr.update(), shown
        values = [value for _, value in choices]
        if current in values and (current != BASE or len(shown) > 1):
            return gr.update(choices=choices), choices
        return gr.update(choices=choices, value=values[1] if len(values) > 1 else BASE), choices

    refresh = (on_refresh, [run, listed], [run, listed])
    tab.select(*refresh, api_visibility="private", show_progress="hidden")
    timer.tick(*refresh, api_visibility="private", show_progress="hidden")
    return {"refresh": refresh}
