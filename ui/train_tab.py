"""The Train tab: dataset, model, rewards with weights, a preset and advanced settings; launch queues a run."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from backend.datasets.catalog import dataset_names, get_dataset
from backend.families import KNOWN_MODELS
from backend.rewards import REWARDS
from backend.runs import create_run
from backend.settings import PRESETS, TrainSettings, preset
from backend.tasks import TASKS
from backend.workspace import Workspace

ADVANCED = ["max_steps", "num_generations", "prompts_per_step", "learning_rate", "beta", "temperature",
            "max_completion_length", "lora_rank", "lora_alpha", "seed", "save_steps"]
INTEGER = {"max_steps", "num_generations", "prompts_per_step", "max_completion_length", "lora_rank", "lora_alpha",
           "seed", "save_steps"}


def device_summary() -> str:
    """Without importing torch (the page must start fast): a GPU is visible through the driver."""
    gpu = Path("/proc/driver/nvidia/gpus").exists()
    return ("**Device:** NVIDIA GPU — QLoRA (4-bit NF4, bf16 compute) with LoRA adapters" if gpu else
            "**Device:** CPU (no GPU found) — LoRA in float32; pick the *CPU demo* preset and the demo model")


def weights_text(task: str) -> str:
    return ", ".join(f"{n}={w:g}" for n, w in TASKS[task].default_rewards.items())


def parse_weights(text: str) -> tuple[list[str], list[float]]:
    """'detection_iou=1, format=0.5' -> names and weights."""
    names, weights = [], []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, w = part.partition("=")
        name = name.strip()
        try:
            weight = float(w) if w.strip() else 1.0
        except ValueError:
            raise ValueError(f"the weight of '{name}' is not a number: '{w.strip()}'") from None
        names.append(name)
        weights.append(weight)
    if not names:
        raise ValueError("choose at least one reward")
    return names, weights


def launch(ws: Workspace, dataset: str, model: str, preset_name: str, rewards_text: str, *values) -> int:
    """Validate the form and queue a run; returns its id (ValueError: one sentence for the page)."""
    if not dataset:
        raise ValueError("choose a dataset first (the Data tab imports one)")
    if not model:
        raise ValueError("choose a model")
    names, weights = parse_weights(rewards_text)
    overrides = {}
    for key, value in zip(ADVANCED, values):
        if value is None or value == "":
            continue
        overrides[key] = int(value) if key in INTEGER else float(value)
    settings = preset(preset_name, **overrides)
    settings.rewards, settings.reward_weights = names, weights
    return create_run(ws.store, dataset, model.strip(), settings)


def create_train_tab(ws: Workspace, on_launched) -> dict:
    defaults = TrainSettings.from_dict(PRESETS["CPU demo"])
    with gr.Tab("Train", id="train"):
        gr.Markdown(device_summary(), elem_id="device")
        with gr.Row():
            with gr.Column():
                dataset = gr.Dropdown([], label="Dataset", elem_id="train-dataset", allow_custom_value=True)
                model = gr.Dropdown(["demo", *KNOWN_MODELS], value="demo", allow_custom_value=True,
                                    label="Model (the demo, a hub id, or a local folder)")
                preset_name = gr.Radio(list(PRESETS), value="CPU demo", label="Preset")
                rewards = gr.Textbox(weights_text("detection"), label="Rewards and weights",
                                     info="name=weight, comma-separated. Known: " + ", ".join(REWARDS))
                launch_btn = gr.Button("Train", variant="primary", elem_id="launch")
                message = gr.Markdown(elem_id="launch-message")
            with gr.Column():
                with gr.Accordion("Advanced settings", open=False):
                    fields = []
                    for key in ADVANCED:
                        fields.append(gr.Number(getattr(defaults, key), label=key.replace("_", " "),
                                                precision=0 if key in INTEGER else None))

    def on_dataset(name):
        if not name:
            return gr.update()
        return weights_text(get_dataset(ws.store, name, with_samples=False)["task"])

    def on_preset(name):
        values = TrainSettings.from_dict(PRESETS[name])
        return [getattr(values, k) for k in ADVANCED]

    def on_launch(ds, m, p, r, *values):
        try:
            run_id = launch(ws, ds, m, p, r, *values)
        except ValueError as e:
            return f"⚠ {e}", *on_launched(None)
        return f"✓ Queued run {run_id}.", *on_launched(run_id)

    def on_load():
        names = dataset_names(ws.store)
        value = "demo-shapes" if "demo-shapes" in names else (names[-1] if names else None)
        return gr.update(choices=names, value=value)

    dataset.change(on_dataset, dataset, rewards, api_visibility="private")
    preset_name.change(on_preset, preset_name, fields, api_visibility="private")
    return {"launch": (launch_btn, on_launch, [dataset, model, preset_name, rewards, *fields], message),
            "load": (on_load, [], [dataset])}
