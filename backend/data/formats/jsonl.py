"""Referring expressions as JSON lines: {"image": ..., "expression": ..., "box": [x1, y1, x2, y2]} in pixels."""
from __future__ import annotations

import json

from backend.data.common import Format, Parsed, Problems, RawSample, Upload, read_text

_TEXT_KEYS = ("expression", "text", "sentence", "ref", "caption")
_BOX_KEYS = ("box", "bbox")


def detect(upload: Upload) -> bool:
    return bool(upload.with_suffix(".jsonl"))


def parse(upload: Upload, problems: Problems) -> Parsed:
    samples = []
    for path in upload.with_suffix(".jsonl"):
        where = upload.rel(path)
        for n, line in enumerate(read_text(path, upload).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                assert isinstance(row, dict)
            except (ValueError, AssertionError):
                problems.add(f"{where} line {n} is not a JSON object")
                continue
            ref = str(row.get("image", ""))
            text = next((row[k] for k in _TEXT_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
            box = next((row[k] for k in _BOX_KEYS if k in row), None)
            if text is None or not (isinstance(box, list) and len(box) == 4):
                problems.add(f"{where} line {n} needs 'image', 'expression' and 'box' [x1, y1, x2, y2]")
                continue
            image = upload.find_image(ref, path.parent)
            if image is None:
                problems.add(f"{where} line {n} names image '{ref}', which is not in the upload")
                continue
            samples.append(RawSample(image, expression=text.strip(), box=list(box), where=f"{where} line {n}"))
    return Parsed("grounding", [], samples, read=upload.with_suffix(".jsonl"))


FORMAT = Format("jsonl", "grounding", detect, parse)
