"""YOLO as Ultralytics lays it out: `data.yaml` (path, train/val/test folders, nc, names as id -> name),
`images/<split>/` and `labels/<split>/<stem>.txt` with one `class cx cy w h` line per box, normalised to the image's
size; an image without boxes gets an empty label file."""
from __future__ import annotations

from pathlib import Path

import yaml

from backend.data.common import ExportSet, Writer
from backend.data.writers.files import by_split, copy_image


def label_line(cls: int, box: list, width: int, height: int) -> str:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return f"{cls} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"


def write(export_set: ExportSet, folder: Path) -> None:
    ids = {c: i for i, c in enumerate(export_set.classes)}
    splits = by_split(export_set)
    for split, images in splits.items():
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
        for im in images:
            copy_image(im, folder / "images" / split / im.name)
            lines = [label_line(ids[b[4]], b, im.width, im.height) + "\n" for b in im.boxes]
            (folder / "labels" / split / Path(im.name).with_suffix(".txt")).write_text("".join(lines), encoding="utf-8")
    doc = {"path": ".", **{split: f"images/{split}" for split in splits}, "nc": len(export_set.classes),
           "names": dict(enumerate(export_set.classes))}
    (folder / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")


WRITER = Writer("yolo", "YOLO: data.yaml, images/<split>/ and labels/<split>/ (normalised cx cy w h)", write)
