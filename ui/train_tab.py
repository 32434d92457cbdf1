"""The Train tab: dataset, model, rewards with weights, a preset and advanced settings; launch queues a run."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields as dataclass_fields
from pathlib import Path

import gradio as gr

from backend.data.catalog import dataset_names, get_dataset
from backend.data.workspace import Workspace
from backend.engine.preflight import launch_check
from backend.engine.settings import (CHOICES, PRESETS, TrainSettings, parse_setting, preset, setting_help,
                                     setting_type)
from backend.jobs.runs import create_run
from backend.scoring.families import KNOWN_MODELS
from backend.scoring.rewards import REWARDS
from backend.scoring.tasks import TASKS

ADVANCED = [f.name for f in dataclass_fields(TrainSettings) if f.name not in ("rewards", "reward_weights")]
"""Every other setting is in the Advanced accordion, built from TrainSettings (its docstrings are the hints)."""
AUTO = "auto"
ROOT = Path(__file__).resolve().parent.parent


def device_summary() -> str:
    """Without importing torch (the page must start fast): a GPU is visible through the driver."""
    gpu = Path("/proc/driver/nvidia/gpus").exists()
    return ("**Device:** NVIDIA GPU — QLoRA (4-bit NF4, bf16 compute) with LoRA adapters" if gpu else
            "**Device:** CPU (no GPU found) — LoRA in float32; pick the *CPU demo* preset and the demo model")


def weights_text(task: str, preset_name: str | None = None) -> str:
    """The rewards a run of `task` gets: the preset's that score this task (each reward is named for its
    task), else the task's defaults."""
    chosen = PRESETS.get(preset_name, {}).get("rewards")
    if chosen:
        return ", ".join(f"{n}=1" for n in chosen if n == "format" or n.startswith(f"{task}_"))
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


def form_value(key: str, value):
    """A setting as its form input shows it (qlora: auto / on / off)."""
    if key == "qlora":
        return AUTO if value is None else ("on" if value else "off")
    if setting_type(key) is list:
        return ", ".join(value or [])
    if setting_type(key) in (int, float) and getattr(TrainSettings, key, None) is None:
        return "" if value is None else str(value)
    return value


def setting_input(key: str, value, help_text: str | None):
    """The form input for one setting: a choice, a checkbox, a number or text."""
    label, info = key.replace("_", " "), help_text or None
    if key in CHOICES:
        return gr.Dropdown(list(CHOICES[key]), value=value, label=label, info=info)
    if key == "qlora":  # None = decided by the device
        return gr.Radio([AUTO, "on", "off"], value=form_value(key, value), label=label, info=info)
    kind = setting_type(key)
    if kind is bool:
        return gr.Checkbox(value=value, label=label, info=info)
    if kind in (int, float) and getattr(TrainSettings, key, None) is not None:
        return gr.Number(value, label=label, info=info, precision=0 if kind is int else None)
    # Optional numbers and text: empty = the default (a Number would show and send 0).
    if kind is list:
        return gr.Textbox(form_value(key, value), label=label, info=info, placeholder="none",
                          elem_id=f"setting-{key}")
    return gr.Textbox("" if value is None else str(value), label=label, info=info, placeholder="default",
                      elem_id=f"setting-{key}")


def form_settings(dataset: str, model: str, preset_name: str, rewards_text: str, *values) -> TrainSettings:
    """The form as TrainSettings (ValueError: one sentence for the page)."""
    if not dataset:
        raise ValueError("choose a dataset first (the Data tab imports one)")
    if not model:
        raise ValueError("choose a model")
    names, weights = parse_weights(rewards_text)
    overrides = {}
    for key, value in zip(ADVANCED, values):
        if value is None or value == "" or value == AUTO:
            continue
        kind = setting_type(key)
        try:
            overrides[key] = (value in (True, "on")) if kind is bool else parse_setting(key, value)
        except ValueError:
            raise ValueError(f"{key.replace('_', ' ')} must be a number, got '{value}'") from None
    settings = preset(preset_name, **overrides)
    settings.rewards, settings.reward_weights = names, weights
    return settings


def launch(ws: Workspace, dataset: str, model: str, preset_name: str, rewards_text: str, *values) -> int:
    """Validate the form, check the memory estimate against this machine's GPU, and queue a run."""
    settings = form_settings(dataset, model, preset_name, rewards_text, *values)
    launch_check(ws, dataset, model.strip(), settings)
    return create_run(ws.store, dataset, model.strip(), settings)


CHECKED_SETTINGS = ("min_pixels", "max_pixels", "num_generations", "temperature", "top_p", "max_completion_length",
                    "seed", "init_from", "method", "negative_share", "object_kind")
"""The form's settings the check samples and scores with (the signal check: G completions as the run would)."""


def run_check(ws: Workspace, dataset: str, model: str, settings: TrainSettings, samples: int = 4) -> dict:
    """`models check --json` in its own process, with the form's rewards and sampling settings: the page never loads
    a model (nor torch)."""
    cmd = [sys.executable, str(ROOT / "app.py"), "--data-dir", str(ws.data_dir), "models", "check", model.strip(),
           "--dataset", dataset, "--samples", str(samples), "--json"]
    if settings.rewards:
        cmd += ["--rewards", ",".join(settings.rewards),
                "--reward-weights", ",".join(f"{w:g}" for w in settings.reward_weights)]
    for name in CHECKED_SETTINGS:
        value = getattr(settings, name)
        if value is not None:
            cmd += ["--" + name.replace("_", "-"), str(value)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        raise ValueError(lines[-1][len("error: "):] if lines else "the check failed (see the worker log)")
    return json.loads(proc.stdout)


def check_view(result: dict) -> tuple[list[list], list[tuple[str, str]], str]:
    """(size table rows, baseline pictures with captions, markdown summary and advice)."""
    rows, seen = [], set()
    for im in result["images"]:
        key = (tuple(im["original"]), tuple(im["input"]))
        if key in seen:
            continue
        seen.add(key)
        n = sum(1 for other in result["images"] if (tuple(other["original"]), tuple(other["input"])) == key)
        rows.append([f"{im['original'][0]}×{im['original'][1]}", f"{im['input'][0]}×{im['input'][1]}",
                     f"{im['frame'][0]}×{im['frame'][1]}", im["visual_tokens"], n])
    pictures, lines = [], [f"**{result['model']}** ({result['family']}): images are resized within "
                           f"{result['min_pixels']:,}–{result['max_pixels']:,} pixels; the largest takes "
                           f"{result['largest_visual_tokens']} visual tokens."]
    if result.get("memory"):
        lines.append(f"**GPU plan:** {result['memory']['plan']}; **memory estimate:** {result['memory']['summary']}")
    base = result.get("baseline")
    if base:
        lines.append(f"**Zero-shot baseline** on {len(base['samples'])} training images: format rate "
                     f"{base['format_rate']:.2f}; " + ", ".join(f"{k} {v:.3f}" for k, v in base["means"].items()))
        for sample in base["samples"]:
            terms = ", ".join(f"{k} {v:.2f}" for k, v in sample["rewards"].items())
            pictures.append((sample["picture"], f"{sample['category'] or ''}: {terms}"))
    from backend.engine.preflight import signal_sentences
    signal = signal_sentences(result)
    if signal:
        lines.append(f"**{signal[0]}**\n" + "".join(f"\n- {line}" for line in signal[1:]))
    lines += [f"⚠ {a}" for a in result["advice"]]
    if result.get("ready", True) and not result["advice"]:
        lines.append("✓ Ready: GRPO has a signal to learn the task from, and nothing else stands in the way.")
    elif not result.get("ready", True):
        lines.append("✗ **Not ready:** GRPO would not learn the task from this start (see above).")
    return rows, pictures, "\n\n".join(lines)


def _card_preset(preset_name: str) -> str:
    """The GPU preset whose card the checkpoint table is for: the chosen one, or the 24 GB card's."""
    from backend.engine.settings import PRESET_CARD_GIB
    return preset_name if preset_name in PRESET_CARD_GIB else "24 GB GPU"


def checkpoints_caption(preset_name: str) -> str:
    card = _card_preset(preset_name)
    return (f"The published checkpoints of every family with the **{card}** preset (a 1024x768 photo; plan and "
            f"memory as the run plan picks them with vLLM installed). Pick a row to train it; any other checkpoint "
            f"of these families (a hub id or a local folder) trains too.")


def checkpoints_view(preset_name: str) -> tuple[list[str], list[list]]:
    from backend.engine.checkpoints import checkpoint_rows, checkpoint_table
    return checkpoint_table(checkpoint_rows(_card_preset(preset_name)))


def create_train_tab(ws: Workspace, on_launched) -> dict:
    defaults = TrainSettings.from_dict(PRESETS["CPU demo"])
    with gr.Tab("Train", id="train") as tab:
        gr.Markdown(device_summary(), elem_id="device")
        with gr.Row():
            with gr.Column():
                dataset = gr.Dropdown([], label="Dataset", elem_id="train-dataset", allow_custom_value=True)
                model = gr.Dropdown(["demo", *KNOWN_MODELS], value="demo", allow_custom_value=True,
                                    label="Model (the demo, a hub id, or a local folder)")
                preset_name = gr.Radio(list(PRESETS), value="CPU demo", label="Preset")
                # One of the settings, shown here rather than among the advanced ones: it is the first choice.
                method = gr.Radio([("GRPO: reinforcement with the rewards (Visual-RFT)", "grpo"),
                                   ("SFT: supervised, the truth as the answer", "sft")], value=defaults.method,
                                  label="Method", elem_id="train-method",
                                  info="Compare them on your data in Runs → Compare; a GRPO run can start from a "
                                       "finished SFT run (init from, in the advanced settings).")
                rewards = gr.Textbox(weights_text("detection", "CPU demo"), label="Rewards and weights",
                                     info="name=weight, comma-separated. Known: " + ", ".join(REWARDS))
                with gr.Row():
                    check_btn = gr.Button("Check", elem_id="check")
                    launch_btn = gr.Button("Train", variant="primary", elem_id="launch")
                message = gr.Markdown(elem_id="launch-message")
            with gr.Column():
                with gr.Accordion("Advanced settings", open=False):
                    helps = setting_help()
                    fields = [method if key == "method" else setting_input(key, getattr(defaults, key), helps.get(key))
                              for key in ADVANCED]
        with gr.Accordion("Known checkpoints: size, visual tokens, plan and memory on a GPU", open=False,
                          elem_id="checkpoints"):
            checkpoints_note = gr.Markdown(checkpoints_caption("CPU demo"), elem_id="checkpoints-note")
            headers, table = checkpoints_view("CPU demo")
            checkpoints = gr.Dataframe(table, headers=headers, interactive=False, wrap=True,
                                       elem_id="checkpoints-table")
        with gr.Group(visible=False, elem_id="check-result") as check_box:
            gr.Markdown("### Pre-flight check: what the model sees, and how it does before training")
            check_summary = gr.Markdown(elem_id="check-summary")
            check_table = gr.Dataframe(headers=["original", "fed to the model", "coordinate frame", "visual tokens",
                                                "images"], interactive=False, elem_id="check-table")
            check_gallery = gr.Gallery(label="Baseline: truth (green), prediction (red)", columns=4, height="auto",
                                       elem_id="check-gallery")

    def on_rewards(name, preset_name):
        if not name:
            return gr.update()
        try:
            return weights_text(get_dataset(ws.store, name, with_samples=False)["task"], preset_name)
        except ValueError:  # deleted meanwhile: launching it says so in a sentence
            return gr.update()

    def on_preset(name):
        values = TrainSettings.from_dict(PRESETS[name])
        return [gr.update() if k == "method" else form_value(k, getattr(values, k)) for k in ADVANCED]

    def on_checkpoint(evt: gr.SelectData):
        """A row of the checkpoint table picked: its model becomes the choice."""
        row = evt.row_value if getattr(evt, "row_value", None) else None
        return gr.update(value=row[0]) if row else gr.update()

    def on_checkpoints(name):
        headers, table = checkpoints_view(name)
        return checkpoints_caption(name), gr.update(value={"headers": headers, "data": table})

    def on_launch(ds, m, p, r, *values):
        try:
            run_id = launch(ws, ds, m, p, r, *values)
        except ValueError as e:
            return f"⚠ {e}", *on_launched(None)
        from backend.engine.cpu_advice import dataset_cpu_warning
        warning = dataset_cpu_warning(ws, ds, m.strip(), form_settings(ds, m, p, r, *values))
        return f"✓ Queued run {run_id}." + (f"\n\n⚠ Note: {warning}" if warning else ""), *on_launched(run_id)

    def on_refresh(current):
        """The dataset list as storage has it now; the current choice is kept while it exists, else the demo
        (or the newest dataset) is chosen."""
        names = dataset_names(ws.store)
        if current in names:
            return gr.update(choices=names)
        value = "demo-shapes" if "demo-shapes" in names else (names[-1] if names else None)
        return gr.update(choices=names, value=value)

    def on_check(ds, m, p, r, *values):
        try:
            settings = form_settings(ds, m, p, r, *values)
            rows, pictures, text = check_view(run_check(ws, ds, m, settings))
        except ValueError as e:
            return f"⚠ {e}", gr.Group(visible=False), "", [], []
        return "", gr.Group(visible=True), text, rows, pictures

    check_btn.click(on_check, [dataset, model, preset_name, rewards, *fields],
                    [message, check_box, check_summary, check_table, check_gallery], api_visibility="private")
    dataset.change(on_rewards, [dataset, preset_name], rewards, api_visibility="private")
    preset_name.change(on_preset, preset_name, fields, api_visibility="private").then(
        on_rewards, [dataset, preset_name], rewards, api_visibility="private")
    preset_name.change(on_checkpoints, preset_name, [checkpoints_note, checkpoints], api_visibility="private")
    checkpoints.select(on_checkpoint, None, model, api_visibility="private")
    refresh = (on_refresh, [dataset], [dataset])
    tab.select(*refresh, api_visibility="private", show_progress="hidden")
    return {"launch": (launch_btn, on_launch, [dataset, model, preset_name, rewards, *fields], message),
            "refresh": refresh}
