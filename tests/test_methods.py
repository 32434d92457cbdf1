"""SFT beside GRPO, the held-out curve and its best checkpoint, the stored groups of completions, and the
comparison table: pure parts here, then the demo through the CLI (tiny settings, each test well under a minute
of training)."""
from __future__ import annotations

import json

import pytest

from backend.engine.settings import TrainSettings, eval_interval, preset
from backend.jobs.runs import create_run
from backend.jobs.run_history import (best_point, record_checkpoint, run_json, save_evaluation, save_heldout_point,
                                      upsert_metrics)
from backend.scoring.playground import score
from backend.scoring.tasks import get_task, target_completion
from storage.models import Run
from tests.conftest import run_cli

# ------------------------------------------------------------------ what an SFT run is taught


@pytest.mark.parametrize("family, input_size", [("demo", None), ("qwen2_vl", None), ("qwen3_vl", None),
                                                ("qwen2_5_vl", [644, 476])])
def test_sft_targets_earn_full_reward_in_each_familys_frame(family, input_size):
    """The target answer is the truth in the family's frame: the rewards read it back as (nearly) the truth."""
    size = [640, 480]
    detection = {"image_size": size, "family": family, "boxes": [[64, 48, 320, 240], [400, 300, 600, 460]]}
    if input_size:
        detection["input_size"] = input_size
    text = target_completion("detection", detection, "cat")
    assert text.startswith("<think>The image shows 2 objects of the category 'cat'.</think><answer>[{'Position': ")
    rewards = score("detection", {"boxes": detection["boxes"]}, text, family, size, input_size)["rewards"]
    # (the demo's 0-100 grid rounds a 640-pixel side to 6.4-pixel steps)
    assert rewards["format"] == 1.0 and rewards["detection_confidence"] == 1.0 and rewards["detection_iou"] > 0.95

    absent = target_completion("detection", {**detection, "boxes": []}, "dog")
    assert absent == "<think>There is no dog in the image.</think><answer>No Objects</answer>"
    assert score("detection", {"boxes": []}, absent, family, size, input_size)["rewards"]["detection_iou"] == 1.0

    region = {k: v for k, v in detection.items() if k != "boxes"} | {"box": [64, 48, 320, 240]}
    rewards = score("grounding", {"box": region["box"]}, target_completion("grounding", region), family, size,
                    input_size)["rewards"]
    assert rewards["format"] == 1.0 and rewards["grounding_iou"] > 0.95


def test_sft_target_for_a_class_is_the_label():
    text = target_completion("classification", {"label": "golden_retriever", "synonyms": []})
    assert text == "<think>The image shows a golden_retriever.</think><answer>golden_retriever</answer>"
    assert score("classification", {"label": "golden_retriever"}, text)["total"] == 2.0


def test_sft_rows_keep_grpos_prompts_and_add_the_answer():
    from backend.engine.sft import sft_rows
    sample = {"id": 1, "file": "a.png", "split": "train", "width": 100, "height": 100,
              "boxes": [[10, 10, 50, 50, "cat"]]}
    examples = get_task("detection").build_examples(sample, ["cat"], "demo", TrainSettings().task_settings(),
                                                    __import__("random").Random(0))
    rows = [{"prompt": [{"role": "user", "content": e.prompt}], "solution": json.dumps(e.solution),
             "category": e.category} for e in examples]
    taught = sft_rows(rows, "detection")
    assert [r["prompt"] for r in taught] == [r["prompt"] for r in rows]
    assert taught[0]["completion"] == [{"role": "assistant", "content": "<think>The image shows one cat.</think>"
                                        "<answer>[{'Position': [10, 10, 50, 50], 'Confidence': 1.0}]</answer>"}]


def test_sft_config_builds_and_refuses_what_this_machine_cannot_run(tmp_path):
    from trl import SFTConfig

    from backend.engine.sft import sft_config_kwargs
    settings = preset("CPU demo", method="sft", max_steps=3)
    config = SFTConfig(**sft_config_kwargs(settings, tmp_path, "cpu"))
    assert (config.max_steps, config.per_device_train_batch_size, config.max_length) == (3, 4, None)
    assert config.lr_scheduler_type == settings.lr_scheduler == "linear"
    with pytest.raises(ValueError, match="use_liger_kernel needs a CUDA GPU"):
        sft_config_kwargs(preset("CPU demo", use_liger_kernel=True), tmp_path, "cpu")


@pytest.mark.parametrize("max_steps, eval_steps, expected", [(60, None, 7), (200, None, 25), (4, None, 2),
                                                              (60, 10, 10), (60, 0, 0), (8, 20, 4), (8, 8, 4)])
def test_evaluation_interval(max_steps, eval_steps, expected):
    assert eval_interval(TrainSettings(max_steps=max_steps, eval_steps=eval_steps)) == expected


def test_method_choices_are_checked_at_create(ws):
    from backend.data.demo.dataset import ensure_demo_dataset
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    with pytest.raises(ValueError, match=r"^unknown method 'ppo' \(known: grpo, sft\)$"):
        create_run(ws.store, "demo-shapes", "demo", preset("CPU demo", method="ppo"))
    grpo = create_run(ws.store, "demo-shapes", "demo", preset("CPU demo"))
    with pytest.raises(ValueError, match=f"^run {grpo} is not an SFT run: a GRPO run starts from a finished SFT"):
        create_run(ws.store, "demo-shapes", "demo", preset("CPU demo", init_from=grpo))
    sft = create_run(ws.store, "demo-shapes", "demo", preset("CPU demo", method="sft"))
    with pytest.raises(ValueError, match=f"^run {sft} is queued: start from a completed SFT run$"):
        create_run(ws.store, "demo-shapes", "demo", preset("CPU demo", init_from=sft))
    with ws.store.write() as s:
        s.get(Run, sft).status = "completed"
    with pytest.raises(ValueError, match=f"^run {sft} trained an adapter for 'demo', not 'other/Qwen2-VL-2B'"):
        create_run(ws.store, "demo-shapes", "other/Qwen2-VL-2B", preset("CPU demo", init_from=sft))
    with pytest.raises(ValueError, match="^init from starts a GRPO run from an SFT run's adapter"):
        create_run(ws.store, "demo-shapes", "demo", preset("CPU demo", method="sft", init_from=sft))
    assert create_run(ws.store, "demo-shapes", "demo", preset("CPU demo", init_from=sft)) > sft


def test_the_recorder_keeps_whole_groups_with_their_advantages():
    """What TRL handed the reward functions at a step: 3 prompts x G=2, a prompt's completions together."""
    from backend.engine.grpo import RolloutRecorder
    settings = preset("CPU demo", num_generations=2, rewards=["format", "detection_iou"], reward_weights=[1.0, 2.0],
                      scale_rewards="none")
    recorder = RolloutRecorder(settings)
    wrapped = {n: recorder.wrap(n) for n in settings.rewards}
    good, bad = "<think>a</think><answer>No Objects</answer>", "no tags"
    completions = [good, bad, good, good, bad, bad]
    kwargs = {"solution": [json.dumps({"boxes": []})] * 6, "sample_id": [1, 1, 2, 2, 3, 3],
              "image_rel": ["a.png"] * 2 + ["b.png"] * 2 + ["c.png"] * 2, "prompt_text": ["p1", "p1", "p2", "p2",
                                                                                        "p3", "p3"]}
    for fn in wrapped.values():
        fn(completions, **kwargs)
    rows = recorder.take(max_groups=8, max_rows=5)  # room for two whole groups only
    assert [(r["prompt_index"], r["sample_index"], r["prompt"]) for r in rows] == \
        [(0, 0, "p1"), (0, 1, "p1"), (1, 0, "p2"), (1, 1, "p2")]
    assert [r["total"] for r in rows] == [3.0, 0.0, 3.0, 3.0]  # format 1 + 2 x detection_iou 1 ("No Objects")
    assert [r["advantage"] for r in rows] == [1.5, -1.5, 0.0, 0.0]  # scale_rewards "none": r - mean
    assert [r["group_std"] for r in rows][2:] == [0.0, 0.0]
    assert recorder.take(8) == []  # taken once


# ------------------------------------------------------------------ the best checkpoint, from storage


def _run_with_curve(ws, curve: dict[int, float], saved: list[int], steps: int | None = None) -> int:
    """A completed run of `steps` (default: the curve's last) with held-out points {step: mean_iou},
    checkpoints at `saved` and a final adapter."""
    from backend.data.demo.dataset import ensure_demo_dataset
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    steps = steps or max(curve)
    run_id = create_run(ws.store, "demo-shapes", "demo", preset("CPU demo", max_steps=steps))
    with ws.store.write() as s:
        run = s.get(Run, run_id)
        run.status, run.step = "completed", steps
    for step, value in curve.items():
        save_heldout_point(ws.store, run_id, step, {"mean_iou": value, "format_rate": 1.0, "count": 4}, 1.5)
    for step in saved:
        folder = ws.data_dir / f"runs/{run_id}/checkpoints/checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
        (folder / "optimizer.pt").write_text("resume state")
        record_checkpoint(ws.store, run_id, step, folder.relative_to(ws.data_dir).as_posix())
    (ws.data_dir / f"runs/{run_id}/adapter").mkdir(parents=True)
    (ws.data_dir / f"runs/{run_id}/adapter/adapter_config.json").write_text("{}")
    return run_id


def test_the_best_step_is_the_best_checkpointed_one_and_predict_export_use_it(ws, tmp_path):
    from backend.jobs.predict import chosen_adapter, export
    run_id = _run_with_curve(ws, {0: 0.9, 2: 0.6, 4: 0.7, 5: 0.8, 6: 0.5}, saved=[2, 4, 6])
    # Step 0 is the base model and step 5 has no checkpoint: neither can be the best.
    assert best_point(ws.store, run_id, "detection") == {"step": 4, "metric": "mean_iou", "value": 0.7}
    shown = run_json(ws.store, run_id)
    assert shown["best"] == {"step": 4, "metric": "mean_iou", "value": 0.7}
    assert shown["heldout"] == {"mean_iou": [[0, 0.9], [2, 0.6], [4, 0.7], [5, 0.8], [6, 0.5]],
                                "format_rate": [[0, 1.0], [2, 1.0], [4, 1.0], [5, 1.0], [6, 1.0]]}
    assert shown["heldout_seconds"][0] == [0, 1.5]

    folder, used = chosen_adapter(ws, run_id)
    assert folder.name == "checkpoint-4" and used == {"which": "best", "step": 4}
    folder, used = chosen_adapter(ws, run_id, "last")
    assert folder.name == "adapter" and used == {"which": "last", "step": 6}
    out = export(ws, run_id, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json"]  # no optimizer state
    with pytest.raises(ValueError, match="checkpoint must be one of best, last, not 'first'"):
        chosen_adapter(ws, run_id, "first")


def test_a_tie_keeps_the_later_step_and_the_last_step_is_the_final_adapter(ws):
    from backend.jobs.predict import chosen_adapter
    run_id = _run_with_curve(ws, {0: 0.1, 2: 0.5, 4: 0.5}, saved=[2, 4])
    assert best_point(ws.store, run_id, "detection")["step"] == 4
    folder, used = chosen_adapter(ws, run_id)
    assert folder.name == "adapter" and used == {"which": "best", "step": 4}


def test_without_evaluations_during_training_best_is_the_last(ws):
    from backend.jobs.predict import chosen_adapter
    run_id = _run_with_curve(ws, {0: 0.1}, saved=[3], steps=3)
    assert best_point(ws.store, run_id, "detection") is None
    assert chosen_adapter(ws, run_id) == (ws.data_dir / f"runs/{run_id}/adapter", {"which": "last", "step": 3})


def test_compare_lists_the_base_then_each_completed_run(ws):
    from backend.jobs.compare import compare
    first = _run_with_curve(ws, {0: 0.2, 2: 0.4, 4: 0.5}, saved=[2, 4])
    second = _run_with_curve(ws, {0: 0.2, 4: 0.6}, saved=[4])
    scores = lambda value: {f"img{i}": [value + 0.01 * (i % 3)] for i in range(12)}  # noqa: E731
    for run_id, after in ((first, 0.5), (second, 0.6)):
        save_evaluation(ws.store, run_id, "before", {"mean_iou": 0.2, "map": 0.1, "per_image": scores(0.2)})
        save_evaluation(ws.store, run_id, "after", {"mean_iou": after, "map": 0.3, "per_image": scores(after)})
        upsert_metrics(ws.store, run_id, 1, {"step_time": 2.0})
    with ws.store.write() as s:
        s.get(Run, second).settings = {**s.get(Run, second).settings, "method": "sft"}
    create_run(ws.store, "demo-shapes", "demo", preset("CPU demo"))  # queued: not in the table
    table = compare(ws.store, "demo-shapes")
    assert table["dataset"] == "demo-shapes"
    assert [(r["run"], r["method"], r["steps"]) for r in table["rows"]] == \
        [(None, "base", 0), (first, "grpo", 4), (second, "sft", 4)]
    assert table["rows"][0]["metrics"]["mean_iou"] == 0.2
    assert table["rows"][1]["metrics"]["mean_iou"] == 0.5 and table["rows"][1]["seconds"] == 2.0 + 3 * 1.5
    assert table["rows"][2]["best"] == {"step": 4, "metric": "mean_iou", "value": 0.6}
    # each run's change from the start, and GRPO against SFT, with intervals paired over the same 12 images
    assert table["rows"][1]["change"]["delta"] == pytest.approx(0.3)
    assert table["rows"][1]["change"]["interval"] == pytest.approx([0.3, 0.3])
    [contrast] = table["contrasts"]
    assert contrast["what"] == f"GRPO run {first} against SFT run {second}" and contrast["images"] == 12
    assert contrast["delta"] == pytest.approx(-0.1) and contrast["interval"] == pytest.approx([-0.1, -0.1])


# ------------------------------------------------------------------ the demo through the CLI


def _create(data, *flags) -> int:
    return json.loads(run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "demo", "--num-generations",
                              "2", "--prompts-per-step", "2", "--max-completion-length", "16",
                              "--eval-max-examples", "6", "--rollout-steps", "1",
                              "--ignore-memory-estimate", *flags, "--json", data_dir=data).stdout)["id"]


def test_grpo_held_out_curve_best_checkpoint_and_every_completion_of_the_groups(tmp_path):
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    run_id = _create(data, "--max-steps", "3", "--eval-steps", "1", "--save-steps", "10")
    run_cli("worker", "--once", data_dir=data)
    run = json.loads(run_cli("runs", "show", str(run_id), "--json", data_dir=data).stdout)
    assert run["status"] == "completed", run["error"]
    assert run["method"] == "grpo"
    # before (step 0), every step during training, after (step 3); the same 6 prompts each time
    assert [p[0] for p in run["heldout"]["mean_iou"]] == [0, 1, 2, 3]
    assert [p[0] for p in run["heldout"]["format_rate"]] == [0, 1, 2, 3]
    assert all(s > 0 for _, s in run["heldout_seconds"])
    assert run["evaluation"]["before"]["count"] == 6 and run["evaluation"]["after"]["seconds"] > 0
    values = {step: v for step, v in run["heldout"]["mean_iou"] if step >= 1}
    best = run["best"]
    assert best["metric"] == "mean_iou" and best["value"] == max(values.values())
    assert best["step"] == max(s for s, v in values.items() if v == best["value"])
    assert [p[0] for p in run["metrics"]["frac_reward_zero_std"]] == [1, 2, 3]
    # the verdict: before against after on the same prompts, with its interval; "improved" only beyond it
    verdict = run["verdict"]
    assert verdict["final"] and verdict["metric"] == "mean_iou"
    assert verdict["before"] == pytest.approx(run["evaluation"]["before"]["mean_iou"], abs=1e-4)
    assert verdict["after"] == pytest.approx(run["evaluation"]["after"]["mean_iou"], abs=1e-4)
    assert verdict["after"] == pytest.approx(run["heldout"]["mean_iou"][-1][1], abs=1e-4)  # one definition
    lo, hi = verdict["interval"]
    assert lo <= verdict["delta"] <= hi
    assert verdict["status"] == ("improved" if lo > 0 else "worse" if hi < 0 else "no_change")
    assert f"Verdict: " in run_cli("runs", "show", str(run_id), data_dir=data).stdout

    from backend.data.workspace import open_workspace
    from backend.jobs.run_history import rollouts
    ws = open_workspace(data)
    stored = rollouts(ws.store, run_id)
    assert sorted({r.step for r in stored}) == [1, 2, 3]
    for step in (1, 2, 3):
        rows = [r for r in stored if r.step == step]
        # both groups of the step, each with its 2 completions
        assert sorted((r.prompt_index, r.sample_index) for r in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        for p in (0, 1):
            group = [r for r in rows if r.prompt_index == p]
            assert len({r.prompt for r in group}) == 1
            assert sum(r.total for r in group) / 2 == pytest.approx(group[0].group_mean)
            for r in group:
                terms = [v for v in r.rewards.values() if v is not None]  # a reward of another task scores None
                assert r.total == pytest.approx(sum(terms))  # the task's rewards, weight 1 each
                spread = (r.total - r.group_mean) / (r.group_std + 1e-4)
                assert r.advantage == pytest.approx(spread, abs=1e-6)

    image = next((data / "datasets").glob("demo-shapes-*/images/shapes_000.png"))
    ask = ("predict", "--run", str(run_id), str(image), "--category", "red circle", "--json")
    assert json.loads(run_cli(*ask, data_dir=data).stdout)["checkpoint"] == {"which": "best", "step": best["step"]}
    last = json.loads(run_cli(*ask, "--checkpoint", "last", data_dir=data).stdout)["checkpoint"]
    assert last == {"which": "last", "step": 3}
    run_cli("export", "--run", str(run_id), "--out", str(tmp_path / "best"), data_dir=data)
    checkpoint = data / f"runs/{run_id}/checkpoints/checkpoint-{best['step']}"
    assert (tmp_path / "best" / "adapter_model.safetensors").read_bytes() == \
        ((checkpoint if best["step"] < 3 else data / f"runs/{run_id}/adapter") / "adapter_model.safetensors").read_bytes()
    assert not (tmp_path / "best" / "optimizer.pt").exists()
    # the rotation kept every checkpoint: one per evaluation (and the last)
    assert sorted(p.name for p in (data / f"runs/{run_id}/checkpoints").glob("checkpoint-*")) == \
        ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


def test_sft_then_grpo_from_it_and_the_comparison_table(tmp_path):
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    sft = _create(data, "--method", "sft", "--max-steps", "4", "--eval-steps", "2", "--save-steps", "10")
    run_cli("worker", "--once", data_dir=data)
    run = json.loads(run_cli("runs", "show", str(sft), "--json", data_dir=data).stdout)
    assert run["status"] == "completed", run["error"]
    assert run["method"] == "sft" and [p[0] for p in run["metrics"]["loss"]] == [1, 2, 3, 4]
    assert "reward" not in run["metrics"]  # nothing sampled
    assert [p[0] for p in run["heldout"]["mean_iou"]] == [0, 2, 4] and run["best"]["step"] in (2, 4)
    log = (data / f"runs/{sft}/train.log").read_text()
    assert "training demo by SFT (demo, LoRA on cpu, generation hf) for 4 steps, held-out evaluation every 2" in log
    best = run["best"]

    grpo = _create(data, "--init-from", str(sft), "--max-steps", "2", "--eval-steps", "0")
    run_cli("worker", "--once", data_dir=data)
    run = json.loads(run_cli("runs", "show", str(grpo), "--json", data_dir=data).stdout)
    assert run["status"] == "completed", run["error"]
    assert run["init_from"] == sft and [p[0] for p in run["heldout"]["mean_iou"]] == [0, 2]
    # It starts from the SFT run's best checkpoint: its step 0 is that adapter's score on the same prompts.
    assert f"starting from run {sft}'s adapter (best, step {best['step']})" in \
        (data / f"runs/{grpo}/train.log").read_text()
    assert run["heldout"]["mean_iou"][0][1] == pytest.approx(best["value"])

    table = json.loads(run_cli("compare", "--dataset", "demo-shapes", "--json", data_dir=data).stdout)
    assert table["dataset"] == "demo-shapes"
    assert [(r["run"], r["method"]) for r in table["rows"]] == [(None, "base"), (sft, "sft"), (grpo, "grpo")]
    for row in table["rows"]:
        assert set(row) >= {"run", "method", "metrics", "steps", "seconds"}
        assert {"mean_iou", "map", "format_rate"} <= set(row["metrics"])
    assert [r["steps"] for r in table["rows"]] == [0, 4, 2] and table["rows"][1]["seconds"] > 0
    text = run_cli("compare", "--dataset", "demo-shapes", data_dir=data).stdout
    assert f"run {grpo}\tgrpo after run {sft}\t2 steps" in text


def test_an_sft_run_cancels_and_resumes_like_a_grpo_run(tmp_path):
    from backend.data.demo.dataset import ensure_demo_dataset
    from backend.data.workspace import open_workspace
    from backend.jobs.runs import cancel_run, resume_run
    from backend.jobs.run_history import latest_checkpoint
    from tests.test_training import _start_worker, _wait
    ws = open_workspace(tmp_path / "data")
    ensure_demo_dataset(ws.store, ws.data_dir, n=20)
    settings = preset("CPU demo", method="sft", max_steps=12, save_steps=100, eval_steps=0, eval_max_examples=4,
                      max_completion_length=16)
    run_id = create_run(ws.store, "demo-shapes", "demo", settings)
    worker = _start_worker(ws.data_dir)
    _wait(lambda: run_json(ws.store, run_id, False)["step"] >= 2, 300, "two steps")
    assert cancel_run(ws.store, run_id) == "running"
    worker.communicate(timeout=300)
    run = run_json(ws.store, run_id)
    assert run["status"] == "cancelled" and run["step"] < 12
    stopped = latest_checkpoint(ws.store, ws.data_dir, run_id).step
    assert stopped == run["step"] and "after" not in run["evaluation"]

    resume_run(ws.store, run_id)
    out, _ = _start_worker(ws.data_dir).communicate(timeout=300)
    run = run_json(ws.store, run_id)
    assert run["status"] == "completed", (run["error"], out[-2000:])
    assert [p[0] for p in run["metrics"]["loss"]] == list(range(1, 13))  # every step exactly once
    assert [p[0] for p in run["heldout"]["mean_iou"]] == [0, 12]
    assert f"resuming from step {stopped}" in (ws.data_dir / f"runs/{run_id}/train.log").read_text()
