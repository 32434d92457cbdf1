"""Loading a model of a supported family: hub id or local folder, LoRA on CPU, 4-bit QLoRA on CUDA."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.engine.families import FAMILY_FILE, family_of_folder
from backend.engine.model_input import ImageView, apply_pixel_limits, image_view
from backend.scoring.families import FAMILIES, KNOWN_MODELS, Family, get_family

DEMO_MODEL = "demo"
DEMO_FOLDER = Path(__file__).resolve().parent / "demo" / "model"


def resolve_model(model: str) -> tuple[str, Family]:
    """(what from_pretrained takes, family) for 'demo', a local folder, or a hub id."""
    if model == DEMO_MODEL:
        return str(DEMO_FOLDER), get_family("demo")
    not_a_model = ValueError(f"could not load '{model}': it is neither a model folder (one with a config.json) nor a "
                             f"known model id (for example {', '.join(list(KNOWN_MODELS)[:3])})")
    path = Path(model).expanduser()
    try:
        exists, folder = path.exists(), _model_folder(path)
    except (OSError, ValueError):  # a folder this process may not read, a name with a NUL
        exists, folder = True, False
    if folder:
        return str(path), get_family(family_of_folder(path))
    # A path that is no model folder gets one sentence whether or not it exists, so the answer never tells which
    # folders of this machine there are (the page asks on behalf of whoever can reach it).
    if exists or model.startswith(("/", "./", "../", "~", "\\")):
        raise not_a_model
    if model in KNOWN_MODELS:
        return model, get_family(KNOWN_MODELS[model])
    lowered = model.lower()
    for family in FAMILIES.values():
        if any(hint in lowered for hint in family.id_hints):
            return model, family
    raise not_a_model


def _model_folder(path: Path) -> bool:
    """Whether `path` is a folder that holds a model (a config.json, or the demo's family marker)."""
    return path.is_dir() and ((path / "config.json").is_file() or (path / FAMILY_FILE).is_file())


@dataclass
class Loaded:
    model: Any
    processor: Any
    family: Family
    device: str
    quantized: bool

    def view(self, size) -> ImageView:
        """What this model sees of an image of `size` (w, h): input size, coordinate frame, tokens."""
        return image_view(self.processor, self.family.name, size)


def device_name() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_processor(model: str, *, min_pixels: int | None = None, max_pixels: int | None = None):
    """(processor, family) with the image-size limits applied and checked (None = the family's)."""
    import transformers

    source, family = resolve_model(model)
    from backend.engine.hub import ensure_available
    ensure_available(source, model)  # a hub id that cannot be had: one sentence within seconds, not minutes of retries
    try:
        processor = transformers.AutoProcessor.from_pretrained(source)
    except Exception as e:  # noqa: BLE001 - any loading failure becomes one sentence
        raise ValueError(f"could not load '{model}': {_reason(e)}") from None
    apply_pixel_limits(processor, family.name, min_pixels or family.min_pixels, max_pixels or family.max_pixels)
    processor.tokenizer.padding_side = "left"
    return processor, family


def _reason(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load(model: str, *, adapter: str | None = None, qlora: bool | None = None, for_training: bool = False,
         min_pixels: int | None = None, max_pixels: int | None = None) -> Loaded:
    """Load model + processor. `qlora=None` means 4-bit on CUDA, full precision on CPU (QLoRA: 4-bit language
    model projections, everything else bf16; LoRA: bf16 on CUDA, fp32 on a CPU). The processor
    resizes images within min/max_pixels (None = the family's limits), whatever the folder ships."""
    import torch
    import transformers

    source, family = resolve_model(model)
    processor, _ = load_processor(model, min_pixels=min_pixels, max_pixels=max_pixels)
    device = device_name()
    quantized = (device == "cuda") if qlora is None else qlora
    kwargs: dict[str, Any] = {}
    if quantized:
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            # The vision tower stays in 16-bit: it is small, frozen, and its attention over thousands
            # of patches is where 4-bit dequantisation would cost most. transformers matches these with
            # re.match against full module names ("model.visual.blocks.0.attn.qkv"), so a bare "visual"
            # matched nothing and the tower was quantised (the GPU measurements' "vision in 4-bit").
            llm_int8_skip_modules=[rf"(.*\.)?{m}\." for m in (family.vision_module, family.projector) if m]
            + ["lm_head"])
    # QLoRA keeps what is not 4-bit (vision tower and projector, embeddings, norms, lm_head) in bf16 on any device.
    kwargs["dtype"] = torch.bfloat16 if device == "cuda" or quantized else torch.float32
    if device == "cuda":
        # This process's GPU: under `accelerate launch` each process takes the GPU of its LOCAL_RANK.
        import os
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    try:
        model_cls = getattr(transformers, family.model_class)
        net = model_cls.from_pretrained(source, **kwargs)
    except Exception as e:  # noqa: BLE001 - any loading failure becomes one sentence
        raise ValueError(f"could not load '{model}': {_reason(e)}") from None
    if quantized and device == "cpu" and for_training:
        # bitsandbytes repacks 4-bit weights for CPU inference the first time a layer runs in eval
        # mode (generation does); training forwards then fail on the repacked weights. Keep them as is.
        import bitsandbytes as bnb
        for module in net.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = False
    if for_training and quantized:  # before any adapter
        freeze_base(net)
    if adapter:  # with for_training, the adapter is the one trained further (a GRPO run after an SFT run)
        from peft import PeftModel
        net = PeftModel.from_pretrained(net, adapter, is_trainable=for_training)
    if not for_training:
        net.eval()
    return Loaded(net, processor, family, device, quantized)


def freeze_base(net) -> None:
    """Freeze a 4-bit base for LoRA training, leaving every weight in the dtype it was loaded in. PEFT's
    `prepare_model_for_kbit_training` also casts every weight that is not 4-bit (vision tower, embeddings,
    norms, lm_head) to fp32, which cost the memory QLoRA saves (../shared/gpu-facts.md: 3B QLoRA 18.2 GiB
    against bf16 LoRA's 17.1). Gradient checkpointing, and the input gradients it needs with a frozen
    embedding, are switched on by the trainers (GRPOConfig/SFTConfig gradient_checkpointing on CUDA; TRL calls
    enable_input_require_grads for a PEFT model)."""
    for param in net.parameters():
        param.requires_grad = False


def lora_config(family: Family, rank: int, alpha: int, dropout: float = 0.05):
    """LoRA on the language model only: the vision tower stays frozen."""
    from peft import LoraConfig
    # A regex so the vision tower's q/k/v (also named like the language model's) is left out.
    pattern = rf"^(?!.*\b{family.vision_module}\b).*\.({'|'.join(family.lora_targets)})$"
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, task_type="CAUSAL_LM")
