"""Held-out evaluation: detection mAP (pycocotools), classification accuracy, grounding mIoU.

Records pair a model completion with the same `solution` dict the rewards read, so
evaluation parses and converts coordinates exactly as training rewards do.
"""
from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from typing import Iterable

from backend.scoring.geometry import iou, normalise_box
from backend.scoring.parsing import extract_answer, format_ok, label_matches, parse_detections, parse_label
from backend.scoring.rewards import prepare_predictions, read_solution, to_pixels
from backend.scoring.subsets import split_records


def _format_rate(records: list[dict]) -> float:
    return sum(format_ok(r["completion"]) for r in records) / len(records) if records else 0.0


def coco_inputs(records: Iterable[dict]) -> tuple[dict, list[dict]]:
    """COCO ground-truth dict and detection list from (image_id, category, solution, completion) records."""
    images: dict = {}
    categories: dict[str, int] = {}
    annotations: list[dict] = []
    detections: list[dict] = []
    seen: set = set()
    for r in records:
        sol = read_solution(r["solution"])
        img_id = images.setdefault(r["image_id"], {"id": len(images) + 1, "width": sol["image_size"][0],
                                                    "height": sol["image_size"][1]})["id"]
        cat_id = categories.setdefault(r["category"], len(categories) + 1)
        if (img_id, cat_id) in seen:
            continue
        seen.add((img_id, cat_id))
        for b in sol.get("boxes", []):
            x1, y1, x2, y2 = normalise_box(b)
            annotations.append({"id": len(annotations) + 1, "image_id": img_id, "category_id": cat_id,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        dets = parse_detections(extract_answer(r["completion"])) or []
        for (x1, y1, x2, y2), conf in prepare_predictions(dets, sol):
            detections.append({"image_id": img_id, "category_id": cat_id,
                               "bbox": [x1, y1, x2 - x1, y2 - y1], "score": conf})
    gt = {"images": list(images.values()), "annotations": annotations,
          "categories": [{"id": i, "name": n} for n, i in categories.items()]}
    return gt, detections


def first_box_ious(records: list[dict]) -> list[tuple[str, float]]:
    """Per prompt with truth: (its image, the IoU of the most confident predicted box with its best truth, 0 if
    none)."""
    out = []
    for r in records:
        sol = read_solution(r["solution"])
        truths = [normalise_box(b) for b in sol.get("boxes", [])]
        if not truths:
            continue
        preds = prepare_predictions(parse_detections(extract_answer(r["completion"])) or [], sol)
        out.append((r.get("image_id", len(out)), max(iou(preds[0][0], t) for t in truths) if preds else 0.0))
    return out


def by_image(scored: list[tuple[str, float]]) -> dict[str, list[float]]:
    """(image, value) per prompt -> {image: its prompts' values, in order}: what the paired bootstrap resamples
    (backend.scoring.verdict). A record without an image id counts as an image of its own."""
    out: dict[str, list[float]] = {}
    for image, value in scored:
        out.setdefault(str(image), []).append(round(float(value), 4))
    return out


def detection_map(records: list[dict]) -> dict:
    """COCO AP@[.5:.95] and AP50 over (image, category) prompts; None where there is no truth.

    Also the mean IoU of the first (most confident) box on prompts with truth, and the share >= 0.5.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict, dets = coco_inputs(records)
    scored = first_box_ious(records)
    ious = [v for _, v in scored]
    result = {"map": None, "ap50": None, "mean_iou": sum(ious) / len(ious) if ious else None,
              "iou50": sum(v >= 0.5 for v in ious) / len(ious) if ious else None,
              "format_rate": _format_rate(records), "count": len(records), "per_image": by_image(scored)}
    if not gt_dict["annotations"]:
        return result
    if not dets:
        return {**result, "map": 0.0, "ap50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {**result, "map": max(0.0, float(ev.stats[0])), "ap50": max(0.0, float(ev.stats[1]))}


def classification_accuracy(records: list[dict]) -> dict:
    """Overall and per-class accuracy (exact match after normalisation, as the reward)."""
    per_class: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    scored = []
    for r in records:
        sol = read_solution(r["solution"])
        ok = label_matches(parse_label(extract_answer(r["completion"])), [sol["label"], *sol.get("synonyms", [])])
        per_class[sol["label"]][0] += ok
        per_class[sol["label"]][1] += 1
        scored.append((r.get("image_id", len(scored)), float(ok)))
    total = sum(n for _, n in per_class.values())
    return {"accuracy": sum(k for k, _ in per_class.values()) / total if total else None,
            "per_class": {c: k / n for c, (k, n) in sorted(per_class.items())},
            "format_rate": _format_rate(records), "count": len(records), "per_image": by_image(scored)}


def grounding_miou(records: list[dict]) -> dict:
    """Mean IoU of the first answered box and the share with IoU >= 0.5."""
    ious, scored = [], []
    for r in records:
        sol = read_solution(r["solution"])
        dets = parse_detections(extract_answer(r["completion"]))
        ious.append(iou(to_pixels(dets[0].box, sol), normalise_box(sol["box"])) if dets else 0.0)
        scored.append((r.get("image_id", len(scored)), ious[-1]))
    n = len(ious)
    return {"miou": sum(ious) / n if n else None, "iou50": sum(v >= 0.5 for v in ious) / n if n else None,
            "format_rate": _format_rate(records), "count": n, "per_image": by_image(scored)}


METRICS = {"detection": detection_map, "classification": classification_accuracy, "grounding": grounding_miou}
MAIN_METRIC = {"detection": "mean_iou", "classification": "accuracy", "grounding": "miou"}
"""Per task, the held-out metric that picks a run's best checkpoint (higher is better)."""


def scoped_metrics(task: str, records: list[dict], novel: list[str] | None = None) -> dict:
    """The task's metrics on every record, and with novel classes (held out of training) the same metrics on the
    base classes' records ("base") and on the novel ones' ("novel") beside them."""
    out = METRICS[task](records)
    if novel:
        base, new = split_records(records, novel)
        out["base"], out["novel"] = METRICS[task](base), METRICS[task](new)
    return out


def main_scores(metrics: dict) -> dict[str, list[float]] | None:
    """The main metric per image and prompt of an evaluation (on the base classes where classes were held out, as
    main_value); None for an evaluation stored before they were kept."""
    return (metrics.get("base") or metrics).get("per_image")


def main_value(metrics: dict, task: str) -> float | None:
    """The value that picks a run's best checkpoint: the main metric on the base classes where classes were held
    out (choosing on the novel ones would tune on them), else on every record."""
    value = (metrics.get("base") or metrics).get(MAIN_METRIC[task])
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
