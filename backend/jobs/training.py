"""One training job: a run's method (GRPO: backend/engine/grpo.py, SFT: backend/engine/sft.py) on a dataset's train
split, with metrics, rollouts and checkpoints written to storage, and held-out evaluations before, during (every
eval_steps, the curve that picks the best checkpoint) and after.

Runs in its own process (started by the worker): `python -m backend.jobs.training --data-dir D --run ID`; a
multi-GPU run runs it under `accelerate launch`, one process per GPU, and only the main one (RANK 0) writes
to storage.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from backend.data.catalog import get_dataset
from backend.data.workspace import Workspace, open_workspace
from backend.engine import grpo, sft
from backend.engine.grpo import RolloutRecorder, grpo_config_kwargs, vllm_generate  # noqa: F401 - the job's GRPO parts
from backend.engine.gpus import installed
from backend.engine.processes import Processes, current_weights, hf_generate
from backend.engine.run_plan import largest_image, plan_run
from backend.engine.settings import TrainSettings
from backend.jobs.ownership import OWNER_ENV, Lifeline
from backend.jobs.run_history import latest_checkpoint
from backend.jobs.runs import (LeaseLost, dataset_name, finish_run, get_run, pinned_dataset, training_set,
                               training_set_text)
from backend.jobs.training_callbacks import HeldoutEvaluations, make_callback
from backend.scoring.subsets import training_samples
from backend.scoring.tasks import get_task

EXIT_FAILED = 3
"""Exit status of a job that failed with a stored error sentence (the worker must not retry it)."""
EXIT_LEASE_LOST = 4
"""Exit status of a job whose lease went to another worker: it stopped without writing or settling anything."""
EXIT_STOPPED = 5
"""Exit status of a job stopped on purpose at a step boundary (its worker stopping, or gone), its checkpoint saved:
the run goes back to the queue and resumes from there, the attempt not counted."""
LEASE_TOKEN_ENV = "VRFT_LEASE_TOKEN"
"""The claim's lease token, for a job the worker starts fresh (a standby reads it from its hand-over line).
Every write of the job carries it (backend.jobs.runs: accepted only under the current lease)."""


class Stopped(Exception):
    """Training stopped on purpose at step `step` (`why`), its checkpoint saved: the run is to resume later."""

    def __init__(self, step: int, why: str):
        super().__init__(why)
        self.step, self.why = step, why


def train_rows(dataset: dict, data_dir: Path, family: str, settings: TrainSettings,
               input_size_of: Callable[[tuple[int, int]], tuple[int, int]] | None = None) -> list[dict]:
    """Training rows: chat prompt, image path, solution JSON, category, and where each came from. `input_size_of`
    (original size -> the size the model's processor resizes to) puts prompt and rewards in its frame."""
    rng = random.Random(settings.seed)
    task = get_task(dataset["task"])
    rows = []
    classes = [c for c in dataset["classes"] if c not in settings.novel_classes]  # novel ones: never in a prompt
    for s in training_samples(dataset["samples"], dataset["task"], settings.shots, settings.novel_classes,
                              settings.seed):
        input_size = input_size_of((s["width"], s["height"])) if input_size_of else None
        for e in task.build_examples(s, classes, family, settings.task_settings(), rng,
                                     synonyms=dataset.get("synonyms", {}), input_size=input_size):
            rows.append({"prompt": [{"role": "user", "content": e.prompt}],
                         "image": str(Path(data_dir) / dataset["folder"] / "images" / s["file"]),
                         "solution": json.dumps(e.solution), "category": e.category or "", "sample_id": s["id"],
                         "prompt_text": e.prompt,
                         "image_rel": f"{dataset['folder']}/images/{s['file']}"})
    return rows


def gpu_gib() -> float | None:
    """This process's GPU memory in GiB (under `accelerate launch`, its LOCAL_RANK's); None on a CPU."""
    import torch
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(int(os.environ.get("LOCAL_RANK", "0"))).total_memory / 1024 ** 3


def run_job(ws: Workspace, run_id: int, token: str | None = None, lifeline=None) -> str:
    """Train run `run_id` to the end (or to a cancel); returns the final status. Under `accelerate launch`
    every process runs this; only the main one writes to storage, each write under lease `token` (LeaseLost
    once another worker has the run). Stopped (backend.jobs.ownership's `lifeline`: asked to, or its worker
    gone) at a step boundary, after its checkpoint: raises Stopped."""
    import torch

    from backend.engine.models import device_name, load, lora_config
    from backend.jobs.predict import chosen_adapter

    processes = Processes()

    def say(text: str) -> None:
        if processes.main:
            print(text, flush=True)

    run = get_run(ws.store, run_id)
    settings = TrainSettings.from_dict(run.settings)
    run_dir = ws.data_dir / run.folder
    # Its training split as at its first start: a resumed job trains on the same images.
    dataset = pinned_dataset(get_dataset(ws.store, dataset_name(ws.store, run)), run_dir, write=True)
    output_dir = run_dir / "checkpoints"
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)

    is_sft = settings.method == "sft"
    device, vllm_ok = device_name(), installed("vllm")
    plan = plan_run(settings, run.model, cuda=device == "cuda", vllm_installed=vllm_ok and not is_sft,
                    gpu_gib=gpu_gib(), image_size=largest_image(dataset))
    backend = plan.backend
    config_kwargs = (sft.sft_config_kwargs(settings, output_dir, device) if is_sft  # its sentence before the load
                     else grpo_config_kwargs(settings, output_dir, device, plan, vllm_ok))
    start, started_at = (chosen_adapter(ws, settings.init_from) if settings.init_from is not None else (None, None))
    loaded = load(run.model, adapter=str(start) if start else None, for_training=True, qlora=plan.qlora,
                  min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
    heldout = HeldoutEvaluations(ws, run_id, token, loaded, dataset, settings, processes)
    before = heldout.before_needed()
    if before and backend == "hf":
        say(f"evaluating the {'starting' if start else 'base'} model on {len(heldout.val)} held-out images")
        heldout.evaluate(0, "before", hf_generate(loaded))

    rows = train_rows(dataset, ws.data_dir, loaded.family.name, settings, lambda size: loaded.view(size).input)
    say(f"{training_set_text(training_set(dataset, settings))}: {len(rows)} prompts")
    if backend == "vllm":  # vLLM and the HF processor must expand every image to the same tokens (TRL #6401)
        rows = grpo.presized(rows, run_dir / "presized", loaded.processor)
    recorder = None if is_sft else RolloutRecorder(settings)
    callback = make_callback(ws, run_id, settings, recorder, output_dir, token, lifeline)
    lora = None if start else lora_config(loaded.family, settings.lora_rank, settings.lora_alpha)
    if is_sft:
        trainer = sft.build_trainer(loaded, config_kwargs, rows, dataset["task"], [callback], lora)
    else:
        trainer = grpo.build_trainer(loaded, config_kwargs, rows, settings, [callback], recorder, lora, backend)
    from transformers import PrinterCallback, ProgressCallback
    for noisy in (PrinterCallback, ProgressCallback):  # a dict of every value per step: the callback's line instead
        trainer.remove_callback(noisy)
    fast = None if is_sft else vllm_generate(trainer, loaded.processor)
    if before and backend == "vllm":
        say(f"evaluating the {'starting' if start else 'base'} model on {len(heldout.val)} held-out images (vLLM)")
        heldout.evaluate(0, "before", fast)
    heldout.now = lambda: current_weights(trainer, loaded, fast, processes)
    callback.heldout = heldout
    ck = latest_checkpoint(ws.store, ws.data_dir, run_id)
    resume = str(ws.data_dir / ck.path) if ck else None
    why = processes.agree(lifeline.reason() if lifeline is not None and processes.main else None)
    if why:  # asked to stop while loading: nothing new to save, the run resumes where it was
        raise Stopped(ck.step if ck else 0, why)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    say(f"training {run.model} by {'SFT' if is_sft else 'GRPO'} ({loaded.family.name}, "
        f"{'QLoRA 4-bit' if loaded.quantized else 'LoRA'} on {loaded.device}, generation {backend}"
        + (f" with {plan.vllm_gpu_memory_utilization:g} of the GPU" if backend == "vllm" else "")
        + (" compiled" if settings.compile_generation else "")
        + (f", about {plan.estimate_gib:.1f} GiB estimated" if plan.estimate_gib else "")
        + (f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else "")
        + (f", {processes.count} processes, {settings.distributed}" if processes.count > 1 else "")
        + f") for {settings.max_steps} steps"
        + (f", held-out evaluation every {heldout.interval} steps" if heldout.interval and heldout.val else "")
        + (f", starting from run {settings.init_from}'s adapter ({started_at['which']}, step {started_at['step']})"
           if start else "") + (f", resuming from step {ck.step}" if ck else ""))
    if ck and ck.step >= settings.max_steps and processes.count == 1:
        # Trained to the end before the last job stopped (killed while evaluating or saving): HF's loop would
        # train one step past max_steps, so the checkpoint's weights are loaded instead of training again.
        trainer._load_from_checkpoint(resume)
        trainer.state.global_step = ck.step
    else:
        trainer.train(resume_from_checkpoint=resume)
        if callback.stopped:
            raise Stopped(*callback.stopped)
        if callback.diverged is not None:
            kept = latest_checkpoint(ws.store, ws.data_dir, run_id)
            step, what = callback.diverged
            raise ValueError(f"the {what} became NaN at step {step}, so training stopped there; "
                             + (f"the last good checkpoint (step {kept.step}) is kept" if kept else "no checkpoint "
                                "was saved before it") + ": lower the learning rate (or beta) and start a new run")

    cancelled = processes.agree(get_run(ws.store, run_id).cancel_requested)
    adapter_dir = run_dir / "adapter"
    if processes.count > 1:
        trainer.save_model(str(adapter_dir))  # every process (ZeRO-3 gathers the adapter); the main one writes
    else:
        trainer.model.save_pretrained(str(adapter_dir))
    if processes.main:
        loaded.processor.save_pretrained(str(adapter_dir))
    if not cancelled and heldout.val:
        with current_weights(trainer, loaded, fast, processes) as generate:
            heldout.evaluate(trainer.state.global_step, "after", generate)
    return "cancelled" if cancelled else "completed"


def finish(ws: Workspace, run_id: int, status: str, error: str | None = None, token: str | None = None) -> bool:
    """Settle the run as `status`, only while it is running under lease `token`; returns whether it did."""
    return finish_run(ws.store, run_id, status, error, token)


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
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer  # noqa: F401

    from backend.engine import heldout, models  # noqa: F401
    from backend.jobs import predict  # noqa: F401
    from backend.scoring import parsing, playground  # noqa: F401


def wait_for_run() -> tuple[int, str | None, str] | None:
    """The standby's wait: one line "RUN_ID LEASE_TOKEN LOG_PATH" on stdin (token "-": none); None at EOF (the
    worker closed the pipe or died)."""
    line = sys.stdin.readline().rstrip("\n")
    if not line.strip():
        return None
    run_id, token, log_path = line.split(" ", 2)
    return int(run_id), (None if token == "-" else token), log_path


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
    from backend.engine.quiet import silence_known_notices
    silence_known_notices()
    p = argparse.ArgumentParser(description="Run one training job (the worker starts this).")
    p.add_argument("--data-dir", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=int)
    which.add_argument("--standby", action="store_true",
                       help="the worker's warm job process: import the training stack, then read \"RUN_ID LEASE_TOKEN "
                            "LOG_PATH\" from stdin and run that run with its output in that log (exit 0 at EOF)")
    args = p.parse_args(argv)
    token = os.environ.get(LEASE_TOKEN_ENV) or None
    lifeline = None
    if OWNER_ENV in os.environ:  # started by a worker: stops when asked, or when the worker is gone
        lifeline = Lifeline()
    if args.standby:
        started = time.time()
        preload()
        ready = time.time()
        given = wait_for_run()
        if given is None:
            return 0
        args.run, token, log_path = given
        output_to(log_path)
        print(f"job process {os.getpid()}: the worker's warm standby (imports took {ready - started:.1f} s, "
              f"then waited {time.time() - ready:.1f} s for this run)", flush=True)
    ws = open_workspace(Path(args.data_dir))
    main_process = Processes().main  # under `accelerate launch`, only RANK 0 settles the run
    try:
        status = run_job(ws, args.run, token, lifeline)
    except LeaseLost as e:  # another worker has the run now: nothing more of ours may land
        print(f"stopping: {e}", flush=True)
        return EXIT_LEASE_LOST
    except Stopped as e:  # the checkpoint of step e.step is saved: the run resumes from it
        print(f"stopped at step {e.step}: {e.why}; the run is queued again and resumes from step {e.step}",
              flush=True)
        if main_process and token is not None and "worker is gone" in e.why:
            from backend.jobs.leases import requeue_stopped
            requeue_stopped(ws, args.run, token)  # no worker left to do it
        return EXIT_STOPPED
    except ValueError as e:  # a sentence a person can act on
        print(f"error: {e}", flush=True)
        if main_process:
            finish(ws, args.run, "failed", str(e), token)
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - stored for the person, with the log for detail
        traceback.print_exc()
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sentence = f"training failed: {line} (see the log)"
        if "inf, nan" in line:  # torch.multinomial on broken weights: GRPO samples before any loss is logged
            sentence = (f"the model's weights became NaN or infinite after step {get_run(ws.store, args.run).step}, so "
                        "sampling failed: lower the learning rate (or beta) and start a new run")
        if main_process:
            finish(ws, args.run, "failed", sentence, token)
        return EXIT_FAILED
    if main_process and not finish(ws, args.run, status, token=token) and token is not None:
        print(f"stopping: run {args.run} is no longer leased to this job; its result was not recorded", flush=True)
        return EXIT_LEASE_LOST
    return 0


if __name__ == "__main__":
    sys.exit(main())


def claim_and_run(ws: Workspace, run_id: int, owner: str) -> int:
    """Claim queued run `run_id` as a worker would, then run its job in this process (tests and benchmarks, where
    no worker runs: the run ends settled, not left queued); the job's exit status."""
    from backend.jobs.leases import claim
    if claim(ws, owner, 3600) != run_id:
        raise ValueError(f"run {run_id} is not the queued run a worker would take next")
    return main(["--data-dir", str(ws.data_dir), "--run", str(run_id)])
