"""The training engine on CPU: the demo's whole path, other families' code paths, kill-and-resume, cancel."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.data.demo.dataset import ensure_demo_dataset
from backend.data.demo.shapes import SIZE
from backend.engine.settings import preset
from backend.jobs.runs import create_run
from backend.jobs.run_history import metrics, rollouts, run_json
from tests.conftest import ROOT, run_cli, run_job_now


def test_demo_whole_path_through_the_cli(tmp_path):
    data = tmp_path / "data"
    demo = json.loads(run_cli("demo", "--json", data_dir=data).stdout)
    assert demo == {"model": "demo", "dataset": "demo-shapes"}
    assert json.loads(run_cli("demo", "--json", data_dir=data).stdout) == demo  # idempotent

    run_id = json.loads(run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "demo", "--max-steps", "8",
                                "--eval-steps", "0", "--eval-max-examples", "24", "--json", data_dir=data).stdout)["id"]
    run_cli("worker", "--once", data_dir=data, timeout=900)  # two evaluations of 24 prompts (no curve) and 8 steps

    run = json.loads(run_cli("runs", "show", str(run_id), "--json", data_dir=data).stdout)
    assert run["status"] == "completed", run["error"]
    steps = lambda name: [p[0] for p in run["metrics"][name]]  # noqa: E731
    assert steps("reward") == list(range(1, 9))
    for name in ("detection_soft_iou", "detection_confidence", "format"):  # the CPU demo preset's
        assert steps(f"rewards/{name}/mean") == list(range(1, 9))
    assert {"completions/mean_length", "loss", "step_time", "entropy"} <= set(run["metrics"])
    assert set(run["evaluation"]) == {"before", "after"}
    assert run["evaluation"]["before"]["format_rate"] > 0.5  # the warm start answers in the format

    from backend.data.workspace import open_workspace
    ws = open_workspace(data)
    stored = rollouts(ws.store, run_id)
    assert stored and all(r.completion and r.prompt and r.rewards for r in stored)
    assert any(r.parsed.get("boxes") for r in stored)

    image = next((data / "datasets").glob("demo-shapes-*/images/shapes_000.png"))
    pred = json.loads(run_cli("predict", "--run", str(run_id), str(image), "--category", "red circle", "--json",
                              data_dir=data).stdout)
    assert pred["family"] == "demo" and "think" in pred
    assert isinstance(pred["boxes"], list)

    evaluated = json.loads(run_cli("eval", "--run", str(run_id), "--json", data_dir=data).stdout)  # the run's cap
    assert evaluated["count"] == 24 and set(evaluated) >= {"map", "ap50", "mean_iou", "format_rate"}

    run_cli("export", "--run", str(run_id), "--out", str(tmp_path / "adapter"), data_dir=data)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    run_cli("export", "--run", str(run_id), "--out", str(tmp_path / "merged"), "--merged", data_dir=data)
    merged = tmp_path / "merged"
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    from backend.engine.models import load
    assert load(str(merged)).family.name == "demo"  # a plain model of the demo family, loadable as such


def test_unreachable_model_fails_the_run_with_one_sentence(tmp_path):
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    bad = run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "nobody/nothing-here", data_dir=data,
                  check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: could not load 'nobody/nothing-here'")
    run_id = json.loads(run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "Qwen/Qwen2-VL-2B-Instruct",
                                "--json", data_dir=data).stdout)["id"]
    os.environ["HF_HUB_OFFLINE"] = "1"  # no hub here: fail fast instead of waiting on the network
    try:
        run_cli("worker", "--once", data_dir=data)
    finally:
        os.environ.pop("HF_HUB_OFFLINE")
    run = json.loads(run_cli("runs", "show", str(run_id), "--json", data_dir=data).stdout)
    assert run["status"] == "failed"
    assert run["error"].startswith("could not load 'Qwen/Qwen2-VL-2B-Instruct': ")
    assert "\n" not in run["error"] and "Traceback" not in run["error"]


def test_qlora_path_loads_4bit_on_cpu(tmp_path):
    """bitsandbytes' NF4 runs on a CPU too: the QLoRA code path trains a step here."""
    from backend.data.workspace import open_workspace
    from backend.engine.demo.builder import build_tiny
    from backend.jobs import training

    build_tiny("qwen2_vl", tmp_path / "tiny")
    ws = open_workspace(tmp_path / "data")
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    settings = preset("CPU demo", max_steps=1, num_generations=2, save_steps=1)
    settings.prompts_per_step, settings.eval_max_examples, settings.max_completion_length = 1, 2, 8
    settings.qlora = True
    run_id = create_run(ws.store, "demo-shapes", str(tmp_path / "tiny"), settings)
    assert run_job_now(ws, run_id) == 0
    log = run_json(ws.store, run_id)
    assert log["status"] == "completed" and [p[0] for p in log["metrics"]["reward"]] == [1]


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen2_5_vl"])
def test_other_families_run_grpo_steps(tmp_path, arch):
    """Tiny local models of each family (random weights): the job runs, with that family's coordinates."""
    from backend.data.workspace import open_workspace
    from backend.engine.demo.builder import build_tiny
    from backend.jobs import training

    model_dir = tmp_path / arch
    build_tiny(arch, model_dir)
    ws = open_workspace(tmp_path / "data")
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    settings = preset("CPU demo", max_steps=2, num_generations=2, save_steps=2)
    settings.prompts_per_step, settings.eval_max_examples, settings.max_completion_length = 1, 4, 16
    run_id = create_run(ws.store, "demo-shapes", str(model_dir), settings)
    assert run_job_now(ws, run_id) == 0
    run = run_json(ws.store, run_id)
    assert run["status"] == "completed" and run["family"] == arch
    assert [p[0] for p in run["metrics"]["reward"]] == [1, 2]

    from PIL import Image

    from backend.data.catalog import get_dataset
    from backend.engine.model_input import fed_size, image_view
    from backend.engine.models import load_processor
    processor, _ = load_processor(str(model_dir))
    rows = training.train_rows(get_dataset(ws.store, "demo-shapes"), ws.data_dir, arch, settings,
                               lambda size: image_view(processor, arch, size).input)
    sol = json.loads(rows[0]["solution"])
    assert sol["family"] == arch and sol["image_size"] == [SIZE, SIZE]
    with Image.open(rows[0]["image"]) as im:
        fed = fed_size(processor, im.convert("RGB"))
    assert sol["input_size"] == list(fed)
    if arch == "qwen2_5_vl":  # absolute pixels of the resized input the processor really produced
        assert f"pixel coordinates of the {fed[0]}x{fed[1]} image" in rows[0]["prompt_text"]
    else:
        assert "between 0 and 1000" in rows[0]["prompt_text"]


def _start_worker(data: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--data-dir", str(data), "worker", "--once",
                             "--lease-seconds", "10"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _worker_on_demo_run(tmp_path, **overrides):
    """A workspace with a small demo run, and `worker --once` already working on it."""
    from backend.data.workspace import open_workspace
    ws = open_workspace(tmp_path / "data")
    ensure_demo_dataset(ws.store, ws.data_dir, n=20)
    settings = preset("CPU demo", num_generations=4, **overrides)
    settings.eval_max_examples = 12
    run_id = create_run(ws.store, "demo-shapes", "demo", settings)
    return ws, run_id, _start_worker(ws.data_dir)


def test_killed_job_resumes_from_its_last_checkpoint(tmp_path):
    from backend.jobs.run_history import latest_checkpoint
    ws, run_id, worker = _worker_on_demo_run(tmp_path, max_steps=8, save_steps=2)
    ck = _wait(lambda: latest_checkpoint(ws.store, ws.data_dir, run_id), 300, "a first checkpoint")
    _wait(lambda: run_json(ws.store, run_id, False)["step"] > ck.step, 120, "a step past the checkpoint")
    resume_step = latest_checkpoint(ws.store, ws.data_dir, run_id).step
    from backend.jobs.job_records import job_pid
    os.kill(job_pid(ws.data_dir / f"runs/{run_id}"), signal.SIGKILL)
    out, _ = worker.communicate(timeout=600)
    run = run_json(ws.store, run_id)
    assert run["status"] == "completed", (run["error"], out[-3000:])
    assert run["attempts"] == 2
    for name in ("reward", "rewards/format/mean"):
        assert [p[0] for p in run["metrics"][name]] == list(range(1, 9))  # every step exactly once
    log = (ws.data_dir / f"runs/{run_id}/train.log").read_text()
    assert f"resuming from step {resume_step}" in log
    # The run's linear decay goes on from where it was, as transformers' scheduler runs it without a break.
    import torch
    from transformers import get_scheduler
    settings = run["settings"]
    assert settings["lr_scheduler"] == "linear"
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=settings["learning_rate"])
    schedule = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=settings["max_steps"])
    expected = []
    for _ in range(settings["max_steps"]):  # each step logs the rate it stepped with
        expected.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert [v for _, v in run["metrics"]["learning_rate"]] == pytest.approx(expected)
    assert expected[0] > expected[-1] > 0


def test_cancel_stops_within_a_few_steps_with_a_checkpoint(tmp_path):
    from backend.jobs.runs import cancel_run
    from backend.jobs.run_history import latest_checkpoint
    ws, run_id, worker = _worker_on_demo_run(tmp_path, max_steps=200, save_steps=100)
    _wait(lambda: run_json(ws.store, run_id, False)["step"] >= 2, 300, "two steps")
    assert cancel_run(ws.store, run_id) == "running"
    asked_at = run_json(ws.store, run_id, False)["step"]
    worker.communicate(timeout=300)
    run = run_json(ws.store, run_id)
    assert run["status"] == "cancelled"
    assert run["step"] <= asked_at + 2
    ck = latest_checkpoint(ws.store, ws.data_dir, run_id)
    assert ck is not None and ck.step == run["step"]
    assert (ws.data_dir / f"runs/{run_id}/adapter/adapter_config.json").is_file()


def test_a_classification_run_predicts_with_the_prompt_it_was_trained_with(tmp_path):
    """Test tab and `predict`: a classification run is asked exactly as in training (its classes, its object
    kind), tuned and base alike; a detection run without a category is one sentence."""
    from backend.data.catalog import get_dataset
    from backend.data.importer import import_dataset
    from backend.data.workspace import open_workspace
    from backend.jobs import training
    from backend.jobs.predict import predict
    from tests.builders import classification_samples, write_folders

    write_folders(tmp_path / "pets", classification_samples(4))
    ws = open_workspace(tmp_path / "data")
    import_dataset(ws.store, ws.data_dir, [builders_zip(tmp_path / "pets")], "pets")
    settings = preset("CPU demo", max_steps=1, num_generations=2, save_steps=1)
    settings.prompts_per_step, settings.eval_max_examples, settings.max_completion_length = 1, 2, 8
    settings.object_kind = "animal"
    run_id = create_run(ws.store, "pets", "demo", settings)
    assert run_job_now(ws, run_id) == 0
    image = next(p for p in (ws.data_dir / "datasets").rglob("*.png") if p.is_file())
    trained = training.train_rows(get_dataset(ws.store, "pets"), ws.data_dir, "demo", settings)[0]["prompt_text"]
    assert trained.startswith("This is an image containing an animal. Please identify the class of the animal")
    for base in (False, True):
        assert predict(ws, image, run_id=run_id, question="what is it?", base=base)["prompt"] == trained


def builders_zip(folder: Path) -> Path:
    from tests.builders import zip_dir
    return zip_dir(folder, folder.with_suffix(".zip"))


def test_rl_options_from_the_cli_reach_trls_config(tmp_path):
    """`runs create` flags (generated from TrainSettings) -> the stored settings -> the GRPOConfig the job builds."""
    from trl import GRPOConfig

    from backend.data.workspace import open_workspace
    from backend.engine.settings import TrainSettings
    from backend.jobs.runs import get_run
    from backend.engine.run_plan import RunPlan
    from backend.jobs.training import grpo_config_kwargs

    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    run_id = json.loads(run_cli(
        "runs", "create", "--dataset", "demo-shapes", "--model", "demo", "--loss-type", "dr_grpo",
        "--scale-rewards", "none", "--importance-sampling-level", "sequence", "--top-p", "0.9", "--epsilon", "0.1",
        "--epsilon-high", "0.28", "--mask-truncated-completions", "--max-steps", "7", "--lr-scheduler", "cosine",
        "--json", data_dir=data).stdout)["id"]
    settings = TrainSettings.from_dict(get_run(open_workspace(data).store, run_id).settings)
    config = GRPOConfig(**grpo_config_kwargs(settings, tmp_path / "out", "cpu", RunPlan("hf", False),
                                              vllm_available=False))
    assert (config.loss_type, config.scale_rewards, config.importance_sampling_level) == ("dr_grpo", "none", "sequence")
    assert (config.top_p, config.epsilon, config.epsilon_high) == (0.9, 0.1, 0.28)
    assert config.mask_truncated_completions is True and config.max_steps == 7 and config.lr_scheduler_type == "cosine"
    default = GRPOConfig(**grpo_config_kwargs(TrainSettings(), tmp_path / "out", "cpu", RunPlan("hf", False),
                                               vllm_available=False))
    assert (default.loss_type, default.scale_rewards, default.importance_sampling_level) == ("dapo", "group", "token")
    assert default.lr_scheduler_type == "linear"  # TRL's default, which the paper trained with
    bad = run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "demo", "--loss-type", "ppo",
                  data_dir=data, check=False)
    assert bad.returncode == 2 and "invalid choice: 'ppo'" in bad.stderr
