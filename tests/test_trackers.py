"""report_to: a run's metrics also reach the experiment trackers a team already uses, under the run's name;
what this machine cannot report to is one sentence at `runs create`."""
from __future__ import annotations

import json

from backend.data.workspace import open_workspace
from backend.engine.gpus import settings_problem
from backend.engine.settings import TrainSettings
from tests.conftest import run_cli, run_job_now


def test_a_run_reports_to_tensorboard_under_its_name(tmp_path):
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    run_id = json.loads(run_cli(
        "runs", "create", "--dataset", "demo-shapes", "--model", "demo", "--preset", "CPU demo", "--max-steps", "1",
        "--num-generations", "2", "--eval-steps", "0", "--eval-max-examples", "2", "--report-to", "tensorboard",
        "--json", data_dir=data).stdout)["id"]
    ws = open_workspace(data)
    assert run_job_now(ws, run_id) == 0
    events = list((data / f"runs/{run_id}/checkpoints").rglob("events.out.tfevents*"))
    assert events, "no TensorBoard event file"
    written = b"".join(e.read_bytes() for e in events)
    assert b"train/reward" in written  # the step's reward, as TRL logs it
    assert f"visual-rft-run-{run_id}".encode() in written  # the run's name, with the settings TRL logs as text


def test_what_cannot_be_reported_to_is_one_sentence(tmp_path):
    nothing = lambda package: False  # noqa: E731
    assert settings_problem(TrainSettings(report_to=["neptune"]), 0) == (
        "report_to takes trackio, wandb, mlflow, tensorboard, not 'neptune'")
    assert settings_problem(TrainSettings(report_to=["wandb"]), 0, nothing) == (
        "report_to 'wandb' needs the wandb package, which is not installed here; install it or leave it out")
    assert settings_problem(TrainSettings(report_to=["tensorboard"]), 0) is None  # tensorboardX is installed
    run_cli("demo", data_dir=tmp_path)
    bad = run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "demo", "--report-to", "neptune",
                  data_dir=tmp_path, check=False)
    assert bad.returncode == 1 and bad.stderr.strip() == (
        "error: report_to takes trackio, wandb, mlflow, tensorboard, not 'neptune'")
