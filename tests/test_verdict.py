"""Did training help: the paired bootstrap against known cases, the verdict's rules, the format-only rise, run
settings refused at creation, and NaN metrics recorded as missing."""
from __future__ import annotations

import math
import random
import statistics

import pytest

from backend.engine.settings import TrainSettings, check_values, preset
from backend.scoring.verdict import (format_only, paired_bootstrap, reward_changes, status, verdict, verdict_sentence,
                                     within_noise)


def test_the_same_scores_give_no_change_and_a_zero_interval():
    scores = {f"img{i}": [i / 10] for i in range(10)}
    change = paired_bootstrap(scores, scores)
    assert change["delta"] == 0 and change["interval"] == [0, 0] and status(change) == "no_change"


def test_the_same_gain_on_every_image_is_an_improvement_with_a_point_interval():
    before = {f"img{i}": [0.2, 0.3] for i in range(12)}
    after = {k: [v + 0.1 for v in vs] for k, vs in before.items()}
    change = paired_bootstrap(before, after)
    assert change["delta"] == pytest.approx(0.1) and change["interval"] == pytest.approx([0.1, 0.1])
    assert status(change) == "improved" and (change["images"], change["n"]) == (12, 24)
    assert status(paired_bootstrap(after, before)) == "worse"


def test_one_gain_and_one_equal_loss_hold_zero():
    change = paired_bootstrap({"a": [0.0], "b": [1.0]}, {"a": [1.0], "b": [0.0]})
    assert change["delta"] == 0
    lo, hi = change["interval"]
    assert lo == pytest.approx(-1) and hi == pytest.approx(1) and status(change) == "no_change"  # draws of [a a], [b b]
    assert within_noise(change) == "+0.000 (90 % interval -1.000 … +1.000) — within noise"


def test_a_large_sample_matches_the_normal_approximation():
    """400 images, a change of 0.05 with sd 0.3 per image: the 90 % interval is the mean ± 1.645 sd/√n within a few
    percent."""
    rng = random.Random(7)
    before = {f"i{k}": [rng.random()] for k in range(400)}
    diffs = {k: rng.gauss(0.05, 0.3) for k in before}
    after = {k: [before[k][0] + diffs[k]] for k in before}
    change = paired_bootstrap(before, after)
    mean, sd = statistics.fmean(diffs.values()), statistics.stdev(diffs.values())
    half = 1.645 * sd / math.sqrt(400)
    assert change["delta"] == pytest.approx(mean)
    assert change["interval"][0] == pytest.approx(mean - half, abs=0.15 * half)
    assert change["interval"][1] == pytest.approx(mean + half, abs=0.15 * half)


def test_prompts_are_resampled_with_their_image():
    """One image answered 20 prompts right after training, 19 other images (one prompt each) stayed at 0: the
    prompt mean rose by 20/39, but it rests on one image, so the interval reaches 0 (a draw without it is common)."""
    before = {"big": [0.0] * 20, **{f"i{k}": [0.0] for k in range(19)}}
    after = {"big": [1.0] * 20, **{f"i{k}": [0.0] for k in range(19)}}
    change = paired_bootstrap(before, after)
    assert change["delta"] == pytest.approx(20 / 39) and change["interval"][0] == 0
    assert status(change) == "no_change"


def test_only_images_scored_by_both_are_paired_and_the_result_is_seeded():
    before = {"a": [0.1], "b": [0.5], "gone": [0.9]}
    after = {"a": [0.3], "b": [0.4], "new": [0.0]}
    change = paired_bootstrap(before, after)
    assert change["images"] == 2 and change["delta"] == pytest.approx(0.05)
    assert paired_bootstrap(before, after, seed=3) == paired_bootstrap(before, after, seed=3)
    assert paired_bootstrap({"a": [1.0]}, {"b": [1.0]}) is None


def test_the_reward_changes_are_last_quarter_against_first_quarter():
    """Quarters of at least 3 steps where there are 6: 8 points compare the first 3 with the last 3."""
    points = {"rewards/format/mean": [[s, v] for s, v in enumerate([0.5, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9], 1)],
              "rewards/detection_soft_iou/mean": [[1, 0.02], [2, 0.01]], "reward": [[1, 3.0], [2, 4.0]],
              "rewards/format/std": [[1, 0.1], [2, 0.2]], "rewards/x/mean": [[1, 0.3]]}
    assert reward_changes(points) == pytest.approx({"format": 0.9 - 1.6 / 3, "detection_soft_iou": -0.01})
    long = {"rewards/format/mean": [[s, 0.0 if s <= 25 else 0.5 if s <= 75 else 1.0] for s in range(1, 101)]}
    assert reward_changes(long) == {"format": 1.0}  # 25 steps a side


def test_the_cones_run_rose_through_format():
    """The 6 steps of a run of the demo model on the Roboflow cones export (its log): the total reward 0.56 -> 0.76,
    one step's soft IoU 0.062 at the end. Three steps a side: format +0.135, soft IoU +0.013: format only."""
    steps = {"format": [0.531, 0.312, 0.656, 0.5, 0.75, 0.656], "detection_soft_iou": [0.0039, 0, 0.027, 0.0018,
                                                                                      0.0052, 0.062],
             "detection_confidence": [0.025, 0.0094, 0.019, 0.028, 0.041, 0.041]}
    changes = reward_changes({f"rewards/{k}/mean": [[i + 1, v] for i, v in enumerate(vs)] for k, vs in steps.items()})
    assert changes["format"] == pytest.approx(0.1357, abs=1e-3) and format_only(changes, {})


@pytest.mark.parametrize("changes, expected", [
    ({"format": 0.2, "detection_confidence": 0.09}, True),  # confidence rises for a model that finds nothing
    ({"format": 0.2, "detection_soft_iou": 0.0}, True),
    # the cones run: format 0.53 -> 0.84, soft IoU flat at 0.015, confidence +0.02
    ({"format": 0.31, "detection_soft_iou": 0.0, "detection_confidence": 0.02}, True),
    ({"format": 0.15, "detection_soft_iou": 0.12}, False),  # the boxes rose too
    ({"format": 0.03, "detection_soft_iou": 0.0}, False),  # nothing rose
    ({"format": 0.2, "classification_accuracy": 0.04, "detection_confidence": 0.04}, True),  # small task moves
    ({"format": 0.1, "detection_confidence": 0.045, "detection_soft_iou": 0.045}, False),  # format under 2/3 of it
])
def test_format_only(changes, expected):
    assert format_only(changes, {}) is expected


def test_the_verdict_document_and_its_sentence():
    before = {f"i{k}": [0.1, 0.2] for k in range(10)}
    after = {k: [0.3, 0.4] for k in before}
    v = verdict("mean_iou", before, after, {"format": 0.3, "detection_soft_iou": 0.0}, {"format": 1.0}, final=True)
    assert {k: v[k] for k in ("status", "metric", "before", "after", "delta", "interval", "format_only", "n")} == {
        "status": "improved", "metric": "mean_iou", "before": 0.15, "after": 0.35, "delta": 0.2,
        "interval": [0.2, 0.2], "format_only": True, "n": 20}
    text = verdict_sentence(v)
    assert text.startswith("Verdict: improved — held-out mean_iou 0.150 before, 0.350 after training (+0.200; 90 % "
                           "interval +0.200 … +0.200 over 10 images, 20 prompts).")
    assert "rose through the format reward alone" in text
    pending = verdict("accuracy", before, None, {}, {}, final=False)
    assert pending["status"] == "pending" and pending["interval"] is None
    assert verdict_sentence(pending).startswith("Verdict: pending")


@pytest.mark.parametrize("change, sentence", [
    (dict(learning_rate=-0.001), "learning_rate must be above 0 (got -0.001)"),
    (dict(learning_rate=float("nan")), "learning_rate must be above 0 (got nan)"),
    (dict(beta=float("nan")), "beta must be 0 or more (got nan)"),
    (dict(beta=float("inf")), "beta must be 0 or more (got inf)"),
    (dict(seed=-1), "seed must be a whole number from 0 to 4294967295 (got -1)"),
    (dict(seed=2 ** 32), "seed must be a whole number from 0 to 4294967295 (got 4294967296)"),
    (dict(temperature=0.0), "temperature must be above 0 (got 0)"),
    (dict(top_p=1.5), "top_p must be above 0 and at most 1 (got 1.5)"),
    (dict(negative_share=-0.1), "negative_share must be from 0 to 1 (got -0.1)"),
    (dict(eval_max_examples=0), "eval_max_examples must be at least 1 (got 0)"),
    (dict(num_generations=1), "num_generations must be at least 2 (GRPO compares the completions of a group) (got 1)"),
    (dict(reward_weights=[0.0, 0.0]), "reward weights are all 0: at least one reward must count"),
    (dict(reward_weights=[1.0, float("nan")]), "reward weights must be finite numbers (got 1.0, nan)"),
])
def test_a_setting_out_of_range_is_one_sentence(change, sentence):
    with pytest.raises(ValueError) as e:
        check_values(TrainSettings(**change))
    assert str(e.value) == sentence


def test_every_preset_is_in_range():
    from backend.engine.settings import PRESETS
    for name in PRESETS:
        check_values(preset(name))


def test_bad_settings_queue_nothing_from_the_api_or_the_command_line(ws, tmp_path):
    from backend.data.demo.dataset import ensure_demo_dataset
    from backend.jobs.runs import create_run, list_runs
    from tests.conftest import run_cli
    ensure_demo_dataset(ws.store, ws.data_dir, n=6)
    for change in (dict(learning_rate=-0.001), dict(beta=float("nan")), dict(temperature=0.0), dict(seed=-1)):
        with pytest.raises(ValueError, match="must be"):
            create_run(ws.store, "demo-shapes", "demo", preset("CPU demo", **change))
    for flags, sentence in ((["--learning-rate", "-0.001"], "learning_rate must be above 0 (got -0.001)"),
                            (["--beta", "nan"], "beta must be 0 or more (got nan)")):
        proc = run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "demo", *flags, data_dir=ws.data_dir, check=False)
        assert proc.returncode != 0 and proc.stderr.strip() == f"error: {sentence}", proc.stderr
    assert list_runs(ws.store) == []


def test_a_nan_metric_is_recorded_as_missing(ws):
    from backend.data.demo.dataset import ensure_demo_dataset
    from backend.jobs.run_history import finite, metrics, save_heldout_point, heldout_points, upsert_metrics
    from backend.jobs.runs import create_run
    ensure_demo_dataset(ws.store, ws.data_dir, n=6)
    run_id = create_run(ws.store, "demo-shapes", "demo", preset("CPU demo"))
    upsert_metrics(ws.store, run_id, 1, {"loss": float("nan"), "kl": float("inf"), "reward": 0.5})
    assert metrics(ws.store, run_id) == {"reward": [[1, 0.5]]}
    save_heldout_point(ws.store, run_id, 0, {"mean_iou": float("nan"), "base": {"map": float("-inf")}}, 1.0)
    assert heldout_points(ws.store, run_id)[0].metrics == {"mean_iou": None, "base": {"map": None}}
    assert finite([1.0, {"a": float("nan")}]) == [1.0, {"a": None}]


def test_a_nan_loss_stops_the_run_with_a_sentence_and_keeps_the_last_good_checkpoint(ws):
    """A learning rate so large (finite, so accepted) that the weights leave the numbers after the first step: the
    NaN metrics of step 2 are recorded as missing (a NaN metric used to end the run with a database error), and its
    NaN loss stops training there, without saving it, in one sentence."""
    from backend.data.demo.dataset import ensure_demo_dataset
    from backend.jobs.run_history import latest_checkpoint, run_json
    from backend.jobs.runs import create_run
    from tests.conftest import run_job_now
    ensure_demo_dataset(ws.store, ws.data_dir, n=10)
    settings = preset("CPU demo", method="sft", max_steps=4, save_steps=1, eval_steps=0, eval_max_examples=1,
                      max_completion_length=16, learning_rate=1e30)
    run_id = create_run(ws.store, "demo-shapes", "demo", settings)
    assert run_job_now(ws, run_id) != 0
    run = run_json(ws.store, run_id)
    assert run["status"] == "failed"
    assert run["error"] == ("the training loss became NaN at step 2, so training stopped there; the last good "
                            "checkpoint (step 1) is kept: lower the learning rate (or beta) and start a new run")
    # step 2's NaN loss and gradient norm are missing, not an error (nor the trainer's running mean in their place)
    assert [p[0] for p in run["metrics"]["grad_norm"]] == [1] and [p[0] for p in run["metrics"]["loss"]] == [1]
    assert latest_checkpoint(ws.store, ws.data_dir, run_id).step == 1


def test_none_only_where_a_setting_may_be_unset_and_whole_floats_become_ints():
    with pytest.raises(ValueError, match=r"^learning_rate must be a number, above 0 \(got None\)$"):
        check_values(TrainSettings(learning_rate=None))
    with pytest.raises(ValueError, match=r"^max_steps must be a number"):
        check_values(TrainSettings(max_steps=None))
    with pytest.raises(ValueError, match=r"^max_steps must be at least 1 \(got 3.5\)$"):
        check_values(TrainSettings(max_steps=3.5))
    settings = TrainSettings(max_steps=3.0, eval_steps=None, epsilon_high=None, max_pixels=None)
    check_values(settings)
    assert settings.max_steps == 3 and isinstance(settings.max_steps, int)


def test_too_few_images_never_say_improved():
    from backend.scoring.verdict import MIN_IMAGES
    before = {f"i{k}": [0.1] for k in range(MIN_IMAGES - 1)}
    after = {k: [0.5] for k in before}
    v = verdict("mean_iou", before, after, {}, {}, final=True)
    assert v["interval"] == [0.4, 0.4] and v["status"] == "no_change" and v["too_few_images"]
    assert "Too few held-out images (under 10) to call it better or worse." in verdict_sentence(v)
    more = {f"i{k}": [0.1] for k in range(MIN_IMAGES)}
    assert verdict("mean_iou", more, {k: [0.5] for k in more}, {}, {}, final=True)["status"] == "improved"


def test_missing_scores_are_left_out_of_the_pairs():
    change = paired_bootstrap({"a": [0.1, None], "b": [None]}, {"a": [0.3, 0.2], "b": [0.4]})
    assert change["images"] == 1 and change["delta"] == pytest.approx(0.15)
