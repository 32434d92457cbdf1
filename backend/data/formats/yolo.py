"""YOLO: classes.txt or data.yaml names, one .txt per image of `class cx cy w h` (normalised).

Segmentation exports (`class x1 y1 x2 y2 x3 y3 …`, a polygon of normalised points) are read as the bounding box
of each polygon's points, with a warning in the import summary.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from backend.data.common import Format, Parsed, Problems, RawSample, Upload, read_text
from backend.data.safety import ImportProblem


def _class_file(upload: Upload) -> Path | None:
    for p in upload.files:
        if p.name in ("classes.txt", "obj.names") or p.name in ("data.yaml", "data.yml", "dataset.yaml"):
            return p
    return None


def _label_files(upload: Upload, names_file: Path | None) -> list[Path]:
    return [p for p in upload.with_suffix(".txt") if p != names_file and p.name != "README.txt"]


def detect(upload: Upload) -> bool:
    names = _class_file(upload)
    return names is not None and bool(_label_files(upload, names)) and bool(upload.images)


def _names(path: Path, upload: Upload) -> list[str]:
    if path.suffix == ".txt" or path.suffix == ".names":
        return [line.strip() for line in read_text(path, upload).splitlines() if line.strip()]
    try:
        doc = yaml.safe_load(read_text(path, upload))
    except yaml.YAMLError as e:
        raise ImportProblem(f"{upload.rel(path)} is not valid YAML ({e})") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise ImportProblem(f"{upload.rel(path)} has no 'names' list of classes")


def _label_for(image: Path, upload: Upload) -> Path | None:
    """labels/ mirrors images/ in YOLO exports; a .txt beside the image works too."""
    rel = image.relative_to(upload.root)
    beside = image.with_suffix(".txt")
    candidates = [beside]
    parts = list(rel.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        candidates.append(upload.root.joinpath(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt"))
    return next((c for c in candidates if c.is_file()), None)


def _box(fields: list[str]) -> tuple[list[float], bool] | str:
    """(normalised [x1, y1, x2, y2], whether it was a polygon) of one label line's numbers, or what is wrong."""
    try:
        values = [float(v) for v in fields[1:]]
    except ValueError:
        return "is not 'class cx cy w h'"
    if len(values) == 4:
        cx, cy, w, h = values
        return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], False
    if len(values) >= 6 and len(values) % 2 == 0:  # a segmentation polygon: x1 y1 x2 y2 x3 y3 ...
        xs, ys = values[0::2], values[1::2]
        return [min(xs), min(ys), max(xs), max(ys)], True
    return (f"has {len(values)} numbers after the class: neither a box 'class cx cy w h' nor a polygon "
            "'class x1 y1 x2 y2 x3 y3 ...'")


def parse(upload: Upload, problems: Problems) -> Parsed:
    names_file = _class_file(upload)
    assert names_file is not None
    classes = _names(names_file, upload)
    samples = []
    used: set[Path] = set()
    polygons: list[str] = []
    for image in upload.images:
        sample = RawSample(image, where=upload.rel(image), normalised=True)
        label_file = _label_for(image, upload)
        if label_file is not None:
            used.add(label_file)
            where = upload.rel(label_file)
            sample.where = where
            for n, line in enumerate(read_text(label_file, upload).splitlines(), 1):
                if not line.strip():
                    continue
                fields = line.split()
                try:
                    cls = int(fields[0])
                except ValueError:
                    problems.add(f"{where} line {n} is not 'class cx cy w h'")
                    continue
                box = _box(fields)
                if isinstance(box, str):
                    problems.add(f"{where} line {n} {box}")
                    continue
                if not 0 <= cls < len(classes):
                    problems.add(f"{where} line {n} has unknown class id {cls} ({len(classes)} classes)")
                    continue
                coords, polygon = box
                if polygon:
                    polygons.append(f"{where} line {n}")
                sample.boxes.append([*coords, classes[cls]])
        samples.append(sample)
    orphans = [p for p in _label_files(upload, names_file) if p not in used]
    if orphans:
        problems.add(f"{upload.rel(orphans[0])} has no matching image"
                     + (f" (and {len(orphans) - 1} more label files)" if len(orphans) > 1 else ""))
    warnings = []
    if polygons:
        n = len(polygons)
        warnings.append(f"{n} segmentation polygon{'s were' if n > 1 else ' was'} read as the bounding box of "
                        f"{'their' if n > 1 else 'its'} points (first: {polygons[0]})")
    return Parsed("detection", classes, samples, warnings)


FORMAT = Format("yolo", "detection", detect, parse)
