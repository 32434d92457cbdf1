"""Builds tiny models of real architectures, locally and deterministically.

`build_tiny(arch, out)` writes a random-weight model + processor (tests of each family's code
path; the non-Qwen architectures come from hub_layouts). `build_demo(out)` also warm-starts the Qwen3-VL-architecture demo on synthetic shapes until
it answers in the <think>/<answer> format with rough boxes. Rebuild the committed demo with
`python -m backend.engine.demo.builder --out backend/engine/demo/model`.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from backend.data.demo.shapes import SIZE, make_scene
from backend.engine.demo.examples import (SEED_OFFSET_HELDOUT, corpus, localisation_examples,
                                          warm_start_examples)
from backend.engine.demo import hub_layouts
from backend.engine.demo.tokenizer import train_tokenizer
from backend.engine.families import FAMILY_FILE
from backend.scoring.coords import to_model_int
from backend.scoring.tasks import detection_prompt


POS_EMBED_STD = 0.5

ARCH_CLASSES = {
    "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor"),
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
}


def _token_ids(tok) -> dict:
    return {"image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
            "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
            "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
            "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>")}


def tiny_config(arch: str, tok, vision_positions: int = 64):
    """`vision_positions`: the Qwen3-VL vision tower's learned position grid (a square: 196 = 14x14 patches)."""
    import transformers
    text = dict(vocab_size=len(tok), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                pad_token_id=tok.pad_token_id)
    if arch == "qwen3_vl":
        text.update(head_dim=64, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "mrope_section": [8, 12, 12], "mrope_interleaved": True})
        vision = dict(depth=4, hidden_size=128, intermediate_size=512, num_heads=4, out_hidden_size=256,
                      num_position_embeddings=vision_positions, deepstack_visual_indexes=[1, 2, 3], patch_size=16,
                      spatial_merge_size=2)
    elif arch == "qwen2_vl":
        text.update(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]})
        vision = dict(depth=2, embed_dim=64, hidden_size=256, num_heads=4, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2)
    else:
        text.update(rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]})
        vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=256,
                      patch_size=14, spatial_merge_size=2, window_size=56, fullatt_block_indexes=[1])
    config_cls = getattr(transformers, ARCH_CLASSES[arch][0])
    return config_cls(text_config=text, vision_config=vision, tie_word_embeddings=True, **_token_ids(tok))


def tiny_processor(arch: str, tok, min_pixels: int, max_pixels: int):
    import transformers
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    patch = 16 if arch == "qwen3_vl" else 14
    image = Qwen2VLImageProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, min_pixels=min_pixels,
                                  max_pixels=max_pixels, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    if arch == "qwen3_vl":
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
        video = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
    else:
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
        video = Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2)
    proc_cls = getattr(transformers, ARCH_CLASSES[arch][2])
    return proc_cls(image_processor=image, tokenizer=tok, video_processor=video, chat_template=tok.chat_template)


def build_tiny(arch: str, out: Path, seed: int = 0, family: str | None = None,
               min_pixels: int = 56 * 56, max_pixels: int = 224 * 224, vision_positions: int = 64):
    """A random-weight tiny model of `arch` with a locally trained tokenizer, saved to `out`."""
    import torch
    import transformers
    torch.manual_seed(seed)
    if arch in hub_layouts.LAYOUTS:  # the other architectures, already in their hub layout
        model, processor = hub_layouts.build(arch, out, corpus())
        if family:
            (Path(out) / FAMILY_FILE).write_text(json.dumps({"family": family}))
        return model, processor
    tok = train_tokenizer(corpus())
    model = getattr(transformers, ARCH_CLASSES[arch][1])(tiny_config(arch, tok, vision_positions))
    if arch == "qwen3_vl":
        # The absolute position embedding is the only place where "where" enters a patch's content;
        # at the default 0.02 it is ten times weaker than the patch embedding and a tiny model never
        # learns to read it (measured: left/right of a single shape stayed at chance).
        with torch.no_grad():
            model.model.visual.pos_embed.weight.normal_(0.0, POS_EMBED_STD)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    processor = tiny_processor(arch, tok, min_pixels, max_pixels)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if family:
        (out / FAMILY_FILE).write_text(json.dumps({"family": family}))
    return model, processor


CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
PUBLISHED_PREPROCESSOR = {
    # As Qwen/Qwen2-VL-*-Instruct and Qwen/Qwen2.5-VL-*-Instruct ship it: limits as min/max_pixels,
    # and far larger than anything the model was trained with.
    "qwen2_vl": {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                 "merge_size": 2, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                 "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor"},
    "qwen2_5_vl": {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                   "merge_size": 2, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                   "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"},
    # As Qwen/Qwen3-VL-*-Instruct ship it: limits as size.shortest_edge/longest_edge, a legacy Fast class name.
    "qwen3_vl": {"size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
                 "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                 "image_processor_type": "Qwen2VLImageProcessorFast", "processor_class": "Qwen3VLProcessor"},
}
PUBLISHED_VIDEO_PREPROCESSOR = {
    "qwen3_vl": {"size": {"longest_edge": 25165824, "shortest_edge": 4096}, "patch_size": 16, "temporal_patch_size": 2,
                 "merge_size": 2, "fps": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                 "video_processor_type": "Qwen3VLVideoProcessor", "processor_class": "Qwen3VLProcessor"},
}


def publish_layout(folder: Path, arch: str) -> Path:
    """Rewrite a saved model folder's processor files the way the published checkpoints lay them out
    (`preprocessor_config.json` with the hub's image-size limits instead of `processor_config.json`),
    so code is tested against what users really download."""
    if arch in hub_layouts.LAYOUTS:
        return hub_layouts.publish(folder, arch)
    folder = Path(folder)
    (folder / "processor_config.json").unlink(missing_ok=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(PUBLISHED_PREPROCESSOR[arch], indent=2))
    if arch in PUBLISHED_VIDEO_PREPROCESSOR:
        (folder / "video_preprocessor_config.json").write_text(json.dumps(PUBLISHED_VIDEO_PREPROCESSOR[arch], indent=2))
    return folder


def _batch(processor, items):
    """Tokenised prompt+answer with the loss on the answer only."""
    import torch
    texts, prompts = [], []
    for _, prompt, target in items:
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        p = processor.apply_chat_template(msgs, add_generation_prompt=True)
        prompts.append(p)
        texts.append(p + target + "<|im_end|>")
    processor.tokenizer.padding_side = "right"
    enc = processor(text=texts, images=[i for i, _, _ in items], return_tensors="pt", padding=True)
    plen = [len(processor(text=[p], images=[i], return_tensors="pt")["input_ids"][0])
            for p, (i, _, _) in zip(prompts, items)]
    labels = enc["input_ids"].clone()
    for row, n in enumerate(plen):
        labels[row, :n] = -100
    labels[enc["attention_mask"] == 0] = -100
    enc["labels"] = labels
    return enc


def _train(model, processor, examples: list[tuple], steps: int, batch_size: int, lr: float, label: str, log) -> None:
    import torch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    start = time.time()
    for step in range(steps):
        loss = model(**_batch(processor, examples[step * batch_size:(step + 1) * batch_size])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 25 == 0 or step == steps - 1:
            log(f"{label} step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f} s)")
    model.eval()


LOCALISATION_SHARE = 0.3
"""Share of stage-2 batches that are stage-1 localisation examples: the position signal stays while the
model learns the long prompt and the format (without them stage 2 washed it out: measured)."""


def warm_start(model, processor, steps: int, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
               localisation_steps: int = 800, log=print) -> None:
    """Stage 1 teaches where things are (short prompts, bare tight boxes, one or two shapes); stage 2 the
    task's prompt and the <think>/<answer> format on scenes of one shape, in two box conventions (corners, or
    COCO's [x, y, width, height]: `examples.COCO_STYLE_SHARE`), localisation examples mixed in."""
    import torch
    torch.manual_seed(seed)
    if localisation_steps:
        _train(model, processor, localisation_examples(localisation_steps * 32, seed), localisation_steps, 32, lr,
               "localisation", log)
        log(f"image use after stage 1: {image_use(model, processor, seed, localisation_examples):.3f} right "
            f"images, {image_use(model, processor, seed, localisation_examples, shuffle=True):.3f} shuffled "
            "(equal = blind)")
    n = steps * batch_size
    n_loc = int(n * LOCALISATION_SHARE)
    mixed = warm_start_examples(n - n_loc, seed) + localisation_examples(n_loc, seed + 1, max_shapes=1)
    random.Random(seed).shuffle(mixed)
    _train(model, processor, mixed, steps, batch_size, lr / 2, "format", log)
    log(f"image use: loss {image_use(model, processor, seed):.3f} with the right images, "
        f"{image_use(model, processor, seed, shuffle=True):.3f} with shuffled ones (equal = blind)")


def heldout_iou(model, processor, n: int = 48, seed: int = 0) -> dict:
    """On fresh scenes (never the demo dataset's): the task prompt for one present shape, greedy; mean
    IoU of the first answered box with the tight truth, share with IoU >= 0.5, format rate, share answered "No
    Objects" (the shape is there), share answered COCO-style ('bbox': [x, y, width, height]); and on the scenes
    with two shapes, the mean IoU and the share of answers closer to the other shape than to the named one."""
    from types import SimpleNamespace

    from backend.engine.inference import generate
    from backend.scoring.geometry import iou
    from backend.scoring.parsing import extract_answer, format_ok, parse_detections
    rng = random.Random(seed)
    items, truths, others = [], [], []
    for i in range(n):
        scene = make_scene(SEED_OFFSET_HELDOUT + seed * 100_000 + i)
        x1, y1, x2, y2, category = rng.choice(scene.boxes)
        items.append((scene.image, detection_prompt(category, "demo", (SIZE, SIZE))))
        truths.append(to_model_int([x1, y1, x2, y2], "demo", (SIZE, SIZE)))
        others.append([to_model_int(b[:4], "demo", (SIZE, SIZE)) for b in scene.boxes if b[4] != category])
    texts = generate(SimpleNamespace(model=model, processor=processor), items, max_new_tokens=64)
    ious, two, other, none, coco = [], [], 0, 0, 0
    for text, truth, rest in zip(texts, truths, others):
        dets = parse_detections(extract_answer(text))
        none += dets == []
        coco += "'bbox'" in text
        dets = dets or []
        ious.append(iou(dets[0].box, truth) if dets else 0.0)
        if rest:
            two.append(ious[-1])
            other += bool(dets) and max(iou(dets[0].box, b) for b in rest) > ious[-1]
    return {"mean_iou": round(sum(ious) / n, 4), "iou50": round(sum(v >= 0.5 for v in ious) / n, 4),
            "format_rate": round(sum(format_ok(t) for t in texts) / n, 4), "no_objects": round(none / n, 4),
            "coco_style": round(coco / n, 4),
            "two_shapes_mean_iou": round(sum(two) / max(1, len(two)), 4),
            "two_shapes_other_box": round(other / max(1, len(two)), 4)}


def image_use(model, processor, seed: int, examples=None, shuffle: bool = False, n: int = 32) -> float:
    """Answer loss on fresh examples; with `shuffle`, each prompt gets another example's image."""
    import torch
    ex = (examples or warm_start_examples)(n, seed + 7)
    if shuffle:
        ex = [(ex[(i + 1) % n][0], p, t) for i, (_, p, t) in enumerate(ex)]
    with torch.no_grad():
        return model(**_batch(processor, ex)).loss.item()


def build_demo(out: Path, steps: int = 250, batch_size: int = 32, seed: int = 0, localisation_steps: int = 800,
               log=print) -> Path:
    model, processor = build_tiny("qwen3_vl", out, seed=seed, family="demo", min_pixels=SIZE * SIZE,
                                  max_pixels=SIZE * SIZE, vision_positions=(SIZE // 16) ** 2)
    warm_start(model, processor, steps, batch_size, seed=seed, localisation_steps=localisation_steps, log=log)
    log(f"held-out check on fresh scenes: {heldout_iou(model, processor)}")
    import torch
    model.to(torch.bfloat16).save_pretrained(out)  # half the size on disk; loaded back in float32 on CPU
    return Path(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="backend/engine/demo/model")
    p.add_argument("--steps", type=int, default=250, help="stage 2 (format) steps")
    p.add_argument("--localisation-steps", type=int, default=800, help="stage 1 steps (batch 32)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import torch
    torch.set_num_threads(max(1, torch.get_num_threads()))
    build_demo(Path(args.out), args.steps, args.batch_size, args.seed, args.localisation_steps)


if __name__ == "__main__":
    main()
