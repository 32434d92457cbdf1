"""The Test tab's questions, queued for the worker: the page asks, a prediction process the worker owns
answers with the model it holds, the page reads the answer. The page never loads a model.

A request waits for a GPU the way a run does (a GPU busy training answers nothing until its run ends) unless
it asks for the CPU; `state` says where it stands: its place in line and what it waits for."""
from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, func, select

from backend.data.config import ImportLimits
from backend.data.safety import probe_image
from backend.data.workspace import Workspace
from backend.jobs.predict import CHECKPOINTS
from storage import db_now
from storage.atomic import update_where
from storage.models import PredictionRequest, Run

FOLDER = "predictions"
"""Under the data dir: each request's images (`predictions/<id>/`), removed once it is answered."""
UNREAD_HOURS = 1
"""An answer the page has not read this long after it was given (the browser left) is deleted."""


def validate(request: dict) -> None:
    """One sentence for what the Test tab's request lacks (ValueError); the model's task is checked when
    it is answered."""
    if not request.get("images"):
        raise ValueError("upload at least one image")
    if request.get("run_id") is None and not (request.get("model") or "").strip():
        raise ValueError("choose a run or a base model")
    if request.get("checkpoint", "best") not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}")


def submit(ws: Workspace, request: dict, images: list[Path], on_cpu: bool = False) -> int:
    """Queue a request: the images are checked and copied into the data dir (the answering process may be
    another host's), then the row is written; a bad image leaves nothing behind."""
    validate({**request, "images": images})
    limits = ImportLimits.from_env()
    for image in images:
        probe_image(Path(image), limits, Path(image).name)
    with ws.store.write() as s:
        row = PredictionRequest(status="preparing", on_cpu=bool(on_cpu), request={})
        s.add(row)
        s.flush()
        request_id = row.id
    folder = ws.data_dir / FOLDER / str(request_id)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for i, image in enumerate(images):
            name = f"{i:03d}_{Path(image).name}"
            shutil.copyfile(image, folder / name)
            names.append(f"{FOLDER}/{request_id}/{name}")
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        with ws.store.write() as s:
            s.delete(s.get(PredictionRequest, request_id))
        raise
    with ws.store.write() as s:
        update_where(s, PredictionRequest, request_id, status="queued",
                     request={**request, "images": names, "names": [Path(i).name for i in images]})
    return request_id


def _served_by(cpu: bool | None):
    """Which requests a prediction process answers: None = every request (a worker without GPUs), True = those
    that asked for the CPU, False = those waiting for a GPU."""
    return True if cpu is None else PredictionRequest.on_cpu.is_(cpu)


def pending(ws: Workspace, cpu: bool | None, labelling: bool = True) -> bool:
    """Whether a question waits for this kind of answerer, or (with `labelling`) a labelling job does
    (backend.jobs.label_queue): either starts one."""
    from backend.jobs import label_queue
    with ws.store.read() as s:
        if s.scalar(select(PredictionRequest.id).where(PredictionRequest.status == "queued", _served_by(cpu))
                    .limit(1)) is not None:
            return True
    return labelling and label_queue.pending(ws, cpu)


def claim(ws: Workspace, owner: str, cpu: bool | None) -> dict | None:
    """Take the oldest queued request this process answers: {"id", "request"}, or None."""
    with ws.store.write() as s:
        row = s.scalars(select(PredictionRequest).where(PredictionRequest.status == "queued", _served_by(cpu))
                        .order_by(PredictionRequest.id).limit(1).with_for_update(skip_locked=True)).first()
        if row is None or not update_where(s, PredictionRequest, row.id, PredictionRequest.status == "queued",
                                           status="running", owner=owner, started_at=db_now(s)):
            return None
        return {"id": row.id, "request": dict(row.request)}


def finish(ws: Workspace, request_id: int, result: dict | None = None, error: str | None = None) -> None:
    """Store the answer (or the sentence saying why there is none) and remove the request's images; answers
    nobody read for UNREAD_HOURS go."""
    with ws.store.write() as s:
        now = db_now(s)
        update_where(s, PredictionRequest, request_id, status="failed" if error else "done", result=result,
                     error=error, owner=None, finished_at=now)
        s.execute(delete(PredictionRequest).where(PredictionRequest.status.in_(("done", "failed")),
                                                  PredictionRequest.finished_at < now - timedelta(hours=UNREAD_HOURS)))
    shutil.rmtree(ws.data_dir / FOLDER / str(request_id), ignore_errors=True)


def abandon(ws: Workspace, owner: str, why: str) -> int:
    """Fail the requests a prediction process was answering when it ended; returns how many."""
    with ws.store.read() as s:
        ids = s.scalars(select(PredictionRequest.id).where(PredictionRequest.status == "running",
                                                           PredictionRequest.owner == owner)).all()
    for request_id in ids:
        finish(ws, request_id, error=why)
    return len(ids)


def state(ws: Workspace, request_id: int) -> dict:
    """{"status", "ahead", "waiting_for", "result", "error"}: `ahead` counts the requests of the same kind (GPU
    or CPU) queued or being answered before this one; `waiting_for` lists the runs training while a GPU
    request waits (a GPU training a run answers nothing until the run ends)."""
    with ws.store.read() as s:
        row = s.get(PredictionRequest, request_id)
        if row is None:
            raise ValueError(f"no prediction request {request_id}")
        out = {"status": row.status, "ahead": 0, "waiting_for": [], "result": row.result, "error": row.error}
        if row.status == "queued":
            out["ahead"] = s.scalar(select(func.count(PredictionRequest.id)).where(
                PredictionRequest.id < request_id, PredictionRequest.status.in_(("queued", "running")),
                PredictionRequest.on_cpu.is_(row.on_cpu)))
            if not row.on_cpu:
                out["waiting_for"] = list(s.scalars(select(Run.id).where(Run.status == "running").order_by(Run.id)))
        return out


def cleanup(ws: Workspace, request_id: int) -> None:
    """Forget an answered request (the page has read it)."""
    with ws.store.write() as s:
        row = s.get(PredictionRequest, request_id)
        if row is not None and row.status in ("done", "failed"):
            s.delete(row)
