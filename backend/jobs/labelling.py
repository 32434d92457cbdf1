"""Labelling unlabelled images with a tuned run (its best checkpoint) or a base model: which images a list of paths
means (folders, images, zips), which classes to ask for, and the images' boxes, asked class by class the way the run
was trained (backend.jobs.predict), BATCH images in one batched generate. `python app.py label` runs it in its own
process; the worker's answerers run it for labelling jobs (backend.jobs.label_queue)."""
from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from backend.data.catalog import get_dataset
from backend.data.config import ImportLimits
from backend.data.safety import IGNORED_PARTS, IMAGE_SUFFIXES, ByteBudget, ImportProblem, extract_zip, probe_image
from backend.data.workspace import Workspace
from backend.jobs.predict import CHECKPOINTS, predict_many
from backend.jobs.runs import dataset_name, get_run
from backend.scoring.subsets import parse_class_list


BATCH = 8
"""Images labelled together: their prompts (one per class) go to the model as one batch (measured on the CPU
demo, benchmarks/label_speed.py: 8 prompts a call label 856-996 images a minute, one a call 234), and a crash or
cancel loses at most the batch it is on."""


@dataclass
class Source:
    """What labelling asks: a run (its best or last adapter) or a base model, the classes, the confidence kept."""
    run_id: int | None = None
    model: str | None = None
    classes: list[str] | None = None
    min_confidence: float = 0.0
    checkpoint: str = "best"

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "model": self.model, "classes": self.classes,
                "min_confidence": self.min_confidence, "checkpoint": self.checkpoint}

    @classmethod
    def from_json(cls, doc: dict) -> Source:
        return cls(doc.get("run_id"), doc.get("model"), doc.get("classes"), float(doc.get("min_confidence") or 0.0),
                   doc.get("checkpoint") or "best")


def resolve(ws: Workspace, source: Source) -> Source:
    """The source checked, with its classes filled in (a run's: its dataset's, unless named): ValueError with one
    sentence for a run that does not detect, a model without classes, a confidence outside 0..1."""
    if (source.run_id is None) == (not (source.model or "").strip()):
        raise ValueError("choose a run or a base model to label with")
    if source.checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}")
    if not 0.0 <= source.min_confidence <= 1.0:
        raise ValueError(f"the minimum confidence must be between 0 and 1, got {source.min_confidence:g}")
    classes = [c for c in (source.classes or []) if c.strip()]
    if source.run_id is not None:
        run = get_run(ws.store, source.run_id)
        if run.task != "detection":
            raise ValueError(f"run {run.id} was trained for {run.task}; labelling draws boxes: choose a detection run")
        if not classes:
            classes = get_dataset(ws.store, dataset_name(ws.store, run), with_samples=False)["classes"]
    elif not classes:
        raise ValueError("name the classes to label (like --classes cat,dog): a base model has no dataset to take "
                         "them from")
    return Source(source.run_id, (source.model or "").strip() or None, classes, source.min_confidence,
                  source.checkpoint)


def classes_from_text(text: str | None) -> list[str] | None:
    return parse_class_list(text) if text and text.strip() else None


def label_images(ws: Workspace, images: list[Path], source: Source) -> list[list[list]]:
    """The boxes of every class on each image, [x1, y1, x2, y2, label, confidence] in pixels of the upright original
    (a box the model gave no confidence counts as 1.0), those under the minimum confidence left out, the most
    confident first; every (image, class) prompt answered in one batched call."""
    classes = source.classes or []
    asks = [(image, cls, None) for image in images for cls in classes]
    results = predict_many(ws, asks, run_id=source.run_id,
                           model=None if source.run_id is not None else source.model,
                           checkpoint=source.checkpoint) if asks else []
    out: list[list[list]] = [[] for _ in images]
    for n, result in enumerate(results):
        cls = classes[n % len(classes)]
        for box, conf in zip(result.get("boxes", []), result.get("confidences", [])):
            conf = round(float(1.0 if conf is None else conf), 4)
            if conf >= source.min_confidence:
                out[n // len(classes)].append([*[round(float(v), 2) for v in box[:4]], cls, conf])
    return [sorted(boxes, key=lambda b: -b[5]) for boxes in out]


def collect_images(paths: list[Path], unpack_to: Path, limits: ImportLimits | None = None,
                   names: list[str] | None = None) -> list[tuple[str, Path]]:
    """(the path a person knows it by, the file to read) for every image `paths` name: an image, a folder's images
    (all depths, in name order), a zip's images ('photos.zip/a/b.jpg'; unpacked under `unpack_to`). Each image is
    checked first: one sentence for the first path that is not there, not an image, or broken. `names`: what the
    person calls each path (an upload's own name, not the server's copy of it), shown instead of the path."""
    limits = limits or ImportLimits.from_env()
    found: list[tuple[str, Path]] = []
    budget = ByteBudget(limits)
    for n, path in enumerate(Path(p) for p in paths):
        label = names[n] if names else str(path)
        if names and not (path.is_file() and not path.is_symlink()):  # uploads: regular files only
            raise ImportProblem(f"{label} is not an uploaded file")
        if path.is_dir():
            found += [(str(p), p) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                      and not any(part in IGNORED_PARTS or part.startswith("._") for part in p.relative_to(path).parts)]
        elif path.is_file() and zipfile.is_zipfile(path):
            target = unpack_to / f"{n:03d}"
            extract_zip(path, target, limits, budget, Path(label).name)
            found += [(f"{label}/{p.relative_to(target).as_posix()}", p) for p in sorted(target.rglob("*"))
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.is_file():
            found.append((label, path))
        else:
            raise ImportProblem(f"{label} does not exist")
    if not found:
        raise ImportProblem("no images were found in " + ", ".join(names or [str(p) for p in paths]))
    if len(found) > limits.max_images:
        raise ImportProblem(f"{len(found)} images were given; the limit is {limits.max_images} at once")
    for shown, file in found:
        probe_image(file, limits, shown)
    return found


def label_paths(ws: Workspace, paths: list[Path], source: Source, progress=None) -> dict:
    """`python app.py label`: {"images": [{"path", "boxes": [[x1, y1, x2, y2, label, confidence], ...]}, ...]} for
    every image `paths` name, in their order; `progress(done, total, seconds)` after each."""
    import shutil
    import uuid
    source = resolve(ws, source)
    unpack = ws.data_dir / ".staging" / f"label-{uuid.uuid4().hex}"
    try:
        images = collect_images(paths, unpack)
        out, started = [], time.monotonic()
        for start in range(0, len(images), BATCH):
            batch = images[start:start + BATCH]
            for (shown, _), boxes in zip(batch, label_images(ws, [file for _, file in batch], source)):
                out.append({"path": shown, "boxes": boxes})
            if progress is not None:
                progress(len(out), len(images), time.monotonic() - started)
        return {"images": out}
    finally:
        shutil.rmtree(unpack, ignore_errors=True)
