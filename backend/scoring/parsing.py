"""Parsing what models emit: the <think>/<answer> shape and every answer shape seen in practice.

Pure Python, no torch. Parsing never raises: what cannot be read is "no answer" (None).
"""
from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from typing import Any

_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*(.*?)(?:```|$)", re.DOTALL)
_NUM = r"-?\d+(?:\.\d+)?"
_PAIR = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*,?\s*(?:to\s*)?\(\s*({_NUM})\s*,\s*({_NUM})\s*\)")
_QUAD = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")
_OBJECT = re.compile(r"\{[^{}]*\}")
_REF_BOX = re.compile(r"(?:<ref>(.*?)</ref>\s*)?<box>(.*?)(?:</box>|$)", re.DOTALL)
_EMPTY_ANSWERS = {"noobjects", "noobject", "none", "nothing", "[]", "noobjectsfound", "noneobjects"}
_BOX_KEYS = ("position", "bbox_2d", "bbox", "box", "pos", "coordinates")
_CONF_KEYS = ("confidence", "score", "conf")
_LABEL_KEYS = ("label", "category", "class", "name")


@dataclass(frozen=True)
class Detection:
    """One predicted box in the model's own coordinate frame."""
    box: tuple[float, float, float, float]
    confidence: float | None = None
    label: str | None = None


def completion_text(completion: Any) -> str:
    """The text of a completion as TRL hands it over: a string, or a list of chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return completion_text(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        parts = []
        for item in completion:
            if isinstance(item, dict) and "role" in item:
                parts.append(completion_text(item.get("content", "")))
            elif isinstance(item, dict) and item.get("type") == "text":
                parts.append(str(item.get("text", "")))
            elif isinstance(item, str):
                parts.append(item)
        return "".join(parts)
    return ""


def format_ok(text: str) -> bool:
    """Exactly one <think>…</think> followed by one <answer>…</answer>, nothing else around them."""
    text = text.strip()
    if any(text.count(tag) != 1 for tag in _TAGS):
        return False
    return _FORMAT.fullmatch(text) is not None


def extract_think(text: str) -> str | None:
    m = re.search(r"<think>(.*?)(?:</think>|$)", text, re.DOTALL)
    return m.group(1).strip() if m else None


def extract_answer(text: str) -> str | None:
    """The content of the last <answer> block; a missing closing tag (truncation) is tolerated."""
    start = text.rfind("<answer>")
    if start < 0:
        return None
    body = text[start + len("<answer>"):]
    end = body.find("</answer>")
    return (body if end < 0 else body[:end]).strip()


def _strip_fences(answer: str) -> str:
    m = _FENCE.search(answer)
    return m.group(1).strip() if m else answer.strip()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return v if math.isfinite(v) else None


def _box(value: Any) -> tuple[float, float, float, float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 4:
        nums = [_number(v) for v in value]
        if all(n is not None for n in nums):
            return tuple(nums)  # type: ignore[return-value]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        return _box([*value[0], *value[1]])
    return None


def _lookup(obj: dict, keys: tuple[str, ...]) -> Any:
    lowered = {str(k).lower(): v for k, v in obj.items()}
    for k in keys:
        if k in lowered:
            return lowered[k]
    return None


def _detection(item: Any) -> Detection | None:
    if isinstance(item, dict):
        box = _box(_lookup(item, _BOX_KEYS))
        if box is None:
            return None
        conf = _number(_lookup(item, _CONF_KEYS))
        label = _lookup(item, _LABEL_KEYS)
        return Detection(box, None if conf is None else min(1.0, max(0.0, conf)), str(label) if label is not None else None)
    box = _box(item)
    return Detection(box) if box is not None else None


def _literal(text: str) -> Any:
    for loader in (json.loads, ast.literal_eval):
        try:
            return loader(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return None


def _from_literal(value: Any) -> list[Detection] | None:
    if isinstance(value, dict):
        d = _detection(value)
        return [d] if d else None
    if isinstance(value, (list, tuple)):
        if not value:
            return []
        single = _box(value)  # [x1, y1, x2, y2] or [[x1, y1], [x2, y2]]
        if single is not None:
            return [Detection(single)]
        found = [d for d in (_detection(v) for v in value) if d is not None]
        return found if found else None
    return None


def is_empty_answer(answer: str) -> bool:
    """'No Objects', 'none', '[]' and the like: an explicit claim that there is nothing."""
    key = re.sub(r"[\s'\"._`!-]", "", _strip_fences(answer).lower())
    return key in _EMPTY_ANSWERS


def parse_detections(answer: str | None) -> list[Detection] | None:
    """Boxes from an answer. [] for an explicit empty answer, None when nothing can be read.

    Accepts JSON or Python-literal lists of {'Position': [...], 'Confidence': c} (and the
    bbox_2d / bbox / box spellings), InternVL's <ref>label</ref><box>[[x1, y1, x2, y2]]</box>, bare
    [x1, y1, x2, y2] lists, (x1,y1),(x2,y2) pairs, code fences, and lists truncated mid-way (the complete items are
    kept).
    """
    if answer is None:
        return None
    body = _strip_fences(answer)
    if not body:
        return None
    if is_empty_answer(body):
        return []
    tagged = _ref_boxes(body)
    if tagged is not None:
        return tagged
    whole = _from_literal(_literal(body))
    if whole is not None:
        return whole
    # Not one literal: salvage the complete objects, then pairs, then 4-number lists.
    objects = [d for d in (_detection(_literal(m.group(0))) for m in _OBJECT.finditer(body)) if d is not None]
    if objects:
        return objects
    pairs = [Detection(tuple(float(g) for g in m.groups())) for m in _PAIR.finditer(body)]  # type: ignore[arg-type]
    if pairs:
        return pairs
    quads = [Detection(tuple(float(g) for g in m.groups())) for m in _QUAD.finditer(body)]  # type: ignore[arg-type]
    return quads or None


def _ref_boxes(body: str) -> list[Detection] | None:
    """InternVL's <ref>label</ref><box>[[x1, y1, x2, y2], ...]</box> (the label optional, a cut-off last box
    salvaged as complete 4-number lists); None when the answer has no <box>."""
    found: list[Detection] = []
    for m in _REF_BOX.finditer(body):
        label = m.group(1).strip() if m.group(1) else None
        dets = _from_literal(_literal(m.group(2).strip()))
        if dets is None:
            dets = [Detection(tuple(float(g) for g in q.groups())) for q in _QUAD.finditer(m.group(2))]  # type: ignore[arg-type]
        found += [Detection(d.box, d.confidence, label) for d in dets]
    return found if found else None


def parse_label(answer: str | None) -> str | None:
    """The class named in an answer, as written (None when there is no non-blank answer)."""
    if answer is None:
        return None
    body = _strip_fences(answer).strip()
    return body or None


def label_forms(text: str) -> set[str]:
    """Comparable forms of a class name: case, spaces, _ and - ignored, surrounding
    punctuation dropped, and a trailing plural 's' / 'es' optional."""
    key = text.strip().strip(".,;:!?'\"`()[]{}").lower()
    key = re.sub(r"[\s_-]+", "", key)
    if not key:
        return set()
    forms = {key}
    if len(key) > 3 and key.endswith("s"):
        forms.add(key[:-1])
        if key.endswith("es"):
            forms.add(key[:-2])
    return forms


def label_matches(answer: str | None, names: list[str]) -> bool:
    """True when the answer names exactly this class (under one of its names), nothing more."""
    if answer is None:
        return False
    got = label_forms(answer)
    return bool(got) and any(got & label_forms(n) for n in names)
