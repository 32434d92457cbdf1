"""The same storage code on PostgreSQL (the multi-worker path): migrations (under a lock, several starts at
once), imports, concurrent writers without lost updates, row locks, rollouts stored once, SKIP LOCKED claims."""
from __future__ import annotations

import multiprocessing as mp
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from backend.data.catalog import get_dataset
from backend.data.demo.dataset import ensure_demo_dataset
from backend.data.importer import import_dataset
from backend.data.workspace import open_workspace
from backend.engine.settings import preset
from backend.jobs.leases import claim, requeue_expired
from backend.jobs.runs import create_run
from backend.jobs.run_history import rollouts, run_json, store_rollouts, upsert_metrics
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
    from storage.models import Run
    from tests.test_storage import _rollout_rows
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
    from backend.data.catalog import delete_dataset
    from backend.jobs.runs import cancel_run
    from tests.test_dataset_delete import _finished_run, _pets
    finished = _finished_run(pg_ws, _pets(pg_ws, tmp_path))
    queued = create_run(pg_ws.store, "pets", "demo", preset("CPU demo", max_steps=2))
    with pytest.raises(ValueError, match=f"^dataset 'pets' is used by run {queued} \\(queued\\)"):
        delete_dataset(pg_ws.store, pg_ws.data_dir, "pets")
    cancel_run(pg_ws.store, queued)
    delete_dataset(pg_ws.store, pg_ws.data_dir, "pets")
    kept = rollouts(pg_ws.store, finished)
    assert len(kept) == 2 and all((pg_ws.data_dir / r.image).is_file() and r.truth for r in kept)


# ------------------------------------------------------------------ the worker on PostgreSQL: fenced leases

@pytest.mark.parametrize("check", ["each_claim_gets_a_fresh_token", "lease_times_come_from_the_database_clock",
                                   "a_worker_that_lost_its_lease_cannot_renew_or_settle",
                                   "a_stale_jobs_writes_are_refused",
                                   "a_worker_whose_heartbeat_finds_the_lease_gone_kills_its_job",
                                   "a_run_its_job_settled_is_no_lost_lease"])
def test_fenced_leases_on_postgres(pg_ws, tmp_path, monkeypatch, check):
    """The lease checks of tests/test_worker.py, on PostgreSQL: a token per claim, the database's clock (the
    server's, whatever the host's says), a stale worker neither renews nor settles, a stale job's writes are
    refused, a lost lease kills the job."""
    from tests import test_worker
    fn = getattr(test_worker, f"check_{check}")
    args = {"ws": pg_ws, "tmp_path": tmp_path, "monkeypatch": monkeypatch}
    fn(*(args[name] for name in fn.__code__.co_varnames[:fn.__code__.co_argcount]))


def _claim_all(url: str, data_dir: str, name: str, barrier, out) -> None:
    """Claim runs (each with a 0 s lease) until none is left, re-queueing expired ones between claims, and settle
    each claimed run as completed under its token: every run must be completed by exactly one claimer."""
    os.environ["DATABASE_URL"] = url
    from backend.jobs.leases import new_token
    from backend.jobs.runs import finish_run
    ws = open_workspace(Path(data_dir))
    barrier.wait(60)
    done = []
    while True:
        token = new_token()
        run_id = claim(ws, name, 30, token=token)
        if run_id is None:
            break
        if finish_run(ws.store, run_id, "completed", token=token):
            done.append(run_id)
    out.put((name, done))
    ws.store.close()


def test_concurrent_claims_take_each_run_once_on_postgres(pg_ws, postgres_url):
    from storage.models import Run
    with pg_ws.store.write() as s:
        s.add_all([Run(model="demo", family="demo", task="detection", folder=None) for _ in range(60)])
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(postgres_url, str(pg_ws.data_dir), f"w{i}", barrier, out))
             for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    done = sorted(r for _, ids in results for r in ids)
    with pg_ws.store.read() as s:
        rows = s.execute(select(Run.id, Run.status, Run.attempts)).all()
    assert done == sorted(r.id for r in rows)  # every run settled once, by one claimer
    assert {(r.status, r.attempts) for r in rows} == {("completed", 1)}


def test_workers_run_each_queued_run_exactly_once_on_postgres(pg_ws, postgres_url):
    """3 worker processes (`worker --once`, warm standbys) on one PostgreSQL database and a shared data dir,
    6 short demo runs: every run completes, claimed once, one job attempt, step 1 stored once."""
    import subprocess
    import sys

    from backend.jobs.run_history import rollouts
    from tests.conftest import ROOT
    ensure_demo_dataset(pg_ws.store, pg_ws.data_dir, n=10)
    runs = []
    for _ in range(6):
        settings = preset("CPU demo", max_steps=1, num_generations=2, save_steps=1)
        settings.prompts_per_step, settings.max_completion_length, settings.eval_max_examples = 1, 8, 1
        runs.append(create_run(pg_ws.store, "demo-shapes", "demo", settings))
    env = {**os.environ, "DATABASE_URL": postgres_url, "PYTHONUNBUFFERED": "1"}
    workers = [subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--data-dir", str(pg_ws.data_dir), "worker",
                                 "--once", "--lease-seconds", "30"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True) for _ in range(3)]
    outs = []
    try:
        for w in workers:
            outs.append(w.communicate(timeout=900)[0])
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, 9)
                w.wait()
    assert [w.returncode for w in workers] == [0, 0, 0], "\n".join(o[-2000:] for o in outs)
    finished = [int(o.strip().splitlines()[-1].split()[2]) for o in outs]  # "worker finished N runs"
    assert sum(finished) == len(runs), outs
    for run_id in runs:
        run = run_json(pg_ws.store, run_id)
        log = (pg_ws.data_dir / f"runs/{run_id}/train.log").read_text()
        assert run["status"] == "completed", (run_id, run["error"], log[-3000:])
        assert run["attempts"] == 1 and log.count("--- attempt started") == 1, (run_id, log[-3000:])
        assert [p[0] for p in run["metrics"]["reward"]] == [1]
        keys = [(r.step, r.prompt_index, r.sample_index) for r in rollouts(pg_ws.store, run_id)]
        assert keys and len(keys) == len(set(keys))


def test_runs_table_one_query_paging_and_row_summary_on_postgres(pg_ws, tmp_path, monkeypatch):
    from tests.test_runs_page import (check_eta_and_reward_on_the_row, check_one_query, check_paging_and_filters,
                                      test_the_live_view_reads_only_new_metric_points)
    check_paging_and_filters(pg_ws)  # on a fresh database: run ids from 1
    check_eta_and_reward_on_the_row(pg_ws)
    check_one_query(pg_ws)
    test_the_live_view_reads_only_new_metric_points(pg_ws, monkeypatch)


def test_migration_0005_fills_in_the_rows_on_postgres(tmp_path, postgres_url, monkeypatch):
    from tests.test_runs_page import migrate_a_database_from_0004
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    migrate_a_database_from_0004(postgres_url, tmp_path)
