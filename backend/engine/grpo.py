"""GRPO as a job's method: TRL's GRPOTrainer with the rewards from the registry, generation by HF generate or a
colocated vLLM engine, and a recorder that keeps what each stored step sampled (every completion of its first
groups, with its reward terms, total, group mean and std, and advantage) for the rollout inspector."""
from __future__ import annotations

from pathlib import Path

from backend.engine.processes import GenerateFn
from backend.engine.run_plan import RunPlan
from backend.engine.settings import TrainSettings, run_name
from backend.scoring.advantages import group_stats, weighted_totals
from backend.scoring.rewards import REWARDS, read_solution

VLLM_PROMPT_TOKENS = 4096
"""vLLM's context: this many prompt tokens (images are capped by max_pixels, ~512-1,024 visual tokens) plus the
completion length. The engine sizes its KV cache for that rather than for the model's whole context."""


def grpo_config_kwargs(settings: TrainSettings, output_dir: Path, device: str, plan: RunPlan,
                       vllm_available: bool) -> dict:
    """The job's GRPOConfig, as keyword arguments (build_trainer builds `GRPOConfig(**these)`).

    Pure: the device ("cuda" or "cpu"), the run plan (weights and generation engine) and whether vLLM is
    installed are arguments, so the CUDA and vLLM mapping is testable on a CPU (GRPOConfig itself refuses bf16
    without a GPU, hence a dict). Raises ValueError (one sentence) for what this machine cannot run; `runs
    create` refuses that earlier.
    """
    cuda = device == "cuda"
    backend = plan.backend
    if backend == "vllm" and not (cuda and vllm_available):
        raise ValueError("generation backend 'vllm' needs a CUDA GPU and the vllm package, and this machine has "
                         + ("no GPU" if not cuda else "no vllm") + "; use 'hf' or 'auto'")
    if backend == "vllm" and plan.qlora:
        raise ValueError("generation backend 'vllm' cannot train a 4-bit (QLoRA) base: TRL cannot load "
                         "LoRA-merged 4-bit weights into vLLM; choose settings without QLoRA or generation "
                         "backend 'hf'")
    if settings.compile_generation and not (cuda and backend == "hf"):
        raise ValueError("compile_generation compiles HF generate on a CUDA GPU; turn it off "
                         + ("on this machine" if not cuda else "with vLLM generating"))
    if settings.use_liger_kernel and not cuda:
        raise ValueError("use_liger_kernel needs a CUDA GPU; turn it off on this machine")
    kwargs = dict(
        output_dir=str(output_dir), max_steps=settings.max_steps, learning_rate=settings.learning_rate,
        num_generations=settings.num_generations, per_device_train_batch_size=settings.prompts_per_step * settings.num_generations,
        gradient_accumulation_steps=1, beta=settings.beta, temperature=settings.temperature,
        max_completion_length=settings.max_completion_length, reward_weights=settings.reward_weights,
        seed=settings.seed, save_steps=settings.save_steps, save_strategy="steps", logging_steps=1,
        logging_nan_inf_filter=False,  # a NaN loss is logged as such (the job stops on it), not as the running mean
        report_to=list(settings.report_to), run_name=run_name(output_dir),
        use_cpu=not cuda, bf16=cuda, gradient_checkpointing=cuda, lr_scheduler_type=settings.lr_scheduler,
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True, save_only_model=False,
        log_completions=False, top_p=settings.top_p, loss_type=settings.loss_type,
        scale_rewards=settings.scale_rewards, importance_sampling_level=settings.importance_sampling_level,
        epsilon=settings.epsilon, epsilon_high=settings.epsilon_high,
        mask_truncated_completions=settings.mask_truncated_completions)
    if backend == "vllm":
        # TRL 1.16's colocate mode: each training process holds a vLLM engine on its own GPU, built from the
        # base's name_or_path. Before generating at a new step TRL merges the LoRA adapter into the base weights
        # (PEFT merge_adapter), loads every weight into the engine (load_weights) and unmerges: merge-and-sync,
        # not a vLLM LoRA request. On that path packed bitsandbytes 4-bit weights lose their quantisation state
        # (TRL issue 4973), hence the bf16 LoRA base. Sleep mode (level 2) frees the engine's memory while the
        # model trains; its weights are pushed again before the next generation.
        kwargs.update(use_vllm=True, vllm_mode="colocate", vllm_enable_sleep_mode=True,
                      vllm_gpu_memory_utilization=plan.vllm_gpu_memory_utilization,
                      vllm_max_model_length=VLLM_PROMPT_TOKENS + settings.max_completion_length)
    if settings.compile_generation:
        # A static KV cache is what transformers compiles decoding for; TRL 1.16 then builds its GenerationConfig
        # with disable_compile=True, which allow_compiled_generation lifts once the trainer exists.
        kwargs["cache_implementation"] = "static"
    if settings.use_liger_kernel:
        kwargs["use_liger_kernel"] = True
    return kwargs


def presized(rows: list[dict], folder: Path, processor) -> list[dict]:
    """`rows` with each image replaced by a copy already at the size `processor` feeds it
    (model_input.at_input_size). TRL's colocate mode hands vLLM prompt ids expanded by the HF processor together
    with the raw image, which vLLM preprocesses again; wherever the two resize differently the ids and the image
    features mis-align (TRL #6401: an M-RoPE shape crash, or silently corrupted prompts). An image already at
    its input size is left as it is by both, so they expand it to the same tokens."""
    from PIL import Image

    from backend.engine.model_input import at_input_size
    folder.mkdir(parents=True, exist_ok=True)
    out, done = [], {}
    for row in rows:
        src = row["image"]
        if src not in done:
            with Image.open(src) as im:
                fed = at_input_size(processor, im)
                if fed.size == im.size:
                    done[src] = src
                else:
                    done[src] = str(folder / f"{len(done):06d}.png")
                    fed.save(done[src])
        out.append({**row, "image": done[src]})
    return out


def vllm_resizes_like(processor) -> None:
    """TRL builds its vLLM engine from the checkpoint folder, whose image processor may resize differently from
    the limits this job applied (prompt tokens, rewards and coordinates follow ours). TRL 1.16 passes no
    mm_processor_kwargs to vLLM, so the engine constructor TRL calls gets ours here."""
    import functools

    from trl.generation import vllm_generation

    from backend.engine.model_input import engine_kwargs
    vllm_generation.LLM = functools.partial(vllm_generation.LLM, mm_processor_kwargs=engine_kwargs(processor))


def vllm_generate(trainer, processor) -> GenerateFn | None:
    """Greedy completions (temperature 0) from the trainer's colocated vLLM engine, with the trainer's current
    weights; None when it has none (TRL 1.16 keeps the engine as `trainer.vllm_generation.llm`)."""
    engine = getattr(trainer, "vllm_generation", None)
    if getattr(engine, "llm", None) is None:
        return None

    def generate(items, max_new_tokens):
        from vllm import SamplingParams

        from backend.engine.inference import messages
        from backend.engine.model_input import at_input_size
        engine.sync_weights()  # the trained weights (LoRA merged), into an engine whose weights may be asleep
        if not items:
            return []
        if engine.enable_sleep_mode:
            engine.llm.wake_up(tags=["kv_cache"])
        prompts = [{"prompt": processor.apply_chat_template(messages(p), add_generation_prompt=True),
                    "multi_modal_data": {"image": at_input_size(processor, im)}} for im, p in items]
        greedy = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        outputs = engine.llm.generate(prompts, sampling_params=greedy, use_tqdm=False)
        if engine.enable_sleep_mode:
            engine.llm.sleep(level=2)
            engine._llm_weights_sleeping = True  # so TRL pushes the weights again before it generates
        return [o.outputs[0].text for o in outputs]
    return generate


class RolloutRecorder:
    """Wraps the reward functions so the callback can store what a step sampled and how it scored.

    TRL calls every reward function once per step with the process's whole batch: prompts_per_step groups of
    G completions, a prompt's G together. Under several processes each sees its own groups (only the main
    process's are stored), and scale_rewards "batch" is computed over those."""

    def __init__(self, settings: TrainSettings | None = None) -> None:
        self.settings = settings
        self.batch: dict = {}

    def wrap(self, name: str):
        fn = REWARDS[name]

        def reward(completions, **kwargs):
            values = fn(completions, **kwargs)
            self.batch.setdefault("rewards", {})[name] = values
            self.batch.update(completions=completions, kwargs=kwargs)
            return values
        reward.__name__ = name
        return reward

    def take(self, max_groups: int, max_rows: int | None = None) -> list[dict]:
        """The last batch's first `max_groups` groups (whole groups only, at most `max_rows` rows), each
        completion as a row for `backend.jobs.run_history.store_rollouts`; the batch is then forgotten."""
        from backend.scoring.parsing import completion_text
        from backend.scoring.playground import parsed_view
        b, self.batch = self.batch, {}
        n = len(b.get("completions") or [])
        if not n:
            return []
        kw, settings = b["kwargs"], self.settings
        size = settings.num_generations if settings and n % settings.num_generations == 0 else n
        weights = dict(zip(settings.rewards, settings.reward_weights)) if settings else {}
        stats = group_stats(weighted_totals(b["rewards"], weights), size,
                            settings.scale_rewards if settings else "group")
        groups = max_groups if max_rows is None else min(max_groups, max(0, max_rows) // size)
        out = []
        for i in range(min(n, groups * size)):
            text = completion_text(b["completions"][i])
            sol = read_solution(kw["solution"][i])
            task = "detection" if "boxes" in sol else "classification" if "label" in sol else "grounding"
            out.append({"prompt_index": i // size, "sample_index": i % size, "sample_id": kw["sample_id"][i],
                        "image": kw["image_rel"][i], "prompt": kw["prompt_text"][i], "completion": text,
                        "parsed": {**parsed_view(task, text, sol), "input_size": sol.get("input_size")},
                        "rewards": {k: v[i] for k, v in b["rewards"].items()}, "total": stats[i]["total"],
                        "group_mean": stats[i]["mean"], "group_std": stats[i]["std"],
                        "advantage": stats[i]["advantage"]})
        return out


def build_trainer(loaded, config_kwargs: dict, rows: list[dict], settings: TrainSettings, callbacks: list,
                  recorder: RolloutRecorder, peft_config, backend: str):
    """The GRPOTrainer (config built now, after the model is loaded: under ZeRO-3 a config built first makes
    transformers shard the load, which refuses the device map). `peft_config` None: `loaded.model` already
    carries the adapter to train (a run started from an SFT run's)."""
    from datasets import Dataset, Image
    from trl import GRPOConfig, GRPOTrainer
    config = GRPOConfig(**config_kwargs)
    train_ds = Dataset.from_list(rows).cast_column("image", Image())
    if backend == "vllm":
        vllm_resizes_like(loaded.processor)
    trainer = GRPOTrainer(model=loaded.model, processing_class=loaded.processor, args=config, train_dataset=train_ds,
                       reward_funcs=[recorder.wrap(n) for n in settings.rewards], peft_config=peft_config,
                       callbacks=callbacks)
    if settings.compile_generation:
        allow_compiled_generation(trainer)
    return trainer


def allow_compiled_generation(trainer) -> None:
    """Let transformers compile decoding in the trainer's HF generate. TRL 1.16's GRPOTrainer builds its
    GenerationConfig with `disable_compile=True` (grpo_trainer.py, `GenerationConfig(**generation_kwargs,
    disable_compile=True)`); with a static cache (GRPOConfig cache_implementation="static") and this flag
    lifted, transformers compiles the decoding forward on CUDA (`_valid_auto_compile_criteria`)."""
    trainer.generation_config.disable_compile = False
