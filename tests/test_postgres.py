"""The same storage code on PostgreSQL (the multi-worker path): migrations, imports, concurrent
writers, and SKIP LOCKED claims."""
from __future__ import annotations

import multiprocessing as mp
import os

import pytest
from sqlalchemy import func, select

from backend.datasets import get_dataset, import_dataset
from backend.demo.dataset import ensure_demo_dataset
from backend.runs import create_run, run_json, upsert_metrics
from backend.settings import preset
from backend.worker import claim, requeue_expired
from backend.workspace import open_workspace
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
