"""Labelling jobs queued for the worker: the page (or a script) submits images, an answerer process the worker owns
labels them a few at a time between Test-tab questions (backend.jobs.answerer), the page follows the progress and
reviews the answers.

Each image's boxes are written once, with `answered_at`, under the job's owner: an answerer that dies (or a worker
killed with it) leaves its job running with a heartbeat that stops; after STALE_SECONDS any answerer takes it up
again and labels only the images that have no answer yet. Cancel stops it before its next image."""
from __future__ import annotations

import shutil
import time
import traceback
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Callable

from sqlalchemy import and_, func, or_, select

from backend.data.common import ExportImage, ExportSet
from backend.data.config import ImportLimits
from backend.data.exporter import export_names
from backend.data.safety import probe_image
from backend.data.workspace import Workspace
from backend.jobs.labelling import BATCH, Source, collect_images, label_images, resolve
from storage import db_now
from storage.atomic import update_where
from storage.models import LabelItem, LabelJob

FOLDER = "labelling"
"""Under the data dir: each job's images (`labelling/<id>/`), kept until the job is deleted (the review shows them)."""
STALE_SECONDS = 120
"""A running job whose answerer has not written for this long is taken up by another."""
REVIEWS = ("accepted", "rejected")


def submit(ws: Workspace, source: Source, paths: list[Path], on_cpu: bool = False,
           names: list[str] | None = None) -> int:
    """Queue the images `paths` name (folders, images, zips) for labelling; they are checked and copied into the data
    dir first (the answerer may be another host's). One sentence for what is wrong, and nothing left behind.
    `names`: what the person calls each path (the page's uploads: their own names; then each must be a file)."""
    source = resolve(ws, source)
    unpack = ws.data_dir / ".staging" / f"label-{uuid.uuid4().hex}"
    job_id = None
    try:
        images = collect_images(paths, unpack, names=names)
        with ws.store.write() as s:
            job = LabelJob(status="preparing", on_cpu=bool(on_cpu), source=source.to_json(), total=len(images))
            s.add(job)
            s.flush()
            job_id = job.id
        folder = ws.data_dir / FOLDER / str(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        limits = ImportLimits.from_env()
        for i, (shown, file) in enumerate(images):
            stored = f"{i:05d}_{file.name}"
            shutil.copyfile(file, folder / stored)
            width, height = probe_image(folder / stored, limits, shown)
            rows.append(LabelItem(job_id=job_id, position=i, image=f"{FOLDER}/{job_id}/{stored}", name=shown,
                                  width=width, height=height, boxes=[]))
        with ws.store.write() as s:
            s.add_all(rows)
            update_where(s, LabelJob, job_id, status="queued")
        return job_id
    except BaseException:
        if job_id is not None:
            shutil.rmtree(ws.data_dir / FOLDER / str(job_id), ignore_errors=True)
            with ws.store.write() as s:
                row = s.get(LabelJob, job_id)
                if row is not None:
                    s.delete(row)
        raise
    finally:
        shutil.rmtree(unpack, ignore_errors=True)


def _served_by(cpu: bool | None):
    return True if cpu is None else LabelJob.on_cpu.is_(cpu)


def _claimable(now):
    """Queued, or running with an answerer that stopped beating."""
    return or_(LabelJob.status == "queued",
               and_(LabelJob.status == "running", or_(LabelJob.heartbeat_at.is_(None),
                                                      LabelJob.heartbeat_at < now - timedelta(seconds=STALE_SECONDS))))


def pending(ws: Workspace, cpu: bool | None) -> bool:
    with ws.store.read() as s:
        return s.scalar(select(LabelJob.id).where(_claimable(db_now(s)), _served_by(cpu)).limit(1)) is not None


def claim(ws: Workspace, owner: str, cpu: bool | None) -> int | None:
    """Take the oldest job waiting (or abandoned) that this answerer serves; its id, or None."""
    with ws.store.write() as s:
        now = db_now(s)
        row = s.scalars(select(LabelJob).where(_claimable(now), _served_by(cpu)).order_by(LabelJob.id).limit(1)
                        .with_for_update(skip_locked=True)).first()
        if row is None or not update_where(s, LabelJob, row.id, _claimable(now), status="running", owner=owner,
                                           heartbeat_at=now, started_at=row.started_at or now):
            return None
        return row.id


def work(ws: Workspace, job_id: int, owner: str, stop: Callable[[], bool] = lambda: False,
         label: Callable = label_images, batch: int = BATCH) -> int:
    """Label the job's images that have no answer yet, in order and `batch` at a time (one batched generate), until
    none is left (the job is done), the job is no longer this owner's (cancelled, or taken up after a stall) or
    `stop()` says so (the job goes back to the queue). Returns how many images were labelled here."""
    with ws.store.read() as s:
        source = Source.from_json(s.get(LabelJob, job_id).source)
    done = 0
    while True:
        if stop():
            release(ws, owner)
            return done
        with ws.store.read() as s:
            items = s.scalars(select(LabelItem).where(LabelItem.job_id == job_id, LabelItem.answered_at.is_(None))
                              .order_by(LabelItem.position).limit(batch)).all()
            ours = s.scalar(select(LabelJob.id).where(LabelJob.id == job_id, LabelJob.status == "running",
                                                      LabelJob.owner == owner)) is not None
        if not ours:
            return done
        if not items:
            with ws.store.write() as s:
                update_where(s, LabelJob, job_id, LabelJob.owner == owner, LabelJob.status == "running",
                             status="done", owner=None, finished_at=db_now(s))
            return done
        started = time.monotonic()
        try:
            answers = label(ws, [ws.data_dir / item.image for item in items], source)
        except Exception as e:  # noqa: BLE001 - a run without its adapter, a model that fails: one sentence, the
            if not isinstance(e, ValueError):  # answers so far kept; the traceback goes to the answerer's log
                traceback.print_exc()
            why = str(e) if isinstance(e, ValueError) else f"labelling failed ({type(e).__name__}: {e})"
            with ws.store.write() as s:
                update_where(s, LabelJob, job_id, LabelJob.owner == owner, status="failed", error=why, owner=None,
                             finished_at=db_now(s))
            return done
        seconds = (time.monotonic() - started) / len(items)
        with ws.store.write() as s:  # written once, and only while the job is still ours
            now = db_now(s)
            if not update_where(s, LabelJob, job_id, LabelJob.owner == owner, LabelJob.status == "running",
                                heartbeat_at=now):
                return done
            for item, boxes in zip(items, answers):
                if update_where(s, LabelItem, item.id, LabelItem.answered_at.is_(None), boxes=boxes,
                                seconds=seconds, answered_at=now):
                    done += 1


def release(ws: Workspace, owner: str) -> int:
    """Put the jobs `owner` was labelling back in the queue (the answerer is stopping); how many."""
    with ws.store.write() as s:
        ids = s.scalars(select(LabelJob.id).where(LabelJob.status == "running", LabelJob.owner == owner)).all()
        return sum(update_where(s, LabelJob, i, LabelJob.owner == owner, status="queued", owner=None) for i in ids)


def cancel(ws: Workspace, job_id: int) -> str:
    """Stop a job before its next image (the answers given are kept for review); its status afterwards."""
    with ws.store.write() as s:
        row = s.get(LabelJob, job_id)
        if row is None:
            raise ValueError(f"there is no labelling job {job_id}")
        if row.status in ("preparing", "queued", "running"):
            update_where(s, LabelJob, job_id, LabelJob.status.in_(("preparing", "queued", "running")),
                         status="cancelled", owner=None, finished_at=db_now(s))
            return "cancelled"
        return row.status


def progress(ws: Workspace, job_id: int) -> dict:
    """{"id", "status", "total", "answered", "seconds_per_image", "eta_seconds", "error", "source"}: the time per image
    is the mean of the last 20 answers, the ETA that times the images left."""
    with ws.store.read() as s:
        job = s.get(LabelJob, job_id)
        if job is None:
            raise ValueError(f"there is no labelling job {job_id}")
        answered = s.scalar(select(func.count(LabelItem.id)).where(LabelItem.job_id == job_id,
                                                                  LabelItem.answered_at.is_not(None)))
        recent = s.scalars(select(LabelItem.seconds).where(LabelItem.job_id == job_id, LabelItem.seconds.is_not(None))
                           .order_by(LabelItem.answered_at.desc()).limit(20)).all()
        each = sum(recent) / len(recent) if recent else None
        left = job.total - answered
        eta = 0.0 if not left else None if each is None else each * left
        return {"id": job.id, "status": job.status, "total": job.total, "answered": answered,
                "seconds_per_image": each, "eta_seconds": eta, "error": job.error, "source": job.source}


def items(ws: Workspace, job_id: int) -> list[dict]:
    """The job's answered images: {"id", "position", "name", "image" (relative to the data dir), "width", "height",
    "boxes", "review", "rejected_boxes" (indices into boxes)}."""
    with ws.store.read() as s:
        rows = s.scalars(select(LabelItem).where(LabelItem.job_id == job_id, LabelItem.answered_at.is_not(None))
                         .order_by(LabelItem.position)).all()
        return [{"id": r.id, "position": r.position, "name": r.name, "image": r.image, "width": r.width,
                 "height": r.height, "boxes": list(r.boxes), "review": r.review,
                 "rejected_boxes": sorted(r.rejected_boxes or [])} for r in rows]


def review(ws: Workspace, job_id: int, positions: list[int], decision: str | None) -> int:
    """Accept or reject (None: undecide) answered images of a job by position; how many were marked."""
    if decision not in (*REVIEWS, None):
        raise ValueError(f"a review is one of {', '.join(REVIEWS)}")
    with ws.store.write() as s:
        rows = s.scalars(select(LabelItem).where(LabelItem.job_id == job_id, LabelItem.position.in_(positions),
                                                 LabelItem.answered_at.is_not(None))).all()
        for r in rows:
            r.review = decision
        return len(rows)


def reject_boxes(ws: Workspace, job_id: int, position: int, rejected: list[int]) -> list[int]:
    """Set which boxes of one answered image are rejected (indices into its boxes; [] = none); returns them."""
    with ws.store.write() as s:
        row = s.scalar(select(LabelItem).where(LabelItem.job_id == job_id, LabelItem.position == position,
                                               LabelItem.answered_at.is_not(None)))
        if row is None:
            raise ValueError(f"image #{position} of labelling job {job_id} has no answer yet")
        wrong = [i for i in rejected if not 0 <= int(i) < len(row.boxes)]
        if wrong:
            raise ValueError(f"image #{position} has {len(row.boxes)} boxes; there is no box {wrong[0] + 1}")
        row.rejected_boxes = sorted({int(i) for i in rejected})
        return list(row.rejected_boxes)


def kept_boxes(item: dict) -> list[list]:
    """An answered image's boxes less the ones a person rejected."""
    gone = set(item.get("rejected_boxes") or [])
    return [b for n, b in enumerate(item["boxes"]) if n not in gone]


def jobs(ws: Workspace) -> list[dict]:
    with ws.store.read() as s:
        ids = s.scalars(select(LabelJob.id).order_by(LabelJob.id.desc())).all()
    return [progress(ws, i) for i in ids]


def accepted_set(ws: Workspace, job_id: int) -> ExportSet:
    """The job's accepted images as an export takes them (the boxes not rejected, with their confidences), all as
    training images; the classes are every class the job asked about, in its order (its run's dataset's), whether a
    box of it was kept or not, so that class ids match the dataset's."""
    chosen = [i for i in items(ws, job_id) if i["review"] == "accepted"]
    if not chosen:
        raise ValueError("no image is accepted yet: accept the images whose boxes are right first")
    names = export_names([Path(i["image"]).name.split("_", 1)[1] for i in chosen])
    images = [ExportImage(ws.data_dir / i["image"], n, "train", i["width"], i["height"],
                          [list(b) for b in kept_boxes(i)]) for i, n in zip(chosen, names)]
    used = {b[4] for im in images for b in im.boxes}
    classes = list(dict.fromkeys([*(progress(ws, job_id)["source"].get("classes") or []), *sorted(used)]))
    return ExportSet(f"labelling-{job_id}", classes, images)
