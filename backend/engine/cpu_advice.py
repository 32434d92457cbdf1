"""A warning before a model far bigger than the demo is queued on a machine without a GPU: the memory and the time a
CPU run of it would take, roughly, so that nobody learns it from a step that never ends. Pure arithmetic on the
model's shape and the memory estimate (backend.engine.memory); no torch."""
from __future__ import annotations

WARN_ABOVE_PARAMS_B = 0.5
"""Models above this many billion parameters get the warning (the demo has 0.004)."""
CPU_TRAIN_GFLOPS = 50.0
"""Sustained fp32 training throughput of a CPU, roughly (a few cores with AVX2): a 3B model's GRPO step of 8
completions of 256 tokens over a 1024x768 photo comes to about an hour and a half."""
CPU_MEMORY_GBPS = 20.0
"""Memory bandwidth: generation reads every weight once per new token."""


def span(seconds: float) -> str:
    """A duration as a person reads it: '40 s', '12 min', '1.5 h'."""
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h" if seconds < 36000 else f"{seconds / 3600:.0f} h"
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def cpu_estimate(settings, shape, image_size: tuple[int, int] | None = None, visual_tokens: int | None = None
                 ) -> dict:
    """{"memory_gib", "step_seconds", "run_seconds"} of training `shape` with `settings` (a TrainSettings) on a
    CPU: LoRA in fp32 (twice the bf16 estimate, without the CUDA context), the step's forward and backward over
    every sequence plus its generation. The largest image: `image_size`, or the `visual_tokens` it becomes."""
    from backend.engine import memory
    job = memory.job_from_settings(settings, shape, image_size=image_size or (1024, 768), visual_tokens=visual_tokens,
                                   qlora=False, generation="hf")
    est = memory.estimate(job)
    params = shape.total_params_b * 1e9
    tokens = job.sequences * (job.prompt_tokens + job.visual_tokens + job.max_completion_length)
    train = 6 * params * tokens / (CPU_TRAIN_GFLOPS * 1e9)
    generate = job.max_completion_length * params * 4 / (CPU_MEMORY_GBPS * 1e9)
    step = train + generate
    return {"memory_gib": round(2 * (est.total_gib - est.overhead_gib), 1), "step_seconds": round(step),
            "run_seconds": round(step * settings.max_steps)}


def cpu_warning(model: str, settings, image_size: tuple[int, int] | None = None,
                has_gpu: bool | None = None) -> str | None:
    """One sentence when this machine has no GPU (`has_gpu` None: asks nvidia-smi) and `model` is far bigger than
    the demo; None otherwise (a GPU, the demo, a small model, or a model of unknown shape)."""
    from backend.engine.memory import model_shape
    from backend.engine.models import resolve_model
    if has_gpu is None:
        from backend.engine.preflight import gpu_gib
        has_gpu = gpu_gib() is not None
    if has_gpu:
        return None
    try:
        shape = model_shape(resolve_model(model)[0])
    except ValueError:
        return None
    if shape.total_params_b < WARN_ABOVE_PARAMS_B:
        return None
    est = cpu_estimate(settings, shape, image_size)
    return (f"this machine has no GPU, so a worker here would train {model} ({shape.total_params_b:.1f}B parameters, "
            f"against the demo's few million) on the CPU: about {est['memory_gib']:.0f} GiB of memory and roughly "
            f"{span(est['step_seconds'])} per step ({span(est['run_seconds'])} for {settings.max_steps} steps). "
            "Train it where a worker has a GPU, or try the walk with the demo model first.")


def dataset_cpu_warning(ws, dataset_name: str, model: str, settings) -> str | None:
    """cpu_warning with the dataset's largest image (what `runs create` and the Train tab say after queuing)."""
    from backend.data.catalog import get_dataset
    try:
        samples = get_dataset(ws.store, dataset_name)["samples"]
    except ValueError:
        return None
    largest = max(((s["width"], s["height"]) for s in samples), key=lambda wh: wh[0] * wh[1], default=None)
    return cpu_warning(model, settings, largest)
