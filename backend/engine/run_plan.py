"""What a run trains and generates with on this machine: 4-bit (QLoRA) or bf16 (LoRA) base weights, HF generate
or a colocated vLLM engine, and vLLM's share of the card — chosen from the settings and the memory estimate.
Pure Python, no torch: the job, `runs create`, the pre-flight and the presets' notes all ask `plan_run`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backend.engine.settings import TrainSettings

if TYPE_CHECKING:
    from backend.engine.memory import MemoryEstimate

# The order `auto` tries on a GPU, fastest first (../shared/gpu-facts.md, bare generate on an H100, 3B shape:
# bf16 181 new tokens/s, nf4 110, nf4 + unmerged LoRA 66; vLLM is what every peer uses to go further).
PREFERENCE = (("vllm", False), ("hf", False), ("hf", True))
"""(generation backend, 4-bit base) pairs: vLLM with a bf16 LoRA base, HF generate from bf16, HF from 4-bit."""


@dataclass(frozen=True)
class RunPlan:
    backend: str
    """"hf" or "vllm"."""
    qlora: bool
    """4-bit NF4 base weights (QLoRA) rather than bf16 (LoRA)."""
    vllm_gpu_memory_utilization: float | None = None
    """With vLLM: the share of the card the engine reserves."""
    estimate: "MemoryEstimate | None" = field(default=None, compare=False, repr=False)
    """This plan's memory estimate, when the model's shape and the card are known."""

    @property
    def estimate_gib(self) -> float | None:
        """The estimate's peak, rounded as shown."""
        return None if self.estimate is None else round(self.estimate.total_gib, 1)

    @property
    def fits(self) -> bool | None:
        """Whether the estimate fits the card (vLLM's share included); None without an estimate."""
        return None if self.estimate is None else self.estimate.fits(self.estimate.job.gpu_gib)

    def describe(self) -> str:
        weights = "QLoRA (4-bit base)" if self.qlora else "LoRA (bf16 base)"
        engine = (f"vLLM colocated ({self.vllm_gpu_memory_utilization:g} of the card)" if self.backend == "vllm"
                  else "HF generate")
        return f"{weights}, {engine}" + (f", about {self.estimate_gib:.1f} GiB" if self.estimate_gib else "")


def largest_image(dataset: dict) -> tuple[int, int] | None:
    """(width, height) of a dataset's largest image (by pixels): what a plan is sized for."""
    sizes = [(s["width"], s["height"]) for s in dataset["samples"]]
    return max(sizes, key=lambda wh: wh[0] * wh[1]) if sizes else None


def plan_run(settings: TrainSettings, model: str | None, *, cuda: bool, vllm_installed: bool,
             gpu_gib: float | None = None, image_size: tuple[int, int] | None = (1024, 768),
             visual_tokens: int | None = None) -> RunPlan:
    """The run's weights and generation engine. What the settings fix is kept (generation_backend "hf"/"vllm",
    qlora True/False); what they leave open ("auto", None) is, on CUDA, the first of PREFERENCE whose memory
    estimate fits the card (`gpu_gib`, the largest image `image_size` or its `visual_tokens`). Without an
    estimate (no card size, a model of unknown shape): vLLM with bf16 when vLLM is installed, else 4-bit with
    HF generate. When nothing fits, the most frugal candidate (runs create then refuses it with advice)."""
    if not cuda:
        backend = "hf" if settings.generation_backend == "auto" else settings.generation_backend
        return RunPlan(backend, bool(settings.qlora), settings.vllm_gpu_memory_utilization if backend == "vllm"
                       else None)
    zero3 = settings.num_gpus > 1 and settings.distributed == "zero3"  # shards the weights: needs the bf16 base
    candidates = [(b, q) for b, q in PREFERENCE
                  if settings.generation_backend in ("auto", b) and (settings.qlora is None or settings.qlora == q)
                  and (b != "vllm" or vllm_installed or settings.generation_backend == "vllm")
                  and not (zero3 and q and settings.qlora is None)]
    if not candidates:  # vLLM and QLoRA both asked for: kept, so that the job refuses it in one sentence
        candidates = [(settings.generation_backend, bool(settings.qlora))]
    plans = [_with_estimate(settings, model, b, q, gpu_gib, image_size, visual_tokens) for b, q in candidates]
    if any(p.estimate_gib is None for p in plans):  # no estimate: the rule without one
        return next((p for p in plans if (p.backend, p.qlora) in (("vllm", False), ("hf", True))), plans[0])
    room = gpu_gib * (1 - HEADROOM)
    return next((p for p in plans if p.fits and p.estimate_gib <= room), plans[-1])


HEADROOM = 0.05
"""A plan `auto` picks leaves this share of the card free beyond its estimate (the estimate is within ~10 %)."""
DEFAULT_VLLM_SHARE = 0.3
"""vLLM's share of the card when neither the setting nor an estimate gives one (a model of unknown shape)."""


def _with_estimate(settings, model, backend, qlora, gpu_gib, image_size, visual_tokens) -> RunPlan:
    from backend.engine.memory import estimate, job_from_settings, vllm_share
    share = settings.vllm_gpu_memory_utilization
    unestimated = RunPlan(backend, qlora, (share or DEFAULT_VLLM_SHARE) if backend == "vllm" else None)
    if model is None or gpu_gib is None:
        return unestimated
    try:
        job = job_from_settings(settings, model, image_size=image_size, visual_tokens=visual_tokens, qlora=qlora,
                                generation=backend, gpu_gib=gpu_gib, vllm_gpu_memory_utilization=share)
    except ValueError:  # a model whose shape is unknown
        return unestimated
    return RunPlan(backend, qlora, vllm_share(job) if backend == "vllm" else None, estimate(job))
