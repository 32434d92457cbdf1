"""GPU memory estimate for one GRPO training job (QLoRA or LoRA on a Qwen VL model). Pure Python, no torch.

The estimate adds up separately modelled parts, in GiB:

- weights: the base model, 4-bit NF4 (double quantisation: ~0.516 bytes per parameter) for the
  language model's linear layers under QLoRA, bf16 for everything else. As designed, QLoRA keeps
  the vision tower in bf16 (`llm_int8_skip_modules`); `vision_in_4bit=True` models a tower that
  was quantised too. `upcast_non_quantized=True` models `prepare_model_for_kbit_training`
  casting every weight that is not 4-bit (embeddings, lm_head, norms) to fp32, which also makes
  much of the activations fp32 (UPCAST_ACTIVATION_BYTES): the measured runs did that, and
  quantised the tower too, so the calibration reproduces them with both flags.
- lora_optimizer: LoRA on the 7 language-model projections per layer, kept in fp32 by PEFT,
  with its gradient and two AdamW moments: 16 bytes per LoRA parameter.
- activations: the training forward/backward over prompts_per_step x G sequences of prompt +
  completion tokens. With gradient checkpointing: one saved hidden state per layer, plus one
  layer recomputed with its gradients, plus the completion logits (TRL keeps only those).
  Without it: every layer's activations. LoRA dropout copies each adapter input (and a mask).
- kv_cache: generation with transformers: the KV cache at full length plus one layer's prefill
  working set over all prompt tokens. With vLLM (colocated), the share of the card the engine
  reserves (gpu_memory_utilization x card size), which must hold what the engine needs
  (`vllm_need_gib`): its own bf16 copy of the whole model, the KV cache of every sequence of a step
  at full length, and VLLM_OVERHEAD_GIB for its profiling forward, CUDA graphs and the vision
  encoder's budget. TRL's colocate mode runs the engine with sleep mode (level 2): weights and cache
  are released while the model trains, so the share is a phase like HF generation, not resident.
  The vLLM parts are read from how vLLM allocates, not yet measured on a card.
- vision_activations / vision_attention: the vision encoder over every sequence's image (TRL
  repeats the image per completion), packed patches through its MLP, and its SDPA attention with
  fp32 scores: sequences x heads x visual_tokens^2 x 4 bytes. That is how the measured 4000x3000
  out-of-memory was read (8 x 16 x ~15.5k^2 ~ 114 GiB asked); the same number is one image's bf16
  score matrix over its 4x more patches, so the calibration fixes the product, not the reading.
- overhead: CUDA context and cuBLAS workspaces (fixed) plus allocator caching/fragmentation
  (a share of the rest), calibrated on the measured peaks.

Phases do not overlap: generation (KV cache), the vision encoder (at the start of generate and of
the training forward, before the language model's activations exist) and the training
backward each come and go, so the peak is the resident part plus the largest phase.

With PEFT the reference model (beta > 0) is the base with the adapter disabled: no second copy,
and its no-grad forward needs less than the training step, so beta adds nothing here.

Calibration against the measured peaks (one H100, Qwen2.5-VL shapes, G=8 x 256 new tokens, one
prompt per step, a 1024x768 photo = 999 visual tokens, ~128 text tokens assumed):

    3B nf4 QLoRA, as measured (vision_in_4bit, upcast)   measured 18.2 GiB   estimate 16.8 (-8%)
    3B bf16 LoRA                                         measured 17.1 GiB   estimate 17.8 (+4%)
    7B nf4 QLoRA, as measured (vision_in_4bit, upcast)   measured 29.0 GiB   estimate 28.0 (-3%)
    the same two with the tower left in 16-bit and upcast (unrecorded which it was): 19.3 (+6%), 30.5 (+5%)
    3B nf4 QLoRA, 4000x3000 (15,301 visual tokens)       out of memory on 80 GB   estimate 157 GiB
    As designed (vision bf16, no upcast): 3B QLoRA 13.4 GiB, 7B QLoRA 21.2 GiB (not yet measured).
    Why the measured runs had both: the QLoRA skip list named the tower "visual", which transformers'
    re.match against full names ("model.visual...") never matched, and PEFT's prepare_model_for_kbit_training
    cast every other weight to fp32. backend/engine/models.py now does neither (tests/test_qlora_dtypes.py).

Model shapes: from the published config.json of each checkpoint (text_config / vision_config),
parameter counts computed from them and rounded; approximate, within a few percent.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

from backend.engine.model_shapes import ModelShape, family_limits, model_shape, visual_tokens_for

GIB = 1024 ** 3
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
"""4 bits per weight, an 8-bit absmax per 64-weight block, an fp32 constant per 256 blocks."""
LORA_DROPOUT = True
"""The app's LoRA has dropout 0.05 (backend/engine/models.py): each adapter input is copied."""

# Calibration: see the table in the module docstring and tests/test_memory.py.
LAYER_RECOMPUTE_FACTOR = 2.0
"""The recomputed layer's forward activations plus their gradients, during one layer's backward."""
LOGITS_COPIES = 3.0
"""Completion logits, the temperature-scaled copy, and their gradient."""
UPCAST_ACTIVATION_BYTES = 3.0
"""Bytes per activation element with the fp32 upcast: the residual stream, norms and LoRA inputs turn
fp32 while autocast still runs the projections in bf16 (fitted: 3B nf4 against 3B bf16 LoRA)."""
OVERHEAD_FIXED_GIB = 1.0
OVERHEAD_SHARE = 0.15
VLLM_OVERHEAD_GIB = 2.0
"""vLLM's own working memory inside its share beyond weights and KV cache: the profiling forward over
max_num_batched_tokens, CUDA graphs, the multimodal encoder's budget (not measured: vLLM's docs and code)."""
VLLM_HEADROOM = 1.1
"""A vLLM share chosen from the need (gpu_memory_utilization unset) leaves this factor of room over it."""


@dataclass(frozen=True)
class JobSpec:
    """Everything the estimate reads about one GRPO job."""
    model: ModelShape
    qlora: bool = True
    vision_in_4bit: bool = False
    """False as designed: QLoRA keeps the vision tower in bf16 (llm_int8_skip_modules)."""
    upcast_non_quantized: bool = False
    """True reproduces the measured runs: non-4-bit weights (and so activations) in fp32."""
    lora_rank: int = 16
    num_generations: int = 8
    prompts_per_step: int = 1
    prompt_tokens: int = 128
    """Text tokens of the prompt (chat template, instructions, class names)."""
    visual_tokens: int = 999
    """The largest image's visual tokens after the processor's max_pixels (1024x768 -> 999 uncapped)."""
    max_completion_length: int = 256
    gradient_checkpointing: bool = True
    generation: Literal["hf", "vllm"] = "hf"
    vllm_gpu_memory_utilization: float | None = None
    """vLLM's share of the card; None = what the engine needs (vllm_share), with VLLM_HEADROOM."""
    gpu_gib: float | None = None
    """Card size; needed for vLLM (its reservation is a share of the card)."""

    @property
    def sequences(self) -> int:
        return self.prompts_per_step * self.num_generations

    @property
    def max_pixels(self) -> int:
        """A processor max_pixels that caps images at `visual_tokens`."""
        return self.visual_tokens * self.model.pixels_per_token


@dataclass(frozen=True)
class MemoryEstimate:
    job: JobSpec
    weights_gib: float
    lora_optimizer_gib: float
    activations_gib: float
    kv_cache_gib: float
    vision_activations_gib: float
    vision_attention_gib: float
    overhead_gib: float
    total_gib: float
    peak_phase: str
    """Which phase sets the peak: 'generation', 'vision encoder' or 'training step'."""

    vllm_need_gib: float = 0.0
    """With vLLM: what the engine needs inside its share (weights, KV cache, its overhead); 0 with HF."""

    def fits(self, gpu_gib: float) -> bool:
        """The peak fits the card and, with vLLM, its share holds what the engine needs."""
        return self.total_gib <= gpu_gib and self.kv_cache_gib >= self.vllm_need_gib

    def parts(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k.endswith("_gib") and k != "vllm_need_gib"}

    def summary(self) -> str:
        p = self.parts()
        shown = ", ".join(f"{k[:-4].replace('_', ' ')} {v:.1f}" for k, v in p.items() if k != "total_gib")
        return f"about {self.total_gib:.1f} GiB at peak ({self.peak_phase}): {shown} GiB"


def _activation_bytes(job: JobSpec) -> float:
    return UPCAST_ACTIVATION_BYTES if job.upcast_non_quantized and job.qlora else 2


def _layer_bytes_per_token(s: ModelShape, a: float) -> float:
    """One decoder layer's saved activations per token: norms, q/k/v, attention out, residuals, MLP."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    base = 5 * s.hidden + 2 * q + 2 * kv + 4 * s.intermediate
    lora_in = (3 * s.hidden + q + 2 * s.hidden + s.intermediate) if LORA_DROPOUT else 0
    return a * (base + lora_in) + lora_in  # + 1-byte dropout masks


def estimate(job: JobSpec | None = None, /, **fields) -> MemoryEstimate:
    """Estimate a job: `estimate(JobSpec(...))` or `estimate(model="Qwen/Qwen2.5-VL-7B-Instruct", G...)`.

    `model` may be a ModelShape or a name model_shape() knows; other keywords are JobSpec fields.
    """
    if job is None:
        model = fields.pop("model")
        job = JobSpec(model=model_shape(model) if isinstance(model, str) else model, **fields)
    elif fields:
        job = replace(job, **fields)
    s, a = job.model, _activation_bytes(job)
    if job.num_generations < 1 or job.prompts_per_step < 1 or job.max_completion_length < 1:
        raise ValueError("num_generations, prompts_per_step and max_completion_length must be at least 1")

    # Weights.
    lang_linear = min(s.language_linear_params, s.language_params_b * 1e9)
    lang_other = s.language_params_b * 1e9 - lang_linear
    vision = s.vision_params_b * 1e9
    wide = 4 if (job.qlora and job.upcast_non_quantized) else 2
    if job.qlora:
        weights = lang_linear * NF4_BYTES + lang_other * wide
        weights += vision * (NF4_BYTES if job.vision_in_4bit else wide)
    else:
        weights = (lang_linear + lang_other + vision) * 2
    lora = s.lora_params(job.lora_rank) * 16

    # Training step.
    b = job.sequences
    prompt = job.prompt_tokens + job.visual_tokens
    tokens = b * (prompt + job.max_completion_length)
    per_layer = _layer_bytes_per_token(s, a)
    if job.gradient_checkpointing:
        acts = s.layers * tokens * s.hidden * a + LAYER_RECOMPUTE_FACTOR * tokens * per_layer
    else:
        acts = s.layers * tokens * per_layer + tokens * per_layer
    acts += LOGITS_COPIES * b * (job.max_completion_length + 1) * s.vocab * a

    # Generation.
    kv_dim = s.kv_heads * s.head_dim
    vllm_need = 0.0
    if job.generation == "vllm":
        if job.gpu_gib is None:
            raise ValueError("a vLLM estimate needs the card size (gpu_gib): vLLM reserves a share of it")
        vllm_need = vllm_need_gib(job) * GIB
        generation = vllm_share(job) * job.gpu_gib * GIB
    elif job.generation == "hf":
        cache = 2 * s.layers * kv_dim * a * b * (prompt + job.max_completion_length)
        prefill = b * prompt * a * (3 * s.hidden + s.heads * s.head_dim + 2 * kv_dim + 3 * s.intermediate)
        generation = cache + prefill
    else:
        raise ValueError(f"unknown generation backend '{job.generation}' (hf or vllm)")

    # Vision encoder: every sequence's image, packed patches, SDPA scores in fp32.
    patches = b * job.visual_tokens * s.merge ** 2
    vision_acts = patches * (4 * s.vision_hidden + s.vision_mlp_matrices * s.vision_intermediate) * a
    vision_attn = b * s.vision_heads * job.visual_tokens ** 2 * 4

    # vLLM sleeps (releasing its share) while the model trains, so its share is a phase like HF generation.
    phases = {"training step": acts, "vision encoder": vision_acts + vision_attn, "generation": generation}
    resident = weights + lora
    phase = max(phases, key=phases.get)
    dynamic = resident + phases[phase]
    overhead = OVERHEAD_FIXED_GIB * GIB + OVERHEAD_SHARE * dynamic
    return MemoryEstimate(
        job=job, weights_gib=weights / GIB, lora_optimizer_gib=lora / GIB, activations_gib=acts / GIB,
        kv_cache_gib=generation / GIB, vision_activations_gib=vision_acts / GIB,
        vision_attention_gib=vision_attn / GIB, overhead_gib=overhead / GIB,
        total_gib=(dynamic + overhead) / GIB, peak_phase=phase, vllm_need_gib=vllm_need / GIB)


def vllm_need_gib(job: JobSpec) -> float:
    """What a colocated vLLM engine needs inside its share, in GiB: a bf16 copy of the whole model (vLLM
    loads the base, TRL pushes the LoRA-merged weights into it), the KV cache of every sequence of a step
    at full length (prompt + completion), and VLLM_OVERHEAD_GIB."""
    s = job.model
    weights = s.total_params_b * 1e9 * 2
    kv = 2 * s.layers * s.kv_heads * s.head_dim * 2 * job.sequences * (
        job.prompt_tokens + job.visual_tokens + job.max_completion_length)
    return (weights + kv) / GIB + VLLM_OVERHEAD_GIB


def vllm_share(job: JobSpec) -> float:
    """The share of the card vLLM reserves: as set, else its need with VLLM_HEADROOM (at most 0.95)."""
    if job.vllm_gpu_memory_utilization is not None:
        return job.vllm_gpu_memory_utilization
    if job.gpu_gib is None:
        raise ValueError("a vLLM estimate needs the card size (gpu_gib): vLLM reserves a share of it")
    return min(0.95, round(math.ceil(100 * vllm_need_gib(job) * VLLM_HEADROOM / job.gpu_gib) / 100, 2))


def job_from_settings(settings, model: str | ModelShape, *, image_size: tuple[int, int] | None = (1024, 768),
                      visual_tokens: int | None = None, prompt_tokens: int = 128, **overrides) -> JobSpec:
    """A JobSpec for a GPU run of `settings` (a TrainSettings; qlora None counts as on, as on CUDA).

    The image is the largest in the data set: `image_size` (width, height), resized within the
    settings' max_pixels (or the family default), or a `visual_tokens` count, capped the same way.
    Other keywords override JobSpec fields (gpu_gib, generation, upcast_non_quantized, ...).
    """
    shape = model_shape(model) if isinstance(model, str) else model
    default_min, default_max = family_limits(model)
    max_pixels = getattr(settings, "max_pixels", None) or default_max
    min_pixels = getattr(settings, "min_pixels", None) or default_min
    if visual_tokens is None:
        if image_size is None:
            raise ValueError("give the largest image's size or its visual-token count")
        visual_tokens = visual_tokens_for(image_size[0], image_size[1], shape, max_pixels=max_pixels,
                                          min_pixels=min_pixels)
    elif shape.tiling == "dynamic":  # a count the processor gave, capped as the settings' max_pixels caps it
        visual_tokens = min(visual_tokens, max(1, max_pixels // shape.pixels_per_token))
    fields = dict(
        model=shape, qlora=True if settings.qlora is None else bool(settings.qlora), lora_rank=settings.lora_rank,
        # An SFT step trains one sequence (prompt + taught answer) per prompt, where GRPO trains G.
        num_generations=1 if getattr(settings, "method", "grpo") == "sft" else settings.num_generations,
        prompts_per_step=settings.prompts_per_step,
        max_completion_length=settings.max_completion_length, prompt_tokens=prompt_tokens,
        visual_tokens=visual_tokens)
    fields.update(overrides)
    return JobSpec(**fields)
