"""Model families, each declared once: its transformers class, config model_type, coordinate convention (the
frame its boxes are written in, which prompts, rewards and parsing use), LoRA targets, vision tower and
image-size limits. Pure data, so it sits with the scoring code at the bottom of the layers: the rewards and the
prompts need the conventions, the engine the rest (backend/engine/families.py finds a folder's family).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Convention:
    """How a model family writes box coordinates."""
    kind: Literal["normalized", "resized_pixels"]
    scale: int = 1000          # normalized: coordinates run 0..scale on both axes
    answer: Literal["json", "ref_box"] = "json"
    """How boxes are written: json = [{'Position': [x1, y1, x2, y2], 'Confidence': c}, ...] (the Visual-RFT
    reference's); ref_box = <ref>label</ref><box>[[x1, y1, x2, y2], ...]</box> (InternVL's grounding format)."""

    def describe(self) -> str:
        if self.kind == "normalized":
            return f"integers normalised to 0-{self.scale}"
        return "integer pixel coordinates of the resized image"


LANGUAGE_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    name: str
    model_type: str
    """config.json's model_type for this family."""
    model_class: str
    """transformers class that loads it."""
    convention: Convention
    """The frame its boxes are written in: prompts ask for it, rewards and parsing read it."""
    min_pixels: int
    max_pixels: int
    """Default image-size limits, set on the loaded processor so they win over whatever the
    checkpoint folder ships (Visual-RFT trained with 3136..401408, about 512 visual tokens)."""
    hub_models: tuple[str, ...] = ()
    """Published checkpoints of this family the Train and Test tabs offer by name."""
    lora_targets: tuple[str, ...] = LANGUAGE_LORA_TARGETS
    vision_module: str = "visual"
    """Attribute path of the vision tower (frozen by default; LoRA stays in the language model)."""
    projector: str | None = None
    """Attribute name of the layers between the vision tower and the language model when they sit outside the
    tower (Qwen's merger is inside it): QLoRA keeps them out of 4-bit with the tower."""
    id_hints: tuple[str, ...] = ()
    """Lower-case pieces of a hub id that name this family (an id not in hub_models, e.g. a fine-tune)."""
    trained_boxes: bool = True
    """False: the base was never taught boxes in its convention (the declared one is ours); the pre-flight's
    baseline advice then points to an SFT warm start."""

    def check_limits(self, min_pixels: int | None, max_pixels: int | None) -> None:
        """One sentence when a run's image-size limits cannot hold this family's input: a family that sees every
        image at one fixed size (min_pixels == max_pixels) cannot be given limits that exclude it."""
        if self.min_pixels != self.max_pixels:
            return
        lo, hi = min_pixels or self.min_pixels, max_pixels or self.max_pixels
        if not lo <= self.max_pixels <= hi:
            side = round(self.max_pixels ** 0.5)
            raise ValueError(f"{self.name} sees every image as one {side}x{side} square ({self.max_pixels:,} pixels); "
                             f"image-size limits {lo:,}..{hi:,} cannot change that: leave min_pixels and max_pixels "
                             f"empty")


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("qwen2_vl", "qwen2_vl", "Qwen2VLForConditionalGeneration", Convention("normalized", scale=1000),
           3136, 401408, ("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct"), id_hints=("qwen2-vl",)),
    # The resized input is a fact of the loaded processor (backend/engine/model_input.py), never a constant here.
    Family("qwen2_5_vl", "qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", Convention("resized_pixels"),
           3136, 401408, ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"), id_hints=("qwen2.5-vl",)),
    Family("qwen3_vl", "qwen3_vl", "Qwen3VLForConditionalGeneration", Convention("normalized", scale=1000),
           3136, 401408, ("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct", "Qwen/Qwen3-VL-8B-Instruct"),
           id_hints=("qwen3-vl",)),
    # Every image becomes one 896x896 square (its SigLIP tower's fixed size; pan-and-scan crops are kept off),
    # 256 visual tokens, so the limits are that square. No trained box convention (no location tokens, unlike
    # PaliGemma): ours is the JSON corners 0-1000 of the image as fed, which the stretch to a square keeps.
    Family("gemma3", "gemma3", "Gemma3ForConditionalGeneration", Convention("normalized", scale=1000),
           896 * 896, 896 * 896, ("google/gemma-3-4b-it", "google/gemma-3-12b-it"), vision_module="vision_tower",
           projector="multi_modal_projector", id_hints=("gemma-3",), trained_boxes=False),
    # Tiles of 512 px (2.2B: 384) plus the whole image as one more, 64 (2.2B: 81) tokens each; the longest edge is
    # resized to sqrt(max_pixels) (1536: 3x3 tiles of a square photo, 640 tokens). No trained box convention:
    # ours, JSON corners 0-1000 of the image as fed.
    Family("smolvlm", "smolvlm", "SmolVLMForConditionalGeneration", Convention("normalized", scale=1000),
           512 * 512, 1536 * 1536, ("HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
                                    "HuggingFaceTB/SmolVLM2-500M-Video-Instruct", "HuggingFaceTB/SmolVLM2-2.2B-Instruct"),
           vision_module="vision_model", projector="connector", id_hints=("smolvlm",), trained_boxes=False),
    # InternVL 3.5 in transformers' own layout (-HF checkpoints): tiles of 448 px on the grid closest to the image's
    # aspect ratio (min..max_patches = min..max_pixels / 448^2) plus a thumbnail when there are several, 256 tokens
    # each. Four tiles at most (a 4:3 photo: 2x2 + thumbnail = 1280 tokens; the checkpoints ship 12, 3328 tokens).
    # Its trained convention: <ref>label</ref><box>[[x1, y1, x2, y2]]</box>, 0-1000 on each axis.
    Family("internvl", "internvl", "InternVLForConditionalGeneration",
           Convention("normalized", scale=1000, answer="ref_box"), 448 * 448, 4 * 448 * 448,
           ("OpenGVLab/InternVL3_5-1B-HF", "OpenGVLab/InternVL3_5-2B-HF", "OpenGVLab/InternVL3_5-4B-HF",
            "OpenGVLab/InternVL3_5-8B-HF"), vision_module="vision_tower", projector="multi_modal_projector",
           id_hints=("internvl",)),
    # The demo is a Qwen3-VL-architecture model, tiny: a 0-100 grid keeps its answers short and is plenty for
    # its 224-px scenes.
    Family("demo", "qwen3_vl", "Qwen3VLForConditionalGeneration", Convention("normalized", scale=100),
           224 * 224, 224 * 224),
)}

KNOWN_MODELS: dict[str, str] = {model: f.name for f in FAMILIES.values() for model in f.hub_models}
"""Published checkpoint -> its family."""


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})") from None


def convention(family: str) -> Convention:
    return get_family(family).convention
