"""The reward playground: score one completion against one truth, as training would."""
from __future__ import annotations

from typing import Any

from backend.scoring.families import convention
from backend.scoring.parsing import extract_answer, extract_think, format_ok, parse_detections, parse_label
from backend.scoring.rewards import REWARDS, prepare_predictions, score_detection, to_pixels
from backend.scoring.tasks import frame_solution, get_task


def parse_size(text: str | None) -> list[int] | None:
    """'640x480' -> [640, 480]."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().replace(" ", "").split("x"))
        assert w > 0 and h > 0
    except (ValueError, AssertionError):
        raise ValueError(f"image size '{text}' is not WIDTHxHEIGHT, like 640x480") from None
    return [w, h]


def build_solution(task: str, truth: dict, family: str | None, image_size: list[int] | None,
                   input_size: list[int] | None = None) -> dict:
    """The `solution` row the rewards read, from the truth shape `datasets show --json` uses.
    `input_size`: the size the model's processor resized the image to (`models check` reports it);
    needed for a family that answers in those pixels (qwen2_5_vl)."""
    get_task(task)
    if not isinstance(truth, dict):
        raise ValueError("the truth must be a JSON object")
    if family is not None:
        conv = convention(family)
        if task != "classification" and image_size is None:
            raise ValueError(f"the image size (WIDTHxHEIGHT) is needed to read {family} coordinates as pixels")
        if task != "classification" and conv.kind == "resized_pixels" and input_size is None:
            raise ValueError(f"{family} answers in pixels of the resized input: give the input size the model saw "
                             "(WIDTHxHEIGHT, as `models check` reports it)")
    sol: dict[str, Any] = frame_solution(image_size, family, input_size) if image_size is not None else {}
    if image_size is None and family is not None:
        sol["family"] = family
    if task == "detection":
        if not isinstance(truth.get("boxes"), list):
            raise ValueError('detection truth needs "boxes": [[x1, y1, x2, y2], ...] in pixels')
        sol["boxes"] = [list(map(float, b[:4])) for b in truth["boxes"]]
    elif task == "classification":
        if not isinstance(truth.get("label"), str):
            raise ValueError('classification truth needs "label": "..." (and optionally "synonyms": [...])')
        sol["label"] = truth["label"]
        sol["synonyms"] = [str(s) for s in truth.get("synonyms", [])]
    else:
        if not (isinstance(truth.get("box"), list) and len(truth["box"]) >= 4):
            raise ValueError('grounding truth needs "box": [x1, y1, x2, y2] in pixels')
        sol["box"] = list(map(float, truth["box"][:4]))
    return sol


def parsed_view(task: str, completion: str, sol: dict) -> dict:
    """What the completion says, with boxes in original-image pixels."""
    answer = extract_answer(completion)
    out: dict[str, Any] = {"think": extract_think(completion), "answer": answer, "format_ok": format_ok(completion)}
    if task == "classification":
        out["label"] = parse_label(answer)
        return out
    dets = parse_detections(answer)
    out["parse_error"] = dets is None
    if task == "detection":
        preds = prepare_predictions(dets or [], sol)
        out["boxes"] = [[round(v, 2) for v in b] for b, _ in preds]
        out["confidences"] = [c for _, c in preds]
        out["matched"] = score_detection(completion, sol).matched
    else:
        out["boxes"] = [[round(v, 2) for v in to_pixels(dets[0].box, sol)]] if dets else []
    return out


def score(task: str, truth: dict, completion: str, family: str | None = None,
          image_size: list[int] | None = None, input_size: list[int] | None = None) -> dict:
    """{"rewards": {name: value}, "total": ..., "parsed": {...}}: every reward that applies to the
    task (format included); the total is what a run with the task's default weights earns."""
    sol = build_solution(task, truth, family, image_size, input_size)
    rewards = {n: v for n, f in REWARDS.items() if (v := f([completion], solution=[sol])[0]) is not None}
    weights = get_task(task).default_rewards
    total = sum(w * rewards[n] for n, w in weights.items())
    return {"rewards": rewards, "total": total, "weights": weights, "parsed": parsed_view(task, completion, sol)}
