"""The families beyond Qwen, each on a tiny random-weight model laid out like its published checkpoint: what the
model sees is what its processor feeds (photo sizes, both orientations), a box answered in the family's convention
lands on the truth in the picture, and GRPO and SFT jobs run two steps with held-out evaluation and a prediction."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from backend.engine.demo.builder import build_tiny
from backend.engine.model_input import fed, image_view
from backend.engine.models import load_processor, resolve_model
from backend.scoring.draw import PREDICTION, draw_boxes
from backend.scoring.families import get_family
from backend.scoring.playground import parsed_view
from backend.scoring.rewards import REWARDS
from backend.scoring.tasks import TaskSettings, get_task
from tests.conftest import run_job_now

FAMILIES = ["gemma3", "smolvlm", "internvl"]
PHOTOS = [(1024, 768), (768, 1024), (4000, 3000), (3000, 4000), (640, 427)]


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published")
    for arch in FAMILIES:
        build_tiny(arch, root / arch)
    return {arch: root / arch for arch in FAMILIES}


@pytest.mark.parametrize("arch", FAMILIES)
def test_what_the_model_sees_is_what_its_processor_feeds(published, arch):
    processor, family = load_processor(str(published[arch]))
    assert family.name == arch and resolve_model(family.hub_models[0])[1] is family
    for size in PHOTOS:
        view = image_view(processor, arch, size)
        assert (view.input, view.visual_tokens) == fed(processor, Image.new("RGB", size, (90, 120, 60)))
        assert view.frame == (family.convention.scale,) * 2


ANSWERS = {  # a box as each family's convention writes it, in the answer format its prompt asks for
    "gemma3": lambda box: f"[{{'Position': {box}, 'Confidence': 0.9}}]",
    "smolvlm": lambda box: f"[{{'Position': {box}, 'Confidence': 0.9}}]",
    "internvl": lambda box: f"<ref>block</ref><box>[{box}]</box>",
}


def _as_fed(processor, photo):
    """The whole image as the processor feeds it (for tilers, the image they add whole), as an HxWx3 array."""
    out = processor(text=[processor.image_token], images=[photo], return_tensors="pt")
    pixels = out["pixel_values"]
    while pixels.dim() > 3:
        pixels = pixels[-1]
    return pixels.permute(1, 2, 0).float().numpy()


@pytest.mark.parametrize("arch", FAMILIES)
@pytest.mark.parametrize("size", [(1024, 768), (768, 1024)])
def test_a_box_in_the_familys_convention_lands_on_the_truth(published, arch, size):
    """A blue block is found in the image as the processor feeds it, written as the family's convention says
    (corners 0-1000 of the image as fed), then read back and drawn as the rollout preview draws it: the drawn box
    sits on the block in the user's picture."""
    processor, family = load_processor(str(published[arch]))
    truth = [size[0] // 5, size[1] // 3, size[0] // 2, size[1] * 3 // 4]
    photo = Image.new("RGB", size, (240, 240, 240))
    photo.paste((30, 60, 200), tuple(truth))
    fed_pixels = _as_fed(processor, photo)
    ys, xs = ((fed_pixels[..., 2] > 0) & (fed_pixels[..., 0] < -0.2)).nonzero()
    fh, fw = fed_pixels.shape[:2]
    scale = family.convention.scale
    box = [round(xs.min() * scale / fw), round(ys.min() * scale / fh), round((xs.max() + 1) * scale / fw),
           round((ys.max() + 1) * scale / fh)]
    sample = {"width": size[0], "height": size[1], "boxes": [[*truth, "block"]]}
    (example,) = get_task("detection").build_examples(sample, ["block"], arch, TaskSettings(negative_share=0),
                                                      random.Random(0), input_size=image_view(processor, arch, size).input)
    assert f"between 0 and {scale}" in example.prompt
    answer = f"<think>A blue block.</think><answer>{ANSWERS[arch](box)}</answer>"
    assert REWARDS["detection_iou"]([answer], solution=[example.solution])[0] > 0.95
    (drawn_box,) = parsed_view("detection", answer, example.solution)["boxes"]
    drawn = draw_boxes(photo, [([drawn_box], PREDICTION)], max_side=max(size))
    red = [(x, y) for x in range(0, size[0], 2) for y in range(0, size[1], 2) if drawn.getpixel((x, y)) == PREDICTION]
    xs, ys = [x for x, _ in red], [y for _, y in red]
    tol = max(size) / 100
    assert abs(min(xs) - truth[0]) <= tol and abs(max(xs) - truth[2]) <= tol
    assert abs(min(ys) - truth[1]) <= tol and abs(max(ys) - truth[3]) <= tol


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A workspace with a COCO dataset of photo-sized images (both orientations), a quarter held out."""
    from backend.data.importer import import_dataset
    from backend.data.workspace import open_workspace
    from tests.builders import detection_samples, write_coco, zip_dir
    root = tmp_path_factory.mktemp("photos")
    samples = detection_samples(3, size=(1024, 768)) + detection_samples(3, seed=1, size=(768, 1024))
    for i, s in enumerate(samples):
        s["file"] = f"photo{i}.jpg"
    write_coco(root / "photos", samples)
    ws = open_workspace(root / "data")
    import_dataset(ws.store, ws.data_dir, [zip_dir(root / "photos", root / "photos.zip")], "photos",
                   val_fraction=0.34)
    return ws


@pytest.mark.parametrize("arch", FAMILIES)
@pytest.mark.parametrize("method", ["grpo", "sft"])
def test_jobs_train_evaluate_and_predict(published, photos, arch, method):
    from backend.engine.settings import preset
    from backend.jobs.predict import predict
    from backend.jobs.run_history import rollouts, run_json
    from backend.jobs.runs import create_run
    ws = photos
    settings = preset("CPU demo", method=method, max_steps=2, num_generations=2, save_steps=2, rollout_steps=1)
    settings.prompts_per_step, settings.eval_max_examples, settings.max_completion_length = 1, 2, 8
    settings.rollout_groups_per_step = 1
    run_id = create_run(ws.store, "photos", str(published[arch]), settings)
    assert run_job_now(ws, run_id) == 0
    run = run_json(ws.store, run_id)
    assert run["status"] == "completed", run["error"]
    assert run["family"] == arch and [p[0] for p in run["metrics"]["loss"]] == [1, 2]
    assert set(run["evaluation"]) == {"before", "after"} and run["evaluation"]["after"]["count"] == 2
    if method == "grpo":
        assert rollouts(ws.store, run_id)

    image = next(Path(ws.data_dir).glob("datasets/photos-*/images/**/photo1.jpg"))
    out = predict(ws, image, run_id=run_id, category="cat")
    processor, _ = load_processor(str(published[arch]))
    with Image.open(image) as im:
        size, tokens = fed(processor, im.convert("RGB"))
    assert out["family"] == arch and out["view"]["input"] == list(size)
    assert out["view"]["visual_tokens"] == tokens and out["view"]["frame"] == [1000, 1000]
    assert "between 0 and 1000" in out["prompt"]
    if method == "sft":  # the merged export is a plain model of the family, its processor seeing as the run's did
        from backend.jobs.predict import export
        merged = export(ws, run_id, Path(ws.data_dir) / f"merged-{arch}", merged=True)
        again, family = load_processor(str(merged))
        assert family.name == arch and list(image_view(again, arch, size).input) == out["view"]["input"] == list(size)


def test_an_unknown_architecture_is_one_sentence_naming_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_next"}))
    with pytest.raises(ValueError, match=r"model type 'llava_next' is not supported \(supported: .*gemma3.*internvl"
                                         r".*smolvlm"):
        resolve_model(str(tmp_path))


def test_the_baseline_advice_points_families_without_a_box_convention_to_sft():
    from backend.engine.preflight import advice
    base = {"means": {"detection_iou": 0.0, "format": 0.0}, "format_rate": 0.0, "samples": []}
    assert any("--method sft" in a for a in advice({"family": "gemma3", "baseline": base}))
    assert not any("--method sft" in a for a in advice({"family": "qwen2_vl", "baseline": base}))


@pytest.mark.parametrize("arch", FAMILIES)
def test_models_check_reports_the_processors_view_and_points_to_sft(published, photos, arch):
    from tests.conftest import run_cli
    out = json.loads(run_cli("models", "check", str(published[arch]), "--dataset", "photos", "--samples", "1",
                             "--signal-images", "0", "--json", data_dir=photos.data_dir).stdout)
    family = get_family(arch)
    assert out["family"] == arch and (out["min_pixels"], out["max_pixels"]) == (family.min_pixels, family.max_pixels)
    processor, _ = load_processor(str(published[arch]))
    for im in out["images"]:
        size, tokens = fed(processor, Image.new("RGB", tuple(im["original"])))
        assert (im["input"], im["visual_tokens"], im["frame"]) == (list(size), tokens, [1000, 1000])
    assert out["largest_visual_tokens"] == max(im["visual_tokens"] for im in out["images"])
    assert len(out["baseline"]["samples"]) == 1
    assert any("--method sft" in a for a in out["advice"]) == (not family.trained_boxes)


@pytest.mark.parametrize("arch, written", [
    ("gemma3", "<answer>[{'Position': [100, 100, 500, 500], 'Confidence': 1.0}, "
               "{'Position': [625, 625, 938, 958], 'Confidence': 1.0}]</answer>"),
    ("smolvlm", "<answer>[{'Position': [100, 100, 500, 500], 'Confidence': 1.0}, "
                "{'Position': [625, 625, 938, 958], 'Confidence': 1.0}]</answer>"),
    ("internvl", "<answer><ref>cat</ref><box>[[100, 100, 500, 500], [625, 625, 938, 958]]</box></answer>"),
])
def test_prompts_and_sft_targets_speak_the_familys_convention(arch, written):
    """What the prompt asks for is what an SFT run teaches and what the rewards read back as the truth."""
    from backend.scoring.playground import score
    from backend.scoring.tasks import detection_prompt, grounding_prompt, target_completion
    size, boxes = [640, 480], [[64, 48, 320, 240], [400, 300, 600, 460]]
    text = target_completion("detection", {"image_size": size, "family": arch, "boxes": boxes}, "cat")
    assert text.endswith(written)
    prompt = detection_prompt("cat", arch, (640, 480))
    assert "between 0 and 1000" in prompt
    assert ("<ref>cat</ref><box>[[x1, y1, x2, y2], ...]</box>" in prompt) == (arch == "internvl")
    rewards = score("detection", {"boxes": boxes}, text, arch, size)["rewards"]
    assert rewards["format"] == 1.0 and rewards["detection_confidence"] == 1.0 and rewards["detection_iou"] > 0.95
    region = target_completion("grounding", {"image_size": size, "family": arch, "box": boxes[0]})
    assert ("<box>[[100, 100, 500, 500]]</box>" in region) == (arch == "internvl")
    assert ("<box>" in grounding_prompt("the cat", arch, (640, 480))) == (arch == "internvl")
    assert score("grounding", {"box": boxes[0]}, region, arch, size)["rewards"]["grounding_iou"] > 0.95


@pytest.mark.parametrize("arch", FAMILIES)
def test_qlora_keeps_the_vision_tower_and_projector_out_of_4bit(published, arch):
    """transformers matches llm_int8_skip_modules against full module names: the family's tower and projector
    stay in 16 bits, every language projection LoRA trains is 4-bit, and LoRA reaches none of the vision side."""
    import bitsandbytes as bnb
    import torch

    from backend.engine.models import load, lora_config
    family = get_family(arch)
    net = load(str(published[arch]), qlora=True, for_training=True).model
    linear = {n: m for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
    vision_side = [n for n in linear if f".{family.vision_module}." in n or f".{family.projector}." in n]
    language = [n for n in linear if n.endswith(("q_proj", "down_proj")) and n not in vision_side]
    assert language and all(isinstance(linear[n], bnb.nn.Linear4bit) for n in language)
    assert all(not isinstance(linear[n], bnb.nn.Linear4bit) for n in vision_side)
    if arch != "gemma3":  # Gemma 3's projector is a plain weight and a norm, no Linear
        assert any(f".{family.projector}." in n for n in vision_side)
    from peft import get_peft_model
    tuned = get_peft_model(net, lora_config(family, 4, 8))
    adapted = [n for n, _ in tuned.named_modules() if n.endswith(".lora_A")]
    assert adapted and not any(family.vision_module in n or family.projector in n for n in adapted)


@pytest.mark.parametrize("arch", FAMILIES)
def test_a_processor_as_shipped_given_the_engine_kwargs_feeds_what_ours_does(published, arch):
    """vLLM builds its processor from the checkpoint folder; the kwargs we hand it (mm_processor_kwargs) make the
    folder's processor feed an image exactly as ours, limits applied, does."""
    import transformers

    from backend.engine.model_input import engine_kwargs
    ours, _ = load_processor(str(published[arch]))
    shipped = transformers.AutoProcessor.from_pretrained(published[arch])
    photo = Image.new("RGB", (4000, 3000), (200, 30, 60))
    mine = ours(text=[ours.image_token], images=[[photo]], return_tensors="pt")
    theirs = shipped(text=[shipped.image_token], images=[[photo]], return_tensors="pt", **engine_kwargs(ours))
    assert mine["input_ids"].tolist() == theirs["input_ids"].tolist()
    assert mine["pixel_values"].shape == theirs["pixel_values"].shape


ESTIMATED_AS = {"gemma3": "google/gemma-3-4b-it", "smolvlm": "HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
                "internvl": "OpenGVLab/InternVL3_5-1B-HF"}
"""The published checkpoint whose tiles the tiny hub-layout model shares."""


@pytest.mark.parametrize("arch", FAMILIES)
def test_the_memory_estimates_token_count_agrees_with_the_processor(published, arch):
    """The page estimates memory without loading a processor: its pure rule gives the processor's token count."""
    from backend.engine.model_shapes import visual_tokens_for
    processor, family = load_processor(str(published[arch]))
    for w, h in [*PHOTOS, (100, 60), (60, 100), (448, 448), (1536, 400), (5000, 900), (900, 5000), (3024, 4032)]:
        assert visual_tokens_for(w, h, ESTIMATED_AS[arch], max_pixels=family.max_pixels,
                                 min_pixels=family.min_pixels) == image_view(processor, arch, (w, h)).visual_tokens, \
            (w, h)
