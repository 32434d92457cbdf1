"""One training job: TRL GRPOTrainer on a dataset's train split, with metrics, rollouts and
checkpoints written to storage, and held-out evaluation before and after.

Runs in its own process (started by the worker): `python -m backend.training --data-dir D --run ID`; a
multi-GPU run runs it under `accelerate launch`, one process per GPU, and only the main one (RANK 0) writes
to storage.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from backend.datasets.catalog import get_dataset
from backend.rewards import REWARDS, read_solution
from backend.runs import dataset_name, get_run, latest_checkpoint, now, upsert_metrics
from backend.settings import TrainSettings, generation_backend, uses_qlora
from backend.tasks import get_task
from backend.workspace import Workspace, open_workspace
from storage.models import Checkpoint, Evaluation, Rollout, Run

EXIT_FAILED = 3
"""Exit status of a job that failed with a stored error sentence (the worker must not retry it)."""


def train_rows(dataset: dict, data_dir: Path, family: str, settings: TrainSettings,
               input_size_of: Callable[[tuple[int, int]], tuple[int, int]] | None = None) -> list[dict]:
    """GRPO rows: chat prompt, image path, solution JSON, and where each came from. `input_size_of`
    (original size -> the size the model's processor resizes to) puts prompt and rewards in its frame."""
    rng = random.Random(settings.seed)
    task = get_task(dataset["task"])
    rows = []
    for s in dataset["samples"]:
        if s["split"] != "train":
            continue
        input_size = input_size_of((s["width"], s["height"])) if input_size_of else None
        for e in task.build_examples(s, dataset["classes"], family, settings.task_settings(), rng,
                                     synonyms=dataset.get("synonyms", {}), input_size=input_size):
            rows.append({"prompt": [{"role": "user", "content": e.prompt}],
                         "image": str(Path(data_dir) / dataset["folder"] / "images" / s["file"]),
                         "solution": json.dumps(e.solution), "sample_id": s["id"], "prompt_text": e.prompt,
                         "image_rel": f"{dataset['folder']}/images/{s['file']}"})
    return rows


class RolloutRecorder:
    """Wraps the reward functions so the callback can store what was sampled and how it scored."""

    def __init__(self) -> None:
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

    def take(self, n: int) -> list[dict]:
        from backend.parsing import completion_text
        from backend.playground import parsed_view
        b, self.batch = self.batch, {}
        if not b.get("completions"):
            return []
        kw = b["kwargs"]
        out = []
        step = max(1, len(b["completions"]) // n)
        for i in range(0, len(b["completions"]), step)[:n]:
            text = completion_text(b["completions"][i])
            sol = read_solution(kw["solution"][i])
            task = "detection" if "boxes" in sol else "classification" if "label" in sol else "grounding"
            out.append({"sample_id": kw["sample_id"][i], "image": kw["image_rel"][i], "prompt": kw["prompt_text"][i],
                        "completion": text, "parsed": {**parsed_view(task, text, sol), "input_size": sol.get("input_size")},
                        "rewards": {k: v[i] for k, v in b["rewards"].items()}})
        return out


def make_callback(ws: Workspace, run_id: int, settings: TrainSettings, recorder: RolloutRecorder, output_dir: Path):
    from transformers import TrainerCallback
    processes = Processes()

    class StudioCallback(TrainerCallback):
        """Metrics, rollouts, checkpoints and progress to storage; cancel at the next step."""

        def __init__(self):
            self.step_started = time.time()

        def on_step_begin(self, args, state, control, **kw):
            self.step_started = time.time()

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or state.global_step < 1 or not state.is_world_process_zero:  # the main process writes
                return
            values = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and not k.startswith(("total_flos", "train_"))}
            values["step_time"] = time.time() - self.step_started
            upsert_metrics(ws.store, run_id, state.global_step, values)

        def on_step_end(self, args, state, control, **kw):
            step = state.global_step
            cancel = False
            if state.is_world_process_zero:  # only the main process writes to storage
                if step % settings.rollout_steps == 0 or step == 1:
                    rows = recorder.take(settings.rollouts_per_save)
                    if rows:
                        with ws.store.write() as s:
                            s.add_all([Rollout(run_id=run_id, step=step, **r) for r in rows])
                with ws.store.write() as s:
                    run = s.get(Run, run_id)
                    run.step = step
                    cancel = run.cancel_requested
            cancel = processes.agree(cancel)  # every process stops at the same step
            if cancel:
                control.should_training_stop = True
                control.should_save = True

        def on_save(self, args, state, control, **kw):
            # Called after the checkpoint folder is fully written: only now is it "complete".
            processes.wait()  # every process has written its part (its RNG state)
            if not state.is_world_process_zero:
                return
            path = output_dir / f"checkpoint-{state.global_step}"
            rel = path.relative_to(ws.data_dir).as_posix()
            with ws.store.write() as s:
                ck = s.query(Checkpoint).filter_by(run_id=run_id, step=state.global_step).one_or_none()
                if ck is None:
                    s.add(Checkpoint(run_id=run_id, step=state.global_step, path=rel, complete=True))
                else:
                    ck.path, ck.complete = rel, True

    return StudioCallback()


def store_evaluation(ws: Workspace, run_id: int, phase: str, result: dict) -> None:
    with ws.store.write() as s:
        ev = s.query(Evaluation).filter_by(run_id=run_id, phase=phase).one_or_none()
        if ev is None:
            s.add(Evaluation(run_id=run_id, phase=phase, metrics=result))
        else:
            ev.metrics = result


GenerateFn = Callable[[list, int], list[str]]
"""(image, prompt) pairs and max new tokens -> greedy completions (backend.heldout.GenerateFn)."""


class Processes:
    """This job process among those `accelerate launch` started (RANK of WORLD_SIZE; 0 of 1 without it).

    Only the main process (RANK 0) writes to storage; what every process must do alike (stop, evaluate) is
    the main process's decision, broadcast.
    """

    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.count = int(os.environ.get("WORLD_SIZE", "1"))
        self.main = self.rank == 0

    def agree(self, value):
        """The main process's `value`, in every process."""
        if self.count == 1:
            return value
        from accelerate.utils import broadcast_object_list
        box = [value]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def wait(self) -> None:
        if self.count > 1:
            from accelerate import PartialState
            PartialState().wait_for_everyone()

    def share(self, generate: GenerateFn) -> GenerateFn:
        """`generate` with the prompts dealt among the processes; every process gets every completion, in order.
        Each process calls `generate`, with no prompts if none is its (ZeRO-3 gathers weights collectively)."""
        if self.count == 1:
            return generate

        def shared(items, max_new_tokens):
            from accelerate.utils import gather_object
            mine = list(range(self.rank, len(items), self.count))
            done = generate([items[i] for i in mine], max_new_tokens)
            return [text for _, text in sorted(gather_object(list(zip(mine, done))))]
        return shared


VLLM_PROMPT_TOKENS = 4096
"""vLLM's context: this many prompt tokens (images are capped by max_pixels, ~512-1,024 visual tokens) plus the
completion length. The engine sizes its KV cache for that rather than for the model's whole context."""


def vllm_installed() -> bool:
    import importlib.util
    return importlib.util.find_spec("vllm") is not None


def grpo_config_kwargs(settings: TrainSettings, output_dir: Path, device: str, vllm_available: bool) -> dict:
    """The job's GRPOConfig, as keyword arguments (run_job builds `GRPOConfig(**these)`).

    Pure: the device ("cuda" or "cpu") and whether vLLM is installed are arguments, so the CUDA and vLLM
    mapping is testable on a CPU (GRPOConfig itself refuses bf16 without a GPU, hence a dict). Raises
    ValueError (one sentence) for what this machine cannot run; `runs create` refuses that earlier.
    """
    cuda = device == "cuda"
    backend = generation_backend(settings, cuda, vllm_available)
    if backend == "vllm" and not (cuda and vllm_available):
        raise ValueError("generation backend 'vllm' needs a CUDA GPU and the vllm package, and this machine has "
                         + ("no GPU" if not cuda else "no vllm") + "; use 'hf' or 'auto'")
    if backend == "vllm" and settings.qlora:
        raise ValueError("generation backend 'vllm' cannot train a 4-bit (QLoRA) base: TRL cannot load "
                         "LoRA-merged 4-bit weights into vLLM; choose settings without QLoRA or generation "
                         "backend 'hf'")
    if settings.use_liger_kernel and not cuda:
        raise ValueError("use_liger_kernel needs a CUDA GPU; turn it off on this machine")
    kwargs = dict(
        output_dir=str(output_dir), max_steps=settings.max_steps, learning_rate=settings.learning_rate,
        num_generations=settings.num_generations, per_device_train_batch_size=settings.prompts_per_step * settings.num_generations,
        gradient_accumulation_steps=1, beta=settings.beta, temperature=settings.temperature,
        max_completion_length=settings.max_completion_length, reward_weights=settings.reward_weights,
        seed=settings.seed, save_steps=settings.save_steps, save_strategy="steps", logging_steps=1, report_to=[],
        use_cpu=not cuda, bf16=cuda, gradient_checkpointing=cuda, lr_scheduler_type="constant",
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
                      vllm_gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
                      vllm_max_model_length=VLLM_PROMPT_TOKENS + settings.max_completion_length)
    # HF generate keeps TRL's dynamic cache: cache_implementation="static" alone is not the measured 4x (that was a
    # compiled static cache), and TRL 1.16 builds its GenerationConfig with disable_compile=True.
    if settings.use_liger_kernel:
        kwargs["use_liger_kernel"] = True
    return kwargs


def vllm_resizes_like(processor) -> None:
    """TRL builds its vLLM engine from the checkpoint folder, whose image processor may resize differently from
    the limits this job applied (prompt tokens, rewards and coordinates follow ours). TRL 1.16 passes no
    mm_processor_kwargs to vLLM, so the engine constructor TRL calls gets ours here."""
    import functools

    from trl.generation import vllm_generation

    from backend.model_input import pixel_limits
    lo, hi = pixel_limits(processor)
    vllm_generation.LLM = functools.partial(vllm_generation.LLM,
                                            mm_processor_kwargs={"min_pixels": lo, "max_pixels": hi})


def hf_generate(loaded) -> GenerateFn:
    from backend.inference import generate
    return lambda items, max_new_tokens: generate(loaded, items, max_new_tokens=max_new_tokens)


def vllm_generate(trainer, processor) -> GenerateFn | None:
    """Greedy completions (temperature 0) from the trainer's colocated vLLM engine, with the trainer's current
    weights; None when it has none (TRL 1.16 keeps the engine as `trainer.vllm_generation.llm`)."""
    engine = getattr(trainer, "vllm_generation", None)
    if getattr(engine, "llm", None) is None:
        return None

    def generate(items, max_new_tokens):
        from vllm import SamplingParams

        from backend.inference import messages
        engine.sync_weights()  # the trained weights (LoRA merged), into an engine whose weights may be asleep
        if not items:
            return []
        if engine.enable_sleep_mode:
            engine.llm.wake_up(tags=["kv_cache"])
        prompts = [{"prompt": processor.apply_chat_template(messages(p), add_generation_prompt=True),
                    "multi_modal_data": {"image": im.convert("RGB")}} for im, p in items]
        greedy = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        outputs = engine.llm.generate(prompts, sampling_params=greedy, use_tqdm=False)
        if engine.enable_sleep_mode:
            engine.llm.sleep(level=2)
            engine._llm_weights_sleeping = True  # so TRL pushes the weights again before it generates
        return [o.outputs[0].text for o in outputs]
    return generate


def run_job(ws: Workspace, run_id: int) -> str:
    """Train run `run_id` to the end (or to a cancel); returns the final status. Under `accelerate launch`
    every process runs this; only the main one writes to storage."""
    import torch
    from datasets import Dataset, Image as ImageFeature
    from trl import GRPOConfig, GRPOTrainer

    from backend import heldout
    from backend.models import device_name, load, lora_config

    processes = Processes()

    def say(text: str) -> None:
        if processes.main:
            print(text, flush=True)

    run = get_run(ws.store, run_id)
    settings = TrainSettings.from_dict(run.settings)
    dataset = get_dataset(ws.store, dataset_name(ws.store, run))
    run_dir = ws.data_dir / run.folder
    output_dir = run_dir / "checkpoints"
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)

    device, vllm_ok = device_name(), vllm_installed()
    backend = generation_backend(settings, device == "cuda", vllm_ok)
    config_kwargs = grpo_config_kwargs(settings, output_dir, device, vllm_ok)  # its sentence before the load
    loaded = load(run.model, qlora=uses_qlora(settings, device == "cuda", backend), for_training=True,
                  min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
    # Built after the load: under ZeRO-3 a config built first makes transformers shard the load, which
    # refuses the device map.
    config = GRPOConfig(**config_kwargs)
    val = [s for s in dataset["samples"] if s["split"] == "val"]
    tsettings = settings.task_settings()
    with ws.store.read() as s:
        have_before = s.query(Evaluation).filter_by(run_id=run_id, phase="before").one_or_none() is not None
    before = bool(val) and not have_before  # read by every process before any of them can store it

    def evaluate(phase: str, generate: GenerateFn) -> None:
        result = heldout.evaluate(loaded, ws.data_dir, dataset, val, tsettings, settings.max_completion_length,
                                  settings.eval_max_examples, generate_fn=processes.share(generate))
        if processes.main:
            store_evaluation(ws, run_id, phase, result)

    if before and backend == "hf":
        say(f"evaluating the base model on {len(val)} held-out images")
        evaluate("before", hf_generate(loaded))

    rows = train_rows(dataset, ws.data_dir, loaded.family.name, settings, lambda size: loaded.view(size).input)
    train_ds = Dataset.from_list(rows).cast_column("image", ImageFeature())
    recorder = RolloutRecorder()
    if backend == "vllm":
        vllm_resizes_like(loaded.processor)
    trainer = GRPOTrainer(
        model=loaded.model, processing_class=loaded.processor, args=config, train_dataset=train_ds,
        reward_funcs=[recorder.wrap(n) for n in settings.rewards], peft_config=lora_config(
            loaded.family, settings.lora_rank, settings.lora_alpha),
        callbacks=[make_callback(ws, run_id, settings, recorder, output_dir)])
    fast = vllm_generate(trainer, loaded.processor)
    if before and backend == "vllm":
        say(f"evaluating the base model on {len(val)} held-out images (vLLM)")
        evaluate("before", fast)
    ck = latest_checkpoint(ws.store, ws.data_dir, run_id)
    resume = str(ws.data_dir / ck.path) if ck else None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    say(f"training {run.model} ({loaded.family.name}, {'QLoRA 4-bit' if loaded.quantized else 'LoRA'} on "
        f"{loaded.device}, generation {backend}"
        + (f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else "")
        + (f", {processes.count} processes, {settings.distributed}" if processes.count > 1 else "")
        + f") for {settings.max_steps} steps" + (f", resuming from step {ck.step}" if ck else ""))
    trainer.train(resume_from_checkpoint=resume)

    cancelled = processes.agree(get_run(ws.store, run_id).cancel_requested)
    adapter_dir = run_dir / "adapter"
    if processes.count > 1:
        trainer.save_model(str(adapter_dir))  # every process (ZeRO-3 gathers the adapter); the main one writes
    else:
        trainer.model.save_pretrained(str(adapter_dir))
    if processes.main:
        loaded.processor.save_pretrained(str(adapter_dir))
    if not cancelled and val:
        trainer.model.eval()
        loaded.model = trainer.model
        if fast is not None:
            evaluate("after", fast)
        elif processes.count > 1:
            from trl.models.utils import unwrap_model_for_generation
            with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:  # ZeRO-3: gathered
                loaded.model = model
                evaluate("after", hf_generate(loaded))
        else:
            evaluate("after", hf_generate(loaded))
    return "cancelled" if cancelled else "completed"


def finish(ws: Workspace, run_id: int, status: str, error: str | None = None) -> None:
    with ws.store.write() as s:
        run = s.get(Run, run_id)
        run.status, run.finished_at, run.error = status, now(), error
        run.lease_owner = run.lease_expires_at = None


def preload() -> None:
    """Import what a job imports (the training stack and this module's lazy imports), so that the
    worker's warm standby starts its run at once. Only ever called in a job process: it may touch CUDA."""
    import os
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401
    from datasets import Dataset, Image  # noqa: F401
    from transformers import TrainerCallback  # noqa: F401
    from trl import GRPOConfig, GRPOTrainer  # noqa: F401

    from backend import heldout, models, parsing, playground  # noqa: F401


def wait_for_run() -> tuple[int, str] | None:
    """The standby's wait: one line "RUN_ID LOG_PATH" on stdin; None at EOF (the worker closed the pipe or died)."""
    line = sys.stdin.readline().rstrip("\n")
    if not line.strip():
        return None
    run_id, log_path = line.split(" ", 1)
    return int(run_id), log_path


def output_to(log_path: str) -> None:
    """From now on this process writes to the run's log (fd 1 and 2, line-buffered) and reads nothing."""
    import os
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)


def main(argv: list[str] | None = None) -> int:
    import os
    p = argparse.ArgumentParser(description="Run one training job (the worker starts this).")
    p.add_argument("--data-dir", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=int)
    which.add_argument("--standby", action="store_true",
                       help="the worker's warm job process: import the training stack, then read \"RUN_ID LOG_PATH\" "
                            "from stdin and run that run with its output in that log (exit 0 at EOF)")
    args = p.parse_args(argv)
    if args.standby:
        started = time.time()
        preload()
        ready = time.time()
        given = wait_for_run()
        if given is None:
            return 0
        args.run, log_path = given
        output_to(log_path)
        print(f"job process {os.getpid()}: the worker's warm standby (imports took {ready - started:.1f} s, "
              f"then waited {time.time() - ready:.1f} s for this run)", flush=True)
    ws = open_workspace(Path(args.data_dir))
    main_process = Processes().main  # under `accelerate launch`, only RANK 0 settles the run
    try:
        status = run_job(ws, args.run)
    except ValueError as e:  # a sentence a person can act on
        print(f"error: {e}", flush=True)
        if main_process:
            finish(ws, args.run, "failed", str(e))
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - stored for the person, with the log for detail
        traceback.print_exc()
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if main_process:
            finish(ws, args.run, "failed", f"training failed: {line} (see the log)")
        return EXIT_FAILED
    if main_process:
        finish(ws, args.run, status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
