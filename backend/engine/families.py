"""Model families: transformers classes, coordinate convention, LoRA targets and image-size limits.

A model (hub id or local folder) belongs to the family its config's `model_type` names; the
embedded demo says so in `vrft_family.json`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from backend.scoring.coords import CONVENTIONS, Convention

LANGUAGE_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    name: str
    model_type: str
    """config.json's model_type for this family."""
    model_class: str
    """transformers class that loads it."""
    min_pixels: int
    max_pixels: int
    """Default image-size limits, set on the loaded processor so they win over whatever the
    checkpoint folder ships (Visual-RFT trained with 3136..401408, about 512 visual tokens)."""
    lora_targets: tuple[str, ...] = LANGUAGE_LORA_TARGETS
    vision_module: str = "visual"
    """Attribute path of the vision tower (frozen by default; LoRA stays in the language model)."""

    @property
    def convention(self) -> Convention:
        return CONVENTIONS[self.name]


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("qwen2_vl", "qwen2_vl", "Qwen2VLForConditionalGeneration", 3136, 401408),
    Family("qwen2_5_vl", "qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", 3136, 401408),
    Family("qwen3_vl", "qwen3_vl", "Qwen3VLForConditionalGeneration", 3136, 401408),
    # The demo is a Qwen3-VL-architecture model with its own 0-100 coordinate grid.
    Family("demo", "qwen3_vl", "Qwen3VLForConditionalGeneration", 224 * 224, 224 * 224),
)}

KNOWN_MODELS = {
    "Qwen/Qwen2-VL-2B-Instruct": "qwen2_vl", "Qwen/Qwen2-VL-7B-Instruct": "qwen2_vl",
    "Qwen/Qwen2.5-VL-3B-Instruct": "qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct": "qwen2_5_vl",
    "Qwen/Qwen3-VL-2B-Instruct": "qwen3_vl", "Qwen/Qwen3-VL-4B-Instruct": "qwen3_vl",
    "Qwen/Qwen3-VL-8B-Instruct": "qwen3_vl",
}
FAMILY_FILE = "vrft_family.json"


def family_of_folder(folder: Path) -> str:
    """The family of a local model folder: vrft_family.json, else config.json's model_type."""
    marker = folder / FAMILY_FILE
    if marker.is_file():
        return json.loads(marker.read_text())["family"]
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(f"could not load '{folder}': it has no config.json")
    model_type = json.loads(config.read_text()).get("model_type")
    for f in FAMILIES.values():
        if f.model_type == model_type and f.name != "demo":
            return f.name
    raise ValueError(f"could not load '{folder}': model type '{model_type}' is not supported "
                     f"(supported: {', '.join(sorted({f.model_type for f in FAMILIES.values()}))})")


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})") from None
