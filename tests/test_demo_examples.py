"""The demo warm start's data: the two box conventions that are the gap GRPO closes on demo-shapes."""
from __future__ import annotations

from backend.data.demo.shapes import SIZE, make_scene
from backend.engine.demo.examples import COCO_STYLE_SHARE, detection_answer, warm_start_examples
from backend.scoring.coords import to_model_int
from backend.scoring.geometry import iou
from backend.scoring.parsing import extract_answer, parse_detections


def test_a_coco_style_answer_is_read_as_corners_and_scores_low():
    scene = make_scene(11)
    *box, category = scene.boxes[0]
    truth = to_model_int(box, "demo", (SIZE, SIZE))
    corners = parse_detections(extract_answer(detection_answer(category, box)))
    coco = detection_answer(category, box, coco_style=True)
    x1, y1, x2, y2 = truth
    assert f"'bbox': [{x1}, {y1}, {x2 - x1}, {y2 - y1}]" in coco
    assert iou(corners[0].box, truth) == 1.0
    assert iou(parse_detections(extract_answer(coco))[0].box, truth) < 0.5


def test_the_warm_start_writes_coco_style_mostly_about_the_lower_third():
    counts = {"bottom": [0, 0], "other": [0, 0]}
    for _, prompt, target in warm_start_examples(600, seed=3):
        if "Position" not in target and "bbox" not in target:
            continue  # classification and absent-category examples carry no box
        row = "bottom" if "at the bottom" in target else "other"
        counts[row][0] += "'bbox'" in target
        counts[row][1] += 1
    for row, (coco, n) in counts.items():
        assert n > 80 and abs(coco / n - COCO_STYLE_SHARE[row]) < 0.1, (row, coco, n)
