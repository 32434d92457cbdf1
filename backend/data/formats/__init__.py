"""Annotation formats, one module each; FORMATS is the registry (order = auto-detection order: the most specific
layouts first, the generic CSV reader late, and folders-as-classes last, only for an upload with no annotation file)."""
from __future__ import annotations

from backend.data.common import Format
from backend.data.formats import (coco, createml, csv_labels, folders, hf, jsonl, labelme, labelstudio, labelstudio_csv,
                                  labelstudio_min, via, voc, yolo)

FORMATS: dict[str, Format] = {f.name: f for f in (
    hf.FORMAT, coco.FORMAT, labelstudio.FORMAT, labelstudio_min.FORMAT, labelme.FORMAT, createml.FORMAT, via.FORMAT,
    voc.FORMAT, yolo.FORMAT, jsonl.FORMAT, labelstudio_csv.FORMAT, csv_labels.FORMAT, folders.FORMAT)}
