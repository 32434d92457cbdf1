"""Verifiable rewards: one registry, TRL's reward signature, pure Python (no torch).

Every reward is `f(completions, **kwargs) -> list[float | None]`. The per-row ground
truth arrives in the `solution` column (a dict or its JSON text):
  detection       {"boxes": [[x1, y1, x2, y2], ...], "image_size": [w, h], "family": ..., "input_size": [w, h]}
  classification  {"label": "...", "synonyms": [...]}
  grounding       {"box": [x1, y1, x2, y2], "image_size": [w, h], "family": ...}
Truth boxes are absolute pixels of the original image; predicted boxes are read in the
family's frame and converted (`family` absent = predictions already are original pixels).
A reward returns None for a row of another task, so one run can mix tasks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from backend.scoring.coords import from_model
from backend.scoring.geometry import giou, greedy_match, iou, normalise_box
from backend.scoring.parsing import (Detection, completion_text, extract_answer, format_ok,
                                     label_matches, parse_detections, parse_label)

RewardFn = Callable[..., list]


def read_solution(solution: Any) -> dict:
    """A row's ground truth as a dict (TRL passes dataset columns through as stored)."""
    if isinstance(solution, dict):
        return solution
    if isinstance(solution, str):
        try:
            value = json.loads(solution)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


def to_pixels(box: Sequence[float], sol: dict) -> list[float]:
    """A predicted box in the solution's model frame -> original-image pixels."""
    family = sol.get("family")
    if family is None or "image_size" not in sol:
        return normalise_box(box)
    return normalise_box(from_model(box, family, sol["image_size"], sol.get("input_size")))


@dataclass(frozen=True)
class DetectionScore:
    iou: float          # R_IoU in [0, 1]
    confidence: float   # R_conf in [0, 1]
    boxes: list         # predictions in pixels, deduplicated and ordered as scored
    matched: list       # per prediction: matched truth index or None


def prepare_predictions(dets: list[Detection], sol: dict) -> list[tuple[list[float], float]]:
    """Pixel boxes with confidence (missing = 1.0), identical boxes once, highest confidence first."""
    seen: set[tuple[float, ...]] = set()
    out: list[tuple[list[float], float]] = []
    for d in dets:
        key = tuple(d.box)
        if key in seen:
            continue
        seen.add(key)
        out.append((to_pixels(d.box, sol), 1.0 if d.confidence is None else d.confidence))
    out.sort(key=lambda p: -p[1])  # stable: ties keep the model's order
    return out


def score_detection(text: str, sol: dict, threshold: float = 0.5) -> DetectionScore:
    """Visual-RFT's R_IoU and R_conf for one completion against one category's truth boxes; a pair
    counts as matched when its IoU exceeds `threshold` (the reference's 0.5)."""
    truths = [normalise_box(b[:4]) for b in sol.get("boxes", [])]
    dets = parse_detections(extract_answer(text))
    if dets is None:
        return DetectionScore(0.0, 0.0, [], [])
    if not dets:  # an explicit "No Objects": right only when there is nothing to find
        ok = 0.0 if truths else 1.0
        return DetectionScore(ok, ok, [], [])
    preds = prepare_predictions(dets, sol)
    matches = greedy_match([b for b, _ in preds], truths, threshold)
    iou_sum = sum(v for j, v in matches if j is not None)
    r_iou = min(1.0, iou_sum / max(len(truths), len(preds)))
    conf_terms = [c if j is not None else 1.0 - c for (_, c), (j, _) in zip(preds, matches)]
    r_conf = min(1.0, max(0.0, sum(conf_terms) / len(conf_terms)))
    return DetectionScore(r_iou, r_conf, [b for b, _ in preds], [j for j, _ in matches])


def _grounding_box(text: str, sol: dict) -> list[float] | None:
    dets = parse_detections(extract_answer(text))
    return to_pixels(dets[0].box, sol) if dets else None


def _per_row(completions: list, solution: list | None, applies: str, score: Callable[[str, dict], float]) -> list[float | None]:
    solutions = solution if solution is not None else [None] * len(completions)
    out: list[float | None] = []
    for completion, raw in zip(completions, solutions):
        sol = read_solution(raw)
        out.append(score(completion_text(completion), sol) if applies in sol else None)
    return out


def format_reward(completions: list, **kwargs: Any) -> list[float | None]:
    """1 when the completion is exactly <think>…</think><answer>…</answer>, else 0."""
    return [1.0 if format_ok(completion_text(c)) else 0.0 for c in completions]


format_reward.__name__ = "format"  # TRL logs rewards/<__name__>/mean; the public name is "format"


def detection_iou(completions: list, solution: list | None = None, **kwargs: Any) -> list[float | None]:
    """Sum of matched IoUs (greedy, IoU > 0.5) / max(#truth, #predicted), capped at 1."""
    return _per_row(completions, solution, "boxes", lambda t, s: score_detection(t, s).iou)


def detection_soft_iou(completions: list, solution: list | None = None, **kwargs: Any) -> list[float | None]:
    """detection_iou with every overlap counted (no 0.5 threshold): a signal while boxes are still rough."""
    return _per_row(completions, solution, "boxes", lambda t, s: score_detection(t, s, threshold=0.0).iou)


def detection_confidence(completions: list, solution: list | None = None, **kwargs: Any) -> list[float | None]:
    """Mean over predictions of confidence if matched, else 1 - confidence."""
    return _per_row(completions, solution, "boxes", lambda t, s: score_detection(t, s).confidence)


def classification_accuracy(completions: list, solution: list | None = None, **kwargs: Any) -> list[float | None]:
    """1 when the answer is exactly the class (or a declared synonym) after normalisation."""
    def score(text: str, sol: dict) -> float:
        names = [sol["label"], *sol.get("synonyms", [])]
        return 1.0 if label_matches(parse_label(extract_answer(text)), names) else 0.0
    return _per_row(completions, solution, "label", score)


def grounding_iou(completions: list, solution: list | None = None, **kwargs: Any) -> list[float | None]:
    """IoU of the first answered box with the truth box."""
    def score(text: str, sol: dict) -> float:
        box = _grounding_box(text, sol)
        return iou(box, normalise_box(sol["box"])) if box else 0.0
    return _per_row(completions, solution, "box", score)


def grounding_giou(completions: list, solution: list | None = None, **kwargs: Any) -> list[float | None]:
    """(GIoU + 1) / 2 of the first answered box with the truth box, in [0, 1]."""
    def score(text: str, sol: dict) -> float:
        box = _grounding_box(text, sol)
        return (giou(box, normalise_box(sol["box"])) + 1.0) / 2.0 if box else 0.0
    return _per_row(completions, solution, "box", score)


REWARDS: dict[str, RewardFn] = {
    f.__name__: f
    for f in (format_reward, detection_iou, detection_soft_iou, detection_confidence, classification_accuracy,
              grounding_iou, grounding_giou)
}

NOT_THE_TASK = {"format": "the answer's shape", "detection_confidence": "the confidence it states"}
"""Rewards that do not say whether the model finds the objects or the class: format scores the answer's shape, and
detection_confidence pays 1 - confidence for a box that matches nothing, so a model that finds nothing still earns
(and varies in) it. GRPO learns the task only from the other rewards; the pre-flight's readiness asks for them."""
