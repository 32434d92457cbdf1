"""What the writers share: copying an image into the export, the splits present, a box's confidence."""
from __future__ import annotations

import shutil
from pathlib import Path

from backend.data.common import ExportImage, ExportSet
from backend.data.split import SPLITS


def copy_image(image: ExportImage, target: Path) -> None:
    """The original file, byte for byte (boxes are in its pixels)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image.source, target)


def by_split(export_set: ExportSet) -> dict[str, list[ExportImage]]:
    """The splits that hold images, in the order train, val, test."""
    return {s: found for s in SPLITS if (found := [im for im in export_set.images if im.split == s])}


def confidence(box: list) -> float | None:
    """The model's confidence a box carries as its sixth item, None for a box a person drew."""
    return float(box[5]) if len(box) > 5 and box[5] is not None else None


def number(value: float) -> float | int:
    """A pixel coordinate as written: a whole number stays whole, else two decimals."""
    rounded = round(float(value), 2)
    return int(rounded) if rounded == int(rounded) else rounded
