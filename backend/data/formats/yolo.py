"""YOLO (Ultralytics, Roboflow, CVAT, LabelImg, Label Studio exports): classes from data.yaml, classes.txt or
obj.names; one .txt per image of `class cx cy w h` (normalised), in a labels/ folder mirroring images/ or beside the
image; an empty label file is an image with no boxes.

data.yaml's `train:` / `val:` / `test:` entries give the split: folders or image lists, relative to `path:` (as
Ultralytics writes them), to the yaml's folder, or to its parent (Roboflow's `../train/images`). Segmentation exports
(`class x1 y1 x2 y2 x3 y3 …`) are read as the bounding box of each polygon's points, with the count in the summary.
Text files that are not label rows (README.roboflow.txt, train.txt image lists) are ignored.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import yaml

from backend.data.common import Format, Parsed, Problems, RawSample, Upload, read_text
from backend.data.safety import ImportProblem
from backend.data.split import split_named

_NAMES_FILES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml", "classes.txt", "obj.names")
_SPLIT_KEYS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_ROW = re.compile(r"^\s*-?\d+(\s+[-+0-9.eE]+)+\s*$")


def _names_file(upload: Upload) -> Path | None:
    found = [p for p in upload.files if p.name.lower() in _NAMES_FILES or
             (p.suffix.lower() in (".yaml", ".yml") and "names:" in read_text(p, upload))]
    return min(found, key=lambda p: (len(p.relative_to(upload.root).parts), _NAMES_FILES.index(p.name.lower())
                                     if p.name.lower() in _NAMES_FILES else 99), default=None)


def is_label_file(path: Path, upload: Upload) -> bool:
    """A label file sits in a labels/ folder or holds only label rows (or nothing): not a README or an image list."""
    if "labels" in (part.lower() for part in path.relative_to(upload.root).parts[:-1]):
        return True
    try:
        lines = upload.text_lines(path)
    except ImportProblem:
        return False
    return bool(lines) and all(_ROW.match(line) for line in lines)


def _label_files(upload: Upload, names_file: Path | None) -> list[Path]:
    return [p for p in upload.with_suffix(".txt") if p != names_file and is_label_file(p, upload)]


def detect(upload: Upload) -> bool:
    names = _names_file(upload)
    return names is not None and bool(_label_files(upload, names)) and bool(upload.images)


def _yaml(path: Path, upload: Upload) -> dict:
    try:
        doc = yaml.safe_load(read_text(path, upload))
    except yaml.YAMLError as e:
        raise ImportProblem(f"{upload.rel(path)} is not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise ImportProblem(f"{upload.rel(path)} is not a YAML mapping with 'names'")
    return doc


def _names(path: Path, upload: Upload) -> dict[int, str]:
    """Class id -> name."""
    if path.suffix.lower() in (".txt", ".names"):
        return dict(enumerate(upload.text_lines(path)))
    doc = _yaml(path, upload)
    names, nc = doc.get("names"), doc.get("nc")
    if isinstance(names, dict):
        try:
            out = {int(k): str(v).strip() for k, v in names.items()}
        except (TypeError, ValueError):
            raise ImportProblem(f"{upload.rel(path)}: 'names' maps ids that are not whole numbers") from None
    elif isinstance(names, list):
        out = {i: str(n).strip() for i, n in enumerate(names)}
    else:
        raise ImportProblem(f"{upload.rel(path)} has no 'names' list of classes")
    if isinstance(nc, int) and nc != len(out):
        raise ImportProblem(f"{upload.rel(path)} says nc: {nc} but names {len(out)} classes")
    return out


def _entry_dirs(value, yaml_file: Path, doc: dict, upload: Upload) -> list[Path]:
    """The folders (or list files) a data.yaml split entry names, found inside the upload."""
    entries = value if isinstance(value, list) else [value]
    base = yaml_file.parent
    roots = [base]
    if isinstance(doc.get("path"), str) and doc["path"].strip():
        # `path:` is the exporting machine's dataset root; inside the upload, try it beside the yaml, then the yaml's
        # own folder (an absolute or moved path).
        root = doc["path"].strip().replace("\\", "/")
        roots[:0] = [base / root.lstrip("/"), base / PurePosixPath(root).name]
    found = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            continue
        rel = entry.strip().replace("\\", "/")
        trimmed = PurePosixPath(*[p for p in PurePosixPath(rel).parts if p not in ("..", ".", "/")] or ["."])
        for cand in [r / rel for r in roots] + [r / trimmed for r in roots]:
            try:
                cand = cand.resolve()
                cand.relative_to(upload.root.resolve())
            except (ValueError, OSError):
                continue
            if cand.exists():
                found.append(cand)
                break
    return found


def _yaml_splits(path: Path, upload: Upload, warnings: list[str], read: list[Path]) -> dict[Path, str]:
    """Image -> split, as data.yaml's train/val/test entries name them (the image lists it names added to `read`)."""
    if path.suffix.lower() not in (".yaml", ".yml"):
        return {}
    doc = _yaml(path, upload)
    by_image: dict[Path, set[str]] = {}
    for key, split in _SPLIT_KEYS.items():
        for target in _entry_dirs(doc.get(key), path, doc, upload):
            if target.is_dir():
                images = [p for p in upload.images if target in p.resolve().parents]
            else:  # an image list, one path a line (relative to the list's folder or the root)
                read.append(target)
                images = [img for line in upload.text_lines(target)
                          if (img := upload.find_image(line, target.parent)) is not None]
            for image in images:
                by_image.setdefault(image, set()).add(split)
    if any(len(s) > 1 for s in by_image.values()):
        warnings.append(f"{upload.rel(path)} names the same images for more than one split; its split was not used")
        return {}
    return {image: next(iter(s)) for image, s in by_image.items()}


def _label_for(image: Path, upload: Upload) -> Path | None:
    """labels/ mirrors images/ in YOLO exports (the last 'images' folder); a .txt beside the image works too."""
    rel = image.relative_to(upload.root)
    candidates = [image.with_suffix(".txt")]
    parts = list(rel.parts)
    lowered = [p.lower() for p in parts]
    if "images" in lowered[:-1]:
        i = len(parts) - 1 - lowered[:-1][::-1].index("images") - 1
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


def _read_labels(label_file: Path, sample: RawSample, names: dict[int, str], upload: Upload, problems: Problems,
                 polygons: list[str]) -> None:
    where = upload.rel(label_file)
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
        if cls not in names:
            problems.add(f"{where} line {n} has unknown class id {cls} ({len(names)} classes)")
            continue
        coords, polygon = box
        if polygon:
            polygons.append(f"{where} line {n}")
        sample.boxes.append([*coords, names[cls]])


def parse(upload: Upload, problems: Problems) -> Parsed:
    names_file = _names_file(upload)
    assert names_file is not None
    names = _names(names_file, upload)
    warnings: list[str] = []
    read = [names_file]
    splits = _yaml_splits(names_file, upload, warnings, read)
    samples = []
    used: set[Path] = set()
    polygons: list[str] = []
    for image in upload.images:
        sample = RawSample(image, where=upload.rel(image), normalised=True, split=splits.get(image))
        label_file = _label_for(image, upload)
        if label_file is not None:
            used.add(label_file)
            sample.where = upload.rel(label_file)
            _read_labels(label_file, sample, names, upload, problems, polygons)
        samples.append(sample)
    orphans = [p for p in _label_files(upload, names_file) if p not in used]
    if orphans:
        problems.add(f"{upload.rel(orphans[0])} has no matching image"
                     + (f" (and {len(orphans) - 1} more label files)" if len(orphans) > 1 else ""))
    if polygons:
        n = len(polygons)
        warnings.append(f"{n} segmentation polygon{'s were' if n > 1 else ' was'} read as the bounding box of "
                        f"{'their' if n > 1 else 'its'} points (first: {polygons[0]})")
    read += sorted(used)
    return Parsed("detection", [names[k] for k in sorted(names)], samples, warnings, read=read)


FORMAT = Format("yolo", "detection", detect, parse)
