"""YOLO: classes.txt or data.yaml names, one .txt per image of `class cx cy w h` (normalised)."""
from __future__ import annotations

from pathlib import Path

import yaml

from backend.datasets.common import Format, Parsed, Problems, RawSample, Upload
from backend.datasets.safety import ImportProblem


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
        return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
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


def parse(upload: Upload, problems: Problems) -> Parsed:
    names_file = _class_file(upload)
    assert names_file is not None
    classes = _names(names_file, upload)
    samples = []
    used: set[Path] = set()
    for image in upload.images:
        sample = RawSample(image, where=upload.rel(image), normalised=True)
        label_file = _label_for(image, upload)
        if label_file is not None:
            used.add(label_file)
            where = upload.rel(label_file)
            sample.where = where
            for n, line in enumerate(label_file.read_text(encoding="utf-8-sig").splitlines(), 1):
                if not line.strip():
                    continue
                fields = line.split()
                try:
                    cls, cx, cy, w, h = int(fields[0]), *(float(v) for v in fields[1:5])
                except (ValueError, IndexError):
                    problems.add(f"{where} line {n} is not 'class cx cy w h'")
                    continue
                if not 0 <= cls < len(classes):
                    problems.add(f"{where} line {n} has unknown class id {cls} ({len(classes)} classes)")
                    continue
                sample.boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, classes[cls]])
        samples.append(sample)
    orphans = [p for p in _label_files(upload, names_file) if p not in used]
    if orphans:
        problems.add(f"{upload.rel(orphans[0])} has no matching image"
                     + (f" (and {len(orphans) - 1} more label files)" if len(orphans) > 1 else ""))
    return Parsed("detection", classes, samples)


FORMAT = Format("yolo", "detection", detect, parse)
