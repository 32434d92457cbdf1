"""A demo run tuned for real (one GRPO step on a few demo images), for tests that need a run answering like one."""
from __future__ import annotations

from backend.data.demo.dataset import ensure_demo_dataset
from backend.engine.settings import preset
from backend.jobs.runs import create_run
from tests.conftest import run_job_now


def tuned_demo_run(ws) -> int:
    """A completed demo-shapes run of one step (two generations of one prompt), its adapter saved."""
    ensure_demo_dataset(ws.store, ws.data_dir, n=6)
    settings = preset("CPU demo", max_steps=1, num_generations=2, save_steps=1)
    settings.prompts_per_step, settings.eval_max_examples = 1, 1
    run_id = create_run(ws.store, "demo-shapes", "demo", settings)
    assert run_job_now(ws, run_id) == 0
    return run_id
