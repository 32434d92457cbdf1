"""Leases: atomic claims, expiry, re-queue, and the attempt limit (no training needed)."""
from __future__ import annotations

import time

from backend.demo.dataset import ensure_demo_dataset
from backend.runs import cancel_run, create_run, run_json
from backend.settings import preset
from backend.worker import MAX_ATTEMPTS, claim, heartbeat, requeue_expired


def _queued(ws, n=1):
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    return [create_run(ws.store, "demo-shapes", "demo", preset("CPU demo")) for _ in range(n)]


def test_claims_oldest_first_and_never_twice(ws):
    first, second = _queued(ws, 2)
    assert claim(ws, "a", 60) == first
    assert claim(ws, "b", 60) == second
    assert claim(ws, "c", 60) is None
    run = run_json(ws.store, first, False)
    assert run["status"] == "running" and run["attempts"] == 1


def test_expired_lease_is_requeued_and_a_live_one_is_not(ws):
    dead, alive = _queued(ws, 2)
    assert claim(ws, "dead-worker", 1) == dead
    assert claim(ws, "live-worker", 60) == alive
    time.sleep(1.2)
    assert requeue_expired(ws) == [dead]
    assert run_json(ws.store, dead, False)["status"] == "queued"
    assert run_json(ws.store, alive, False)["status"] == "running"
    assert claim(ws, "new-worker", 60) == dead  # and it is claimed again, attempt 2
    assert run_json(ws.store, dead, False)["attempts"] == 2


def test_heartbeat_extends_the_lease_and_reports_cancel(ws):
    (run_id,) = _queued(ws)
    claim(ws, "w", 1)
    assert heartbeat(ws, run_id, "w", 60) is False
    time.sleep(1.2)
    assert requeue_expired(ws) == []
    cancel_run(ws.store, run_id)
    assert heartbeat(ws, run_id, "w", 60) is True


def test_a_run_that_keeps_dying_fails(ws):
    (run_id,) = _queued(ws)
    for _ in range(MAX_ATTEMPTS):
        assert claim(ws, "w", 0) == run_id
        time.sleep(0.05)
        requeue_expired(ws)
    run = run_json(ws.store, run_id, False)
    assert run["status"] == "failed" and "giving up" in run["error"]


def test_cancel_of_a_queued_run_is_immediate(ws):
    (run_id,) = _queued(ws)
    assert cancel_run(ws.store, run_id) == "cancelled"
    assert claim(ws, "w", 60) is None
