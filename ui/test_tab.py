"""The Test tab: a tuned run (or a base model) on new images, side by side with its base model. The worker's
answerer answers (backend.jobs.answerer); the page queues the question and shows where it stands."""
from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import gradio as gr

from backend.data.workspace import Workspace
from backend.jobs import prediction_queue
from backend.jobs.runs import list_runs
from backend.scoring.draw import PREDICTION, draw_boxes
from backend.scoring.families import KNOWN_MODELS
from ui.uploads import IMAGES, UploadFiles, accept_uploads

BASE = "base model only"
REFRESH_SECONDS = 5.0
"""How often the run list is read again, so that a run finishing shows while the tab is open."""
NO_WORKER_SECONDS = 30.0
"""A question queued this long with nothing training ahead of it: the page asks whether a worker runs."""


def _label(r: dict) -> str:
    return f"run {r['id']} · {r['method'].upper()} · {r['model']} · {r['task']} · {r['status']}"


def run_choices(ws: Workspace) -> list[tuple[str, str]]:
    return [(_label(r), str(r["id"])) for r in list_runs(ws.store) if r["status"] in ("completed", "cancelled",
                                                                                      "running")]


def ask(ws: Workspace, run: str | None, model: str | None, paths: list[str] | None, category: str, question: str,
        compare: bool, checkpoint: str = "best", on_cpu: bool = False) -> int:
    """Queue the Test tab's question for the worker (the page loads no model); returns the request's id."""
    request = {"category": (category or "").strip(), "question": (question or "").strip(),
               "checkpoint": checkpoint, "compare": bool(compare)}
    if run and run != BASE:
        request["run_id"] = int(run)
    else:
        request["model"] = (model or "").strip()
    return prediction_queue.submit(ws, request, [Path(p) for p in paths or []], on_cpu)


def waiting_text(state: dict, seconds: float) -> str:
    """Where a request stands, in one line."""
    if state["status"] == "running":
        return f"⏳ Answering… ({seconds:.0f} s)"
    line = "⏳ Queued" + (f": {state['ahead']} question{'s' if state['ahead'] != 1 else ''} ahead" if state["ahead"]
                          else ": next in line")
    if state["waiting_for"]:
        runs = ", ".join(str(r) for r in state["waiting_for"])
        line += (f"; the GPU answers once it is free (training: run {runs}). Tick “Answer on the CPU” not to wait")
    elif seconds > NO_WORKER_SECONDS:
        line += f" for {seconds:.0f} s: is the worker running? (`python app.py worker`)"
    return line


def heading(source: str) -> str:
    """An answer's source as the heading above its picture: 'run 3 (best, step 40)' -> 'Tuned: run 3 (best
    checkpoint, step 40)', 'base' -> 'Base model'."""
    if source.startswith("run "):
        return "Tuned: " + source.replace("(best,", "(best checkpoint,").replace("(last,", "(last checkpoint,")
    return "Base model" + source[len("base"):]


def picture_url(image) -> str:
    """A drawn picture inline (JPEG as a data URL), so the page shows it under its heading."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=88)
    return f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def shown(paths: list[str], answers: list[dict]) -> tuple[list, str]:
    """Gallery items (each image's answers in order: tuned, then base) and the reasoning text."""
    items, texts = [], []
    for a in answers:
        path = paths[a["image"]]
        name = file_name(path)
        items.append((draw_boxes(path, [(a.get("boxes", []), PREDICTION)]),
                      f"{name} · {a['source']} · {len(a.get('boxes', []))} boxes"))
        texts.append(f"**{name} · {heading(a['source'])}**\n\n> {a['think'] or '(no reasoning)'}\n\n"
                     f"answer: `{a['answer']}`")
    return items, "\n\n".join(texts)


def file_name(path) -> str:
    """An upload's own name (not its place in the cache)."""
    return getattr(path, "shown", None) or Path(path).name


def pictures_html(paths: list[str], items: list, answers: list[dict]) -> str:
    """The gallery's pictures as the page shows them: each under a heading saying whose answer it is (base, or the
    tuned run with its checkpoint) and over its whole caption, two abreast or one on a phone."""
    figures = []
    for (image, _), a in zip(items, answers):
        boxes = len(a.get("boxes", []))
        caption = f"{file_name(paths[a['image']])} · {boxes} box{'es' if boxes != 1 else ''} drawn in red"
        figures.append(f"<figure class='test-answer' style='margin:0'><h4 style='margin:0 0 4px'>"
                       f"{html.escape(heading(a['source']))}</h4><img src='{picture_url(image)}' "
                       f"alt='{html.escape(caption)}' style='width:100%;height:auto;border-radius:4px'>"
                       f"<figcaption style='font-size:0.9em;overflow-wrap:anywhere'>{html.escape(caption)}"
                       "</figcaption></figure>")
    return ("<div style='display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px'>"
            + "".join(figures) + "</div>") if figures else ""


def follow(ws: Workspace, request_id: int, poll: float = 0.5):
    """Yield a waiting line while the request waits or is answered; then its answers (a list) or, when it
    failed, the sentence (a ValueError raised)."""
    start = time.monotonic()
    while True:
        state = prediction_queue.state(ws, request_id)
        if state["status"] == "done":
            prediction_queue.cleanup(ws, request_id)
            yield state["result"]["answers"]
            return
        if state["status"] == "failed":
            prediction_queue.cleanup(ws, request_id)
            raise ValueError(state["error"])
        yield waiting_text(state, time.monotonic() - start)
        time.sleep(poll)


def create_test_tab(ws: Workspace) -> dict:
    with gr.Tab("Test", id="test") as tab:
        with gr.Row():
            with gr.Column():
                run = gr.Dropdown([], label="Tuned run", elem_id="test-run", allow_custom_value=True)
                model = gr.Dropdown(["demo", *KNOWN_MODELS], value="demo", allow_custom_value=True,
                                    label="…or a base model (when no run is chosen)")
                images = UploadFiles(file_count="multiple", file_types=sorted(IMAGES), label="New images",
                                     elem_id="test-images")
                category = gr.Textbox(label="Category to detect", placeholder="red circle")
                question = gr.Textbox(label="…or a question / description")
                checkpoint = gr.Radio([("best held-out step", "best"), ("last step", "last")], value="best",
                                      label="Checkpoint of the run", elem_id="test-checkpoint")
                compare = gr.Checkbox(True, label="Side by side with the base model")
                on_cpu = gr.Checkbox(False, label="Answer on the CPU", elem_id="test-cpu",
                                     info="slower, but does not wait for a GPU that is training a run")
                go = gr.Button("Predict", variant="primary", elem_id="predict")
            with gr.Column():
                message = gr.Markdown()
                # The pictures, each under a heading (base, or tuned with its checkpoint) and over its whole
                # caption; the gallery holds the same pictures for API clients (/predict's second value).
                pictures = gr.HTML(elem_id="test-gallery")
                gallery = gr.Gallery(visible=False, label="Predicted boxes (red)")
                reasoning = gr.Markdown(elem_id="test-reasoning")
        listed = gr.State([])  # the run choices last sent to this browser
        timer = gr.Timer(REFRESH_SECONDS)

    def on_predict(r, m, paths, c, q, cmp, ck, cpu):
        try:
            paths = accept_uploads(paths, IMAGES)  # files this page received, never a server path
            request_id = ask(ws, r, m, paths, c or "", q or "", cmp, ck or "best", bool(cpu))
            for update in follow(ws, request_id):
                if isinstance(update, str):
                    yield update, gr.update(), gr.update(), gr.update()
                else:
                    items, text = shown(paths, update)
                    yield "", items, text, pictures_html(paths, items, update)
        except ValueError as e:
            yield f"⚠ {e}", [], "", ""

    go.click(on_predict, [run, model, images, category, question, compare, checkpoint, on_cpu],
             [message, gallery, reasoning, pictures], api_name="predict")

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
