"""Step time of the app's job vs a bare TRL script with the same settings. Run by hand.

Both train the demo model on demo-shapes with the CPU demo preset for N steps; the mean step time
(steps 2..N, the first warms caches) is compared. Prints the ratio (aim <= 1.05) and one JSON line.

    .venv/bin/python benchmarks/overhead.py [--steps 10]
"""
from __future__ import annotations

import argparse
import json
import time

from common import demo_workspace

from backend.data.catalog import get_dataset
from backend.engine.models import load, lora_config
from backend.engine.settings import preset
from backend.jobs import training
from backend.jobs.runs import create_run
from backend.jobs.run_history import metrics
from backend.scoring.rewards import REWARDS


def bare_trl(ws, settings) -> list[float]:
    """The same GRPO run as a plain script: no storage, no callback, no evaluation."""
    from datasets import Dataset, Image as ImageFeature
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    loaded = load("demo", for_training=True)
    rows = training.train_rows(get_dataset(ws.store, "demo-shapes"), ws.data_dir, "demo", settings)
    ds = Dataset.from_list(rows).cast_column("image", ImageFeature())
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.time()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.time() - self.t)

    config = GRPOConfig(output_dir=str(ws.data_dir / "bare"), max_steps=settings.max_steps,
                        learning_rate=settings.learning_rate, num_generations=settings.num_generations,
                        per_device_train_batch_size=settings.prompts_per_step * settings.num_generations,
                        beta=settings.beta, temperature=settings.temperature,
                        max_completion_length=settings.max_completion_length, reward_weights=settings.reward_weights,
                        seed=settings.seed, save_strategy="no", logging_steps=1, report_to=[], use_cpu=True,
                        lr_scheduler_type="constant", remove_unused_columns=False, disable_tqdm=True)
    GRPOTrainer(model=loaded.model, processing_class=loaded.processor, args=config, train_dataset=ds,
                reward_funcs=[REWARDS[n] for n in settings.rewards],
                peft_config=lora_config(loaded.family, settings.lora_rank, settings.lora_alpha),
                callbacks=[Timer()]).train()
    return times


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    ws = demo_workspace()
    settings = preset("CPU demo", max_steps=args.steps, save_steps=args.steps)
    settings.eval_max_examples = 1
    run_id = create_run(ws.store, "demo-shapes", "demo", settings)
    assert training.claim_and_run(ws, run_id, "benchmark") == 0
    app_times = [v for _, v in metrics(ws.store, run_id)["step_time"]][1:]
    settings.rewards, settings.reward_weights = (list(x) for x in zip(*[(n, 1.0) for n in
                                                                         ("detection_iou", "detection_confidence", "format")]))
    bare_times = bare_trl(ws, settings)[1:]
    app, bare = sum(app_times) / len(app_times), sum(bare_times) / len(bare_times)
    print(f"app job: {app:.3f} s/step, bare TRL: {bare:.3f} s/step, ratio {app / bare:.3f}")
    print(json.dumps({"app_step_seconds": round(app, 4), "bare_step_seconds": round(bare, 4),
                      "ratio": round(app / bare, 4), "steps": args.steps}))


if __name__ == "__main__":
    main()
