"""Adding labelled images to a dataset as training images: a new dataset (imported like any upload, nothing held
out), or one that exists (its images copied in beside the others, the rows added in one transaction)."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from sqlalchemy import select

from backend.data.common import ExportImage, ExportSet, Problems
from backend.data.exporter import write_export
from backend.data.importer import check_new_name, clean_box, import_dataset, staging_root
from backend.data.safety import ImportProblem
from storage import Store, locked
from storage.models import Dataset, Sample


def add_to_dataset(store: Store, data_dir: Path, name: str, images: list[ExportImage], new: bool) -> int:
    """Add `images` (boxes in their pixels; a sixth item, the confidence, is dropped) as training images of dataset
    `name`, created when `new`; returns how many were added. One sentence for what is wrong, nothing half-added."""
    if not images:
        raise ImportProblem("no accepted images to add")
    data_dir = Path(data_dir)
    if new:
        check_new_name(store, name)
        staging = staging_root(data_dir) / f"add-{uuid.uuid4().hex}"
        try:
            classes = list(dict.fromkeys(b[4] for im in images for b in im.boxes))
            train = [ExportImage(im.source, im.name, "train", im.width, im.height, [b[:5] for b in im.boxes])
                     for im in images]
            write_export(ExportSet(name, classes, train), "coco", staging / "labelled")
            import_dataset(store, data_dir, [staging / "labelled"], name, task="detection", val_fraction=0.0)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return len(images)
    with store.read() as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == name))
        if ds is None:
            raise ImportProblem(f"there is no dataset named '{name}'")
        if ds.task != "detection":
            raise ImportProblem(f"dataset '{name}' holds {ds.task} labels; labelled boxes go to a detection dataset")
        folder_rel = ds.folder
    sub = f"labelled-{uuid.uuid4().hex[:8]}"
    target = data_dir / folder_rel / "images" / sub
    problems = Problems()
    rows = []
    for im in images:
        boxes = []
        for b in im.boxes:
            box, _ = clean_box(b[:4], im.width, im.height, im.name, problems)
            if box is not None:
                boxes.append([*box, b[4]])
        rows.append({"file": f"{sub}/{im.name}", "split": "train", "width": im.width, "height": im.height,
                     "annotation": {"boxes": boxes}, "source": im.source})
    problems.raise_if_any()
    try:
        target.mkdir(parents=True)
        for row in rows:
            shutil.copyfile(row.pop("source"), data_dir / folder_rel / "images" / row["file"])
        with store.write() as s:
            ds = locked(s, Dataset, s.scalar(select(Dataset.id).where(Dataset.name == name)))
            if ds is None:
                raise ImportProblem(f"there is no dataset named '{name}'")
            labels = [b[4] for r in rows for b in r["annotation"]["boxes"]]
            ds.classes = list(dict.fromkeys([*ds.classes, *labels]))
            s.add_all(Sample(dataset_id=ds.id, **row) for row in rows)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return len(rows)
