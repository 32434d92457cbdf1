"""The Runs page at scale: the table is one query whatever the number of runs, a page at a time, filtered by
status and dataset, its ETA and newest reward kept on the run's row; the live view reads only the metric points
it does not hold, the log from its end, and draws the rollouts again only when the step shown changes;
migration 0005 fills the row's values in for runs already stored. (tests/test_postgres.py runs the storage
half on PostgreSQL.)"""
from __future__ import annotations

from contextlib import contextmanager

import gradio as gr
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from backend.jobs.runs import record_step
from backend.jobs.run_history import metrics, run_json, store_rollouts, upsert_metrics
from storage import head_revision, open_store
from storage.models import Dataset, Run
from tests.test_storage import _rollout_rows


def add_runs(store, n: int) -> list[int]:
    """`n` runs (ids in order): odd ids on dataset 'cats', even on 'dogs'; every third one running."""
    with store.write() as s:
        for name in ("cats", "dogs"):
            if s.scalar(sa.select(Dataset.id).where(Dataset.name == name)) is None:
                s.add(Dataset(name=name, task="detection", source_format="coco", folder=name, val_fraction=0.2))
        cats, dogs = (s.scalar(sa.select(Dataset.id).where(Dataset.name == n)) for n in ("cats", "dogs"))
        first = (s.scalar(sa.select(sa.func.max(Run.id))) or 0) + 1
        runs = [Run(dataset_id=cats if i % 2 else dogs, model="demo", family="demo", task="detection",
                    status="running" if i % 3 == 0 else "completed", max_steps=100, settings={"method": "grpo"})
                for i in range(first, first + n)]
        s.add_all(runs)
        s.flush()
        for r in runs:
            r.folder = f"runs/{r.id}"
    return [r.id for r in runs]


def running_run(store) -> int:
    return next(i for i in add_runs(store, 3) if i % 3 == 0)


def runs_tab(ws) -> dict:
    from ui.runs_tab import create_runs_tab
    with gr.Blocks():
        return create_runs_tab(ws)


@contextmanager
def selects(engine):
    """The SELECT statements the engine runs inside the block."""
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def check_one_query(ws) -> None:
    """The table's poll (what the gr.Timer calls) runs one SELECT, with 3 runs as with 45, filtered or not."""
    poll = runs_tab(ws)["table"][0]
    add_runs(ws.store, 3)
    for n, page, status, dataset in ((3, 1, "", ""), (45, 1, "", ""), (45, 1, "completed", "cats")):
        add_runs(ws.store, n - len(run_ids(ws)))
        with selects(ws.store.engine) as seen:
            rows = poll({"page": page, "status": status, "dataset": dataset})[0]
        assert len(seen) == 1, seen
        assert rows


def run_ids(ws) -> list[int]:
    with ws.store.read() as s:
        return list(s.scalars(sa.select(Run.id)))


def check_paging_and_filters(ws) -> None:
    from ui.runs_tab import table_poll
    ids = add_runs(ws.store, 45)
    rows, line, picker, query = table_poll(ws, 1)
    assert [r[0] for r in rows] == ids[::-1][:20] and line == "Page 1 of 3 · 45 runs"
    assert picker["choices"] == [r[0] for r in rows]
    assert query == gr.skip()  # a poll leaves the query the session holds alone
    rows, line, _, query = table_poll(ws, 3, moved=True)
    assert [r[0] for r in rows] == ids[4::-1] and line == "Page 3 of 3 · 45 runs"
    assert query == {"page": 3, "status": "", "dataset": ""}
    rows, line, _, query = table_poll(ws, 9)  # past the end (runs deleted meanwhile): the last page
    assert [r[0] for r in rows] == ids[4::-1] and query["page"] == 3

    running = [i for i in ids if i % 3 == 0]
    rows, line, _, _ = table_poll(ws, 1, "running")
    assert [r[0] for r in rows] == running[::-1] and line == "Page 1 of 1 · 15 running runs"
    assert {r[2] for r in rows} == {"running"}
    rows, line, _, _ = table_poll(ws, 2, "", "cats")
    assert [r[0] for r in rows] == [i for i in ids if i % 2][::-1][20:] and line == "Page 2 of 2 · 23 runs on cats"
    rows, line, _, _ = table_poll(ws, 1, "running", "dogs")
    assert [r[0] for r in rows] == [i for i in running if i % 2 == 0][::-1] and {r[6] for r in rows} == {"dogs"}
    rows, line, _, query = table_poll(ws, 1, "failed", moved=True)
    assert rows == [] and line == "Page 1 of 1 · 0 failed runs"
    assert query == {"page": 1, "status": "failed", "dataset": ""}


def check_eta_and_reward_on_the_row(ws) -> None:
    from ui.runs_tab import table_poll
    run, done = running_run(ws.store), add_runs(ws.store, 1)[0]
    assert done % 3 != 0
    for step in range(1, 13):
        upsert_metrics(ws.store, run, step, {"step_time": float(step), "reward": step / 10, "kl": 0.1})
    record_step(ws.store, run, 12)
    shown = run_json(ws.store, run, with_metrics=False)
    assert shown["step_seconds"] == pytest.approx(7.5) and shown["last_reward"] == pytest.approx(1.2)
    row = next(r for r in table_poll(ws, 1)[0] if r[0] == run)
    assert row[3:6] == ["12/100", "11m00s", "1.200"]  # (100 - 12) steps x the mean of step times 3..12

    upsert_metrics(ws.store, run, 5, {"reward": 0.0})  # a resumed run writes an older step again
    assert run_json(ws.store, run, False)["last_reward"] == pytest.approx(1.2)  # the newest step's stays
    upsert_metrics(ws.store, run, 12, {"reward": 0.3, "step_time": 22.0})
    shown = run_json(ws.store, run, False)
    assert shown["last_reward"] == pytest.approx(0.3) and shown["step_seconds"] == pytest.approx(8.5)
    upsert_metrics(ws.store, done, 1, {"step_time": 3.0, "reward": 0.5})
    row = next(r for r in table_poll(ws, 1)[0] if r[0] == done)
    assert row[2:6] == ["completed", "0/100", "—", "0.500"]  # no ETA once finished


def test_the_runs_table_is_one_query_whatever_the_number_of_runs(ws):
    check_one_query(ws)


def test_the_runs_table_pages_and_filters(ws):
    check_paging_and_filters(ws)


def test_eta_and_newest_reward_are_kept_on_the_run_row(ws):
    check_eta_and_reward_on_the_row(ws)


def test_a_deleted_datasets_runs_stay_listed(ws):
    from ui.runs_tab import table_poll
    ids = add_runs(ws.store, 2)
    with ws.store.write() as s:
        s.execute(sa.delete(Dataset).where(Dataset.name == "cats"))
    rows = table_poll(ws, 1)[0]
    assert [(r[0], r[6]) for r in rows] == [(ids[1], "dogs"), (ids[0], "(deleted)")]
    assert table_poll(ws, 1, "", "cats")[0] == []


class Live:
    """The live view as the page drives it: the chosen run, and the `view` state kept between polls."""

    def __init__(self, ws, run_id: int):
        tab = runs_tab(ws)
        self.fn, self.names, self.run_id, self.view = tab["live"][0], tab["names"], run_id, None

    def poll(self, step=None, follow=True, prompt=None) -> dict:
        shown = dict(zip(self.names, self.fn(self.run_id, step, follow, prompt, self.view)))
        self.view = shown["view"]
        return shown


def drawn(update: dict) -> bool:
    """Whether an output was sent with a value (not left as the page has it)."""
    return "value" in update


def test_the_live_view_reads_only_new_metric_points(ws, monkeypatch):
    import ui.run_live
    run = running_run(ws.store)
    for step in range(1, 6):
        upsert_metrics(ws.store, run, step, {"reward": step / 10, "kl": 0.01 * step, "step_time": 2.0})
    read: list[tuple] = []

    def counting(store, run_id, since=None):
        points = metrics(store, run_id, since)
        read.append((since, sorted({step for series in points.values() for step, _ in series})))
        return points

    monkeypatch.setattr(ui.run_live, "metrics", counting)
    live = Live(ws, run)
    first = live.poll()
    assert read[-1] == (None, [1, 2, 3, 4, 5]) and drawn(first["chart-reward"])
    assert first["chart-reward"]["value"]["step"].max() == 5

    quiet = live.poll()  # nothing new: only the last step held is read again, nothing is redrawn
    assert read[-1] == (5, [5])
    assert not any(drawn(quiet[k]) for k in ("chart-reward", "chart-kl", "chart-heldout", "log"))

    upsert_metrics(ws.store, run, 6, {"reward": 0.9, "kl": 0.2, "step_time": 2.5})
    grown = live.poll()
    assert read[-1] == (5, [5, 6]) and drawn(grown["chart-reward"]) and drawn(grown["chart-kl"])
    assert live.view["metrics"] == metrics(ws.store, run)  # appended in place, in step order
    frame = grown["chart-kl"]["value"].dropna()
    assert frame["step"].tolist() == [1, 2, 3, 4, 5, 6] and frame["value"].iloc[-1] == pytest.approx(0.2)

    # Claimed again (a resumed run): it writes its steps after the checkpoint again, and the page reads afresh.
    with ws.store.write() as s:
        s.get(Run, run).lease_token = "another claim"
    upsert_metrics(ws.store, run, 4, {"reward": 0.0, "kl": 0.5, "step_time": 2.0})
    live.poll()
    assert read[-1][0] is None and live.view["metrics"] == metrics(ws.store, run)
    assert live.view["metrics"]["kl"][3] == [4, 0.5]


def test_the_live_view_draws_rollouts_again_only_when_the_step_shown_changes(ws, monkeypatch):
    import ui.run_live
    run = running_run(ws.store)
    store_rollouts(ws.store, run, 2, _rollout_rows(4))
    calls: list[tuple] = []
    real = ui.run_live.inspector

    def counting(ws_, run_id, step, prompt, steps=None):
        calls.append((step, prompt))
        return real(ws_, run_id, step, prompt, steps)

    monkeypatch.setattr(ui.run_live, "inspector", counting)
    live = Live(ws, run)
    first = live.poll()
    assert calls == [(2, None)] and len(first["gallery"]["value"]) == 2 and first["step"]["value"] == 2
    again = live.poll(prompt=first["prompt"]["value"])  # the prompt list now holds the prompt shown
    assert len(calls) == 1 and not any(drawn(again[k]) for k in ("gallery", "summary", "prompt"))
    assert again["cards"] == gr.skip()

    store_rollouts(ws.store, run, 4, _rollout_rows(4))  # following: the new step is drawn, once
    assert live.poll()["step"]["value"] == 4 and live.poll()["step"]["value"] == 4
    assert calls == [(2, None), (4, None)]
    browsing = live.poll(step=2, follow=False)  # back to step 2, then its second prompt
    live.poll(step=2, follow=False, prompt=browsing["prompt"]["value"])
    live.poll(step=2, follow=False, prompt=1)
    live.poll(step=2, follow=False, prompt=1)
    assert calls == [(2, None), (4, None), (2, None), (2, 1)]


def test_the_live_view_reads_a_big_log_from_its_end(ws, monkeypatch):
    import ui.run_live
    run = running_run(ws.store)
    log = ws.data_dir / f"runs/{run}/train.log"
    log.parent.mkdir(parents=True)
    lines = [f"step {i} · reward {i % 7 / 7:.3f} ✓ é\n" for i in range(700_000)]  # multi-byte characters
    text = "".join(lines)
    log.write_text(text, encoding="utf-8")
    assert log.stat().st_size > 20 * 2**20
    read: list[int] = []

    class Counted:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def seek(self, *args):
            return self.f.seek(*args)

        def read(self, n=-1):
            data = self.f.read(n)
            read.append(len(data))
            return data

    monkeypatch.setattr(ui.run_live, "open", lambda *a, **k: Counted(open(*a, **k)), raising=False)
    live = Live(ws, run)
    assert live.poll()["log"] == text[-ui.run_live.LOG_CHARS:]
    assert sum(read) <= 4 * ui.run_live.LOG_CHARS  # the end, not the file
    assert live.poll()["log"] == gr.skip() and len(read) == 1  # unchanged: not read again
    with open(log, "a", encoding="utf-8") as f:
        f.write("the last line\n")
    shown = live.poll()["log"]
    assert shown.endswith("é\nthe last line\n") and len(shown) == ui.run_live.LOG_CHARS


def migrate_a_database_from_0004(url: str, data_dir) -> None:
    """A database at revision 0004 holding runs and metric points, opened by this version: the run rows get
    their recent step time and newest reward."""
    from alembic import command
    from storage.db import _alembic_config, make_engine
    engine = make_engine(url)
    cfg = _alembic_config()
    with engine.connect().execution_options(write=True) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004_methods_evaluations")
        conn.commit()
    runs = sa.table("runs", *(sa.column(c) for c in ("id", "model", "family", "task", "settings", "status", "step",
                                                     "max_steps", "attempts", "cancel_requested", "created_at")))
    points = sa.table("metric_points", *(sa.column(c) for c in ("run_id", "step", "name", "value", "created_at")))
    with engine.begin() as conn:
        conn.execute(sa.insert(runs), [{"id": i, "model": "demo", "family": "demo", "task": "detection",
                                        "settings": "{}", "status": "running", "step": 12, "max_steps": 100,
                                        "attempts": 1, "cancel_requested": False, "created_at": "2026-01-01"}
                                       for i in (1, 2)])
        conn.execute(sa.insert(points), [{"run_id": 1, "step": step, "name": name, "value": value,
                                          "created_at": "2026-01-01"}
                                         for step in range(12, 0, -1)  # stored in any order
                                         for name, value in (("step_time", float(step)), ("reward", step / 10))])
    engine.dispose()
    store = open_store(data_dir)
    with store.read() as s:
        assert s.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
        rows = s.execute(sa.select(Run.id, Run.step_seconds, Run.last_reward).order_by(Run.id)).all()
    assert rows == [(1, pytest.approx(7.5), pytest.approx(1.2)), (2, None, None)]  # no points: nothing to show
    upsert_metrics(store, 2, 1, {"step_time": 4.0})
    assert run_json(store, 2, False)["step_seconds"] == 4.0
    store.close()


def test_migration_0005_fills_in_the_rows_of_an_existing_database_and_goes_back(tmp_path):
    from alembic import command
    from storage.db import _alembic_config, make_engine
    url = f"sqlite:///{tmp_path / 'studio.db'}"
    migrate_a_database_from_0004(url, tmp_path)
    engine, cfg = make_engine(url), _alembic_config()
    with engine.connect().execution_options(write=True) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004_methods_evaluations")
        conn.commit()
    columns = {c["name"] for c in sa.inspect(engine).get_columns("runs")}
    assert "step" in columns and not {"step_seconds", "last_reward"} & columns
    engine.dispose()


def test_cancel_says_when_the_run_has_already_ended(ws):
    from backend.jobs.runs import cancel_run
    from ui.runs_tab import cancelled_text
    ids = add_runs(ws.store, 3)
    running, done = next(i for i in ids if i % 3 == 0), next(i for i in ids if i % 3)
    assert cancelled_text(running, cancel_run(ws.store, running)) == "✓ Cancel requested: the run stops at its next step."
    assert cancelled_text(done, cancel_run(ws.store, done)) == \
        f"⚠ Run {done} has already ended (completed): there is nothing to cancel."


def test_a_run_without_a_reference_model_shows_no_kl_chart():
    from ui.run_views import CHARTS, chart_updates
    redraw = {"metrics": True, "heldout": True}
    for beta, kl_shown in ((0.0, False), (0.04, True)):
        points = {"reward": [[1, 0.5]], "kl": [[1, 0.01]]}
        run = {"method": "grpo", "settings": {"beta": beta}, "metrics": points, "heldout": {"map": [[0, 0.1]]}}
        visible = {key: u["visible"] for key, u in zip(CHARTS, chart_updates(run, redraw))}
        assert visible["kl"] is kl_shown and visible["reward"] and visible["heldout"]


def test_charts_without_points_are_named_not_drawn_as_empty_axes():
    """An empty plot draws a bare axis labelled 0.000000: a chart shows once it has a point; until then one line
    names it."""
    from ui.run_views import CHARTS, chart_updates, empty_charts_note
    redraw = {"metrics": True, "heldout": True}
    run = {"method": "grpo", "status": "running", "settings": {"beta": 0.0}, "metrics": {}, "heldout": {}}
    assert not any(u["visible"] for u in chart_updates(run, redraw))
    assert empty_charts_note(run) == ("*No points yet:* Reward, Held-out evaluation, Mean completion length, Step "
                                      "time, Share of groups with one reward for all — each chart appears with its "
                                      "first point.")
    run["metrics"] = {"reward": [[1, 0.5]], "step_time": [[1, 3.2]], "completions/mean_length": [[1, 40.0]],
                      "frac_reward_zero_std": [[1, 0.0]]}
    run["status"] = "completed"
    shown = {key for key, u in zip(CHARTS, chart_updates(run, redraw)) if u["visible"]}
    assert shown == {"reward", "step_time", "completions/mean_length", "frac_reward_zero_std"}
    assert empty_charts_note(run) == "*No points in this run:* Held-out evaluation."


def test_the_latest_step_is_a_short_table_of_its_key_metrics():
    from ui.run_live import latest_rows
    series = {"reward": [[1, 0.2], [2, 0.41234]], "rewards/iou/mean": [[2, 0.3]], "kl": [[2, 0.00123]],
              "grad_norm": [[2, 1.5]], "step_time": [[1, 5.0], [2, 4.12]], "completions/mean_length": [[2, 38.4]]}
    assert latest_rows(series) == [["step", "2"], ["reward", "0.412"], ["  iou", "0.300"], ["KL", "0.0012"],
                                   ["completion length", "38 tokens"], ["step time", "4.1 s"]]
    assert latest_rows({}) == []


def test_the_log_shows_what_a_terminal_would_without_bars_or_notices():
    from ui.run_live import readable_log
    raw = ("step 1\n\x1b[32mgreen\x1b[0m\n"
           "Loading:   0%|          | 0/9 [00:00<?, ?it/s]\rLoading: 100%|##########| 9/9 [00:01<00:00, 8.1it/s]\n"
           "/x/site-packages/trl/a.py:7: FutureWarning: y is deprecated\n  warnings.warn(\n"
           "[transformers] The tokenizer has new PAD/BOS/EOS tokens.\n"
           "[transformers] error: the weights could not be read\n"
           "counting 1\rcounting 2\rcounting 3\n"
           "step 2\n")
    assert readable_log(raw) == ("step 1\ngreen\n[transformers] error: the weights could not be read\ncounting 3\n"
                                 "step 2\n(1 progress bar and 2 library notices left out here; train.log keeps every "
                                 "line)\n")
    assert readable_log("step 1\nstep 2\n") == "step 1\nstep 2\n"  # nothing left out: the text as it is
