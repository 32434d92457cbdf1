"""Reading and deleting imported datasets: summaries, samples, image paths."""
from __future__ import annotations

import shutil
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from backend.datasets.importer import staging_root
from backend.datasets.safety import ImportProblem
from storage import Store
from storage.models import Dataset, Sample


def _round(box: list) -> list:
    return [round(float(v), 2) for v in box[:4]] + list(box[4:])


def sample_json(sample: Sample) -> dict:
    """One image as `datasets show --json` prints it (absolute pixels of the original image)."""
    out = {"id": sample.id, "file": sample.file, "split": sample.split, "width": sample.width, "height": sample.height}
    ann = sample.annotation
    if "boxes" in ann:
        out["boxes"] = [_round(b) for b in ann["boxes"]]
    if "label" in ann:
        out["label"] = ann["label"]
    if "expression" in ann:
        out["expression"] = ann["expression"]
        out["box"] = _round(ann["box"])
    return out


def _counts(ds: Dataset) -> tuple[dict, dict]:
    splits = Counter(s.split for s in ds.samples)
    per_class: dict[str, Counter] = defaultdict(Counter)
    for s in ds.samples:
        labels = [b[4] for b in s.annotation.get("boxes", [])]
        if "label" in s.annotation:
            labels = [s.annotation["label"]]
        for label in labels:
            per_class[label][s.split] += 1
    split_counts = {"train": splits.get("train", 0), "val": splits.get("val", 0), "total": len(ds.samples)}
    class_counts = {c: {"train": per_class[c]["train"], "val": per_class[c]["val"]} for c in ds.classes}
    return split_counts, class_counts


def summary(ds: Dataset, with_samples: bool = False) -> dict:
    """Name, task, classes and counts per split and per class (boxes for detection, images otherwise)."""
    split_counts, class_counts = _counts(ds)
    out = {"id": ds.id, "name": ds.name, "task": ds.task, "format": ds.source_format, "classes": ds.classes,
           "synonyms": ds.synonyms, "counts": split_counts, "per_class": class_counts,
           "val_fraction": ds.val_fraction, "warnings": ds.warnings, "created_at": ds.created_at.isoformat(),
           "folder": ds.folder}
    if with_samples:
        out["samples"] = [sample_json(s) for s in ds.samples]
    return out


def list_datasets(store: Store) -> list[dict]:
    with store.read() as s:
        rows = s.scalars(select(Dataset).options(selectinload(Dataset.samples)).order_by(Dataset.id)).all()
        return [summary(ds) for ds in rows]


def dataset_names(store: Store) -> list[str]:
    with store.read() as s:
        return list(s.scalars(select(Dataset.name).order_by(Dataset.id)))


def get_dataset(store: Store, name: str, with_samples: bool = True) -> dict:
    with store.read() as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == name).options(selectinload(Dataset.samples)))
        if ds is None:
            raise ImportProblem(f"there is no dataset named '{name}'")
        return summary(ds, with_samples)


def image_path(data_dir: Path, dataset: dict, sample: dict) -> Path:
    return Path(data_dir) / dataset["folder"] / "images" / sample["file"]


def delete_dataset(store: Store, data_dir: Path, name: str) -> None:
    """Remove the rows, then the files (moved aside first so a crash leaves no half folder in place)."""
    with store.write() as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == name))
        if ds is None:
            raise ImportProblem(f"there is no dataset named '{name}'")
        folder = Path(data_dir) / ds.folder
        s.delete(ds)
    if folder.exists():
        trash = staging_root(data_dir) / f"deleted-{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
