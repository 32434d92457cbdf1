"""Export a dataset, or labels a person reviewed, in an annotation format (backend.data.writers): into an empty
folder or a zip, all or nothing, the original images byte for byte with boxes in their pixels and the split kept."""
from __future__ import annotations

import os
import shutil
import uuid
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from backend.data.common import ExportImage, ExportSet
from backend.data.safety import IMAGE_SUFFIXES, ImportProblem
from backend.data.writers import WRITERS
from storage import Store
from storage.models import Dataset


def export_names(files: list[str]) -> list[str]:
    """A unique name in the export for each stored file: its own name, unless another shares its stem (labels and
    VOC annotations are named by stem; 'a.jpg' and 'a.png', or 'train/a.jpg' and 'val/a.jpg'), then its folders
    and extension joined in ('train_a_jpg.jpg', as Roboflow names files), numbered should that still collide."""
    names = [PurePosixPath(f).name for f in files]
    stems = Counter(PurePosixPath(n).stem.lower() for n in names)
    used: set[str] = set()
    out = []
    for file, name in zip(files, names):
        if stems[PurePosixPath(name).stem.lower()] > 1:  # the folders and the extension made part of the stem
            path = PurePosixPath(file)
            name = "_".join([*path.parts[:-1], path.stem, *([path.suffix[1:]] if path.suffix else [])]) + path.suffix
        base, k = PurePosixPath(name), 1
        while PurePosixPath(name).stem.lower() in used:
            k += 1
            name = f"{base.stem}_{k}{base.suffix}"
        used.add(PurePosixPath(name).stem.lower())
        out.append(name)
    return out


def dataset_export_set(store: Store, data_dir: Path, name: str) -> ExportSet:
    """A detection dataset's images, splits and boxes as an export takes them."""
    with store.read() as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == name).options(selectinload(Dataset.samples)))
        if ds is None:
            raise ImportProblem(f"there is no dataset named '{name}'")
        if ds.task != "detection":
            raise ImportProblem(f"dataset '{name}' holds {ds.task} labels; only detection datasets export as "
                                f"{', '.join(WRITERS)}")
        folder = Path(data_dir) / ds.folder / "images"
        samples = list(ds.samples)
        names = export_names([smp.file for smp in samples])
        images = [ExportImage(folder / smp.file, n, smp.split, smp.width, smp.height,
                              [list(b) for b in smp.annotation.get("boxes", [])]) for smp, n in zip(samples, names)]
        return ExportSet(ds.name, list(ds.classes), images)


def _check_out(fmt: str, out: Path) -> bool:
    """Whether the export goes into a zip; ImportProblem for an unknown format or an output already there."""
    if fmt not in WRITERS:
        raise ImportProblem(f"unknown export format '{fmt}' (choose {', '.join(WRITERS)})")
    if out.suffix.lower() == ".zip":
        if out.exists():
            raise ImportProblem(f"{out} already exists")
        return True
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ImportProblem(f"{out} is not an empty folder")
    return False


def write_export(export_set: ExportSet, fmt: str, out: Path) -> Path:
    """Write `export_set` as `fmt` to the folder `out` (new or empty), or to the zip `out` (a name ending in .zip).
    It is written aside and moved into place at the end: on any failure nothing is left behind."""
    out = Path(out)
    as_zip = _check_out(fmt, out)
    if not export_set.images:
        raise ImportProblem("there are no images to export")
    missing = [im.source.name for im in export_set.images if not im.source.is_file()]
    if missing:
        raise ImportProblem(f"{len(missing)} image{'s are' if len(missing) > 1 else ' is'} no longer on disk "
                            f"(first: {missing[0]})")
    created = next((p for p in reversed(out.parents) if not p.exists()), None)  # made here: removed on failure
    token = uuid.uuid4().hex[:8]
    staging = out.parent / f".{out.name}.partial-{token}"
    packed = out.parent / f".{out.name}.partial-{token}.zip"
    done = False
    try:
        staging.mkdir(parents=True)
        WRITERS[fmt].write(export_set, staging)
        if as_zip:
            _zip(staging, packed)
            os.replace(packed, out)
        else:
            if out.exists():
                out.rmdir()  # empty, checked above
            os.rename(staging, out)
        done = True
        return out
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        packed.unlink(missing_ok=True)
        if not done and created is not None:
            shutil.rmtree(created, ignore_errors=True)


def _zip(folder: Path, archive: Path) -> None:
    """The folder's contents at the archive's root (images stored as they are: they are compressed already)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                kind = zipfile.ZIP_STORED if p.suffix.lower() in IMAGE_SUFFIXES else zipfile.ZIP_DEFLATED
                zf.write(p, p.relative_to(folder).as_posix(), compress_type=kind)


def export_dataset(store: Store, data_dir: Path, name: str, fmt: str, out: Path) -> Path:
    """Dataset `name` as `fmt` (coco, yolo, voc, labelstudio) in the folder or zip `out`; see `write_export`."""
    _check_out(fmt, Path(out))
    return write_export(dataset_export_set(store, data_dir, name), fmt, Path(out))
