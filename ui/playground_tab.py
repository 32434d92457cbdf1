"""The reward playground: paste a truth and a completion, see each reward and the boxes drawn."""
from __future__ import annotations

import json

import gradio as gr
from PIL import Image

from backend.scoring.families import FAMILIES
from backend.scoring.draw import PREDICTION, TRUTH, draw_boxes
from backend.scoring.playground import parse_size, score
from ui.uploads import UploadImage

PIXELS = "pixels (no family)"
EXAMPLE_TRUTH = {"detection": '{"boxes": [[40, 30, 200, 180]]}', "classification": '{"label": "golden retriever", "synonyms": ["golden"]}',
                 "grounding": '{"box": [40, 30, 200, 180]}'}
EXAMPLE_COMPLETION = {
    "detection": "<think>One dog on the left.</think><answer>[{'Position': [45, 35, 195, 175], 'Confidence': 0.9}]</answer>",
    "classification": "<think>Long golden coat.</think><answer>Golden Retriever</answer>",
    "grounding": "<think>The dog on the left.</think><answer>[45, 35, 195, 175]</answer>",
}


def run_score(task: str, family: str, image, size_text: str, input_size_text: str, truth_text: str, completion: str):
    """(result JSON, reward rows, drawn image or None, message)."""
    try:
        truth = json.loads(truth_text or "{}")
        size = parse_size(size_text) or (list(image.size) if image is not None else None)
        result = score(task, truth, completion or "", None if family == PIXELS else family, size,
                       parse_size(input_size_text))
    except ValueError as e:
        return None, [], None, f"⚠ {e}"
    rows = [[name, round(value, 4)] for name, value in result["rewards"].items()] + [["total", round(result["total"], 4)]]
    drawn = None
    if image is not None and task != "classification":
        truth_boxes = truth.get("boxes") or ([truth["box"]] if "box" in truth else [])
        drawn = draw_boxes(image, [(truth_boxes, TRUTH), (result["parsed"].get("boxes", []), PREDICTION)])
    return result, rows, drawn, ""


def create_playground_tab() -> dict:
    with gr.Tab("Reward playground", id="playground"):
        gr.Markdown("Score one model answer the way training does. Truth boxes are pixels of the original image; "
                    "the completion's boxes are read in the chosen model family's coordinates. "
                    "Truth is drawn in **green**, the parsed answer in **red**.")
        with gr.Row():
            with gr.Column():
                task = gr.Dropdown(["detection", "classification", "grounding"], value="detection", label="Task")
                family = gr.Dropdown([PIXELS, *FAMILIES], value=PIXELS, label="Model family (coordinates)")
                image = UploadImage(type="pil", label="Image (optional: for drawing and its size)", elem_id="playground-image")
                size = gr.Textbox(label="Image size WIDTHxHEIGHT (taken from the image when empty)")
                input_size = gr.Textbox(label="Input size the model saw, WIDTHxHEIGHT (qwen2_5_vl answers in its "
                                              "pixels; `models check` or the Train tab's Check reports it)")
                truth = gr.Textbox(EXAMPLE_TRUTH["detection"], label="Truth (JSON)", lines=2)
                completion = gr.Textbox(EXAMPLE_COMPLETION["detection"], label="Completion", lines=5)
                btn = gr.Button("Score", variant="primary")
            with gr.Column():
                message = gr.Markdown()
                table = gr.Dataframe(headers=["reward", "value"], label="Rewards", interactive=False)
                drawn = gr.Image(label="Truth (green) and prediction (red)", interactive=False, elem_id="playground-drawn")
                result = gr.JSON(label="Parsed")

    task.change(lambda t: (EXAMPLE_TRUTH[t], EXAMPLE_COMPLETION[t]), task, [truth, completion], api_visibility="private")
    btn.click(run_score, [task, family, image, size, input_size, truth, completion], [result, table, drawn, message], api_name="score")
    return {"task": task}
