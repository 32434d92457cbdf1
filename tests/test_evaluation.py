"""Held-out metrics: mAP equals pycocotools run by hand; accuracy and mIoU use the reward parsing."""
from __future__ import annotations

import contextlib
import io
import random

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from backend.scoring.evaluation import classification_accuracy, detection_map, grounding_miou


def ans(body: str) -> str:
    return f"<think>t</think><answer>{body}</answer>"


def random_detection_case(seed: int):
    rng = random.Random(seed)
    records, gt_images, gt_anns, dt = [], [], [], []
    cats = ["cat", "dog"]
    for img in range(12):
        w, h = 640, 480
        gt_images.append({"id": img + 1, "width": w, "height": h})
        for ci, cat in enumerate(cats):
            truths = []
            for _ in range(rng.randint(0, 3)):
                x, y = rng.randint(0, 500), rng.randint(0, 350)
                truths.append([x, y, x + rng.randint(40, 140), y + rng.randint(40, 130)])  # jitter keeps x1 < x2
            preds = []
            for t in truths:
                if rng.random() < 0.8:
                    preds.append(([v + rng.randint(-15, 15) for v in t], round(rng.uniform(0.3, 1.0), 2)))
            for _ in range(rng.randint(0, 2)):
                x, y = rng.randint(0, 500), rng.randint(0, 350)
                preds.append(([x, y, x + 60, y + 60], round(rng.uniform(0.0, 0.6), 2)))
            # predictions written in Qwen2-VL's 0-1000 frame; truth in pixels
            norm = [{"Position": [round(b[0] * 1000 / w), round(b[1] * 1000 / h), round(b[2] * 1000 / w),
                                  round(b[3] * 1000 / h)], "Confidence": c} for b, c in preds]
            records.append({"image_id": f"img{img}", "category": cat, "completion": ans(str(norm)),
                            "solution": {"boxes": truths, "image_size": [w, h], "family": "qwen2_vl"}})
            for t in truths:
                gt_anns.append({"id": len(gt_anns) + 1, "image_id": img + 1, "category_id": ci + 1, "iscrowd": 0,
                                "bbox": [t[0], t[1], t[2] - t[0], t[3] - t[1]], "area": (t[2] - t[0]) * (t[3] - t[1])})
            seen = set()
            for n in norm:
                if tuple(n["Position"]) in seen:
                    continue
                seen.add(tuple(n["Position"]))
                x1, y1, x2, y2 = (n["Position"][0] * w / 1000, n["Position"][1] * h / 1000,
                                  n["Position"][2] * w / 1000, n["Position"][3] * h / 1000)
                dt.append({"image_id": img + 1, "category_id": ci + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                           "score": n["Confidence"]})
    gt = {"images": gt_images, "annotations": gt_anns, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    return records, gt, dt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_pycocotools_by_hand(seed):
    records, gt_dict, dt = random_detection_case(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dt), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    got = detection_map(records)
    assert got["map"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert got["ap50"] == pytest.approx(ev.stats[1], abs=1e-12)
    assert 0.0 < got["map"] < 1.0 and got["format_rate"] == 1.0


def test_map_perfect_and_empty():
    sol = {"boxes": [[10, 10, 50, 50]], "image_size": [100, 100]}
    perfect = [{"image_id": 1, "category": "a", "solution": sol,
                "completion": ans("[{'Position': [10, 10, 50, 50], 'Confidence': 0.9}]")}]
    assert detection_map(perfect)["map"] == pytest.approx(1.0)
    nothing = [{**perfect[0], "completion": ans("No Objects")}]
    assert detection_map(nothing)["map"] == 0.0


def test_classification_accuracy_per_class():
    recs = [{"solution": {"label": "cat"}, "completion": ans("Cat")},
            {"solution": {"label": "cat"}, "completion": ans("dog")},
            {"solution": {"label": "dog"}, "completion": ans("dogs")},
            {"solution": {"label": "dog"}, "completion": "dog"}]
    got = classification_accuracy(recs)
    assert got["accuracy"] == 0.5 and got["per_class"] == {"cat": 0.5, "dog": 0.5} and got["format_rate"] == 0.75


def test_grounding_miou():
    recs = [{"solution": {"box": [0, 0, 10, 10]}, "completion": ans("[0, 0, 10, 10]")},
            {"solution": {"box": [0, 0, 10, 10]}, "completion": ans("[0, 0, 5, 10]")},
            {"solution": {"box": [0, 0, 10, 10]}, "completion": ans("nowhere")}]
    got = grounding_miou(recs)
    assert got["miou"] == pytest.approx(0.5) and got["iou50"] == pytest.approx(2 / 3)
