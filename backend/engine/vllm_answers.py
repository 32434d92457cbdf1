"""Answers from a vLLM engine, where training generates with vLLM: the Test tab, `predict` and `eval` ask the same
engine kind the job's held-out evaluation used. The base model is loaded once; a run's adapter is a LoRA request
on it (so the tuned and the base answer come from one engine), greedy, images fed at the size the HF processor
gives them (TRL #6401: both engines then expand an image to the same tokens)."""
from __future__ import annotations

import os
from pathlib import Path

ENGINE_ENV = "VRFT_ANSWER_ENGINE"
"""auto (the default: vLLM on CUDA when it is installed) or hf (transformers' generate everywhere)."""
ANSWER_GPU_SHARE = 0.5
"""The share of its GPU an answering engine reserves (an answerer runs on a GPU no job trains on)."""
MAX_MODEL_TOKENS = 4096 + 1024
"""Prompt (images capped by max_pixels) plus answer: the context the engine sizes its KV cache for."""


def answer_engine(device: str) -> str:
    """"vllm" or "hf": which engine answers on `device` ("cuda" or "cpu")."""
    wanted = os.environ.get(ENGINE_ENV, "auto")
    if wanted not in ("auto", "hf"):
        raise ValueError(f"{ENGINE_ENV} must be 'auto' or 'hf', not '{wanted}'")
    from backend.engine.gpus import installed
    return "vllm" if wanted == "auto" and device == "cuda" and installed("vllm") else "hf"


def lora_rank_limit(rank: int) -> int:
    """vLLM's max_lora_rank for an adapter of `rank`: the smallest of the values vLLM accepts that holds it."""
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    raise ValueError(f"a LoRA rank of {rank} is more than vLLM serves (512)")


def adapter_rank(adapter: str | Path) -> int:
    import json
    return int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])


class VllmAnswers:
    """One vLLM engine of a base model, answering with or without a run's adapter."""

    def __init__(self, source: str, processor, max_lora_rank: int = 64):
        from vllm import LLM

        from backend.engine.model_input import engine_kwargs
        self.processor = processor
        self.llm = LLM(model=source, enable_lora=True, max_lora_rank=max_lora_rank, max_loras=2,
                       limit_mm_per_prompt={"image": 1}, mm_processor_kwargs=engine_kwargs(processor),
                       gpu_memory_utilization=ANSWER_GPU_SHARE, max_model_len=MAX_MODEL_TOKENS)
        self.lora_ids: dict[str, int] = {}

    def close(self) -> None:
        """Release the engine's GPU memory now (vLLM frees it only once the engine is collected, and a second
        engine made before that runs out of memory): its own shutdown where this vLLM has one, then the teardown
        vLLM's tests use."""
        import contextlib
        import gc

        import torch
        shutdown = getattr(self.llm, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del self.llm
        with contextlib.suppress(Exception):
            from vllm.distributed import destroy_distributed_environment, destroy_model_parallel
            destroy_model_parallel()
            destroy_distributed_environment()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, items, max_new_tokens: int, adapter: str | None = None) -> list[str]:
        """Greedy completions for (image, prompt) pairs, with `adapter` (a PEFT folder) or the base alone."""
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        from backend.engine.inference import messages
        from backend.engine.model_input import at_input_size
        prompts = [{"prompt": self.processor.apply_chat_template(messages(prompt), add_generation_prompt=True),
                    "multi_modal_data": {"image": at_input_size(self.processor, im)}} for im, prompt in items]
        lora = None
        if adapter is not None:
            lora_id = self.lora_ids.setdefault(str(adapter), len(self.lora_ids) + 1)
            lora = LoRARequest(f"adapter-{lora_id}", lora_id, str(adapter))
        outputs = self.llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_new_tokens),
                                    lora_request=lora, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


class OneEngine:
    """The one answering engine a process keeps: asked for another (a different base, limits or LoRA rank), it closes
    the one it has before making the next, so two never hold the GPU at once."""

    def __init__(self, make):
        self.make, self.key, self.value = make, None, None

    def __call__(self, *key):
        if self.value is None or key != self.key:
            if self.value is not None:
                self.value[1].close()
                self.value = None
            self.value, self.key = self.make(*key), key
        return self.value
