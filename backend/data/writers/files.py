"""What the writers share: copying an image into the export, the splits present, a box's confidence, and what an
export holds, for the message that says so."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from backend.data.common import ExportImage, ExportSet
from backend.data.safety import IMAGE_SUFFIXES
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


def listing(out: Path) -> list[str]:
    """What an export (a folder or a zip) holds, for a message: every file that is not an image by its path, then each
    folder's images as a count ('train/: 3 images')."""
    if out.is_dir():
        names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    else:
        with zipfile.ZipFile(out) as zf:
            names = sorted(n for n in zf.namelist() if not n.endswith("/"))
    images: dict[str, int] = {}
    for name in names:
        if Path(name).suffix.lower() in IMAGE_SUFFIXES:
            folder = name.rsplit("/", 1)[0] + "/" if "/" in name else "./"
            images[folder] = images.get(folder, 0) + 1
    return [n for n in names if Path(n).suffix.lower() not in IMAGE_SUFFIXES] + [
        f"{folder}: {n} image{'s' if n != 1 else ''}" for folder, n in images.items()]
