"""Storage: migrations at start, SQLite settings, concurrent writers, the uniqueness rules."""
from __future__ import annotations

import multiprocessing as mp

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from storage import open_store
from storage.models import Dataset, MetricPoint, Run


def test_migrations_create_every_table_and_are_idempotent(tmp_path):
    store = open_store(tmp_path)
    names = set(inspect(store.engine).get_table_names())
    assert {"datasets", "samples", "runs", "metric_points", "rollouts", "checkpoints", "evaluations",
            "alembic_version"} <= names
    store.close()
    again = open_store(tmp_path)  # a second start finds the schema current
    with again.read() as s:
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    again.close()


def test_sqlite_pragmas(tmp_path):
    store = open_store(tmp_path)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    store.close()


def test_metric_point_is_unique_per_run_step_name(tmp_path):
    store = open_store(tmp_path)
    with store.write() as s:
        run = Run(model="demo", family="demo", task="detection")
        s.add(run)
        s.flush()
        s.add(MetricPoint(run_id=run.id, step=1, name="reward", value=0.5))
        run_id = run.id
    with pytest.raises(IntegrityError):
        with store.write() as s:
            s.add(MetricPoint(run_id=run_id, step=1, name="reward", value=0.7))
    with store.read() as s:
        assert s.scalar(select(func.count(MetricPoint.id))) == 1  # the failed write left nothing
    store.close()


def test_deleting_a_run_cascades_to_its_points(tmp_path):
    store = open_store(tmp_path)
    with store.write() as s:
        run = Run(model="demo", family="demo", task="detection")
        s.add(run)
        s.flush()
        s.add_all([MetricPoint(run_id=run.id, step=i, name="reward", value=i) for i in range(3)])
    with store.write() as s:
        s.delete(s.get(Run, run.id))
    with store.read() as s:
        assert s.scalar(select(func.count(MetricPoint.id))) == 0
    store.close()


def _writer(data_dir: str, run_id: int, n: int) -> None:
    store = open_store(data_dir)
    for step in range(n):
        with store.write() as s:  # read-modify-write: the classic "database is locked" trap
            run = s.get(Run, run_id)
            run.step = step
            s.add(MetricPoint(run_id=run_id, step=step, name="reward", value=step / n))
            shared = s.scalar(select(Dataset).where(Dataset.name == "counter"))
            shared.val_fraction += 1
    store.close()


def test_two_processes_write_at_once_without_lock_errors(tmp_path):
    store = open_store(tmp_path)
    with store.write() as s:
        runs = [Run(model="demo", family="demo", task="detection") for _ in range(2)]
        s.add_all(runs)
        s.add(Dataset(name="counter", task="detection", source_format="coco", folder="x", val_fraction=0.0))
    ids = [r.id for r in runs]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), rid, 150)) for rid in ids]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with store.read() as s:
        assert s.scalar(select(func.count(MetricPoint.id))) == 300
        # no lost update: every increment of the shared row landed
        assert s.scalar(select(Dataset.val_fraction).where(Dataset.name == "counter")) == 300
    store.close()
