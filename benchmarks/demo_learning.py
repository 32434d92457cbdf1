"""Does GRPO teach the demo model something SFT on the same images does not? Run by hand.

Trains the demo with the default preset on demo-shapes' ~80 training images and prints held-out
mean IoU (first box vs truth, on prompts whose category is present), share of IoU >= 0.5 and
format rate for: the warm start, after GRPO (the app's own job), and after SFT (TRL SFTTrainer,
LoRA, tight boxes) on the same images for the same wall-clock time. The last line is one JSON
object. Never tune on the held-out images.

    .venv/bin/python benchmarks/demo_learning.py [--seed 0] [--steps 60]
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
from backend.jobs.runs import create_run
from backend.jobs.run_history import evaluations
from backend.scoring.tasks import TaskSettings


def summary(metrics: dict, seconds: float) -> dict:
    return {"mean_iou": round(metrics["mean_iou"], 4), "iou50": round(metrics["iou50"], 4),
            "format_rate": round(metrics["format_rate"], 4), "map": round(metrics["map"] or 0.0, 4),
            "seconds": round(seconds, 1)}


def sft(ws, dataset: dict, seconds: float, seed: int, settings) -> dict:
    """TRL SFTTrainer with the same LoRA on the same training images, stopped after `seconds`."""
    from datasets import Dataset, Image as ImageFeature
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    loaded = load("demo", for_training=True)
    rows = []
    for s in dataset["samples"]:
        if s["split"] != "train":
            continue
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
    return summary(heldout.evaluate(loaded, ws.data_dir, dataset, val, TaskSettings(), settings.max_completion_length,
                                    10_000), elapsed)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="GRPO steps (default: the CPU demo preset's)")
    args = p.parse_args()
    ws = demo_workspace()
    dataset = get_dataset(ws.store, "demo-shapes")
    settings = preset("CPU demo", seed=args.seed, max_steps=args.steps)
    settings.eval_max_examples = 10_000

    run_id = create_run(ws.store, "demo-shapes", "demo", settings)
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
    sft_result = sft(ws, dataset, grpo_seconds, args.seed, settings)
    print(f"SFT (same wall-clock): {sft_result}", flush=True)
    print(json.dumps({"warm_start": warm, "grpo": grpo, "sft": sft_result, "seed": args.seed}))


if __name__ == "__main__":
    main()
