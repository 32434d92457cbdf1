"""Does GRPO teach the demo model something SFT on the same images does not? Run by hand.

Trains the demo with the default preset on demo-shapes' ~80 training images and prints held-out
mean IoU (first box vs truth, on prompts whose category is present), share of IoU >= 0.5 and
format rate for: the warm start, after GRPO (the app's own job), and after SFT (TRL SFTTrainer,
LoRA, tight boxes) on the same images for the same wall-clock time, and each change of mean IoU (GRPO and SFT
against the warm start, GRPO against SFT) with its 90 % paired bootstrap interval over the held-out images, as the
app's verdict computes it. The last line is one JSON object. Never tune on the held-out images.

--shots K trains both on K images per class (the run's seed draws them, as the app does); --novel-classes
"a,b" holds those classes out of both trainings (never in a prompt: their boxes are dropped, their images
kept). Each entry then has "base" and "novel": the same metrics on the base and on the novel classes' prompts.

--eval-steps N also evaluates GRPO's run every N steps on the same held-out prompts (the app's held-out curve) and
prints each point's change from the warm start with its interval ("curve" in the JSON line).

    .venv/bin/python benchmarks/demo_learning.py [--seed 0] [--steps 60] [--shots 2] [--eval-steps 10]
        [--novel-classes "blue circle,blue square,blue triangle"]
"""
from __future__ import annotations

import argparse
import json
import time

from common import demo_workspace

from backend.data.catalog import get_dataset
from backend.engine import heldout
from backend.engine.demo.examples import detection_answer
from backend.engine.models import load, lora_config
from backend.engine.settings import preset
from backend.jobs import training
from backend.jobs.runs import create_run, training_set, training_set_text
from backend.jobs.run_history import evaluations
from backend.scoring.subsets import parse_class_list, training_samples
from backend.scoring.tasks import TaskSettings


def _metrics(metrics: dict) -> dict:
    return {"mean_iou": round(metrics["mean_iou"] or 0.0, 4), "iou50": round(metrics["iou50"] or 0.0, 4),
            "format_rate": round(metrics["format_rate"], 4), "map": round(metrics["map"] or 0.0, 4),
            "ap50": round(metrics["ap50"] or 0.0, 4)}


def summary(metrics: dict, seconds: float) -> dict:
    """An entry of the JSON line: the held-out metrics, and with novel classes "base" and "novel" apart."""
    out = {**_metrics(metrics), "seconds": round(seconds, 1)}
    for scope in ("base", "novel"):
        if scope in metrics:
            out[scope] = _metrics(metrics[scope])
    return out


def sft(ws, dataset: dict, seconds: float, seed: int, settings) -> dict:
    """TRL SFTTrainer with the same LoRA on the same training images, stopped after `seconds`."""
    from datasets import Dataset, Image as ImageFeature
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    loaded = load("demo", for_training=True)
    rows = []
    # The images GRPO's job trains on (shots drawn with the same seed), novel classes' boxes dropped.
    for s in training_samples(dataset["samples"], "detection", settings.shots, settings.novel_classes, seed):
        for x1, y1, x2, y2, label in s["boxes"]:
            from backend.scoring.tasks import detection_prompt
            rows.append({"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text":
                         detection_prompt(label, "demo", (s["width"], s["height"]))}]}],
                         "completion": [{"role": "assistant", "content": [{"type": "text", "text":
                                         detection_answer(label, [x1, y1, x2, y2])}]}],
                         "images": [str(ws.data_dir / dataset["folder"] / "images" / s["file"])]})
    ds = Dataset.from_list(rows).cast_column("images", [ImageFeature()])

    class Budget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.start = time.time()

        def on_step_end(self, args, state, control, **kw):
            if time.time() - self.start > seconds:
                control.should_training_stop = True

    config = SFTConfig(output_dir=str(ws.data_dir / "sft"), max_steps=100_000, per_device_train_batch_size=8,
                       learning_rate=settings.learning_rate, lr_scheduler_type="constant", logging_steps=10,
                       report_to=[], use_cpu=True, seed=seed, save_strategy="no", disable_tqdm=True,
                       max_length=None)
    trainer = SFTTrainer(model=loaded.model, args=config, train_dataset=ds, processing_class=loaded.processor,
                         peft_config=lora_config(loaded.family, settings.lora_rank, settings.lora_alpha),
                         callbacks=[Budget()])
    start = time.time()
    trainer.train()
    elapsed = time.time() - start
    trainer.model.eval()
    loaded.model = trainer.model
    val = [s for s in dataset["samples"] if s["split"] == "val"]
    return heldout.evaluate(loaded, ws.data_dir, dataset, val, TaskSettings(), settings.max_completion_length, 10_000,
                            novel=settings.novel_classes), elapsed


def intervals(before: dict, after: dict) -> dict:
    """The change of held-out mean IoU from `before` to `after` with its 90 % paired bootstrap interval over the
    held-out images (backend.scoring.verdict), on every prompt and on the base / novel classes apart."""
    from backend.scoring.verdict import paired_bootstrap
    out = {}
    for scope in ("all", "base", "novel"):
        b, a = (before if scope == "all" else before.get(scope)), (after if scope == "all" else after.get(scope))
        if b and a and b.get("per_image") and a.get("per_image"):
            change = paired_bootstrap(b["per_image"], a["per_image"])
            out[scope] = {"delta": round(change["delta"], 4), "interval": [round(v, 4) for v in change["interval"]],
                          "images": change["images"], "n": change["n"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="GRPO steps (default: the CPU demo preset's)")
    p.add_argument("--shots", type=int, default=None, help="training images per class (default: every one)")
    p.add_argument("--novel-classes", default="", help="comma-separated classes held out of training")
    p.add_argument("--eval-steps", type=int, default=0, help="held-out curve every N steps (default: none)")
    args = p.parse_args()
    ws = demo_workspace()
    dataset = get_dataset(ws.store, "demo-shapes")
    settings = preset("CPU demo", seed=args.seed, max_steps=args.steps, shots=args.shots,
                      novel_classes=parse_class_list(args.novel_classes))
    settings.eval_max_examples = 10_000
    settings.eval_steps = args.eval_steps  # by default before and after only: the comparison is of those two

    run_id = create_run(ws.store, "demo-shapes", "demo", settings)  # shots and classes checked: one sentence
    print(training_set_text(training_set(dataset, settings)), flush=True)
    start = time.time()
    assert training.claim_and_run(ws, run_id, "benchmark") == 0
    total = time.time() - start
    ev = evaluations(ws.store, run_id)
    warm = summary(ev["before"], 0.0)
    # The job's wall time includes two evaluations; GRPO's own time is what SFT gets.
    from backend.jobs.run_history import metrics
    grpo_seconds = sum(v for _, v in metrics(ws.store, run_id)["step_time"])
    grpo = summary(ev["after"], grpo_seconds)
    print(f"warm start: {warm}", flush=True)
    print(f"GRPO ({settings.max_steps} steps, job total {total:.0f} s): {grpo}", flush=True)
    grpo_curve = curve(ws, run_id, ev["before"])
    sft_metrics, sft_seconds = sft(ws, dataset, grpo_seconds, args.seed, settings)
    sft_result = summary(sft_metrics, sft_seconds)
    print(f"SFT (same wall-clock): {sft_result}", flush=True)
    from backend.jobs.run_history import run_json
    changes = {"grpo_vs_warm_start": intervals(ev["before"], ev["after"]),
               "sft_vs_warm_start": intervals(ev["before"], sft_metrics),
               "grpo_vs_sft": intervals(sft_metrics, ev["after"])}
    print(f"verdict: {run_json(ws.store, run_id)['verdict']}", flush=True)
    print(json.dumps({"warm_start": warm, "grpo": grpo, "sft": sft_result, "changes": changes, "seed": args.seed,
                      "shots": args.shots, "novel_classes": settings.novel_classes, "steps": settings.max_steps,
                      "curve": grpo_curve}))


def curve(ws, run_id: int, before: dict) -> list[dict]:
    """GRPO's held-out curve: each evaluated step's mean IoU and its change from the warm start with the interval."""
    from backend.jobs.run_history import heldout_points
    out = []
    for point in heldout_points(ws.store, run_id):
        if point.step >= 1:
            change = intervals(before, point.metrics).get("all", {})
            out.append({"step": point.step, "mean_iou": round(point.metrics.get("mean_iou") or 0.0, 4), **change})
            print(f"held-out step {point.step}: {out[-1]}", flush=True)
    return out


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:  # bad --shots or --novel-classes: one sentence
        raise SystemExit(f"error: {e}") from None
