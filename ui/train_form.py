"""The Train tab's form: the rewards picked with a weight each, every other setting in its group with a short hint
and its default, and the TrainSettings they make (the same object the command line and the API build)."""
from __future__ import annotations

from dataclasses import MISSING
from dataclasses import fields as dataclass_fields

import gradio as gr

from backend.engine.settings import CHOICES, PRESETS, TrainSettings, parse_setting, preset, setting_type
from backend.scoring.rewards import REWARDS
from backend.scoring.tasks import TASKS

ON_FORM = ("method", "rewards", "reward_weights")
"""Settings the form shows above the groups: the method, and the rewards picked with a weight each."""
SETTING_GROUPS: dict[str, tuple[bool, tuple[str, ...]]] = {
    # title: (open at first, its settings). Every TrainSettings field is in one group or ON_FORM, once
    # (tests/test_train_form.py); the groups a newcomer rarely needs start closed.
    "Optimisation: length and learning": (True, ("max_steps", "learning_rate", "lr_scheduler", "prompts_per_step",
                                                 "beta", "lora_rank", "lora_alpha", "seed", "save_steps",
                                                 "init_from")),
    "Generation: the completions sampled for each image": (True, ("num_generations", "max_completion_length",
                                                                   "temperature", "top_p")),
    "The GRPO loss (TRL's options)": (False, ("loss_type", "scale_rewards", "importance_sampling_level", "epsilon",
                                              "epsilon_high", "mask_truncated_completions")),
    "Images: the size the model sees": (False, ("min_pixels", "max_pixels")),
    "Evaluation and records": (False, ("eval_steps", "eval_max_examples", "rollout_steps", "rollout_groups_per_step",
                                       "rollout_max_completions", "report_to")),
    "Data: shots, novel classes and prompts": (False, ("shots", "novel_classes", "novel_fraction", "novel_seed",
                                                       "negative_share", "classes_in_prompt", "object_kind")),
    "Hardware plan": (False, ("qlora", "generation_backend", "vllm_gpu_memory_utilization", "compile_generation",
                              "use_liger_kernel", "num_gpus", "distributed")),
}
ADVANCED = ["method", *(key for _, keys in SETTING_GROUPS.values() for key in keys)]
"""The form's settings besides the rewards, in the order its inputs are sent (the method first: it sits above)."""
REWARD_NAMES = list(REWARDS)
"""One checkbox and weight per reward, in the registry's order; those of other tasks than the dataset's are hidden."""
AUTO = "auto"


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


def task_rewards(task: str) -> list[str]:
    """The rewards that score `task`'s rows: format, and those named for the task."""
    return [n for n in REWARD_NAMES if n == "format" or n.startswith(f"{task}_")]


def reward_line(name: str) -> str:
    """A reward's one-line description: the first line of its function's docstring."""
    return ((REWARDS[name].__doc__ or "").strip().splitlines() or [""])[0]


def picked_rewards(ticks, weights) -> str:
    """The ticked rewards with their weights (an empty weight counts 1) as 'name=weight, ...', in
    REWARD_NAMES' order: what parse_weights, the API and the command line take."""
    return ", ".join(f"{name}={1.0 if w in (None, '') else float(w):g}"
                     for name, ticked, w in zip(REWARD_NAMES, ticks, weights) if ticked)


def reward_updates(task: str, preset_name: str | None) -> list:
    """The reward rows (shown for `task`), ticks and weights as a new run of `task` with the preset starts."""
    chosen = dict(zip(*parse_weights(weights_text(task, preset_name))))
    offered = task_rewards(task)
    return ([gr.Row(visible=n in offered) for n in REWARD_NAMES] + [n in chosen for n in REWARD_NAMES]
            + [gr.Number(chosen.get(n, 1.0), visible=n in chosen) for n in REWARD_NAMES])


def short_help(text: str) -> str:
    """A setting's help cut at its first full stop outside brackets: the form's hint (--help has it all)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "." and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            return text[:i + 1]
    return text


def shown_value(key: str, value) -> str:
    """A setting's value in the form's words (an empty box, auto, on / off, a list)."""
    if value is None:
        return AUTO if key == "qlora" else "empty"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_value(key: str):
    field = next(f for f in dataclass_fields(TrainSettings) if f.name == key)
    return field.default_factory() if field.default is MISSING else field.default


def setting_info(key: str, preset_name: str | None, helps: dict[str, str]) -> str:
    """A setting's hint: its short help, its default and, where the preset differs, the preset's value."""
    said = f"Default: {shown_value(key, default_value(key))}"
    chosen = PRESETS.get(preset_name, {})
    if key in chosen and chosen[key] != default_value(key):
        said += f"; the {preset_name} preset: {shown_value(key, chosen[key])}"
    hint = short_help(helps.get(key, "")).replace("None = ", "empty = ")  # the form shows None as an empty box
    return f"{hint} {said}.".strip()


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
    common = {"label": key.replace("_", " "), "info": help_text or None, "min_width": 240}  # two abreast, or one
    if key in CHOICES:
        return gr.Dropdown(list(CHOICES[key]), value=value, **common)
    if key == "qlora":  # None = decided by the device
        return gr.Radio([AUTO, "on", "off"], value=form_value(key, value), **common)
    kind = setting_type(key)
    if kind is bool:
        return gr.Checkbox(value=value, **common)
    if kind in (int, float) and getattr(TrainSettings, key, None) is not None:
        return gr.Number(value, **common, precision=0 if kind is int else None)
    # Optional numbers and text: empty = the default (a Number would show and send 0).
    if kind is list:
        return gr.Textbox(form_value(key, value), **common, placeholder="none",
                          elem_id=f"setting-{key}")
    return gr.Textbox("" if value is None else str(value), **common, placeholder="default",
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


def form_args(dataset: str, model: str, preset_name: str, *rest) -> tuple:
    """The form's inputs as sent (dataset, model, preset, each reward's tick, each reward's weight, ADVANCED's
    values) -> form_settings' arguments (the ticked rewards as 'name=weight, ...')."""
    n = len(REWARD_NAMES)
    return (dataset, model, preset_name, picked_rewards(rest[:n], rest[n:2 * n]), *rest[2 * n:])
