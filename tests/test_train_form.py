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
