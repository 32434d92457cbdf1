"""Import an upload as a dataset, all or nothing: checks first, then files, then rows in one transaction."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections import Counter
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from backend.data.common import Parsed, Problems, RawSample, Upload
from backend.data.config import ImportLimits
from backend.data.formats import FORMATS
from backend.data.formats.folders import annotation_like
from backend.data.hub import download_hub_dataset, hub_folder, is_hub_ref
from backend.data.safety import (IMAGE_SUFFIXES, REFUSED_IMAGE_SUFFIXES, ImportProblem, gather_upload, inspect_image,
                                  stored_name, write_normalised)
from backend.data.split import decide_splits, split_in_path, split_named
from storage import Store
from storage.models import Dataset, Sample

TASKS = ("detection", "classification", "grounding")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
EDGE_TOLERANCE = 0.05
"""Boxes may overshoot the image by this fraction of its side; they are clipped. Beyond: rejected."""


def staging_root(data_dir: Path) -> Path:
    return Path(data_dir) / ".staging"


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):  # fullmatch: `$` also matches before a final newline
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(name or ""))  # a newline shown as \n
        raise ImportProblem(f"'{shown}' is not a valid dataset name: use 1-64 letters, digits, '_', '-' or '.', "
                            "starting with a letter or digit")


def check_new_name(store: Store, name: str) -> None:
    """ImportProblem unless `name` is a valid name that no dataset has yet (checked again when the rows land)."""
    check_name(name)
    with store.read() as s:
        if s.scalar(select(Dataset.id).where(Dataset.name == name)) is not None:
            raise ImportProblem(f"a dataset named '{name}' already exists")


def detect_format(upload: Upload) -> str:
    """The first format in FORMATS that recognises the upload; one sentence naming an annotation-like file when none
    does (class folders are never guessed beside annotations no reader understood)."""
    for name, fmt in FORMATS.items():
        if fmt.detect(upload):
            return name
    tried = ", ".join(n for n in FORMATS if n != "folders")
    unread = annotation_like(upload)
    if unread:
        more = f" (nor {len(unread) - 1} other annotation-like files)" if len(unread) > 1 else ""
        raise ImportProblem(f"{upload.rel(unread[0])} is in no annotation format this app reads{more}: tried {tried}")
    raise ImportProblem(f"no known annotation format was found in the upload (tried {tried} and class folders)")


def _ignored_note(upload: Upload, parsed: Parsed) -> list[str]:
    """The files that are neither images nor read as annotations (README, licences), named in the summary."""
    if parsed.read is None:
        return []
    read = set(parsed.read)
    ignored = [upload.rel(p) for p in upload.files if p not in read and p.name != "synonyms.json"
               and p.suffix.lower() not in IMAGE_SUFFIXES | REFUSED_IMAGE_SUFFIXES]
    if not ignored:
        return []
    more = f" and {len(ignored) - 8} more" if len(ignored) > 8 else ""
    return [f"not read (no annotations of this format): {', '.join(ignored[:8])}{more}"]


def _upload_root(path: Path) -> Path:
    """Step into a single top-level folder, as most zips of a dataset have one (not into a split's: 'test/')."""
    entries = [p for p in path.iterdir()]
    while len(entries) == 1 and entries[0].is_dir() and split_named(entries[0].name) is None:
        path = entries[0]
        entries = list(path.iterdir())
    return path


def clean_box(box: list, width: int, height: int, where: str, problems: Problems) -> tuple[list[float] | None, bool]:
    """Clip a box slightly outside the image; reject it when far outside or degenerate.

    Returns (box or None when rejected, whether it was clipped).
    """
    try:
        x1, y1, x2, y2 = (float(v) for v in box[:4])
    except (TypeError, ValueError):
        problems.add(f"{where}: box {box[:4]} is not four numbers")
        return None, False
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        problems.add(f"{where}: box {box[:4]} is not finite")
        return None, False
    tx, ty = EDGE_TOLERANCE * width, EDGE_TOLERANCE * height
    if min(x1, x2) < -tx or max(x1, x2) > width + tx or min(y1, y2) < -ty or max(y1, y2) > height + ty:
        problems.add(f"{where}: box {_fmt(box)} lies outside the {width}x{height} image")
        return None, False
    clipped = [min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height)]
    if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
        problems.add(f"{where}: box {_fmt(box)} is degenerate (under one pixel wide or high)")
        return None, False
    return clipped, clipped != [x1, y1, x2, y2]


def _fmt(box: list) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box[:4]) + "]"


def _annotation(raw: RawSample, task: str, width: int, height: int, classes: list[str],
                problems: Problems) -> tuple[dict, int]:
    """The stored annotation (absolute pixels of the upright image) and how many boxes were clipped.

    `width` and `height` are the upright size (EXIF orientation applied): annotation tools show the
    image upright, so their boxes, and fractions of the size, refer to that frame.
    """
    clipped = 0
    sx, sy = _frame_scale(raw, width, height)
    if task == "detection":
        boxes = []
        for *coords, label in raw.boxes:
            if raw.normalised:
                coords = [coords[0] * width, coords[1] * height, coords[2] * width, coords[3] * height]
            elif (sx, sy) != (1.0, 1.0):
                coords = _scaled(coords, sx, sy)
            if label not in classes:
                problems.add(f"{raw.where}: unknown category '{label}'")
                continue
            box, was_clipped = clean_box(coords, width, height, raw.where, problems)
            if box is not None:
                boxes.append([*box, label])
                clipped += was_clipped
        return {"boxes": boxes}, clipped
    if task == "classification":
        return {"label": raw.label}, 0
    box = raw.box or []
    if (sx, sy) != (1.0, 1.0) and len(box) == 4:
        box = _scaled(box, sx, sy)
    box, was_clipped = clean_box(box, width, height, raw.where, problems)
    return {"expression": raw.expression, "box": box}, int(was_clipped)


def _frame_scale(raw: RawSample, width: int, height: int) -> tuple[float, float]:
    """How to scale pixel boxes drawn against `raw.frame` onto the real (upright) image: (1, 1) when they match."""
    if raw.frame is None or raw.normalised:
        return 1.0, 1.0
    fw, fh = raw.frame
    return (1.0 if fw == width else width / fw), (1.0 if fh == height else height / fh)


def _scaled(coords: list, sx: float, sy: float) -> list:
    try:
        x1, y1, x2, y2 = (float(v) for v in coords[:4])
    except (TypeError, ValueError):
        return coords  # clean_box reports it
    return [x1 * sx, y1 * sy, x2 * sx, y2 * sy]


def _stratum(task: str, annotation: dict, class_count: Counter) -> str:
    if task == "classification":
        return annotation["label"]
    if task == "detection":
        labels = {b[4] for b in annotation["boxes"]}
        return min(labels, key=lambda c: (class_count[c], c)) if labels else "(no objects)"
    return "all"


def _read_synonyms(upload: Upload, classes: list[str], problems: Problems) -> dict[str, list[str]]:
    path = next((p for p in upload.files if p.name == "synonyms.json"), None)
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
        assert isinstance(doc, dict) and all(isinstance(v, list) for v in doc.values())
    except (ValueError, AssertionError):
        problems.add(f"{upload.rel(path)} must be a JSON object of class -> list of synonyms")
        return {}
    unknown = [k for k in doc if k not in classes]
    if unknown:
        problems.add(f"{upload.rel(path)} names unknown class '{unknown[0]}'")
    return {k: [str(s) for s in v] for k, v in doc.items() if k in classes}


def import_dataset(store: Store, data_dir: Path, sources: list[Path | str], name: str, *, task: str | None = None,
                   fmt: str = "auto", val_fraction: float = 0.2, limits: ImportLimits | None = None,
                   source_names: list[str] | None = None, seed: int = 0) -> int:
    """Import `sources` (a zip, loose files, or `hf:NAME[:CONFIG]` for a Hugging Face Hub dataset) as dataset
    `name`; returns its id. The export's own split is kept where it has one; else `val_fraction` is held out.

    Raises ImportProblem with one clear sentence; on any failure nothing is left behind.
    """
    limits = limits or ImportLimits.from_env()
    check_new_name(store, name)
    if task is not None and task not in TASKS:
        raise ImportProblem(f"unknown task '{task}' (choose detection, classification or grounding)")
    if fmt != "auto" and fmt not in FORMATS:
        raise ImportProblem(f"unknown format '{fmt}' (choose auto, {', '.join(FORMATS)})")
    if not 0.0 <= val_fraction < 1.0:
        raise ImportProblem(f"the held-out fraction must be at least 0 and below 1, got {val_fraction}")

    staging = staging_root(data_dir) / uuid.uuid4().hex
    try:
        (staging / "upload").mkdir(parents=True)
        hub = [str(src) for src in sources if is_hub_ref(str(src))]
        files = [Path(src) for src in sources if not is_hub_ref(str(src))]
        for ref in hub:
            download_hub_dataset(ref, staging / "upload" / hub_folder(ref), staging / "hub-cache", limits.max_images)
        if files or not hub:
            names = [n for src, n in zip(sources, source_names or []) if not is_hub_ref(str(src))] or None
            gather_upload(files, staging / "upload", limits, names)
        upload = Upload(_upload_root(staging / "upload"))
        if not upload.files:
            raise ImportProblem("the upload is empty: no images or annotation files were found")
        fmt = detect_format(upload) if fmt == "auto" else fmt
        if task is not None and FORMATS[fmt].task not in (None, task):
            raise ImportProblem(f"the {fmt} format holds {FORMATS[fmt].task} annotations, not {task}")
        problems = Problems()
        parsed = FORMATS[fmt].parse(upload, problems)
        problems.raise_if_any()
        parsed.warnings += _ignored_note(upload, parsed)
        if task is not None and parsed.task != task:
            raise ImportProblem(f"the upload holds {parsed.task} annotations, not {task}")
        task = parsed.task
        rows = _checked_rows(parsed, upload, limits, problems)
        problems.raise_if_any()  # a broken image or box is named before "no class" is concluded from what is left
        _drop_unused_classes(parsed, rows)
        if parsed.task != "grounding" and not parsed.classes:
            raise ImportProblem("the upload holds no annotated object or label, so there is no class to train on")
        synonyms = _read_synonyms(upload, parsed.classes, problems)
        problems.raise_if_any()

        class_count = Counter(b[4] for r in rows for b in r["annotation"].get("boxes", []))
        strata = [_stratum(task, r["annotation"], class_count) for r in rows]
        decision = decide_splits([r.pop("export_split") for r in rows], strata, [r.pop("digest") for r in rows],
                                 val_fraction, seed)
        for row, split in zip(rows, decision.splits):
            row["split"] = split
        parsed.warnings.extend(decision.notes)

        folder = f"datasets/{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{uuid.uuid4().hex[:8]}"
        images_dir = staging / "dataset" / "images"
        for row in rows:
            target = images_dir / row["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            source, info = row.pop("path"), row.pop("info")
            if info.kept_as_is:
                os.replace(source, target)  # byte for byte
            else:  # a phone photo stored sideways, grey or transparent pixels, TIFF: upright 8-bit RGB
                write_normalised(source, target, limits, row["file"])
        final = Path(data_dir) / folder
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging / "dataset", final)
        try:
            with store.write() as s:
                ds = Dataset(name=name, task=task, source_format=fmt, classes=parsed.classes, synonyms=synonyms,
                             folder=folder, val_fraction=val_fraction if decision.origin != "export" else 0.0,
                             split_origin=decision.origin, warnings=parsed.warnings)
                ds.samples = [Sample(**row) for row in rows]
                s.add(ds)
                s.flush()
                return ds.id
        except IntegrityError:
            shutil.rmtree(final, ignore_errors=True)
            raise ImportProblem(f"a dataset named '{name}' already exists") from None
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _drop_unused_classes(parsed: Parsed, rows: list[dict]) -> None:
    """Categories no annotation uses are not classes (Roboflow's supercategory, VOC's 'background'): they would
    only be asked about in prompts. The summary names them."""
    if parsed.task == "grounding":
        return
    used = {b[4] for r in rows for b in r["annotation"].get("boxes", [])} | {r["annotation"].get("label") for r in rows}
    dropped = [c for c in parsed.classes if c not in used]
    if dropped:
        parsed.classes = [c for c in parsed.classes if c in used]
        listed = ", ".join(f"'{c}'" for c in dropped[:8]) + (f" and {len(dropped) - 8} more" if len(dropped) > 8 else "")
        parsed.warnings.append(f"{'categories' if len(dropped) > 1 else 'category'} {listed} "
                               f"{'are' if len(dropped) > 1 else 'is'} declared but no annotation uses "
                               f"{'them' if len(dropped) > 1 else 'it'}: left out of the classes")


def _checked_rows(parsed: Parsed, upload: Upload, limits: ImportLimits, problems: Problems) -> list[dict]:
    """Probe every image and clean every annotation; problems are collected, not raised."""
    if not parsed.samples:
        raise ImportProblem("the upload holds no annotated images")
    if len(parsed.samples) > limits.max_images:
        raise ImportProblem(f"the upload holds {len(parsed.samples)} images; the limit is {limits.max_images}")
    seen: set[Path] = set()
    rows: list[dict] = []
    clipped = 0
    rescaled: list[str] = []
    converted: Counter = Counter()
    for raw in parsed.samples:
        rel = upload.rel(raw.image)
        if raw.image in seen:
            problems.add(f"{raw.where}: image '{rel}' is annotated twice")
            continue
        seen.add(raw.image)
        try:
            info = inspect_image(raw.image, limits, rel)
        except ImportProblem as e:
            problems.add(str(e))
            continue
        width, height = info.width, info.height  # upright: as the annotation tool showed it
        if _frame_scale(raw, width, height) != (1.0, 1.0):
            rescaled.append(f"{raw.where}: {raw.frame[0]:g}x{raw.frame[1]:g} for the {width}x{height} image '{rel}'")
        annotation, n = _annotation(raw, parsed.task, width, height, parsed.classes, problems)
        clipped += n
        if info.mode != "RGB":
            converted[info.mode] += 1
        if info.format == "TIFF":
            converted["TIFF"] += 1
        rows.append({"file": stored_name(rel, info), "path": raw.image, "info": info, "width": width,
                     "height": height, "annotation": annotation, "digest": _digest(raw.image),
                     "export_split": raw.split or split_in_path(rel)})
    if clipped:
        parsed.warnings.append(f"{clipped} boxes reached slightly past the image edge and were clipped to it")
    if rescaled:
        n = len(rescaled)
        parsed.warnings.append(f"{n} image{'s were' if n > 1 else ' was'} annotated for another size "
                               f"(first: {rescaled[0]}); the boxes were scaled to the real image")
    parsed.warnings += _conversion_notes(converted) + _duplicate_notes(rows)
    if len(problems.items) == 0:
        dropped = len(upload.images) - len(rows)
        if dropped > 0:
            parsed.warnings.append(f"{dropped} images in the upload have no annotation entry and were left out")
    return rows


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _conversion_notes(converted: Counter) -> list[str]:
    notes = []
    tiff = converted.pop("TIFF", 0)
    if tiff:
        notes.append(f"{tiff} TIFF image{'s were' if tiff > 1 else ' was'} stored as PNG ('.png' added to the name)")
    if converted:
        n = sum(converted.values())
        modes = ", ".join(_MODE_NAMES.get(m, m) for m in sorted(converted))
        notes.append(f"{n} image{'s were' if n > 1 else ' was'} converted to RGB ({modes})")
    return notes


_MODE_NAMES = {"L": "grayscale", "LA": "grayscale with alpha", "RGBA": "alpha", "P": "palette", "PA": "palette",
               "1": "black and white", "CMYK": "CMYK", "I;16": "16-bit grayscale", "I": "32-bit grayscale",
               "F": "float grayscale", "YCbCr": "YCbCr", "I;16B": "16-bit grayscale", "I;16L": "16-bit grayscale"}


def _duplicate_notes(rows: list[dict]) -> list[str]:
    """Byte-identical images are kept (their annotations may differ) and reported; the split keeps them together."""
    by_digest: dict[str, list[str]] = {}
    for r in rows:
        by_digest.setdefault(r["digest"], []).append(r["file"])
    groups = [files for files in by_digest.values() if len(files) > 1]
    if not groups:
        return []
    n = sum(len(g) for g in groups)
    return [f"{n} images are byte-identical copies in {len(groups)} group{'s' if len(groups) > 1 else ''} "
            f"(first: {' = '.join(repr(f) for f in groups[0][:3])}); each group is kept on one side of the split"]
