"""Training settings: one typed object that the UI, the CLI and the worker all build; presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class TrainSettings:
    """What a user sets for a GRPO run."""
    max_steps: int = 200
    """Optimiser steps."""
    num_generations: int = 8
    """Completions sampled per prompt (G); advantages compare them within the group."""
    prompts_per_step: int = 1
    """Prompts (images) per step; the batch holds prompts_per_step x num_generations completions."""
    learning_rate: float = 1e-6
    beta: float = 0.04
    """KL penalty to the reference model (0 = none, and no reference model in memory)."""
    temperature: float = 1.0
    max_completion_length: int = 256
    lora_rank: int = 16
    lora_alpha: int = 32
    seed: int = 0
    save_steps: int = 50
    """Checkpoint every N steps (and at the end); a killed run resumes from the last one."""
    rollout_steps: int = 5
    """Store a few sampled rollouts every N steps."""
    rollouts_per_save: int = 4
    qlora: bool | None = None
    """4-bit NF4 base weights; None = on with CUDA, off on CPU."""
    rewards: list[str] = field(default_factory=list)
    """Reward names from backend.rewards.REWARDS; empty = the task's defaults."""
    reward_weights: list[float] = field(default_factory=list)
    negative_share: float = 0.25
    classes_in_prompt: bool = True
    eval_max_examples: int = 300
    """Cap on held-out prompts evaluated before and after training."""
    min_pixels: int | None = None
    """Images smaller than this many pixels are enlarged; None = the model family's default."""
    max_pixels: int | None = None
    """Images larger than this many pixels are shrunk (fewer visual tokens, less memory); None = the
    model family's default (Visual-RFT: 401,408, about 512 visual tokens)."""

    def task_settings(self):
        """The prompt-shaping part, as the task templates take it."""
        from backend.tasks import TaskSettings
        return TaskSettings(negative_share=self.negative_share, classes_in_prompt=self.classes_in_prompt)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainSettings":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown setting '{sorted(unknown)[0]}'")
        return cls(**data)


GPU_COMMON = dict(max_steps=200, learning_rate=1e-5, beta=0.04, temperature=1.0, save_steps=50)
PRESETS: dict[str, dict] = {
    # The paper's settings (Qwen2-VL-2B, ~200 steps for few-shot detection).
    "Visual-RFT paper": dict(max_steps=200, num_generations=8, learning_rate=1e-6, beta=0.04, temperature=1.0,
                             max_completion_length=1024, prompts_per_step=2, save_steps=50),
    # The tiny demo model on 2 CPU cores: short answers, a large LoRA learning rate, no reference model.
    "CPU demo": dict(max_steps=60, num_generations=8, learning_rate=5e-4, beta=0.0, temperature=1.0,
                     max_completion_length=64, prompts_per_step=4, save_steps=10, rollout_steps=2,
                     eval_max_examples=60),
    # By card size (backend/memory.py), for Qwen2.5-VL-7B under QLoRA; images capped by max_pixels.
    # LoRA adapters take a larger learning rate than the paper's full fine-tune (1e-6).
    # 7B QLoRA, 1024x768 photo -> 494 visual tokens (at most 512): about 17.5 GiB of 24.
    "24 GB GPU": dict(qlora=True, **GPU_COMMON, num_generations=8, prompts_per_step=1, max_completion_length=256,
                      max_pixels=401_408),
    # 7B QLoRA, 1024x768 photo -> 999 visual tokens (at most 1,024): about 33.3 GiB of 48.
    "48 GB GPU": dict(qlora=True, **GPU_COMMON, num_generations=8, prompts_per_step=2, max_completion_length=256,
                      max_pixels=802_816),
    # 7B QLoRA, 1024x768 photo -> 999 visual tokens (at most 1,024), paper's G x prompts x length: about 56.5 GiB of 80.
    "80 GB GPU": dict(qlora=True, **GPU_COMMON, num_generations=8, prompts_per_step=2, max_completion_length=1024,
                      max_pixels=802_816),
}


def preset(name: str, **overrides) -> TrainSettings:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
    return TrainSettings.from_dict({**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})
