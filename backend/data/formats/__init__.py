"""Annotation formats, one module each; FORMATS is the registry (order = auto-detection order)."""
from __future__ import annotations

from backend.data.common import Format
from backend.data.formats import coco, csv_labels, folders, hf, jsonl, labelstudio, voc, yolo

FORMATS: dict[str, Format] = {f.name: f for f in (
    hf.FORMAT, coco.FORMAT, labelstudio.FORMAT, voc.FORMAT, yolo.FORMAT, jsonl.FORMAT, csv_labels.FORMAT, folders.FORMAT)}
