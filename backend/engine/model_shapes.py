"""Model shapes for the GPU memory estimate: the published Qwen VL checkpoints' sizes, a local folder's config.json,
and the processors' resize rule for images no processor has seen. Pure Python, no torch."""
from __future__ import annotations

import json
import math
from pathlib import Path
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model; parameter counts in billions."""
    name: str
    language_params_b: float
    vision_params_b: float
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    vision_hidden: int
    vision_intermediate: int
    vision_heads: int
    vision_mlp_matrices: int = 3
    """3 for a SwiGLU MLP (Qwen2.5-VL), 2 for fc1/fc2 (Qwen2-VL, Qwen3-VL)."""
    patch: int = 14
    merge: int = 2
    """A visual token is merge x merge patches of patch x patch pixels."""

    @property
    def total_params_b(self) -> float:
        return self.language_params_b + self.vision_params_b

    @property
    def pixels_per_token(self) -> int:
        return (self.patch * self.merge) ** 2

    @property
    def language_linear_params(self) -> float:
        """Parameters of the 7 projections in all decoder layers (what 4-bit quantises)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = self.hidden * q + 2 * self.hidden * kv + q * self.hidden + 3 * self.hidden * self.intermediate
        return float(self.layers * per_layer)

    def lora_params(self, rank: int) -> float:
        """LoRA A and B of the 7 projections per layer: rank x (in + out) each."""
        h, i = self.hidden, self.intermediate
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
        return float(self.layers * rank * per_layer)


def _shape(name, language_b, vision_b, **kw) -> ModelShape:
    return ModelShape(name, language_b, vision_b, **kw)


_QWEN2_VISION = dict(vision_hidden=1280, vision_intermediate=5120, vision_heads=16, vision_mlp_matrices=2)
_QWEN25_VISION = dict(vision_hidden=1280, vision_intermediate=3420, vision_heads=16, vision_mlp_matrices=3)
_QWEN3_VISION_S = dict(vision_hidden=1024, vision_intermediate=4096, vision_heads=16, vision_mlp_matrices=2, patch=16)
_QWEN3_VISION_L = dict(vision_hidden=1152, vision_intermediate=4304, vision_heads=16, vision_mlp_matrices=2, patch=16)

MODEL_SHAPES: dict[str, ModelShape] = {s.name: s for s in (
    _shape("Qwen/Qwen2-VL-2B-Instruct", 1.54, 0.67, hidden=1536, layers=28, intermediate=8960, heads=12,
           kv_heads=2, head_dim=128, vocab=151936, tied_embeddings=True, **_QWEN2_VISION),
    _shape("Qwen/Qwen2-VL-7B-Instruct", 7.62, 0.67, hidden=3584, layers=28, intermediate=18944, heads=28,
           kv_heads=4, head_dim=128, vocab=152064, tied_embeddings=False, **_QWEN2_VISION),
    _shape("Qwen/Qwen2.5-VL-3B-Instruct", 3.09, 0.67, hidden=2048, layers=36, intermediate=11008, heads=16,
           kv_heads=2, head_dim=128, vocab=151936, tied_embeddings=True, **_QWEN25_VISION),
    _shape("Qwen/Qwen2.5-VL-7B-Instruct", 7.62, 0.67, hidden=3584, layers=28, intermediate=18944, heads=28,
           kv_heads=4, head_dim=128, vocab=152064, tied_embeddings=False, **_QWEN25_VISION),
    _shape("Qwen/Qwen3-VL-2B-Instruct", 1.72, 0.41, hidden=2048, layers=28, intermediate=6144, heads=16,
           kv_heads=8, head_dim=128, vocab=151936, tied_embeddings=True, **_QWEN3_VISION_S),
    _shape("Qwen/Qwen3-VL-4B-Instruct", 4.02, 0.41, hidden=2560, layers=36, intermediate=9728, heads=32,
           kv_heads=8, head_dim=128, vocab=151936, tied_embeddings=True, **_QWEN3_VISION_S),
    _shape("Qwen/Qwen3-VL-8B-Instruct", 8.19, 0.58, hidden=4096, layers=36, intermediate=12288, heads=32,
           kv_heads=8, head_dim=128, vocab=151936, tied_embeddings=False, **_QWEN3_VISION_L),
)}


def _side(size) -> int:
    """A patch size written as one side or as [height, width] (InternVL's config)."""
    return int(size[0]) if isinstance(size, (list, tuple)) else int(size)


def shape_from_config(config: dict, name: str) -> ModelShape:
    """The shape of a Qwen2/2.5/3-VL model from its config.json (a local folder: nothing to download).
    Parameter counts are summed from the layer sizes (biases and norms left out)."""
    text = config.get("text_config") or config
    vision = config.get("vision_config") or {}
    h, layers, inter = text["hidden_size"], text["num_hidden_layers"], text["intermediate_size"]
    heads, kv = text["num_attention_heads"], text.get("num_key_value_heads", text["num_attention_heads"])
    head_dim = text.get("head_dim") or h // heads
    vocab, tied = text["vocab_size"], bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    q = heads * head_dim
    language = layers * (h * q + 2 * h * kv * head_dim + q * h + 3 * h * inter) + vocab * h * (1 if tied else 2)
    vh = vision.get("hidden_size") if config.get("model_type") != "qwen2_vl" else vision.get("embed_dim")
    vh = vh or vision.get("embed_dim") or vision.get("hidden_size", 1280)
    matrices = 2 if config.get("model_type") in ("qwen2_vl", "qwen3_vl") else 3
    vi = vision.get("intermediate_size") or int(vh * vision.get("mlp_ratio", 4))
    vision_params = vision.get("depth", 32) * (4 * vh * vh + matrices * vh * vi)
    return ModelShape(name, language / 1e9, vision_params / 1e9, hidden=h, layers=layers, intermediate=inter,
                      heads=heads, kv_heads=kv, head_dim=head_dim, vocab=vocab, tied_embeddings=tied,
                      vision_hidden=vh, vision_intermediate=vi, vision_heads=vision.get("num_heads", 16),
                      vision_mlp_matrices=matrices, patch=_side(vision.get("patch_size", 14)),
                      merge=vision.get("spatial_merge_size", 2))


def model_shape(model: str) -> ModelShape:
    """The shape of a model: a local folder (its config.json), a hub id of the table, or a name
    containing e.g. 'qwen2.5-vl-7b'."""
    config = Path(model).expanduser() / "config.json"
    if config.is_file():
        return shape_from_config(json.loads(config.read_text()), model)
    if model in MODEL_SHAPES:
        return MODEL_SHAPES[model]
    lowered = model.lower().replace("_", "-")
    for name, shape in MODEL_SHAPES.items():
        key = name.split("/")[1].lower().replace("-instruct", "")
        if key in lowered:
            return shape
    raise ValueError(f"no memory shape for '{model}' (known: {', '.join(MODEL_SHAPES)}); "
                     f"give its parameter counts with approximate_shape()")


def approximate_shape(language_params_b: float, vision_params_b: float, name: str = "custom") -> ModelShape:
    """A shape for other parameter counts: the nearest known language model, widened to match."""
    nearest = min(MODEL_SHAPES.values(), key=lambda s: abs(math.log(s.language_params_b / language_params_b)))
    scale = math.sqrt(language_params_b / nearest.language_params_b)
    return replace(nearest, name=name, language_params_b=language_params_b, vision_params_b=vision_params_b,
                   hidden=max(64, round(nearest.hidden * scale / 64) * 64),
                   intermediate=max(64, round(nearest.intermediate * scale / 64) * 64))


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The Qwen processors' resize rule, for estimates made where no processor is loaded (the page
    does not import transformers). What a loaded model really sees is backend/engine/model_input.py's answer;
    tests/test_model_input.py checks the two agree on photo sizes."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def visual_tokens_for(width: int, height: int, shape: ModelShape | str = "Qwen/Qwen2.5-VL-7B-Instruct",
                      max_pixels: int | None = None, min_pixels: int = 3136) -> int:
    """Visual tokens one image becomes (max_pixels=None: no cap, as the measured runs had)."""
    shape = model_shape(shape) if isinstance(shape, str) else shape
    factor = shape.patch * shape.merge
    h, w = smart_resize(height, width, factor, min_pixels, max_pixels if max_pixels else 10 ** 12)
    return (h // factor) * (w // factor)
