"""Shots and novel classes, as tables: which training images a run takes, what it never sees, and how held-out
records split into base and novel classes."""
from __future__ import annotations

import pytest

from backend.scoring.evaluation import main_value, scoped_metrics
from backend.scoring.subsets import (check_novel, check_shots, choose_novel, parse_class_list, select_shots,
                                     split_records, training_samples, training_summary, without_novel)


def det(i: int, *labels: str, split: str = "train") -> dict:
    return {"id": i, "file": f"{i}.png", "split": split, "width": 100, "height": 100,
            "boxes": [[10 * k, 10, 10 * k + 8, 18, label] for k, label in enumerate(labels)]}


def cls(i: int, label: str, split: str = "train") -> dict:
    return {"id": i, "file": f"{i}.png", "split": split, "width": 100, "height": 100, "label": label}


DETECTION = [det(1, "cat"), det(2, "cat", "dog"), det(3, "dog"), det(4, "dog"), det(5, "bird"), det(6, "cat"),
             det(7), det(8, "bird", "cat"), det(9, "cat", split="val"), det(10, "bird", split="test")]
CLASSIFICATION = [cls(i, label) for i, label in enumerate(["cat", "dog", "cat", "bird", "dog", "cat", "bird"], 1)] + \
    [cls(20, "cat", split="val"), cls(21, "bird", split="val")]


@pytest.mark.parametrize("text, expected", [("red circle, blue square", ["red circle", "blue square"]),
                                            (" a ,, a, b ", ["a", "b"]), ("", []), (None, []),
                                            (["x", " y "], ["x", "y"])])
def test_class_lists(text, expected):
    assert parse_class_list(text) == expected


@pytest.mark.parametrize("classes, fraction, seed, count", [(list("abcdefghij"), 0.2, 0, 2), (list("abcd"), 0.1, 0, 1),
                                                            (list("ab"), 0.9, 3, 1), (list("abc"), 0.0, 0, 0)])
def test_a_fraction_of_classes_is_drawn_with_its_seed(classes, fraction, seed, count):
    novel = choose_novel(classes, fraction, seed)
    assert len(novel) == count and set(novel) <= set(classes) and novel == sorted(novel)
    assert novel == choose_novel(list(reversed(classes)), fraction, seed)  # the order given does not matter


def test_different_seeds_draw_different_classes():
    classes = [f"c{i}" for i in range(12)]
    assert len({tuple(choose_novel(classes, 0.25, seed)) for seed in range(6)}) > 1


@pytest.mark.parametrize("call, message", [
    (lambda: check_novel(["cow"], ["cat", "dog"], "detection"), "unknown class 'cow' in the novel classes"),
    (lambda: check_novel(["cat", "dog"], ["cat", "dog"], "detection"), "every class is novel"),
    (lambda: check_novel(["x"], [], "grounding"), "a grounding dataset has no classes to hold out"),
    (lambda: check_shots(0), "shots must be at least 1 image per class"),
    (lambda: choose_novel(["a", "b"], 1.0, 0), "the novel fraction must be at least 0 and below 1"),
    (lambda: choose_novel(["a"], 0.5, 0), "at least two classes"),
])
def test_what_cannot_work_is_one_sentence(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_detection_keeps_novel_images_but_drops_their_boxes():
    kept = without_novel(DETECTION, "detection", ["dog"])
    assert [s["id"] for s in kept] == [s["id"] for s in DETECTION]
    assert all(b[4] != "dog" for s in kept for b in s["boxes"])
    assert [b[4] for b in kept[1]["boxes"]] == ["cat"] and kept[2]["boxes"] == []
    assert [b[4] for b in DETECTION[1]["boxes"]] == ["cat", "dog"]  # the dataset's own samples are not changed


def test_classification_leaves_novel_images_out():
    assert [s["label"] for s in without_novel(CLASSIFICATION, "classification", ["dog"])] == \
        ["cat", "cat", "bird", "cat", "bird", "cat", "bird"]


@pytest.mark.parametrize("task, samples, shots, novel, per_class", [
    ("classification", CLASSIFICATION, 1, [], {"bird": 1, "cat": 1, "dog": 1}),
    ("classification", CLASSIFICATION, 2, [], {"bird": 2, "cat": 2, "dog": 2}),
    ("classification", CLASSIFICATION, 2, ["dog"], {"bird": 2, "cat": 2}),
    ("classification", CLASSIFICATION, 50, [], {"bird": 2, "cat": 3, "dog": 2}),  # fewer than k: all of them
    ("classification", CLASSIFICATION, None, ["cat"], {"bird": 2, "dog": 2}),
    ("detection", DETECTION, None, [], {"bird": 2, "cat": 4, "dog": 3}),
    ("detection", DETECTION, 1, ["dog"], {"bird": 1, "cat": 1}),
])
def test_shots_take_k_images_per_class_from_the_training_split_only(task, samples, shots, novel, per_class):
    for seed in range(8):
        chosen = training_samples(samples, task, shots, novel, seed)
        assert all(s["split"] == "train" for s in chosen)  # val and test never
        summary = training_summary(chosen, task)
        assert summary["per_class"] == per_class
        assert not set(novel) & set(summary["per_class"])


@pytest.mark.parametrize("shots", [1, 2, 3])
def test_detection_shots_count_an_image_for_every_class_it_holds(shots):
    train = [s for s in DETECTION if s["split"] == "train"]
    for seed in range(20):
        chosen = select_shots(train, "detection", shots, seed)
        counts = training_summary(chosen, "detection")["per_class"]
        available = training_summary(train, "detection")["per_class"]
        assert all(counts[c] >= min(shots, available[c]) for c in available)
        assert all(s["boxes"] for s in chosen)  # an image without a box counts for no class
        # no image is taken that its classes did not need: dropping any one leaves a class short of k
        for s in chosen:
            rest = training_summary([o for o in chosen if o is not s], "detection")["per_class"]
            assert any(rest.get(c, 0) < min(shots, available[c]) for c in available)


def test_the_same_seed_takes_the_same_images_and_another_seed_others():
    def ids(seed):
        return [s["id"] for s in training_samples(CLASSIFICATION, "classification", 1, [], seed)]
    assert ids(0) == ids(0)
    assert len({tuple(ids(seed)) for seed in range(10)}) > 1


def test_grounding_takes_k_images():
    samples = [{"id": i, "split": "train", "expression": "x", "box": [0, 0, 1, 1]} for i in range(10)]
    assert len(select_shots(samples, "grounding", 3, 0)) == 3


def test_summary_counts_images_and_boxes():
    assert training_summary([det(1, "cat", "cat"), det(2, "dog")], "detection") == \
        {"images": 2, "boxes": 3, "per_class": {"cat": 1, "dog": 1}}
    assert training_summary([cls(1, "cat")], "classification") == {"images": 1, "boxes": None, "per_class": {"cat": 1}}


def _record(category: str, truth: list, answer: list) -> dict:
    items = ", ".join(f"{{'Position': {b}, 'Confidence': 0.9}}" for b in answer)
    return {"image_id": "a.png", "category": category, "solution": {"image_size": [100, 100], "boxes": truth},
            "completion": f"<think>.</think><answer>[{items}]</answer>" if answer else "<think>.</think><answer>No Objects</answer>"}


def test_held_out_metrics_report_base_and_novel_apart():
    box, other = [10, 10, 50, 50], [60, 60, 90, 90]
    records = [_record("cat", [box], [box]), _record("dog", [other], [box]), _record("bird", [], [])]
    base, novel = split_records(records, ["dog"])
    assert [r["category"] for r in base] == ["cat", "bird"] and [r["category"] for r in novel] == ["dog"]
    out = scoped_metrics("detection", records, ["dog"])
    assert out["mean_iou"] == pytest.approx(0.5)  # cat 1.0, dog 0.0
    assert out["base"]["mean_iou"] == pytest.approx(1.0) and out["base"]["map"] == pytest.approx(1.0)
    assert out["novel"]["mean_iou"] == 0.0 and out["novel"]["ap50"] == 0.0
    assert main_value(out, "detection") == pytest.approx(1.0)  # the best checkpoint is chosen on base classes only
    assert "base" not in scoped_metrics("detection", records, [])


def test_classification_accuracy_base_and_novel():
    def rec(label, answer):
        return {"image_id": label, "category": label, "solution": {"label": label, "synonyms": []},
                "completion": f"<think>.</think><answer>{answer}</answer>"}
    out = scoped_metrics("classification", [rec("cat", "cat"), rec("dog", "cat"), rec("dog", "dog")], ["dog"])
    assert (out["accuracy"], out["base"]["accuracy"], out["novel"]["accuracy"]) == pytest.approx((2 / 3, 1.0, 0.5))


def test_the_best_checkpoint_is_chosen_on_base_classes_only(ws):
    """A step that looks best only thanks to the novel classes is not the best one."""
    from backend.data.demo.dataset import ensure_demo_dataset
    from backend.engine.settings import preset
    from backend.jobs.run_history import best_point, record_checkpoint, save_heldout_point
    from backend.jobs.runs import create_run
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    run_id = create_run(ws.store, "demo-shapes", "demo", preset("CPU demo", novel_classes=["red circle"]))
    for step, (everything, base) in {2: (0.6, 0.3), 4: (0.4, 0.5)}.items():
        save_heldout_point(ws.store, run_id, step, {"mean_iou": everything, "base": {"mean_iou": base},
                                                    "novel": {"mean_iou": 2 * everything - base}}, 1.0)
        record_checkpoint(ws.store, run_id, step, f"runs/{run_id}/checkpoints/checkpoint-{step}")
    assert best_point(ws.store, run_id, "detection") == {"step": 4, "metric": "base classes' mean_iou", "value": 0.5}
