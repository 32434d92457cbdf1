"""What Label Studio's JSON, JSON-MIN and CSV exports share: the image a task names, its regions read as boxes or
a class, and which of a task's annotations is read (the latest one not cancelled, as Label Studio's converter does).

Regions are in percent of `original_width/height`, the upright image Label Studio showed; boxes are kept in pixels
of that size (the sample's `frame`) and the importer scales them should the real image differ.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlparse

from backend.data.common import Problems, RawSample, Upload

HASH_PREFIX = re.compile(r"^[0-9a-f]{8}-")
"""Label Studio renames an uploaded file '<8 hex digits>-<name>' ('/data/upload/3/1a2b3c4d-cat.jpg')."""
META = ("id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement", "history",
        "drafts", "predictions", "meta", "total_annotations", "cancelled_annotations", "total_predictions")
"""Columns of a JSON-MIN record or CSV row that are neither task data nor a labelling result."""
_LABEL_KEYS = ("rectanglelabels", "polygonlabels", "labels")


def image_path(ref: str) -> str:
    """The path an image reference names inside an upload: '/data/local-files/?d=images/a.jpg' -> 'images/a.jpg',
    's3://bucket/dir/a.jpg' -> 'dir/a.jpg', 'https://host/dir/a.jpg?X-Amz-Signature=…' -> 'dir/a.jpg'."""
    ref = str(ref).strip()
    url = urlparse(ref)
    if "d" in (query := parse_qs(url.query)) and url.path.rstrip("/").endswith("local-files"):
        return query["d"][0].replace("\\", "/").lstrip("/")
    path = unquote(url.path)
    if url.scheme in ("s3", "gs", "azure-blob", "http", "https") or ref.startswith("/"):
        path = path.lstrip("/")
    return path


def find_image(upload: Upload, ref: str, base: Path) -> Path | None:
    """The uploaded image a task names: by its path, by its name, then by its name less Label Studio's hash prefix."""
    path = image_path(ref)
    if not path:
        return None
    found = upload.find_image(path, base)
    name = PurePosixPath(path).name
    if found is None and HASH_PREFIX.match(name):
        found = upload.find_image(HASH_PREFIX.sub("", name), base)
    return found


def latest(annotations: list) -> tuple[dict | None, int]:
    """The annotation read (the latest by `created_at` of those not cancelled or skipped) and how many others there
    were."""
    kept = [a for a in annotations if isinstance(a, dict) and not (a.get("was_cancelled") or a.get("skipped"))]
    if not kept:
        return None, 0
    return max(kept, key=lambda a: str(a.get("created_at") or "")), len(kept) - 1


def _kind(region: dict) -> str:
    """rectanglelabels, polygonlabels, labels (a Rectangle or Polygon with a Labels tag), choices, or another kind."""
    kind = str(region.get("type") or "").lower()
    if kind:
        return kind
    return next((k for k in (*_LABEL_KEYS, "choices") if k in region), "unknown")


def _box(region: dict, w: float, h: float) -> tuple[list[float], bool]:
    """The enclosing pixel box of a percent rectangle (rotated about its top-left corner) or polygon; whether it was
    not an upright rectangle."""
    if "points" in region:
        xs = [float(p[0]) * w / 100 for p in region["points"]]
        ys = [float(p[1]) * h / 100 for p in region["points"]]
        if len(xs) < 2:
            raise ValueError("a polygon needs points")
        return [min(xs), min(ys), max(xs), max(ys)], True
    x, y = float(region["x"]) * w / 100, float(region["y"]) * h / 100
    bw, bh = float(region["width"]) * w / 100, float(region["height"]) * h / 100
    angle = math.radians(float(region.get("rotation") or 0))
    if not angle:
        return [x, y, x + bw, y + bh], False
    c, s = math.cos(angle), math.sin(angle)
    xs = [x + dx * c - dy * s for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
    ys = [y + dx * s + dy * c for dx, dy in ((0, 0), (bw, 0), (bw, bh), (0, bh))]
    return [min(xs), min(ys), max(xs), max(ys)], True


class Regions:
    """Reads the regions of a project's tasks onto their samples (boxes, or the class a choice gives) and counts what
    the summary should say: polygons and rotated rectangles boxed, kinds left out, tasks annotated more than once."""

    def __init__(self, problems: Problems):
        self.problems = problems
        self.box_classes: list[str] = []
        self.choice_classes: list[str] = []
        self.boxed = Counter()       # "polygon" / "rotated rectangle" -> how many were replaced by their enclosing box
        self.left_out = Counter()    # region kind (keypointlabels, brushlabels, textarea ...) -> count
        self.several = 0             # tasks with several annotations not cancelled: the latest was read
        self.notes: list[str] = []   # what else the summary should say (which field held the class)

    def read(self, regions: list, sample: RawSample, at: str) -> None:
        """Regions as flat dicts: the result's `value` with `type` and `original_width/height` beside it (JSON-MIN
        and CSV have them so; the full JSON's results are flattened by `flat`)."""
        for region in regions:
            if not isinstance(region, dict):
                self.problems.add(f"{at} has a region that is not a JSON object")
                continue
            kind = _kind(region)
            if kind == "choices":
                self._choice(region, sample, at)
            elif kind in _LABEL_KEYS and region.get(kind):
                self._region(region, kind, sample, at)
            else:
                self.left_out[f"{kind} without a label" if kind in _LABEL_KEYS else kind] += 1

    def _choice(self, region: dict, sample: RawSample, at: str) -> None:
        chosen = region.get("choices") or []
        chosen = [str(c).strip() for c in (chosen if isinstance(chosen, list) else [chosen])]
        if len(chosen) != 1 or (sample.label is not None and sample.label != chosen[0]):
            named = ", ".join(chosen + ([sample.label] if sample.label else []))
            self.problems.add(f"{at} has {len(chosen) + (sample.label is not None)} choices ({named}); an image "
                              "takes one class")
            return
        sample.label = chosen[0]
        if chosen[0] not in self.choice_classes:
            self.choice_classes.append(chosen[0])

    def _region(self, region: dict, kind: str, sample: RawSample, at: str) -> None:
        try:
            ow, oh = float(region["original_width"]), float(region["original_height"])
            if not (math.isfinite(ow) and math.isfinite(oh) and ow > 0 and oh > 0):
                raise ValueError("the original size is not positive")
            box, boxed = _box(region, ow, oh)
        except (KeyError, TypeError, ValueError, IndexError):
            self.problems.add(f"{at} has a region without x/y/width/height (or points) and a positive "
                              "original_width/original_height")
            return
        if sample.frame is None:
            sample.frame = (ow, oh)
        elif sample.frame != (ow, oh):  # results of one task declaring different sizes: scaled to the first
            fw, fh = sample.frame
            box = [box[0] * fw / ow, box[1] * fh / oh, box[2] * fw / ow, box[3] * fh / oh]
        if boxed:
            self.boxed["polygon" if "points" in region else "rotated rectangle"] += 1
        labels = region[kind]
        label = str(labels[0] if isinstance(labels, list) else labels).strip()
        if label not in self.box_classes:
            self.box_classes.append(label)
        sample.boxes.append([*box, label])

    def result(self, samples: list[RawSample], where: str) -> tuple[str, list[str], list[RawSample], list[str]]:
        """(task, classes, samples, warnings): detection when any region is a box, else classification from the
        choices (tasks without one left out, and said)."""
        notes = self.notes + [f"{n} {kind}{'s were' if n > 1 else ' was'} read as {'their' if n > 1 else 'its'} "
                              "enclosing box" for kind, n in self.boxed.items()]
        if self.left_out:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.left_out.items()))
            notes.append(f"{sum(self.left_out.values())} regions that are not a labelled rectangle, polygon or choice "
                         f"were left out ({kinds})")
        if self.several:
            notes.append(f"{self.several} task{'s' if self.several > 1 else ''} of {where} had several annotations: "
                         "the latest one not cancelled was read")
        if self.box_classes or not self.choice_classes:
            dropped = sum(s.label is not None for s in samples)
            if dropped:
                notes.append(f"the choices of {dropped} tasks were left out: the project draws boxes")
            for s in samples:
                s.label = None
            return "detection", self.box_classes, samples, notes
        kept = [s for s in samples if s.label is not None]
        if len(kept) < len(samples):
            n = len(samples) - len(kept)
            notes.append(f"{n} task{'s' if n > 1 else ''} without a choice {'were' if n > 1 else 'was'} left out")
        return "classification", self.choice_classes, kept, notes
