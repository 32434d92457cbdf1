"""SFT as a job's method: TRL's SFTTrainer on the same prompts as GRPO (the same rows, images and coordinate
frame), taught the truth in the same <think>/<answer> format (backend.scoring.tasks.target_completion); loss on the
answer only. Same LoRA/QLoRA, worker, metrics, checkpoints and evaluations as a GRPO run."""
from __future__ import annotations

import json
from pathlib import Path

from backend.engine.settings import TrainSettings, run_name
from backend.scoring.tasks import target_completion


def sft_rows(rows: list[dict], task: str) -> list[dict]:
    """The job's training rows (backend.jobs.training.train_rows) with the answer each is taught, as TRL's
    conversational prompt-completion shape."""
    return [{**r, "completion": [{"role": "assistant", "content": target_completion(
        task, json.loads(r["solution"]), r.get("category"))}]} for r in rows]


def sft_config_kwargs(settings: TrainSettings, output_dir: Path, device: str) -> dict:
    """The job's SFTConfig, as keyword arguments (pure, like grpo_config_kwargs): a step takes prompts_per_step
    examples (G is GRPO's), the rest as a GRPO run trains."""
    cuda = device == "cuda"
    if settings.use_liger_kernel and not cuda:
        raise ValueError("use_liger_kernel needs a CUDA GPU; turn it off on this machine")
    kwargs = dict(
        output_dir=str(output_dir), max_steps=settings.max_steps, learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.prompts_per_step, gradient_accumulation_steps=1, seed=settings.seed,
        save_steps=settings.save_steps, save_strategy="steps", logging_steps=1,
        logging_nan_inf_filter=False,  # a NaN loss is logged as such (the job stops on it), not as the running mean
        report_to=list(settings.report_to), run_name=run_name(output_dir), use_cpu=not cuda,
        bf16=cuda, gradient_checkpointing=cuda, lr_scheduler_type=settings.lr_scheduler, dataloader_num_workers=0,
        disable_tqdm=True, save_only_model=False,
        # No truncation: it would cut image tokens or the answer (images are capped by max_pixels instead).
        max_length=None)
    if settings.use_liger_kernel:
        kwargs["use_liger_kernel"] = True
    return kwargs


def build_trainer(loaded, config_kwargs: dict, rows: list[dict], task: str, callbacks: list, peft_config):
    """The SFTTrainer (config built after the model is loaded, as for GRPO)."""
    from datasets import Dataset, Image
    from trl import SFTConfig, SFTTrainer
    train_ds = Dataset.from_list(sft_rows(rows, task)).cast_column("image", Image())
    return SFTTrainer(model=loaded.model, processing_class=loaded.processor, args=SFTConfig(**config_kwargs),
                      train_dataset=train_ds, peft_config=peft_config, callbacks=callbacks)
