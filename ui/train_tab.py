"""The Train tab: dataset, model, the rewards picked with their weights, a preset and the other settings in groups;
Check runs the pre-flight in its own process, Train queues a run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gradio as gr

from backend.data.catalog import dataset_names, get_dataset
from backend.data.workspace import Workspace
from backend.engine.preflight import launch_check
from backend.engine.settings import PRESET_CARD_GIB, PRESETS, TrainSettings, setting_help
from backend.jobs.runs import create_run
from backend.scoring.families import KNOWN_MODELS, get_family
from ui.train_form import (ADVANCED, REWARD_NAMES, SETTING_GROUPS, form_args, form_settings, form_value,  # noqa: F401
                           parse_weights, reward_line, reward_updates, setting_info, setting_input, task_rewards,
                           weights_text)

ROOT = Path(__file__).resolve().parent.parent


def has_gpu() -> bool:
    """Without importing torch (the page must start fast): a GPU is visible through the driver."""
    return Path("/proc/driver/nvidia/gpus").exists()


def device_summary() -> str:
    gpu = has_gpu()
    return ("**Device:** NVIDIA GPU — QLoRA (4-bit NF4, bf16 compute) with LoRA adapters" if gpu else
            "**Device:** CPU (no GPU found) — LoRA in float32; pick the *CPU demo* preset and the demo model")


def launch(ws: Workspace, dataset: str, model: str, preset_name: str, rewards_text: str, *values) -> int:
    """Validate the form, check the memory estimate against this machine's GPU, and queue a run."""
    settings = form_settings(dataset, model, preset_name, rewards_text, *values)
    launch_check(ws, dataset, model.strip(), settings)
    return create_run(ws.store, dataset, model.strip(), settings)


CHECKED_SETTINGS = ("min_pixels", "max_pixels", "num_generations", "temperature", "top_p", "max_completion_length",
                    "seed", "init_from", "method", "negative_share", "object_kind", "classes_in_prompt", "shots",
                    "novel_classes")
"""The form's settings the check samples and scores with (the signal check: G completions as the run would)."""


def run_check(ws: Workspace, dataset: str, model: str, settings: TrainSettings, samples: int = 4) -> dict:
    """`models check --json` in its own process, with the form's rewards and sampling settings: the page never loads
    a model (nor torch)."""
    cmd = [sys.executable, str(ROOT / "app.py"), *check_args(ws.data_dir, dataset, model, settings, samples)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        raise ValueError(lines[-1][len("error: "):] if lines else "the check failed (see the worker log)")
    return json.loads(proc.stdout)


def check_args(data_dir, dataset: str, model: str, settings: TrainSettings, samples: int) -> list[str]:
    """The command line (after `app.py`) of the check of `settings`."""
    cmd = ["--data-dir", str(data_dir), "models", "check", model.strip(), "--dataset", dataset, "--samples",
           str(samples), "--json"]
    if settings.rewards:
        cmd += ["--rewards", ",".join(settings.rewards),
                "--reward-weights", ",".join(f"{w:g}" for w in settings.reward_weights)]
    for name in CHECKED_SETTINGS:
        value, flag = getattr(settings, name), name.replace("_", "-")
        if isinstance(value, bool):
            cmd.append(f"--{flag}" if value else f"--no-{flag}")
        elif isinstance(value, list):
            if value:
                cmd += [f"--{flag}", json.dumps(value)]  # a JSON list: a class name may hold a comma
        elif value is not None:
            cmd += [f"--{flag}", str(value)]
    return cmd


def plan_lines(result: dict, settings: TrainSettings, preset_name: str | None, gpu: bool) -> list[str]:
    """The check's plan in this machine's terms: on a GPU the plan and memory on it; on a CPU the CPU plan and its
    time per step; and for a GPU preset, what its card would run."""
    from backend.engine.cpu_advice import cpu_estimate, span
    from backend.engine.memory import model_shape
    from backend.engine.models import resolve_model
    from backend.engine.run_plan import plan_run
    lines, mem = [], result.get("memory")
    if gpu and mem:
        card = f"this machine's {mem['gpu_gib']:g} GiB GPU" if mem.get("gpu_gib") else "this machine's GPU"
        lines.append(f"**On {card}:** {mem['plan']}; **memory estimate:** {mem['summary']}")
    try:
        source = resolve_model(result["model"])[0]
        shape = model_shape(source)
    except ValueError:  # a model of unknown shape: nothing to estimate from
        return lines
    if not gpu:
        est = cpu_estimate(settings, shape, visual_tokens=result.get("largest_visual_tokens"))
        lines.append(f"**On this machine's CPU** (no GPU found): LoRA on a float32 base, HF generate; about "
                     f"{est['memory_gib']:g} GiB of memory and roughly {span(est['step_seconds'])} a step "
                     f"({span(est['run_seconds'])} for {settings.max_steps} steps).")
    card = PRESET_CARD_GIB.get(preset_name)
    if card and not (gpu and mem and mem.get("gpu_gib")):
        plan = plan_run(settings, source, cuda=True, vllm_installed=True, gpu_gib=card,
                        visual_tokens=result.get("largest_visual_tokens"))
        if plan.estimate is not None:
            fits = "" if plan.fits else " (does not fit)"
            lines.append(f"**On a {card} GB GPU** (the {preset_name} preset, with vLLM installed): "
                         f"{plan.describe()}{fits}; **memory estimate:** {plan.estimate.summary()}")
    return lines


def frame_note(result: dict) -> str:
    """What "coordinate frame" means for this model, in words: where its box numbers live."""
    try:
        convention = get_family(result["family"]).convention
    except ValueError:
        return ""
    if convention.kind == "normalized":
        how = (f"numbers from 0 to {convention.scale} across the width and down the height, whatever the image's "
               f"size: a {convention.scale}×{convention.scale} frame")
    else:
        how = "pixels of the image as it is fed to the model (the resized size), so the frame is that size"
    return (f"**Coordinate frame:** the grid the model writes a box's corners in. {result['family']} answers in "
            f"{how}. Every answer is converted back to the original image's pixels before it is scored or drawn; "
            "boxes that sit shifted or scaled on the pictures below would mean the frame does not match the model.")


def check_view(result: dict, settings: TrainSettings | None = None, preset_name: str | None = None,
               gpu: bool | None = None) -> tuple[list[list], list[tuple[str, str]], str]:
    """(size table rows, baseline pictures with captions, markdown summary and advice). The plan is said in this
    machine's terms (`gpu` None: looked up), for the form's `settings` and preset."""
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
    lines += plan_lines(result, settings or TrainSettings(), preset_name, has_gpu() if gpu is None else gpu)
    base = result.get("baseline")
    if base:
        lines.append(f"**Zero-shot baseline** on {len(base['samples'])} training images: format rate "
                     f"{base['format_rate']:.2f}; " + ", ".join(f"{k} {v:.3f}" for k, v in base["means"].items()))
        for sample in base["samples"]:
            terms = ", ".join(f"{k} {v:.2f}" for k, v in sample["rewards"].items())
            pictures.append((sample["picture"], f"{sample['category'] or ''}: {terms}"))
    from backend.engine.preflight import readiness_line, signal_sentences
    signal = signal_sentences(result)
    if signal:
        lines.append(f"**{signal[0]}**\n" + "".join(f"\n- {line}" for line in signal[1:]))
    lines += [f"⚠ {a}" for a in result["advice"]]
    if result.get("signal") is None:
        lines.append(f"*{readiness_line(result).capitalize()}.*")
    elif result["ready"] and not result["advice"]:
        lines.append("✓ Ready: GRPO has a signal to learn the task from, and nothing else stands in the way.")
    elif not result["ready"]:
        lines.append("✗ **Not ready:** GRPO would not learn the task from this start (see above).")
    return rows, pictures, "\n\n".join(lines)


def _card_preset(preset_name: str) -> str:
    """The GPU preset whose card the checkpoint table is for: the chosen one, or the 24 GB card's."""
    return preset_name if preset_name in PRESET_CARD_GIB else "24 GB GPU"


def checkpoints_caption(preset_name: str) -> str:
    card = _card_preset(preset_name)
    return (f"The published checkpoints of every family with the **{card}** preset (a 1024x768 photo; plan and "
            f"memory as the run plan picks them with vLLM installed). Pick a row to train it; any other checkpoint "
            f"of these families (a hub id or a local folder) trains too.")


def checkpoints_view(preset_name: str) -> tuple[list[str], list[list]]:
    from backend.engine.checkpoints import checkpoint_rows, checkpoint_table
    return checkpoint_table(checkpoint_rows(_card_preset(preset_name)))


def create_reward_picker(task: str, preset_name: str) -> tuple[list, list, list]:
    """A checkbox per reward (its docstring's line beside it) and a weight beside each ticked one: (rows, ticks,
    weights), one of each per REWARD_NAMES; the rows of other tasks' rewards are hidden."""
    rows, ticks, weights = [], [], []
    chosen = dict(zip(*parse_weights(weights_text(task, preset_name))))
    gr.Markdown("**Rewards** (each scores every completion; a step's reward is their weighted sum)",
                elem_id="rewards-heading")
    for name in REWARD_NAMES:
        with gr.Row(visible=name in task_rewards(task), equal_height=True, elem_classes="reward-row") as row:
            tick = gr.Checkbox(name in chosen, label=name, info=reward_line(name), scale=4, elem_id=f"reward-{name}")
            weight = gr.Number(chosen.get(name, 1.0), label="weight", visible=name in chosen, scale=1, min_width=90,
                               elem_id=f"reward-weight-{name}")
        tick.change(lambda on: gr.Number(visible=on), tick, weight, api_visibility="private", show_progress="hidden")
        rows.append(row), ticks.append(tick), weights.append(weight)
    return rows, ticks, weights


def create_settings_groups(defaults: TrainSettings, preset_name: str, method) -> list:
    """Every setting besides the rewards in its group (SETTING_GROUPS) with its hint and default, inside one
    Advanced accordion; the inputs in ADVANCED's order (`method`, shown above, first)."""
    helps, inputs = setting_help(), {"method": method}
    with gr.Accordion("Advanced settings", open=False, elem_id="advanced-settings"):
        for title, (opened, keys) in SETTING_GROUPS.items():
            with gr.Accordion(title, open=opened, elem_classes="settings-group"), gr.Row():  # two abreast, wrapping
                for key in keys:
                    inputs[key] = setting_input(key, getattr(defaults, key), setting_info(key, preset_name, helps))
    return [inputs[key] for key in ADVANCED]


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
                with gr.Group(elem_id="train-rewards"):
                    reward_rows, ticks, weights = create_reward_picker("detection", "CPU demo")
                with gr.Row():
                    check_btn = gr.Button("Check", elem_id="check")
                    launch_btn = gr.Button("Train", variant="primary", elem_id="launch")
                message = gr.Markdown(elem_id="launch-message")
            with gr.Column():
                fields = create_settings_groups(defaults, "CPU demo", method)
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
            check_frame = gr.Markdown(elem_id="check-frame")
            check_gallery = gr.Gallery(label="Baseline: truth (green), prediction (red)", columns=4, height="auto",
                                       elem_id="check-gallery")
    form = [dataset, model, preset_name, *ticks, *weights, *fields]
    """What Check and Train send (form_args makes form_settings' arguments of it)."""

    def on_rewards(name, preset_name):
        """The dataset's task's rewards, ticked as the preset (else the task) has them."""
        try:
            task = get_dataset(ws.store, name, with_samples=False)["task"] if name else None
        except ValueError:  # deleted meanwhile: launching it says so in a sentence
            task = None
        return reward_updates(task, preset_name) if task else [gr.update()] * (3 * len(REWARD_NAMES))

    def on_preset(name):
        values = TrainSettings.from_dict(PRESETS[name])
        helps = setting_help()
        return [gr.update() if k == "method" else gr.update(value=form_value(k, getattr(values, k)),
                                                             info=setting_info(k, name, helps)) for k in ADVANCED]

    def on_checkpoint(evt: gr.SelectData):
        """A row of the checkpoint table picked: its model becomes the choice."""
        row = evt.row_value if getattr(evt, "row_value", None) else None
        return gr.update(value=row[0]) if row else gr.update()

    def on_checkpoints(name):
        headers, table = checkpoints_view(name)
        return checkpoints_caption(name), gr.update(value={"headers": headers, "data": table})

    def on_launch(*sent):
        args = form_args(*sent)
        try:
            run_id = launch(ws, *args)
        except ValueError as e:
            return f"⚠ {e}", *on_launched(None)
        from backend.engine.cpu_advice import dataset_cpu_warning
        warning = dataset_cpu_warning(ws, args[0], args[1].strip(), form_settings(*args))
        return f"✓ Queued run {run_id}." + (f"\n\n⚠ Note: {warning}" if warning else ""), *on_launched(run_id)

    def on_refresh(current):
        """The dataset list as storage has it now; the current choice is kept while it exists, else the demo
        (or the newest dataset) is chosen."""
        names = dataset_names(ws.store)
        if current in names:
            return gr.update(choices=names)
        value = "demo-shapes" if "demo-shapes" in names else (names[-1] if names else None)
        return gr.update(choices=names, value=value)

    def on_check(*sent):
        args = form_args(*sent)
        try:
            settings = form_settings(*args)
            result = run_check(ws, args[0], args[1], settings)
            rows, pictures, text = check_view(result, settings, args[2])
        except ValueError as e:
            return f"⚠ {e}", gr.Group(visible=False), "", [], "", []
        return "", gr.Group(visible=True), text, rows, frame_note(result), pictures

    check_btn.click(on_check, form, [message, check_box, check_summary, check_table, check_frame, check_gallery],
                    api_visibility="private")
    reward_parts = [*reward_rows, *ticks, *weights]
    dataset.change(on_rewards, [dataset, preset_name], reward_parts, api_visibility="private")
    preset_name.change(on_preset, preset_name, fields, api_visibility="private").then(
        on_rewards, [dataset, preset_name], reward_parts, api_visibility="private")
    preset_name.change(on_checkpoints, preset_name, [checkpoints_note, checkpoints], api_visibility="private")
    checkpoints.select(on_checkpoint, None, model, api_visibility="private")
    refresh = (on_refresh, [dataset], [dataset])
    tab.select(*refresh, api_visibility="private", show_progress="hidden")
    return {"launch": (launch_btn, on_launch, form, message), "refresh": refresh}
