"""The tables: datasets and their samples; runs with their metrics, rollouts, checkpoints and evaluations; the
Test tab's questions and labelling jobs queued for the worker."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    task: Mapped[str] = mapped_column(String(32))
    source_format: Mapped[str] = mapped_column(String(32))
    classes: Mapped[list[Any]] = mapped_column(default=list)
    synonyms: Mapped[dict[str, Any]] = mapped_column(default=dict)
    folder: Mapped[str] = mapped_column(String(512))          # relative to the data dir
    val_fraction: Mapped[float] = mapped_column(Float)   # what we held out; 0 when the export's split was kept
    split_origin: Mapped[str] = mapped_column(String(16), default="stratified", server_default="stratified")
    # "export": the export's own train / valid / test folders or lists; "stratified": ours, val_fraction of each class
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    samples: Mapped[list[Sample]] = relationship(back_populates="dataset", cascade="all, delete-orphan",
                                                 passive_deletes=True, order_by="Sample.id")


class Sample(Base):
    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    file: Mapped[str] = mapped_column(String(512))            # relative to the dataset's images folder
    split: Mapped[str] = mapped_column(String(8))             # train | val | test (test: held out, apart from val)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    # detection {"boxes": [[x1, y1, x2, y2, label], ...]}, classification {"label": ...},
    # grounding {"expression": ..., "box": [x1, y1, x2, y2]}; absolute pixels of the original image.
    annotation: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset: Mapped[Dataset] = relationship(back_populates="samples")
    __table_args__ = (UniqueConstraint("dataset_id", "file"),)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"), index=True)
    model: Mapped[str] = mapped_column(String(512))
    family: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)  # queued|running|completed|failed|cancelled
    step: Mapped[int] = mapped_column(Integer, default=0)
    max_steps: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # A fresh token at every claim (migration 0003): writes for the run are accepted only with the current one.
    lease_token: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    folder: Mapped[str | None] = mapped_column(String(512))   # relative to the data dir
    error: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str | None] = mapped_column(Text)
    # Kept by backend.jobs.run_history.upsert_metrics with each metric write (migration 0005), so the Runs table reads
    # runs alone: the mean of the last ten step times (ETA = steps left x this) and the newest total reward.
    step_seconds: Mapped[float | None] = mapped_column(Float)
    last_reward: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MetricPoint(Base):
    __tablename__ = "metric_points"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("run_id", "step", "name"),)


class Rollout(Base):
    __tablename__ = "rollouts"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    # Which completion of the step's batch: the prompt's place in the batch and the sample among its G
    # generations. Unique per (run, step, prompt_index, sample_index), so a resumed step is stored once
    # (rows written before migration 0002 have NULLs, which never conflict).
    prompt_index: Mapped[int | None] = mapped_column(Integer)
    sample_index: Mapped[int | None] = mapped_column(Integer)
    sample_id: Mapped[int | None] = mapped_column(ForeignKey("samples.id", ondelete="SET NULL"))
    image: Mapped[str] = mapped_column(String(512))           # relative to the data dir
    prompt: Mapped[str] = mapped_column(Text)
    completion: Mapped[str] = mapped_column(Text)
    parsed: Mapped[dict[str, Any]] = mapped_column(default=dict)   # boxes in pixels, or label
    rewards: Mapped[dict[str, Any]] = mapped_column(default=dict)  # reward name -> value
    # The sample's annotation as `datasets show` prints it, kept when its dataset is deleted (else read live).
    truth: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The weighted reward, its group's mean and std, and the advantage TRL gave it (migration 0004).
    total: Mapped[float | None] = mapped_column(Float)
    group_mean: Mapped[float | None] = mapped_column(Float)
    group_std: Mapped[float | None] = mapped_column(Float)
    advantage: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("run_id", "step", "prompt_index", "sample_index",
                                       name="uq_rollouts_run_step_prompt_sample"),)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(512))            # relative to the data dir
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("run_id", "step"),)


class HeldoutPoint(Base):
    """One point of a run's held-out curve: the metrics of the model at `step` (0 = before training) on the
    same first held-out prompts at every point, and how long that evaluation took."""
    __tablename__ = "heldout_points"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("run_id", "step"),)


class Evaluation(Base):
    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    phase: Mapped[str] = mapped_column(String(16))            # before | after (the curve is in heldout_points)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("run_id", "phase"),)


class PredictionRequest(Base):
    """A Test-tab question for the worker: it answers with the model it holds, so the page never loads one.
    `request`: {"run_id" | "model", "checkpoint", "compare", "category", "question", "images": [relative to the
    data dir]}; `on_cpu`: answered on the CPU rather than waiting for a GPU; `result`: {"answers": [...]}."""
    __tablename__ = "prediction_requests"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)  # queued|running|done|failed
    on_cpu: Mapped[bool] = mapped_column(Boolean, default=False)
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(128))        # the answering process, while it answers
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LabelJob(Base):
    """A batch of unlabelled images for the worker's answerers to label (backend.jobs.label_queue): `source` is
    backend.jobs.labelling.Source as JSON (a run or a base model, the classes, the minimum confidence). The answerer
    that holds it (`owner`) beats `heartbeat_at` with each image; a job whose heartbeat stops is taken up again."""
    __tablename__ = "label_jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    # preparing | queued | running | done | failed | cancelled
    on_cpu: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[dict[str, Any]] = mapped_column(default=dict)
    total: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LabelItem(Base):
    """One image of a labelling job: its copy (relative to the data dir), the path a person knows it by, the boxes
    the model gave ([x1, y1, x2, y2, label, confidence], original pixels; written once: `answered_at` is set with
    them) and the person's review (accepted | rejected, and the boxes rejected within it)."""
    __tablename__ = "label_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("label_jobs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    image: Mapped[str] = mapped_column(String(512))
    name: Mapped[str] = mapped_column(String(1024))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    boxes: Mapped[list[Any]] = mapped_column(default=list)
    seconds: Mapped[float | None] = mapped_column(Float)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review: Mapped[str | None] = mapped_column(String(16))
    rejected_boxes: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    """Indices into `boxes` a person rejected: an accepted image keeps only the others."""
    __table_args__ = (UniqueConstraint("job_id", "position"),)
