"""The Train form is generated from TrainSettings: every preset round-trips through it unchanged."""
from __future__ import annotations

import pytest

from backend.engine.settings import PRESETS, TrainSettings
from ui.train_tab import ADVANCED, form_settings, form_value


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_survives_the_form(name):
    shown = [form_value(k, getattr(TrainSettings.from_dict(PRESETS[name]), k)) for k in ADVANCED]
    got = form_settings("demo-shapes", "demo", name, "format=1", *shown)
    assert got == TrainSettings.from_dict({**PRESETS[name], "rewards": ["format"], "reward_weights": [1.0]})


def test_the_form_offers_every_setting_and_says_what_is_wrong():
    assert {"loss_type", "scale_rewards", "importance_sampling_level", "top_p", "epsilon", "epsilon_high",
            "mask_truncated_completions", "min_pixels", "max_pixels", "qlora"} <= set(ADVANCED)
    shown = [form_value(k, getattr(TrainSettings(), k)) for k in ADVANCED]
    shown[ADVANCED.index("max_pixels")] = "lots"
    with pytest.raises(ValueError, match="max pixels must be a number, got 'lots'"):
        form_settings("demo-shapes", "demo", "CPU demo", "format=1", *shown)
    shown[ADVANCED.index("max_pixels")] = "200704"
    shown[ADVANCED.index("qlora")] = "off"
    got = form_settings("demo-shapes", "demo", "CPU demo", "format=1", *shown)
    assert got.max_pixels == 200704 and got.qlora is False


def test_the_rewards_box_follows_the_preset_and_the_task():
    from backend.scoring.tasks import TASKS
    from ui.train_tab import weights_text
    assert weights_text("detection", "CPU demo") == "detection_soft_iou=1, detection_confidence=1, format=1"
    assert weights_text("classification", "CPU demo") == "classification_accuracy=1, format=1"
    assert weights_text("grounding", "CPU demo") == "grounding_iou=1, format=1"
    paper = ", ".join(f"{n}={w:g}" for n, w in TASKS["detection"].default_rewards.items())
    assert weights_text("detection", "Visual-RFT paper") == paper  # a preset without rewards: the task's own


def test_every_setting_is_in_exactly_one_group_and_the_rare_ones_start_closed():
    from dataclasses import fields
    from ui.train_form import ON_FORM, SETTING_GROUPS
    placed = [*ON_FORM, *(key for _, keys in SETTING_GROUPS.values() for key in keys)]
    assert sorted(placed) == sorted(f.name for f in fields(TrainSettings))  # every field, none twice
    assert len(placed) == len(set(placed))
    opened = {title.split(":")[0] for title, (is_open, _) in SETTING_GROUPS.items() if is_open}
    assert opened == {"Optimisation", "Generation"}


def test_each_setting_says_what_it_does_its_default_and_the_presets_value():
    from backend.engine.settings import setting_help
    from ui.train_form import setting_info
    helps = setting_help()
    for key in ADVANCED[1:]:  # method is the radio above, with its own words
        info = setting_info(key, "CPU demo", helps)
        assert helps[key] and "Default: " in info and len(info.split("Default: ")[0]) < 260, (key, info)
    assert setting_info("max_steps", "CPU demo", helps) == "Optimiser steps. Default: 200; the CPU demo preset: 100."
    assert setting_info("num_generations", "CPU demo", helps).endswith("Default: 8.")  # the preset keeps it
    assert setting_info("max_pixels", "24 GB GPU", helps).startswith("Images larger than this many pixels are shrunk")
    assert "empty = the model family's default" in setting_info("min_pixels", "CPU demo", helps)  # not "None ="
    assert setting_info("qlora", "CPU demo", helps).endswith("Default: auto.")


def test_the_rewards_picked_build_the_run_the_text_did():
    from ui.train_form import REWARD_NAMES, form_args, picked_rewards
    ticks = [name in ("format", "detection_iou") for name in REWARD_NAMES]
    weights = [{"format": 0.5, "detection_iou": 2}.get(name) for name in REWARD_NAMES]  # unticked: no weight
    assert picked_rewards(ticks, weights) == "format=0.5, detection_iou=2"
    shown = [form_value(k, getattr(TrainSettings.from_dict(PRESETS["CPU demo"]), k)) for k in ADVANCED]
    picked = form_settings(*form_args("demo-shapes", "demo", "CPU demo", *ticks, *weights, *shown))
    assert picked == form_settings("demo-shapes", "demo", "CPU demo", "format=0.5, detection_iou=2", *shown)
    assert (picked.rewards, picked.reward_weights) == (["format", "detection_iou"], [0.5, 2.0])
    empty_weight = [None] * len(REWARD_NAMES)  # a weight box left empty counts 1
    assert picked_rewards(ticks, empty_weight) == "format=1, detection_iou=1"
    with pytest.raises(ValueError, match="choose at least one reward"):
        form_settings(*form_args("demo-shapes", "demo", "CPU demo", *[False] * len(REWARD_NAMES), *weights, *shown))


def test_the_picker_offers_the_datasets_task_rewards_with_their_line_and_ticks_the_defaults():
    from backend.scoring.rewards import REWARDS
    from backend.scoring.tasks import TASKS
    from ui.train_form import REWARD_NAMES, reward_line, reward_updates, task_rewards
    assert task_rewards("classification") == ["format", "classification_accuracy"]
    for task, spec in TASKS.items():
        assert set(spec.default_rewards) <= set(task_rewards(task))
    assert {n for t in TASKS for n in task_rewards(t)} == set(REWARDS)  # every reward is some task's
    assert reward_line("detection_iou") == "Sum of matched IoUs (greedy, IoU > 0.5) / max(#truth, #predicted), capped at 1."
    n = len(REWARD_NAMES)
    updates = reward_updates("grounding", "Visual-RFT paper")  # a preset without rewards: the task's own
    rows, ticks, weights = updates[:n], updates[n:2 * n], updates[2 * n:]
    shown = {name for name, row in zip(REWARD_NAMES, rows) if row.visible}
    assert shown == {"format", "grounding_iou", "grounding_giou"}
    assert {name for name, tick in zip(REWARD_NAMES, ticks) if tick} == set(TASKS["grounding"].default_rewards)
    assert [w.visible for w in weights] == ticks  # a weight beside each ticked reward


CHECKED = {"model": "demo", "family": "demo", "min_pixels": 50176, "max_pixels": 50176, "largest_visual_tokens": 49,
           "images": [{"path": "demo-shapes/shapes_000.png", "original": [224, 224], "input": [224, 224],
                       "frame": [100, 100], "visual_tokens": 49}],
           "memory": {"total_gib": 1.3, "gpu_gib": None, "fits": None, "advice": [], "plan": "QLoRA (4-bit base), "
                      "HF generate", "summary": "about 1.3 GiB at peak (training step)"},
           "baseline": None, "signal": None, "signal_check": None, "ready": True, "advice": []}
"""`models check --json` of the demo without its baseline (the parts check_view reads)."""


def test_the_check_speaks_the_machines_language():
    from backend.engine.settings import preset
    from ui.train_tab import check_view, frame_note
    cpu = check_view(CHECKED, preset("CPU demo"), "CPU demo", gpu=False)[2]
    assert "On this machine's CPU" in cpu and "a step (" in cpu and "for 100 steps" in cpu
    assert "GPU" not in cpu.replace("no GPU found", "")  # no GPU plan on a machine without one, for a CPU preset
    card = check_view(CHECKED, preset("24 GB GPU"), "24 GB GPU", gpu=False)[2]
    assert "On this machine's CPU" in card and "**On a 24 GB GPU** (the 24 GB GPU preset" in card
    gpu = check_view(CHECKED, preset("CPU demo"), "CPU demo", gpu=True)[2]
    assert "**On this machine's GPU:** QLoRA (4-bit base), HF generate" in gpu and "CPU" not in gpu
    assert "signal not checked" in cpu.lower() and "Ready" not in cpu  # no baseline here: said, not "Ready"
    note = frame_note(CHECKED)
    assert "numbers from 0 to 100 across the width and down the height" in note and "100×100" in note
