"""Generation with a loaded model: one prompt per image, batched, greedy by default."""
from __future__ import annotations

from typing import Any, Sequence

from PIL import Image


def messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def generate(loaded, items: Sequence[tuple[Image.Image, str]], max_new_tokens: int = 256, batch_size: int = 16,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0) -> list[str]:
    """Completions (text after the prompt) for (image, prompt) pairs."""
    import torch
    proc = loaded.processor
    proc.tokenizer.padding_side = "left"
    out: list[str] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        texts = [proc.apply_chat_template(messages(p), add_generation_prompt=True) for _, p in chunk]
        # One list of images per text: the form every family's processor reads (Gemma 3's and SmolVLM's need it).
        enc = proc(text=texts, images=[[im.convert("RGB")] for im, _ in chunk], return_tensors="pt", padding=True)
        enc = {k: v.to(loaded.model.device) if hasattr(v, "to") else v for k, v in enc.items()}
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                      pad_token_id=proc.tokenizer.pad_token_id)
        if do_sample:
            kwargs["temperature"], kwargs["top_p"] = temperature, top_p
        with torch.no_grad():
            ids = loaded.model.generate(**enc, **kwargs)
        new = ids[:, enc["input_ids"].shape[1]:]
        out += proc.batch_decode(new, skip_special_tokens=True)
    return out
