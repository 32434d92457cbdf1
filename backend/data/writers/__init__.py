"""Annotation formats written out, one module each (the readers' twins in formats/); WRITERS is the registry. Each
export holds the original images byte for byte, boxes in their pixels, and the split in the layout's own way, so
that it imports back (backend.data.importer) with every box on its side of the split."""
from __future__ import annotations

from backend.data.common import Writer
from backend.data.writers import coco, labelstudio, voc, yolo

WRITERS: dict[str, Writer] = {w.name: w for w in (coco.WRITER, yolo.WRITER, voc.WRITER, labelstudio.WRITER)}
