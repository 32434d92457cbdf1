"""Advice when the memory estimate does not fit the card: concrete changes, in the order a practitioner tries them.
Pure Python, no torch."""
from __future__ import annotations

import math
from dataclasses import replace

from backend.engine.memory import JobSpec, MemoryEstimate, estimate, vllm_need_gib

MIN_GENERATIONS = 4
"""GRPO compares completions within a group: fewer than 4 gives little signal."""
MIN_VISUAL_TOKENS = 256
"""The least image detail advice proposes (about 450x450 pixels)."""
MIN_COMPLETION_LENGTH = 64
ADVICE_HEADROOM = 0.05
"""Advice aims at 95% of the card, so a suggestion is not right at the edge."""


def _largest(lo: int, hi: int, ok, step: int = 1) -> int | None:
    """The largest value in [lo, hi] (multiples of `step` above lo) for which ok() holds; ok is monotone."""
    if not ok(lo):
        return None
    lo_k, hi_k = 0, (hi - lo) // step
    while lo_k < hi_k:
        mid = (lo_k + hi_k + 1) // 2
        if ok(lo + mid * step):
            lo_k = mid
        else:
            hi_k = mid - 1
    return lo + lo_k * step


def advice(job: JobSpec | MemoryEstimate, gpu_gib: float) -> list[str]:
    """Concrete changes, in the order a practitioner tries them, until the estimate fits `gpu_gib`.

    The order: QLoRA on; a max_pixels cap (not below MIN_VISUAL_TOKENS); fewer prompts per step;
    a smaller G (never below MIN_GENERATIONS); shorter completions; gradient checkpointing on.
    Each sentence builds on the ones before it and names the value that makes the estimate fit
    with ADVICE_HEADROOM of the card to spare, or the furthest sensible value and what is left.
    Empty when the job already fits.
    """
    job = job.job if isinstance(job, MemoryEstimate) else job
    if job.generation == "vllm" and job.gpu_gib is None:
        job = replace(job, gpu_gib=gpu_gib)
    if estimate(job).fits(gpu_gib):
        return []
    target = gpu_gib * (1 - ADVICE_HEADROOM)
    card = f"the {gpu_gib:g} GiB card"

    def ok(j: JobSpec) -> bool:
        return estimate(j).total_gib <= target

    def outcome(j: JobSpec) -> str:
        total = estimate(j).total_gib
        return (f"the estimate becomes {total:.1f} GiB, which fits {card}" if ok(j)
                else f"the estimate becomes {total:.1f} GiB, still over {card}")

    out: list[str] = []
    if job.generation == "vllm":
        need = vllm_need_gib(job)
        if job.vllm_gpu_memory_utilization is not None and job.vllm_gpu_memory_utilization * gpu_gib < need:
            new = replace(job, vllm_gpu_memory_utilization=None)
            share = estimate(new).kv_cache_gib / gpu_gib
            out.append(f"vLLM's share ({job.vllm_gpu_memory_utilization:g} of {card}) is smaller than the "
                       f"{need:.1f} GiB its weights and KV cache need: leave vllm_gpu_memory_utilization unset "
                       f"(it becomes {share:.2f}) and {outcome(new)}.")
            job = new
            if ok(job):
                return out
        new = replace(job, generation="hf", qlora=True)
        out.append(f"Generate with HF instead of vLLM and turn QLoRA on (vLLM's bf16 copy of the model no longer "
                   f"shares the card): {outcome(new)}.")
        job = new
        if ok(job):
            return out
    if not job.qlora:
        new = replace(job, qlora=True)
        out.append(f"Turn QLoRA on (4-bit base weights): {outcome(new)}.")
        job = new
        if ok(job):
            return out

    if job.visual_tokens > MIN_VISUAL_TOKENS and job.model.tiling == "dynamic":  # tilers: tokens by tiles
        best = _largest(MIN_VISUAL_TOKENS, job.visual_tokens, lambda t: ok(replace(job, visual_tokens=t)), step=16)
        new = replace(job, visual_tokens=best or MIN_VISUAL_TOKENS)
        side = math.sqrt(new.max_pixels / 12)
        out.append(f"Lower max_pixels to {new.max_pixels:,} ({new.visual_tokens:,} visual tokens per image instead "
                   f"of {job.visual_tokens:,}, about {round(4 * side)}x{round(3 * side)} for a 4:3 photo): "
                   f"{outcome(new)}.")
        job = new
        if best:
            return out

    if job.prompts_per_step > 1:
        best = _largest(1, job.prompts_per_step, lambda p: ok(replace(job, prompts_per_step=p)))
        new = replace(job, prompts_per_step=best or 1)
        out.append(f"Use {new.prompts_per_step} prompt{'s' if new.prompts_per_step > 1 else ''} per step instead "
                   f"of {job.prompts_per_step}: {outcome(new)}.")
        job = new
        if best:
            return out

    if job.num_generations > MIN_GENERATIONS:
        best = _largest(MIN_GENERATIONS, job.num_generations, lambda g: ok(replace(job, num_generations=g)))
        new = replace(job, num_generations=best or MIN_GENERATIONS)
        floor = "" if best else f" (the least for GRPO to compare completions)"
        out.append(f"Lower num_generations (G) from {job.num_generations} to {new.num_generations}{floor}: "
                   f"{outcome(new)}.")
        job = new
        if best:
            return out

    if job.max_completion_length > MIN_COMPLETION_LENGTH:
        best = _largest(MIN_COMPLETION_LENGTH, job.max_completion_length,
                        lambda c: ok(replace(job, max_completion_length=c)), step=16)
        new = replace(job, max_completion_length=best or MIN_COMPLETION_LENGTH)
        out.append(f"Shorten max_completion_length from {job.max_completion_length} to "
                   f"{new.max_completion_length} tokens: {outcome(new)}.")
        job = new
        if best:
            return out

    if not job.gradient_checkpointing:
        new = replace(job, gradient_checkpointing=True)
        out.append(f"Turn gradient checkpointing on: {outcome(new)}.")
        job = new
        if ok(job):
            return out

    out.append(f"Even with all of these the estimate is {estimate(job).total_gib:.1f} GiB, more than {card} "
               f"allows: use a larger GPU or a smaller model.")
    return out
