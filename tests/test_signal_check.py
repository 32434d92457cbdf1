"""The pre-flight's signal check: the run's G completions sampled from the starting model and scored with its rewards,
per reward the share of groups GRPO could learn from, and a plain "ready" or "not ready" with what to do."""
from __future__ import annotations

import json
import random

import pytest
from PIL import Image, ImageDraw

from backend.engine.preflight import SIGNAL_BEST, SIGNAL_SPREAD, has_signal, ready, signal_advice, signal_sentences
from tests.builders import zip_dir
from tests.conftest import run_cli


@pytest.mark.parametrize("rewards, expected", [
    ([0.0] * 8, False),  # every completion the same: no advantage at all
    ([0.01, 0.02, 0.06, 0.0, 0.0, 0.0, 0.0, 0.0], False),  # chance overlap: differs, but nothing found
    ([0.3, 0.31, 0.3, 0.32, 0.3, 0.3, 0.3, 0.3], False),  # about the same
    ([0.0, 0.0, 0.62, 0.0, 0.1, 0.0, 0.0, 0.0], True),  # one completion found it
    ([1.0, 0.0, 0.0, 0.0], True),  # a right class among wrong ones
])
def test_a_group_has_signal_when_it_differs_and_its_best_is_a_hit(rewards, expected):
    assert has_signal(rewards) is expected and (SIGNAL_SPREAD, SIGNAL_BEST) == (0.05, 0.5)


def _result(soft_iou: int, confidence: int, fmt: int, rate: float = 0.5, demo: bool = False) -> dict:
    check = {"groups": 8, "asked": 8, "num_generations": 8, "temperature": 1.0, "seconds": 12.0, "bound_seconds": 60.0,
             "total_groups_with_signal": 1.0, "format_rate": rate}
    signal = {"detection_soft_iou": {"mean": 0.02, "groups_with_signal": soft_iou / 8, "groups_varied": soft_iou},
              "detection_confidence": {"mean": 0.03, "groups_with_signal": confidence / 8, "groups_varied": confidence},
              "format": {"mean": rate, "groups_with_signal": fmt / 8, "groups_varied": fmt}}
    return {"signal": signal, "signal_check": check, "demo_on_other_data": demo}


def test_ready_needs_a_task_reward_with_signal_and_some_formatted_answer():
    assert ready(_result(6, 8, 3)) and signal_advice(_result(6, 8, 3)) == []
    assert "detection_soft_iou varies in 6 of 8 groups: GRPO has something to learn from." in signal_sentences(
        _result(6, 8, 3))
    # confidence alone: a model that finds nothing earns 1 - confidence, and it varies
    only_shape = _result(0, 8, 5)
    assert not ready(only_shape)
    [sentence] = signal_advice(only_shape)
    assert sentence.startswith("Only detection_confidence and format vary: GRPO would teach the confidence it states "
                               "and the answer's shape, not the task")
    assert not ready(_result(3, 0, 0, rate=0.0))  # never in the format
    assert signal_advice(_result(0, 0, 0, rate=0.0))[0].startswith("No sampled completion of 64 is in the")
    assert signal_advice(_result(0, 0, 0))[0].startswith("No reward varies in any of the 8 groups")
    assert "demo model only knows the synthetic shapes" in signal_advice(_result(0, 0, 4, demo=True))[-1]
    assert ready({"signal": None})


def _photos(root, n: int = 8) -> None:
    """A Roboflow-style YOLO export of 640x640 photos (textured backgrounds, 1-3 cones each), none of it the demo's."""
    rng = random.Random(3)
    for split, count in (("train", n), ("valid", 3)):
        for i in range(count):
            im = Image.effect_noise((640, 640), 60).convert("RGB")
            draw = ImageDraw.Draw(im)
            lines = []
            for _ in range(1 + i % 3):
                w, h = rng.randrange(60, 160), rng.randrange(90, 220)
                x, y = rng.randrange(0, 640 - w), rng.randrange(0, 640 - h)
                draw.polygon([(x + w // 2, y), (x, y + h), (x + w, y + h)], fill=(235, 120 + rng.randrange(40), 30))
                lines.append(f"0 {(x + w / 2) / 640:.6f} {(y + h / 2) / 640:.6f} {w / 640:.6f} {h / 640:.6f}")
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            im.save(root / split / "images" / f"cone{i:02d}.jpg", quality=90)
            (root / split / "labels" / f"cone{i:02d}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\n\nnc: 1\nnames: ['cone']\n")


def test_the_demo_model_on_photos_of_cones_is_not_ready_and_says_why(tmp_path):
    """The walk the honest verdict started from: the demo model, which only knows synthetic shapes, on a real-looking
    export. Its soft IoU moves a little by chance overlap; the check must not call that a signal."""
    _photos(tmp_path / "cones")
    data = tmp_path / "data"
    run_cli("datasets", "import", str(zip_dir(tmp_path / "cones", tmp_path / "cones.zip")), "--name", "cones",
            data_dir=data)
    out = json.loads(run_cli("models", "check", "demo", "--dataset", "cones", "--samples", "1", "--signal-images",
                             "4", "--json", data_dir=data).stdout)
    assert set(out["signal"]) == {"detection_soft_iou", "detection_confidence", "format"}
    for value in out["signal"].values():
        assert set(value) >= {"mean", "groups_with_signal"} and 0 <= value["groups_with_signal"] <= 1
    assert out["signal_check"]["groups"] == 4 and out["signal_check"]["num_generations"] == 8
    assert out["signal"]["detection_soft_iou"]["groups_with_signal"] == 0
    assert out["ready"] is False and out["demo_on_other_data"] is True
    assert any("demo model only knows the synthetic shapes" in a for a in out["advice"])
    text = run_cli("models", "check", "demo", "--dataset", "cones", "--samples", "1", "--signal-images", "2",
                   data_dir=data).stdout
    assert "not ready: GRPO would not learn the task from this start" in text
    assert "Nothing stands in the way" not in text


def test_the_demo_model_on_its_own_shapes_is_ready(tmp_path):
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    out = json.loads(run_cli("models", "check", "demo", "--dataset", "demo-shapes", "--samples", "1",
                             "--signal-images", "3", "--json", data_dir=data).stdout)
    assert out["signal"]["detection_soft_iou"]["groups_with_signal"] > 0
    assert out["ready"] is True and out["demo_on_other_data"] is False


def test_the_pages_check_passes_its_form_as_the_command_line_reads_it():
    from backend.engine.settings import preset
    from ui.cli import build_parser
    from ui.cli_runs import _settings
    from ui.train_tab import check_args
    form = preset("CPU demo", num_generations=4, temperature=0.7, shots=2, novel_classes=["blue, light", "red"],
                  classes_in_prompt=False, init_from=3)
    form.rewards, form.reward_weights = ["detection_soft_iou", "format"], [2.0, 0.5]
    args = build_parser().parse_args(check_args("/tmp/data", "cones", "demo", form, 4))
    read = _settings(args)
    for name in ("num_generations", "temperature", "shots", "novel_classes", "classes_in_prompt", "init_from",
                 "rewards", "reward_weights", "max_completion_length", "seed"):
        assert getattr(read, name) == getattr(form, name), name


def test_the_page_says_when_the_signal_was_not_checked():
    from ui.train_tab import check_view
    result = {"model": "demo", "family": "demo", "min_pixels": 1, "max_pixels": 2, "largest_visual_tokens": 49,
              "images": [], "memory": None, "baseline": None, "signal": None, "ready": True, "advice": []}
    text = check_view(result)[2]
    assert "Signal not checked" in text and "Ready" not in text
