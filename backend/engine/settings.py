"""Training settings: one typed object that the UI, the CLI and the worker all build; presets."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields


@dataclass
class TrainSettings:
    """What a user sets for a run (GRPO, or SFT on the same prompts and answers)."""
    method: str = "grpo"
    """How the adapter is trained: "grpo" (reinforcement fine-tuning with the rewards: Visual-RFT) or "sft"
    (supervised fine-tuning on the same prompts, answering with the truth in the same <think>/<answer>
    format and coordinate frame). Both run on the same worker and are evaluated the same way."""
    init_from: int | None = None
    """GRPO only: start from this finished SFT run's adapter (its best checkpoint; the same base model) and
    train it further, instead of a new LoRA adapter."""
    max_steps: int = 200
    """Optimiser steps."""
    shots: int | None = None
    """Train on k images per class (empty = every training image). They are drawn with the run's seed from the
    training split (detection: k images that hold the class, an image counting for every class it holds;
    grounding: k images); the held-out split is never touched."""
    novel_classes: list[str] = field(default_factory=list)
    """Classes held out of training (comma-separated), to see whether the model finds classes it never trained on.
    They are never in a training prompt (detection keeps their images but never asks about them;
    classification leaves their images out and their names out of the class list). Held-out evaluation reports
    base and novel classes apart."""
    novel_fraction: float = 0.0
    """Instead of naming them: this share of the classes is held out as novel, drawn with novel_seed when the
    run is created (the run keeps the names chosen)."""
    novel_seed: int = 0
    """The seed that draws novel_fraction's classes (the same classes for every run that keeps it)."""
    num_generations: int = 8
    """Completions sampled per prompt (G); advantages compare them within the group."""
    prompts_per_step: int = 1
    """Prompts (images) per step; the batch holds prompts_per_step x num_generations completions."""
    learning_rate: float = 1e-6
    """Step size of the adapter's optimiser (AdamW). A LoRA adapter takes a larger one than the paper's full
    fine-tune (1e-6)."""
    lr_scheduler: str = "linear"
    """How the learning rate moves over the run: "linear" (down to 0 at max_steps: TRL's default, as in the paper),
    "cosine" (down to 0 along half a cosine) or "constant" (runs from before this setting trained so)."""
    beta: float = 0.04
    """KL penalty to the reference model (0 = none, and no reference model in memory)."""
    temperature: float = 1.0
    """Sampling temperature of the completions. Higher spreads a group's answers (more for GRPO to compare), lower
    keeps them near the model's best guess."""
    top_p: float = 1.0
    """Nucleus sampling of the completions (1.0 = the whole distribution)."""
    loss_type: str = "dapo"
    """How the token losses of a step become one loss (TRL's loss_type). "dapo" (the default here and in TRL: token
    losses normalised by the active tokens of the whole batch, so neither short nor long answers are favoured),
    "grpo" (per-sequence mean: length-biased), "dr_grpo" (a constant: max_completion_length), "bnpo" (the local
    batch), "cispo", "sapo", "luspo", "vespo"."""
    scale_rewards: str = "group"
    """Advantages divided by the group's reward std ("group", the GRPO/Visual-RFT rule), the batch's
    ("batch"), or not at all ("none", Dr. GRPO: no bias towards too-easy/too-hard prompts)."""
    importance_sampling_level: str = "token"
    """Policy ratio per token ("token", GRPO) or one per sequence ("sequence", GSPO: steadier with
    sequence-level rewards like IoU)."""
    epsilon: float = 0.2
    """Lower clipping range of the policy ratio."""
    epsilon_high: float | None = None
    """Upper clipping range (None = epsilon; DAPO suggests 0.28)."""
    mask_truncated_completions: bool = False
    """Leave completions cut at max_completion_length out of the loss (DAPO). Off by default: a cut
    answer fails the format reward, which is the signal that teaches the model to finish."""
    max_completion_length: int = 256
    """Tokens a completion may hold (its reasoning and its answer); a longer one is cut there."""
    lora_rank: int = 16
    """Rank of the LoRA adapter's matrices: how much it can learn (and its size)."""
    lora_alpha: int = 32
    """LoRA's scale: the adapter's update is multiplied by lora_alpha / lora_rank."""
    seed: int = 0
    """The run's random seed: the shots drawn, the adapter's start and the sampling follow it."""
    save_steps: int = 50
    """Checkpoint every N steps (and at the end); a killed run resumes from the last one."""
    rollout_steps: int = 5
    """Store the sampled completions of every N-th step (and of step 1), for the rollout inspector."""
    rollout_groups_per_step: int = 8
    """Groups (a prompt with all its G completions) stored per stored step; a step with fewer stores all."""
    rollout_max_completions: int = 20_000
    """Completions stored per run at most; once reached, later steps store none (bounds the database)."""
    qlora: bool | None = None
    """The base model's weights in 4-bit NF4 (QLoRA: less memory) or bf16 (LoRA: faster). None = on a GPU, bf16
    where the memory estimate fits the card (it generates faster), else 4-bit; off on a CPU
    (backend/engine/run_plan.py)."""
    rewards: list[str] = field(default_factory=list)
    """Reward names from backend.scoring.rewards.REWARDS; empty = the task's defaults."""
    reward_weights: list[float] = field(default_factory=list)
    """One weight per reward, in the order of rewards; a completion's reward is their weighted sum."""
    negative_share: float = 0.25
    """Detection: the chance per image of one extra prompt asking for a class absent from it (the right answer
    is 'No Objects')."""
    classes_in_prompt: bool = True
    """Classification: list the candidate classes in the prompt."""
    object_kind: str = "object"
    """Classification: what the images show, named in the prompt ('plant', 'dog', 'aircraft'). With 'dog' the
    prompt says 'This is an image containing a dog. Please identify the class of the dog'."""
    eval_max_examples: int = 300
    """Cap on the held-out prompts of every evaluation: before training, each point of the curve, the best step
    and after training are all scored on the same first prompts, so any two of them can be compared."""
    eval_steps: int | None = None
    """Evaluate the adapter on the held-out split every N steps (a checkpoint there, so the best one can be
    kept). None = about eight evaluations a run (max_steps // 8); 0 = only before and after. An interval
    that leaves no evaluation during the run (as long as the run or longer) becomes max_steps // 2."""
    min_pixels: int | None = None
    """Images smaller than this many pixels are enlarged; None = the model family's default."""
    max_pixels: int | None = None
    """Images larger than this many pixels are shrunk (fewer visual tokens, less memory); None = the
    model family's default (Visual-RFT: 401,408, about 512 visual tokens)."""
    generation_backend: str = "auto"
    """How completions are sampled while training (generation dominates a GRPO step). "hf":
    transformers' generate, everywhere. "vllm": a vLLM engine on the training GPU (TRL's colocate
    mode; needs CUDA and the vllm package; the base stays in bf16 with LoRA: TRL cannot push
    LoRA-merged weights into a 4-bit engine, so QLoRA is refused). "auto": on a GPU the fastest that the
    memory estimate fits on the card: vLLM with a bf16 base (when vllm is installed), then HF generate from
    bf16, then HF generate from 4-bit; HF on a CPU. Held-out evaluation uses the same engine."""
    vllm_gpu_memory_utilization: float | None = None
    """With vLLM: the share of each GPU's memory the engine reserves for its weights and KV cache
    (training gets the rest; the engine sleeps, releasing it, while the optimiser steps). None = what
    the memory estimate says the engine needs (a bf16 copy of the model and a step's KV cache) plus 10 %."""
    compile_generation: bool = False
    """HF generate with a static KV cache and torch.compile'd decoding (TRL builds its generation config
    with compilation disabled; this lifts it). CUDA only. Bare generate on an H100 (3B shape, bf16) went
    from 181 to 759 new tokens/s; inside a training job with LoRA it is not measured yet, hence off."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers that also receive the run's metrics and settings (comma-separated: trackio, wandb,
    mlflow, tensorboard). They get them under the run's name; each needs its package installed and, for wandb
    and mlflow, its usual login or tracking URI in the environment. Empty = none."""
    use_liger_kernel: bool = False
    """Liger's Triton kernels for the training forward (CUDA and the liger-kernel package). Measure
    step time and memory on your card before keeping it on."""
    num_gpus: int = 1
    """GPUs this run trains on at once, one process each; each GPU takes prompts_per_step prompts per
    step, so a step sees num_gpus times more. A worker claims the run only when it has that many free."""
    distributed: str = "ddp"
    """How several GPUs (num_gpus > 1) share the model: "ddp", "zero2" or "zero3". "ddp" (the default: every GPU
    holds the whole model; LoRA or QLoRA), "zero2" (DeepSpeed ZeRO-2: optimiser state and gradients sharded across
    the GPUs), "zero3" (DeepSpeed ZeRO-3: the weights sharded too, which is what full fine-tuning of a large model
    needs; with this app's LoRA the trained part is small and each GPU loads the whole base before it is sharded, so
    ddp or zero2 is the usual choice; bf16 LoRA, not QLoRA). zero2/zero3 need deepspeed."""

    def task_settings(self):
        """The prompt-shaping part, as the task templates take it."""
        from backend.scoring.tasks import TaskSettings
        return TaskSettings(negative_share=self.negative_share, classes_in_prompt=self.classes_in_prompt,
                            object_kind=self.object_kind)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainSettings":
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k not in RETIRED}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown setting '{sorted(unknown)[0]}'")
        return cls(**data)


RETIRED = {"rollouts_per_save", "eval_during_max_examples"}
"""Settings older runs stored that no longer mean anything (replaced by rollout_groups_per_step; one held-out cap,
eval_max_examples, for every evaluation); ignored."""


def eval_interval(settings: TrainSettings) -> int:
    """Steps between held-out evaluations during training (0 = none): eval_steps, or for None about eight a
    run; never fewer than three points (before, one during, after) unless eval_steps is 0."""
    if settings.eval_steps == 0:
        return 0
    if settings.eval_steps is not None and settings.eval_steps < settings.max_steps:
        return settings.eval_steps
    if settings.eval_steps is None and settings.max_steps >= 8:
        return settings.max_steps // 8
    return max(1, settings.max_steps // 2)  # a short run, or an interval as long as it: one point half-way


GPU_COMMON = dict(max_steps=200, learning_rate=1e-5, beta=0.04, temperature=1.0, save_steps=50, eval_steps=25)
PRESETS: dict[str, dict] = {
    # The paper's settings (Qwen2-VL-2B, ~200 steps for few-shot detection).
    "Visual-RFT paper": dict(max_steps=200, num_generations=8, learning_rate=1e-6, beta=0.04, temperature=1.0,
                             max_completion_length=1024, prompts_per_step=2, save_steps=50, eval_steps=25),
    # The tiny demo model on 2 CPU cores: short answers, a large LoRA learning rate, no reference model, and
    # the dense IoU reward: its sampled boxes rarely pass detection_iou's 0.5 match (mean 0.06 a step, flat
    # over 60 steps: measured), so every overlap counts. Temperature 0.8 keeps samples near its greedy answer.
    # lr 5e-4 for LoRA (the paper's 1e-6 was full fine-tuning), decaying linearly (the default lr_scheduler):
    # held-out mean IoU 0.213 -> 0.303 in 100 steps, +0.090 (90 % interval +0.047 ... +0.129); held constant, the
    # same run peaked at step 30 (0.321) and ended at 0.242, within noise of the start. At 1e-4 and 3e-4 an earlier
    # demo's greedy answers moved by under 0.01 (measured, README "The embedded demo").
    # Each reward scores only its own task's rows, so the preset serves classification and grounding too.
    "CPU demo": dict(max_steps=100, num_generations=8, learning_rate=5e-4, beta=0.0, temperature=0.8,
                     rewards=["detection_soft_iou", "detection_confidence", "classification_accuracy", "grounding_iou",
                              "format"],
                     max_completion_length=64, prompts_per_step=4, save_steps=20, rollout_steps=2,
                     eval_max_examples=60, eval_steps=20),
    # By card size, for a 7B model (Qwen2.5-VL-7B). QLoRA and the generation
    # engine are left to the run plan (backend/engine/run_plan.py), which takes the fastest the memory estimate
    # fits on the card: with vLLM installed (requirements-gpu.txt), from the estimate (a 1024x768 photo):
    #   24 GB: 7B -> QLoRA + HF generate; 3B -> LoRA (bf16) + vLLM
    #   48 GB: 7B -> LoRA (bf16) + vLLM;  3B -> LoRA (bf16) + vLLM
    #   80 GB: 7B -> LoRA (bf16) + vLLM;  3B -> LoRA (bf16) + vLLM
    # (tests/test_run_plan.py checks these lines against plan_run). Without vLLM, bf16 + HF where it fits.
    # LoRA adapters take a larger learning rate than the paper's full fine-tune (1e-6).
    # max_pixels: the 24 GB card keeps each family's default (Qwen's is Visual-RFT's 401,408, about 512 tokens);
    # the larger cards double Qwen's. For the others that is Gemma 3's fixed 896x896 square exactly, InternVL's
    # default 4 tiles, but SmolVLM's longest edge of 512 (one tile, where its default is 1536): the Train tab's
    # checkpoint table shows each model's visual tokens at the preset, and max_pixels can be cleared.
    "24 GB GPU": dict(**GPU_COMMON, num_generations=8, prompts_per_step=1, max_completion_length=256),
    "48 GB GPU": dict(**GPU_COMMON, num_generations=8, prompts_per_step=2, max_completion_length=256,
                      max_pixels=802_816),
    # The paper's G x prompts x length.
    "80 GB GPU": dict(**GPU_COMMON, num_generations=8, prompts_per_step=2, max_completion_length=1024,
                      max_pixels=802_816),
}


PRESET_CARD_GIB = {"24 GB GPU": 24, "48 GB GPU": 48, "80 GB GPU": 80}
"""The card each GPU preset is sized for (GiB)."""


TRACKERS = {"trackio": ("trackio",), "wandb": ("wandb",), "mlflow": ("mlflow",),
            "tensorboard": ("tensorboard", "tensorboardX")}
"""report_to's names -> the packages that serve each (transformers' integrations; any one of them will do)."""
GENERATION_BACKENDS = ("auto", "hf", "vllm")
DISTRIBUTED_MODES = ("ddp", "zero2", "zero3")
CHOICES: dict[str, tuple[str, ...]] = {
    "generation_backend": GENERATION_BACKENDS,
    "distributed": DISTRIBUTED_MODES,
    "loss_type": ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo"),
    "scale_rewards": ("group", "batch", "none"),
    "importance_sampling_level": ("token", "sequence"),
    "method": ("grpo", "sft"),
    "lr_scheduler": ("linear", "cosine", "constant"),
}
"""Settings whose value is one of a few names (the CLI and the Train form offer exactly these)."""


SEED_MAX = 2 ** 32 - 1
RANGES: dict[str, tuple[float, float, str]] = {
    # name: (lowest, highest, how the range is said); a bound of +-inf is none; STRICT_LOW: the lowest excluded.
    "max_steps": (1, math.inf, "at least 1"),
    "num_generations": (2, math.inf, "at least 2 (GRPO compares the completions of a group)"),
    "prompts_per_step": (1, math.inf, "at least 1"),
    "learning_rate": (0, math.inf, "above 0"),
    "beta": (0, math.inf, "0 or more"),
    "temperature": (0, math.inf, "above 0"),
    "top_p": (0, 1, "above 0 and at most 1"),
    "epsilon": (0, math.inf, "0 or more"),
    "epsilon_high": (0, math.inf, "0 or more"),
    "max_completion_length": (1, math.inf, "at least 1"),
    "lora_rank": (1, math.inf, "at least 1"),
    "lora_alpha": (1, math.inf, "at least 1"),
    "seed": (0, SEED_MAX, f"a whole number from 0 to {SEED_MAX}"),
    "novel_seed": (0, SEED_MAX, f"a whole number from 0 to {SEED_MAX}"),
    "save_steps": (1, math.inf, "at least 1"),
    "rollout_steps": (1, math.inf, "at least 1"),
    "rollout_groups_per_step": (0, math.inf, "0 or more"),
    "rollout_max_completions": (0, math.inf, "0 or more"),
    "negative_share": (0, 1, "from 0 to 1"),
    "eval_max_examples": (1, math.inf, "at least 1"),
    "eval_steps": (0, math.inf, "0 or more"),
    "min_pixels": (1, math.inf, "at least 1"),
    "max_pixels": (1, math.inf, "at least 1"),
    "vllm_gpu_memory_utilization": (0, 1, "above 0 and at most 1"),
    "num_gpus": (1, math.inf, "at least 1"),
}
"""Every numeric setting's range, checked when a run is created (form, CLI and API alike)."""
STRICT_LOW = {"learning_rate", "temperature", "top_p", "vllm_gpu_memory_utilization"}
"""Settings whose lowest value is excluded (above it, not equal)."""


def check_values(settings: TrainSettings) -> None:
    """ValueError, one sentence, for the first setting outside its range (RANGES), a NaN or infinite number among
    them, or reward weights that are not finite or all 0: nothing is queued that cannot start. A whole number given
    as a float (3.0) to a whole-number setting is kept as an int."""
    optional = {f.name for f in fields(TrainSettings) if "None" in str(f.type)}
    for name, (low, high, said) in RANGES.items():
        value = getattr(settings, name)
        if value is None and name in optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, {said} (got {value!r})")
        bad = (not math.isfinite(value) or value < low or value > high or (name in STRICT_LOW and value == low)
               or (setting_type(name) is int and value != int(value)))
        if bad:
            raise ValueError(f"{name} must be {said} (got {value if isinstance(value, int) else f'{value:g}'})")
        if setting_type(name) is int:
            setattr(settings, name, int(value))
    weights = settings.reward_weights
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) for w in weights):
        raise ValueError(f"reward weights must be finite numbers (got {', '.join(map(str, weights))})")
    if weights and all(w == 0 for w in weights):
        raise ValueError("reward weights are all 0: at least one reward must count")


def setting_help() -> dict[str, str]:
    """Each setting's help text: the docstring under its field, read from this file (one source for the
    CLI's --help and the Train form's hints)."""
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(TrainSettings))
    body = tree.body[0].body
    out: dict[str, str] = {}
    for node, after in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else ""
            out[node.target.id] = " ".join(str(doc).split())
    return out


def parse_setting(name: str, text: str):
    """A setting typed as text (a CLI flag, a form box) as its field's type: a list setting is comma-separated."""
    kind = setting_type(name)
    if kind is list:
        from backend.scoring.subsets import parse_class_list
        return parse_class_list(text)
    if kind is bool:
        return text in (True, "on", "true", "True", "1")
    return kind(text)


def setting_type(name: str) -> type:
    """int, float, bool, str or list: a field's type with `| None` dropped."""
    annotation = {f.name: f.type for f in fields(TrainSettings)}[name]
    base = str(annotation).split("|")[0].strip()
    return {"int": int, "float": float, "bool": bool, "str": str}.get(base, list)


def run_name(output_dir) -> str:
    """The name experiment trackers (report_to) show a run under: its folder's, `runs/ID/checkpoints` -> run-ID."""
    from pathlib import Path
    return f"visual-rft-run-{Path(output_dir).parent.name}"


def preset(name: str, **overrides) -> TrainSettings:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
    return TrainSettings.from_dict({**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})
