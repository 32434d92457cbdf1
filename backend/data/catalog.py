"""Reading and deleting imported datasets: summaries, samples, image paths."""
from __future__ import annotations

import shutil
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from backend.data.importer import staging_root
from backend.data.safety import ImportProblem
from backend.data.split import HELD_OUT, SPLITS
from storage import Store, locked
from storage.models import Dataset, Rollout, Run, Sample


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
    split_counts = {**{k: splits.get(k, 0) for k in SPLITS}, "total": len(ds.samples)}
    class_counts = {c: {k: per_class[c][k] for k in SPLITS} for c in ds.classes}
    return split_counts, class_counts


def split_note(origin: str, counts: dict, val_fraction: float) -> str:
    """Where the split came from, in a phrase: 'split from the export: 60 train / 20 val / 10 test' or
    'no split in the export: 20 % held out, stratified'."""
    if origin == "export":
        return "split from the export: " + " / ".join(f"{counts[k]} {k}" for k in SPLITS if counts[k] or k == "train")
    if not val_fraction:
        return "no split in the export: nothing held out"
    return f"no split in the export: {val_fraction * 100:g} % held out, stratified"


def heldout_split(dataset: dict) -> tuple[str, list[dict]]:
    """The split held-out evaluations use and its samples: 'val' where it has images, else 'test' (an export with
    train and test only). Where both exist, test is kept apart (evaluate on it by name)."""
    for name in HELD_OUT:
        chosen = [s for s in dataset["samples"] if s["split"] == name]
        if chosen:
            return name, chosen
    return HELD_OUT[0], []


def summary(ds: Dataset, with_samples: bool = False) -> dict:
    """Name, task, classes, counts per split and per class (boxes for detection, images otherwise), and where the
    split came from."""
    split_counts, class_counts = _counts(ds)
    out = {"id": ds.id, "name": ds.name, "task": ds.task, "format": ds.source_format, "classes": ds.classes,
           "synonyms": ds.synonyms, "counts": split_counts, "per_class": class_counts,
           "val_fraction": ds.val_fraction, "split_origin": ds.split_origin,
           "split_note": split_note(ds.split_origin, split_counts, ds.val_fraction),
           "warnings": ds.warnings, "created_at": ds.created_at.isoformat(), "folder": ds.folder}
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


def _in_use(name: str, runs: list[tuple[int, str]]) -> str:
    """One sentence naming the queued or running runs that use a dataset."""
    listed = [f"{run_id} ({status})" for run_id, status in runs]
    names = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
    one = len(runs) == 1
    return (f"dataset '{name}' is used by run{'' if one else 's'} {names}; cancel {'it' if one else 'them'} or wait "
            f"until {'it finishes' if one else 'they finish'}, then delete the dataset")


def _keep_rollouts(s, data_dir: Path, ds: Dataset) -> None:
    """What finished runs show of their rollouts outlives the dataset: each rollout's image is copied into its
    run's folder (`runs/ID/rollout-images/`) and its ground truth into the row."""
    prefix = f"{ds.folder}/"
    sample_ids = select(Sample.id).where(Sample.dataset_id == ds.id)
    rows = s.scalars(select(Rollout).where(or_(Rollout.sample_id.in_(sample_ids),
                                               Rollout.image.startswith(prefix, autoescape=True)))).all()
    if not rows:
        return
    folders = dict(s.execute(select(Run.id, Run.folder).where(Run.id.in_({r.run_id for r in rows}))).all())
    samples = {smp.id: smp for smp in s.scalars(select(Sample).where(Sample.dataset_id == ds.id))}
    for r in rows:
        if r.truth is None and r.sample_id in samples:
            r.truth = sample_json(samples[r.sample_id])
        if not r.image.startswith(prefix):
            continue
        rest = r.image[len(prefix):]
        rest = rest[len("images/"):] if rest.startswith("images/") else rest
        target = f"{folders.get(r.run_id) or f'runs/{r.run_id}'}/rollout-images/{rest}"
        src, dst = data_dir / r.image, data_dir / target
        try:
            if not dst.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
        except OSError:
            continue  # already missing: the Runs tab shows a placeholder
        r.image = target
    s.flush()


def delete_dataset(store: Store, data_dir: Path, name: str) -> None:
    """Remove the rows, then the files (moved aside first so a crash leaves no half folder in place).

    Refused, with a sentence naming them, while queued or running runs use the dataset. Finished runs keep
    their metrics and evaluations (rows of their own) and their rollouts: images and truth are copied first.
    """
    data_dir = Path(data_dir)
    with store.write() as s:
        found = s.scalar(select(Dataset.id).where(Dataset.name == name))
        ds = locked(s, Dataset, found) if found is not None else None  # create_run and resume_run lock it too
        if ds is None:
            raise ImportProblem(f"there is no dataset named '{name}'")
        active = s.execute(select(Run.id, Run.status).where(Run.dataset_id == ds.id,
                                                            Run.status.in_(("queued", "running"))).order_by(Run.id)).all()
        if active:
            raise ValueError(_in_use(name, [tuple(a) for a in active]))
        _keep_rollouts(s, data_dir, ds)
        folder = data_dir / ds.folder
        s.delete(ds)
    if folder.exists():
        trash = staging_root(data_dir) / f"deleted-{uuid.uuid4().hex}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
