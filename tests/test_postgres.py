"""The same storage code on PostgreSQL (the multi-worker path): migrations (under a lock, several starts at
once), imports, concurrent writers without lost updates, row locks, rollouts stored once, SKIP LOCKED claims."""
from __future__ import annotations

import multiprocessing as mp
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from backend.datasets import get_dataset, import_dataset
from backend.demo.dataset import ensure_demo_dataset
from backend.runs import create_run, rollouts, run_json, store_rollouts, upsert_metrics
from backend.settings import preset
from backend.worker import claim, requeue_expired
from backend.workspace import open_workspace
from storage import Store, db_now, head_revision, locked, update_where
from storage.models import Dataset, MetricPoint
from tests import builders
from tests.postgres import postgres_server, postgres_url  # noqa: F401 - fixtures
from tests.test_storage import _writer


@pytest.fixture
def pg_ws(tmp_path, postgres_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    ws = open_workspace(tmp_path / "data")
    assert ws.store.engine.dialect.name == "postgresql"
    yield ws
    ws.store.close()


def test_import_and_runs_on_postgres(pg_ws, tmp_path):
    builders.write_coco(tmp_path / "c", builders.detection_samples(6))
    import_dataset(pg_ws.store, pg_ws.data_dir, [builders.zip_dir(tmp_path / "c", tmp_path / "c.zip")], "pets")
    assert get_dataset(pg_ws.store, "pets")["counts"]["total"] == 6
    ensure_demo_dataset(pg_ws.store, pg_ws.data_dir, n=10)
    first, second = (create_run(pg_ws.store, "demo-shapes", "demo", preset("CPU demo")) for _ in range(2))
    assert claim(pg_ws, "a", 0) == first and claim(pg_ws, "b", 60) == second and claim(pg_ws, "c", 60) is None
    assert requeue_expired(pg_ws) == [first]
    upsert_metrics(pg_ws.store, first, 1, {"reward": 0.5})
    upsert_metrics(pg_ws.store, first, 1, {"reward": 0.7})  # a resumed run overwrites
    assert run_json(pg_ws.store, first)["metrics"]["reward"] == [[1, 0.7]]


def _pg_writer(url: str, data_dir: str, run_id: int, n: int) -> None:
    os.environ["DATABASE_URL"] = url
    _writer(data_dir, run_id, n)


def test_two_processes_write_at_once_on_postgres(pg_ws, postgres_url):
    from storage.models import Run
    with pg_ws.store.write() as s:
        runs = [Run(model="demo", family="demo", task="detection") for _ in range(2)]
        s.add_all(runs)
        s.add(Dataset(name="counter", task="detection", source_format="coco", folder="x", val_fraction=0.0))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_pg_writer, args=(postgres_url, str(pg_ws.data_dir), r.id, 100)) for r in runs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with pg_ws.store.read() as s:
        assert s.scalar(select(func.count(MetricPoint.id))) == 200
        # no lost update: every increment of the shared row landed (the SQLite twin asserts the same)
        assert s.scalar(select(Dataset.val_fraction).where(Dataset.name == "counter")) == 200


def _open_at_once(url: str, data_dir: str, barrier) -> None:
    os.environ["DATABASE_URL"] = url
    barrier.wait(60)  # every process has imported everything: they migrate in the same instant
    open_workspace(Path(data_dir)).store.close()


def test_many_processes_opening_the_workspace_at_once_all_succeed(tmp_path, postgres_url):
    """Several workers starting together on a fresh database: the migrations run once, under a lock."""
    n = 6
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_open_at_once, args=(postgres_url, str(tmp_path / f"d{i}"), barrier))
             for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * n
    store = Store(postgres_url)
    with store.read() as s:
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head_revision()]
        assert {"runs", "rollouts", "metric_points"} <= set(inspect(store.engine).get_table_names())
    store.close()


def _row_locked_increments(url: str, dataset_id: int, n: int, how: str) -> None:
    """Increments outside Store.write() (no whole-database lock): only the row helpers keep them correct."""
    store = Store(url)
    for _ in range(n):
        with store.read() as s, s.begin():
            if how == "locked":
                locked(s, Dataset, dataset_id).val_fraction += 1
            else:
                assert update_where(s, Dataset, dataset_id, val_fraction=Dataset.val_fraction + 1)
    store.close()


def test_row_helpers_keep_every_update_on_postgres(pg_ws, postgres_url):
    with pg_ws.store.write() as s:
        ds = Dataset(name="counter", task="detection", source_format="coco", folder="x", val_fraction=0.0)
        s.add(ds)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_row_locked_increments, args=(postgres_url, ds.id, 100, how))
             for how in ("locked", "locked", "update_where")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with pg_ws.store.read() as s:
        assert s.scalar(select(Dataset.val_fraction).where(Dataset.id == ds.id)) == 300
        assert abs((db_now(s) - datetime.now(timezone.utc)).total_seconds()) < 5


def test_rollouts_written_twice_are_stored_once_on_postgres(pg_ws):
    from tests.test_storage import _rollout_rows
    from storage.models import Run
    with pg_ws.store.write() as s:
        run = Run(model="demo", family="demo", task="detection")
        s.add(run)
    store_rollouts(pg_ws.store, run.id, 3, _rollout_rows(4))
    again = _rollout_rows(4)
    again[3]["rewards"] = {"format": 0.0}
    store_rollouts(pg_ws.store, run.id, 3, again)
    stored = rollouts(pg_ws.store, run.id)
    assert [(r.prompt_index, r.sample_index) for r in stored] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert stored[3].rewards == {"format": 0.0}


def test_dataset_delete_keeps_finished_runs_rollouts_on_postgres(pg_ws, tmp_path):
    from backend.datasets import delete_dataset
    from backend.runs import cancel_run
    from tests.test_dataset_delete import _finished_run, _pets
    finished = _finished_run(pg_ws, _pets(pg_ws, tmp_path))
    queued = create_run(pg_ws.store, "pets", "demo", preset("CPU demo", max_steps=2))
    with pytest.raises(ValueError, match=f"^dataset 'pets' is used by run {queued} \\(queued\\)"):
        delete_dataset(pg_ws.store, pg_ws.data_dir, "pets")
    cancel_run(pg_ws.store, queued)
    delete_dataset(pg_ws.store, pg_ws.data_dir, "pets")
    kept = rollouts(pg_ws.store, finished)
    assert len(kept) == 2 and all((pg_ws.data_dir / r.image).is_file() and r.truth for r in kept)
