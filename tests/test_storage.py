"""Storage: migrations at start, SQLite settings, concurrent writers, the uniqueness rules."""
from __future__ import annotations

import multiprocessing as mp

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from storage import head_revision, open_store
from storage.models import Dataset, MetricPoint, Rollout, Run


def test_migrations_create_every_table_and_are_idempotent(tmp_path):
    store = open_store(tmp_path)
    names = set(inspect(store.engine).get_table_names())
    assert {"datasets", "samples", "runs", "metric_points", "rollouts", "checkpoints", "evaluations",
            "heldout_points", "alembic_version"} <= names
    store.close()
    again = open_store(tmp_path)  # a second start finds the schema current
    with again.read() as s:
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision() == "0010_runs_lr_scheduler"
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


def _rollout_rows(n: int) -> list[dict]:
    """Rows as the training job builds them (RolloutRecorder.take), with their batch positions."""
    return [{"sample_id": None, "image": f"datasets/x/images/{i}.png", "prompt": "find the cat",
             "completion": f"<think>{i}</think><answer>[]</answer>", "parsed": {"boxes": []},
             "rewards": {"format": 1.0}, "prompt_index": i // 2, "sample_index": i % 2} for i in range(n)]


def test_rollouts_of_a_step_written_twice_are_stored_once(tmp_path):
    from backend.jobs.run_history import rollouts, store_rollouts
    store = open_store(tmp_path)
    with store.write() as s:
        run = Run(model="demo", family="demo", task="detection")
        s.add(run)
    store_rollouts(store, run.id, 5, _rollout_rows(4))
    again = _rollout_rows(4)
    again[0]["completion"] = "<think>resumed</think><answer>[]</answer>"
    store_rollouts(store, run.id, 5, again)                          # the step again, after a resume
    without_indices = [{k: v for k, v in r.items() if k not in ("prompt_index", "sample_index")}
                       for r in _rollout_rows(3)]                    # today's job rows: positions are the key
    store_rollouts(store, run.id, 6, without_indices)
    store_rollouts(store, run.id, 6, without_indices)
    stored = rollouts(store, run.id)
    assert [(r.step, r.prompt_index, r.sample_index) for r in stored] == \
        [(5, 0, 0), (5, 0, 1), (5, 1, 0), (5, 1, 1), (6, 0, 0), (6, 1, 0), (6, 2, 0)]
    assert stored[0].completion == "<think>resumed</think><answer>[]</answer>"  # the newest copy, as metrics
    with pytest.raises(IntegrityError):  # the database itself refuses a second copy
        with store.write() as s:
            s.add(Rollout(run_id=run.id, step=5, prompt_index=0, sample_index=0, image="x", prompt="p",
                          completion="c"))
    store.close()


def _migrate(engine, revision: str, step=None) -> None:
    """Take the database to `revision` (alembic's upgrade or downgrade, as `step` names)."""
    from alembic import command
    from storage.db import _alembic_config
    cfg = _alembic_config()
    with engine.connect().execution_options(write=True) as conn:
        cfg.attributes["connection"] = conn
        (step or command.upgrade)(cfg, revision)
        conn.commit()


def _database_at(tmp_path, revision: str):
    """An engine on a new studio.db that migrations took only as far as `revision`."""
    from storage.db import make_engine
    engine = make_engine(f"sqlite:///{tmp_path / 'studio.db'}")
    _migrate(engine, revision)
    return engine


def test_migration_0002_keeps_the_rollouts_already_stored(tmp_path):
    engine = _database_at(tmp_path, "0001")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO runs (model, family, task, settings, status, step, max_steps, attempts, "
                             "cancel_requested, created_at) VALUES ('demo', 'demo', 'detection', '{}', 'completed', "
                             "0, 0, 0, 0, '2026-01-01')")
        for _ in range(2):  # a resumed run's duplicates, from before the unique key
            conn.exec_driver_sql("INSERT INTO rollouts (run_id, step, image, prompt, completion, parsed, rewards, "
                                 "created_at) VALUES (1, 1, 'a.png', 'p', 'c', '{}', '{}', '2026-01-01')")
    engine.dispose()
    store = open_store(tmp_path)
    with store.read() as s:
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
        assert [(r.prompt_index, r.sample_index, r.truth) for r in s.scalars(select(Rollout))] == [(None, None, None)] * 2
    store.close()


def test_migration_0010_keeps_the_constant_rate_that_stored_runs_trained_with(tmp_path):
    """Runs stored before lr_scheduler existed trained (and resume) with a constant rate; new runs default to linear
    decay. Downgrading removes the setting again (the code before it rejects unknown settings)."""
    import json

    from alembic import command

    from backend.engine.settings import TrainSettings
    from backend.jobs.runs import get_run
    engine = _database_at(tmp_path, "0009_label_rejected_boxes")
    with engine.begin() as conn:
        for settings in ({"learning_rate": 0.0005, "max_steps": 100}, {}):
            conn.exec_driver_sql("INSERT INTO runs (model, family, task, settings, status, step, max_steps, attempts, "
                                 "cancel_requested, created_at) VALUES ('demo', 'demo', 'detection', ?, 'running', "
                                 "40, 100, 0, 0, '2026-01-01')", (json.dumps(settings),))
    engine.dispose()
    store = open_store(tmp_path)
    assert get_run(store, 1).settings == {"learning_rate": 0.0005, "max_steps": 100, "lr_scheduler": "constant"}
    assert TrainSettings.from_dict(get_run(store, 2).settings).lr_scheduler == "constant"
    assert TrainSettings().lr_scheduler == "linear"
    store.close()
    _migrate(engine, "0009_label_rejected_boxes", command.downgrade)
    with engine.connect() as conn:
        assert [json.loads(r[0]) for r in conn.exec_driver_sql("SELECT settings FROM runs ORDER BY id")] == [
            {"learning_rate": 0.0005, "max_steps": 100}, {}]
    engine.dispose()


def test_row_helpers(tmp_path):
    from datetime import datetime, timezone
    from storage import db_now, insert_ignore, locked, update_where, upsert
    store = open_store(tmp_path)
    with store.write() as s:
        run = Run(model="demo", family="demo", task="detection", status="queued")
        s.add(run)
    with store.write() as s:
        assert locked(s, Run, run.id).status == "queued" and locked(s, Run, 999) is None
        assert update_where(s, Run, run.id, Run.status == "queued", status="running")
        assert not update_where(s, Run, run.id, Run.status == "queued", status="cancelled")  # lost the race
        assert update_where(s, Run, run.id, step=Run.step + 3)
        assert locked(s, Run, run.id).step == 3
        rows = [{"run_id": run.id, "step": 1, "name": "reward", "value": 0.5}]
        assert insert_ignore(s, MetricPoint, rows, ("run_id", "step", "name")) == 1
        assert insert_ignore(s, MetricPoint, rows, ("run_id", "step", "name")) == 0
        upsert(s, MetricPoint, [{**rows[0], "value": 0.9}], ("run_id", "step", "name"), ("value",))
        assert s.scalar(select(MetricPoint.value)) == 0.9
        clock = db_now(s)
    assert clock.tzinfo is not None and abs((clock - datetime.now(timezone.utc)).total_seconds()) < 5
    store.close()


def test_progress_and_settle_helpers_for_the_job(tmp_path):
    from backend.jobs.runs import cancel_run, finish_run, record_step
    store = open_store(tmp_path)
    with store.write() as s:
        running = Run(model="demo", family="demo", task="detection", status="running", lease_owner="w")
        queued = Run(model="demo", family="demo", task="detection", status="queued")
        s.add_all([running, queued])
    assert record_step(store, running.id, 3) is False
    cancel_run(store, running.id)
    assert record_step(store, running.id, 4) is True  # the flag comes back with the progress write
    assert finish_run(store, running.id, "cancelled") is True
    assert finish_run(store, running.id, "completed") is False  # settled already: left as it is
    assert finish_run(store, queued.id, "failed", "boom") is False  # never claimed: not the job's to settle
    with store.read() as s:
        assert [(r.status, r.step, r.lease_owner, r.error) for r in s.scalars(select(Run).order_by(Run.id))] == \
            [("cancelled", 4, None, None), ("queued", 0, None, None)]
    store.close()


def test_checkpoint_and_evaluation_rows_are_written_once(tmp_path):
    from backend.jobs.run_history import evaluations, record_checkpoint, save_evaluation
    from storage.models import Checkpoint
    store = open_store(tmp_path)
    with store.write() as s:
        run = Run(model="demo", family="demo", task="detection")
        s.add(run)
    record_checkpoint(store, run.id, 2, "runs/1/checkpoints/checkpoint-2")
    record_checkpoint(store, run.id, 2, "runs/1/checkpoints/checkpoint-2")  # a resumed step saves again
    save_evaluation(store, run.id, "before", {"map": 0.1})
    save_evaluation(store, run.id, "before", {"map": 0.2})
    with store.read() as s:
        assert [(c.step, c.complete) for c in s.scalars(select(Checkpoint))] == [(2, True)]
    assert evaluations(store, run.id) == {"before": {"map": 0.2}}
    store.close()


def test_a_run_resumes_from_its_last_complete_checkpoint_not_the_highest_numbered_folder(tmp_path):
    """transformers' get_last_checkpoint picks the highest checkpoint-N folder on disk, whole or not; a job
    killed while saving leaves a half-written one. The run resumes from the newest checkpoint recorded
    complete (after its folder was fully written) whose trainer state is still there."""
    from transformers.trainer_utils import get_last_checkpoint

    from backend.jobs.run_history import latest_checkpoint, record_checkpoint
    store = open_store(tmp_path)
    with store.write() as s:
        run = Run(model="demo", family="demo", task="detection")
        s.add(run)
    out = tmp_path / "runs/1/checkpoints"
    for step in (2, 4):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}/trainer_state.json").write_text("{}")
        record_checkpoint(store, run.id, step, f"runs/1/checkpoints/checkpoint-{step}")
    (out / "checkpoint-4/trainer_state.json").unlink()  # recorded, then emptied (disk cleanup, a copy)
    (out / "checkpoint-6").mkdir()  # killed while saving: never recorded
    (out / "checkpoint-6/adapter_model.safetensors").write_bytes(b"half")
    assert get_last_checkpoint(str(out)).endswith("checkpoint-6")
    assert latest_checkpoint(store, tmp_path, run.id).step == 2
    store.close()
