"""QLoRA keeps what is not 4-bit in bf16: after the training load of a model laid out like a published checkpoint,
the only fp32 parameters are the LoRA adapter's (PEFT's prepare_model_for_kbit_training cast the vision tower,
embeddings and norms to fp32, which is why QLoRA saved no memory on the GPU)."""
from __future__ import annotations

from collections import Counter

import pytest


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_training_load_has_no_fp32_but_lora(tmp_path, arch):
    import torch
    from peft import get_peft_model

    from backend.engine.demo.builder import build_tiny
    from backend.engine.models import load, lora_config
    build_tiny(arch, tmp_path / "tiny")
    loaded = load(str(tmp_path / "tiny"), qlora=True, for_training=True)
    assert loaded.quantized
    net = get_peft_model(loaded.model, lora_config(loaded.family, 8, 16))
    by_dtype: Counter = Counter()
    fp32 = []
    for name, p in net.named_parameters():
        by_dtype[str(p.dtype)] += p.numel() * p.element_size()
        if p.dtype == torch.float32:
            fp32.append(name)
    assert fp32 and all(".lora_A." in n or ".lora_B." in n for n in fp32), [n for n in fp32 if "lora_" not in n][:5]
    assert {n for n, p in net.named_parameters() if p.requires_grad} == set(fp32)  # only LoRA trains
    four_bit = [n for n, p in net.named_parameters() if p.__class__.__name__ == "Params4bit"]
    assert four_bit and not any(f".{loaded.family.vision_module}." in f".{n}" for n in four_bit)  # tower not 4-bit
    vision = [p for n, p in net.named_parameters() if f".{loaded.family.vision_module}." in f".{n}"]
    assert vision and all(p.dtype == torch.bfloat16 for p in vision)
    assert set(by_dtype) == {"torch.bfloat16", "torch.uint8", "torch.float32"}, by_dtype
