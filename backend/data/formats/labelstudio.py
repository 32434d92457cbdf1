"""Label Studio JSON export: tasks whose rectangle labels are in percent of the original size. A task file of
pre-annotations (no `annotations` key, as our own export writes it) is read from each task's first prediction.

Label Studio shows images upright (EXIF orientation applied), so `original_width/height` and the
percentages describe the upright image. Boxes are kept in pixels of that declared size (the sample's
`frame`); the importer scales them to the real upright image should the two sizes disagree.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import unquote

from backend.data.common import Format, Parsed, Problems, RawSample, Upload, load_json


def _is_ls(doc: object) -> bool:
    return (isinstance(doc, list) and bool(doc) and isinstance(doc[0], dict)
            and "data" in doc[0] and any(k in doc[0] for k in ("annotations", "completions", "predictions")))


def _ls_files(upload: Upload) -> list[Path]:
    out = []
    for p in upload.with_suffix(".json"):
        head = p.read_text(encoding="utf-8-sig", errors="replace")[:200_000]
        if '"data"' in head and any(f'"{k}"' in head for k in ("annotations", "completions", "predictions")):
            try:
                if _is_ls(load_json(p, upload)):
                    out.append(p)
            except Exception:  # noqa: BLE001 - detection only; parse reports the error
                continue
    return out


def detect(upload: Upload) -> bool:
    return bool(_ls_files(upload))


def _image_ref(data: dict) -> str:
    value = data.get("image") or next((v for v in data.values() if isinstance(v, str)), "")
    return unquote(str(value).split("?d=")[-1])


def _find(upload: Upload, ref: str, base: Path) -> Path | None:
    found = upload.find_image(ref, base)
    if found is None:  # Label Studio prefixes uploads with an 8-hex-digit id: "1a2b3c4d-cat.jpg"
        stripped = re.sub(r"^[0-9a-f]{8}-", "", ref.rsplit("/", 1)[-1])
        found = upload.find_image(stripped, base)
    return found


def _rect(value: dict, w: float, h: float) -> list[float]:
    """Percent rectangle (rotated about its top-left corner) -> enclosing pixel box."""
    x, y = value["x"] * w / 100, value["y"] * h / 100
    bw, bh = value["width"] * w / 100, value["height"] * h / 100
    angle = math.radians(value.get("rotation", 0) or 0)
    if not angle:
        return [x, y, x + bw, y + bh]
    c, s = math.cos(angle), math.sin(angle)
    xs = [x + dx * c - dy * s for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
    ys = [y + dx * s + dy * c for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
    return [min(xs), min(ys), max(xs), max(ys)]


def parse(upload: Upload, problems: Problems) -> Parsed:
    classes: list[str] = []
    samples: list[RawSample] = []
    warnings: list[str] = []
    for path in _ls_files(upload):
        where = upload.rel(path)
        for task in load_json(path, upload):
            ref = _image_ref(task.get("data", {}))
            image = _find(upload, ref, path.parent)
            if image is None:
                problems.add(f"{where}: task {task.get('id')} names image '{ref}', which is not in the upload")
                continue
            sample = RawSample(image, where=where)
            annotations = [a for a in task.get("annotations", task.get("completions", [])) if not a.get("was_cancelled")]
            if "annotations" not in task and "completions" not in task:  # pre-annotations only (a task Label Studio
                annotations = task.get("predictions", [])[:1]  # exports lists its annotations, if none: unlabelled)
            results = annotations[0].get("result", []) if annotations else []
            rotated = 0
            for r in results:
                if r.get("type") != "rectanglelabels":
                    continue
                value = r.get("value", {})
                try:
                    ow, oh = float(r["original_width"]), float(r["original_height"])
                    if not (math.isfinite(ow) and math.isfinite(oh) and ow > 0 and oh > 0):
                        raise ValueError("original size is not positive")
                    box = _rect(value, ow, oh)
                except (KeyError, TypeError, ValueError):
                    problems.add(f"{where}: task {task.get('id')} has a rectangle without x/y/width/height "
                                 "or a positive original_width/original_height")
                    continue
                if sample.frame is None:
                    sample.frame = (ow, oh)
                elif sample.frame != (ow, oh):  # results of one task declaring different sizes: use the first
                    fw, fh = sample.frame
                    box = [box[0] * fw / ow, box[1] * fh / oh, box[2] * fw / ow, box[3] * fh / oh]
                rotated += bool(value.get("rotation"))
                for label in value.get("rectanglelabels", [])[:1]:
                    if label not in classes:
                        classes.append(label)
                    sample.boxes.append([*box, label])
            if rotated:
                warnings.append(f"{where}: {rotated} rotated rectangles in task {task.get('id')} were replaced "
                                "by their enclosing boxes")
            samples.append(sample)
    return Parsed("detection", classes, samples, warnings)


FORMAT = Format("labelstudio", "detection", detect, parse)
