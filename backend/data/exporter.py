"""Export a dataset, or labels a person reviewed, in an annotation format (backend.data.writers): into an empty
folder or a zip, all or nothing, the original images byte for byte with boxes in their pixels and the split kept."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import time
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


PARTIAL = ".partial-vrft-"
"""In the name of an export's hidden work folder, written beside its target and renamed into place:
`.NAME.partial-vrft-HOST-PID-START-TOKEN` (HOST a hash of this host's name, PID and START its writer's process id and
start time). A writer killed with SIGKILL leaves it behind; the next export into that folder (and, for the page's
exports in the data dir, the next start) removes the ones whose writer is gone, and only those."""
_PARTIAL_NAME = re.compile(r"\.partial-vrft-([0-9a-f]{8})-(\d+)-(\d+)-[0-9a-f]+")
PAGE_EXPORTS = "exports"
"""Under the data dir's staging folder: the page's exports, each removed once Gradio has its copy."""


def _start_time(pid: int) -> int:
    """When process `pid` started (clock ticks since boot), 0 when unknown (no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _host() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _writer_gone(host: str, pid: int, start: int) -> bool:
    """Whether the process named in a work folder's name is gone (never true for another host's)."""
    if host != _host():
        return False
    if start and Path("/proc").is_dir():
        return _start_time(pid) != start
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        return True
    except OSError:
        return False


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove the work folders of exports into `folder` whose writer was killed (see PARTIAL); the ones removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _PARTIAL_NAME.search(entry.name)
        if not (entry.name.startswith(".") and m and m.end() == len(entry.name)) or entry.is_symlink():
            continue
        if _writer_gone(m.group(1), int(m.group(2)), int(m.group(3))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def owned_folder(parent: Path, name: str) -> Path:
    """A new hidden folder in `parent` named with this process (see PARTIAL): removed by whoever finds it after this
    process was killed."""
    folder = Path(parent) / f".{name}{PARTIAL}{_host()}-{os.getpid()}-{_start_time(os.getpid())}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    return folder


def page_export_folder(data_dir: Path) -> Path:
    """A folder of its own for one of the page's exports, in the data dir (removed once Gradio has its copy); the
    folders of exports whose page was killed go first."""
    exports = Path(data_dir) / ".staging" / PAGE_EXPORTS
    remove_leftovers(exports)
    return owned_folder(exports, "download")


def sweep_page_exports(data_dir: Path) -> None:
    """At start: the folders the page's exports left when the page, or the export, was killed."""
    remove_leftovers(Path(data_dir) / ".staging" / PAGE_EXPORTS)


def _blocked(out: Path, e: OSError) -> str:
    """Why the export cannot be written to `out`, in words (a file where a folder must be, a folder that cannot be
    made, permissions)."""
    for parent in reversed(out.parents):
        if parent.exists() and not parent.is_dir():
            return f"{parent} is a file, not a folder"
    missing = next((p for p in reversed(out.parents) if not p.exists()), None)
    if missing is not None:
        return f"the folder {missing} cannot be created ({e.strerror or e})"
    if e.filename is not None and PARTIAL in str(e.filename):  # our work folder beside the target
        return f"nothing can be written in {out.parent} ({e.strerror or e})"
    return f"{e.strerror or e}" + (f" ({e.filename})" if e.filename is not None else "")


def write_export(export_set: ExportSet, fmt: str, out: Path) -> Path:
    """Write `export_set` as `fmt` to the folder `out` (new or empty), or to the zip `out` (a name ending in .zip).
    It is written aside (a work folder named with its writer, see PARTIAL) and moved into place at the end: on any
    failure nothing is left behind, and a writer killed outright leaves a work folder the next export removes.
    ImportProblem, naming `out`, when it cannot be written there."""
    out = Path(out)
    as_zip = _check_out(fmt, out)
    if not export_set.images:
        raise ImportProblem("there are no images to export")
    missing = [im.source.name for im in export_set.images if not im.source.is_file()]
    if missing:
        raise ImportProblem(f"{len(missing)} image{'s are' if len(missing) > 1 else ' is'} no longer on disk "
                            f"(first: {missing[0]})")
    created = next((p for p in reversed(out.parents) if not p.exists()), None)  # made here: removed on failure
    work, done = None, False
    try:
        work = owned_folder(out.parent, out.name)
        remove_leftovers(out.parent)  # an export killed here before
        tree, packed = work / "export", work / "export.zip"
        tree.mkdir()
        WRITERS[fmt].write(export_set, tree)
        if as_zip:
            _zip(tree, packed)
            os.replace(packed, out)
        else:
            if out.exists():
                out.rmdir()  # empty, checked above
            os.rename(tree, out)
        done = True
        return out
    except OSError as e:
        raise ImportProblem(f"cannot write the export to {out}: {_blocked(out, e)}") from None
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
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
