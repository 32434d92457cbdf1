"""GPUs without torch: which ones this machine lets jobs use, whether a run's settings can run here, and the
command line that starts a job on its GPUs (one process, or `accelerate launch` with one process per GPU).

Imported by the worker and by `runs create`, neither of which may import torch or touch CUDA.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from backend.engine.settings import DISTRIBUTED_MODES, GENERATION_BACKENDS, TRACKERS, TrainSettings

MAIN_PORT_BASE = 29500
"""`accelerate launch`'s rendezvous port is this plus the run id modulo 1000, so that two multi-GPU runs on one
machine do not meet on the same port."""


def visible_gpus(env: dict | None = None) -> list[str]:
    """The GPU ids jobs may use: CUDA_VISIBLE_DEVICES when it is set (empty or -1: none), else every GPU
    `nvidia-smi -L` lists, else none (the CPU)."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        ids = []
        for g in env["CUDA_VISIBLE_DEVICES"].split(","):
            g = g.strip()
            if not g or g.startswith("-"):  # CUDA stops at the first invalid id; -1 hides every GPU
                break
            ids.append(g)
        return ids
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return re.findall(r"^GPU (\d+):", out, re.MULTILINE)


def parse_gpus(text: str) -> list[str]:
    """`--gpus 0,1` -> ["0", "1"]; `--gpus none` (or an empty string) -> [] (the CPU)."""
    if text.strip().lower() in ("", "none", "cpu"):
        return []
    ids = [g.strip() for g in text.split(",")]
    if any(not g for g in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"--gpus must be GPU ids separated by commas, each once (like 0,1), got '{text}'")
    return ids


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def settings_problem(settings: TrainSettings, gpu_count: int, has=installed) -> str | None:
    """One sentence saying why a machine with `gpu_count` GPUs (and the packages `has` finds) cannot run
    these settings, or None."""
    s = settings
    if s.generation_backend not in GENERATION_BACKENDS:
        return f"generation backend must be one of {', '.join(GENERATION_BACKENDS)}, got '{s.generation_backend}'"
    if s.distributed not in DISTRIBUTED_MODES:
        return f"distributed must be one of {', '.join(DISTRIBUTED_MODES)}, got '{s.distributed}'"
    if s.vllm_gpu_memory_utilization is not None and not 0 < s.vllm_gpu_memory_utilization < 1:
        return f"vllm_gpu_memory_utilization must be between 0 and 1, got {s.vllm_gpu_memory_utilization}"
    if s.generation_backend == "vllm":
        if gpu_count == 0:
            return "generation backend 'vllm' needs a CUDA GPU and this machine has none; use 'hf' or 'auto'"
        if not has("vllm"):
            return ("generation backend 'vllm' needs the vllm package, which is not installed here; "
                    "install it or use 'hf' or 'auto'")
        if s.qlora:
            return ("generation backend 'vllm' cannot train a 4-bit (QLoRA) base: TRL cannot load LoRA-merged "
                    "4-bit weights into vLLM; choose settings without QLoRA (the GPU-size presets use it) or "
                    "generation backend 'hf'")
    if s.use_liger_kernel and (gpu_count == 0 or not has("liger_kernel")):
        return ("use_liger_kernel needs a CUDA GPU and the liger-kernel package "
                "(pip install -r requirements-gpu.txt); turn it off here")
    if s.compile_generation and (gpu_count == 0 or s.generation_backend == "vllm"):
        return ("compile_generation compiles HF generate on a CUDA GPU; turn it off "
                + ("here: this machine has none" if gpu_count == 0 else "with generation backend 'vllm'"))
    for tracker in s.report_to:
        if tracker not in TRACKERS:
            return f"report_to takes {', '.join(TRACKERS)}, not '{tracker}'"
        if not any(has(package) for package in TRACKERS[tracker]):
            return (f"report_to '{tracker}' needs the {' or '.join(TRACKERS[tracker])} package, which is not "
                    "installed here; install it or leave it out")
    if s.num_gpus < 1:
        return f"num_gpus must be at least 1, got {s.num_gpus}"
    if s.num_gpus > 1:
        if s.num_gpus > gpu_count:
            return (f"this run asks for {s.num_gpus} GPUs and this machine has {gpu_count}; a worker only takes "
                    "a run when it has that many GPUs free")
        if s.distributed in ("zero2", "zero3") and not has("deepspeed"):
            return f"distributed '{s.distributed}' needs the deepspeed package, which is not installed here"
        if s.distributed == "zero3" and s.qlora:
            return "distributed 'zero3' shards bf16 weights and cannot shard a 4-bit (QLoRA) base; turn QLoRA off"
    return None


def check_settings(settings: TrainSettings) -> None:
    """Raise ValueError (one sentence) when this machine cannot run `settings`."""
    problem = settings_problem(settings, len(visible_gpus()))
    if problem:
        raise ValueError(problem)


def gpus_needed(settings: dict) -> int:
    """How many of a worker's job slots a run takes (its stored settings): its num_gpus, at least 1."""
    return max(1, int(settings.get("num_gpus") or 1))


def accelerate_config(settings: TrainSettings) -> str:
    """`accelerate launch --config_file` YAML for a DeepSpeed run (zero2 or zero3), after TRL's own
    trl/accelerate_configs/zero2.yaml and zero3.yaml."""
    import yaml
    stage = {"zero2": 2, "zero3": 3}[settings.distributed]
    deepspeed = {"deepspeed_multinode_launcher": "standard", "offload_optimizer_device": "none",
                 "offload_param_device": "none",
                 # The job loads the model before it builds its training config, on its own GPU: DeepSpeed's
                 # zero.Init would not apply to that load, and ZeRO-3 shards the weights when training starts.
                 "zero3_init_flag": False, "zero_stage": stage}
    if stage == 3:
        deepspeed["zero3_save_16bit_model"] = True  # checkpoints and the adapter are saved whole, not as shards
    return yaml.safe_dump({
        "compute_environment": "LOCAL_MACHINE", "debug": False, "deepspeed_config": deepspeed,
        "distributed_type": "DEEPSPEED", "downcast_bf16": "no", "machine_rank": 0, "main_training_function": "main",
        "mixed_precision": "bf16", "num_machines": 1, "num_processes": settings.num_gpus, "rdzv_backend": "static",
        "same_network": True, "tpu_env": [], "tpu_use_cluster": False, "tpu_use_sudo": False, "use_cpu": False,
    }, sort_keys=False)


def launch_command(settings: TrainSettings, gpus: list[str], data_dir: Path | str, run_id: int,
                   python: str = sys.executable, config_file: Path | str | None = None) -> list[str]:
    """The job's command line.

    One GPU (or the CPU): `python -m backend.jobs.training --data-dir D --run ID` (the worker sets
    CUDA_VISIBLE_DEVICES). num_gpus > 1: `accelerate launch` (as `python -m accelerate.commands.accelerate_cli
    launch`, so that it is this interpreter's accelerate) with one process per GPU of `gpus`; "ddp" is
    `--multi_gpu`, "zero2"/"zero3" read `config_file` (accelerate_config's YAML, which the worker writes into
    the run's folder).
    """
    job = ["-m", "backend.jobs.training", "--data-dir", str(data_dir), "--run", str(run_id)]
    n = settings.num_gpus
    if n <= 1:
        return [python, *job]
    if len(gpus) != n:
        raise ValueError(f"run {run_id} trains on {n} GPUs; {len(gpus)} given")
    cmd = [python, "-m", "accelerate.commands.accelerate_cli", "launch", "--num_processes", str(n),
           "--num_machines", "1", "--gpu_ids", ",".join(gpus),
           "--main_process_port", str(MAIN_PORT_BASE + run_id % 1000), "--dynamo_backend", "no"]
    if settings.distributed == "ddp":
        # Mixed precision is the job's: its GRPOConfig sets bf16 on CUDA (and nothing on a CPU).
        cmd += ["--multi_gpu", "--mixed_precision", "no"]
    else:
        if config_file is None:
            raise ValueError(f"distributed '{settings.distributed}' needs its accelerate config file")
        cmd += ["--config_file", str(config_file)]
    return cmd + job
