"""What the model sees, on model folders laid out like the published checkpoints, with photo-sized
images; every expected size is read from the processor's own output, never from our constants."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from backend.engine.demo.builder import build_tiny, publish_layout
from backend.scoring.families import get_family
from backend.engine.model_input import apply_pixel_limits, fed_size, image_view, pixel_limits
from backend.engine.models import load_processor
from tests.conftest import run_job_now

ARCHS = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
PHOTOS = [(1024, 768), (4000, 3000), (768, 1024)]


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight models of each family, their processor files as the hub ships them."""
    root = tmp_path_factory.mktemp("published")
    for arch in ARCHS:
        build_tiny(arch, root / arch)
        publish_layout(root / arch, arch)
    return {arch: root / arch for arch in ARCHS}


def _tokens(processor, image) -> int:
    ip = processor.image_processor
    w, h = fed_size(processor, image)
    return (w // ip.patch_size) * (h // ip.patch_size) // ip.merge_size ** 2


@pytest.mark.parametrize("arch", ARCHS)
def test_the_reported_input_is_what_the_processor_feeds_the_model(published, arch):
    import transformers
    folder = published[arch]
    as_shipped = transformers.AutoProcessor.from_pretrained(folder)
    processor, family = load_processor(str(folder))
    assert family.name == arch
    budget = family.max_pixels // (processor.image_processor.patch_size * processor.image_processor.merge_size) ** 2
    for size in PHOTOS:
        photo = Image.new("RGB", size, (120, 90, 60))
        view = image_view(processor, arch, size)
        assert view.input == fed_size(processor, photo)          # the processor's own output
        assert view.visual_tokens == _tokens(processor, photo)
        assert view.visual_tokens <= budget                       # the family's budget, not the folder's
        assert view.frame == (view.input if arch == "qwen2_5_vl" else (1000, 1000))
    # What the folder alone would have done: the trap this guards against.
    assert _tokens(as_shipped, Image.new("RGB", (4000, 3000))) > 10_000
    assert image_view(as_shipped, arch, (4000, 3000)).input == fed_size(as_shipped, Image.new("RGB", (4000, 3000)))


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_max_pixels_changes_input_and_frame_together(published, arch):
    default, _ = load_processor(str(published[arch]))
    small, _ = load_processor(str(published[arch]), max_pixels=200_704)
    assert pixel_limits(small) == (get_family(arch).min_pixels, 200_704)
    photo = Image.new("RGB", (1024, 768))
    before, after = image_view(default, arch, photo.size), image_view(small, arch, photo.size)
    assert after.input == fed_size(small, photo) and after.input[0] * after.input[1] <= 200_704
    assert after.visual_tokens < before.visual_tokens
    if arch == "qwen2_5_vl":
        assert after.frame == after.input != before.frame


def test_limits_that_do_not_take_effect_are_one_sentence(published):
    processor, _ = load_processor(str(published["qwen2_5_vl"]))

    class Stubborn(type(processor.image_processor)):
        """An image processor that keeps its folder's limits whatever it is told (as one did)."""
        def __call__(self, images, **kwargs):
            kwargs["size"] = {"shortest_edge": 3136, "longest_edge": 12845056}
            return super().__call__(images, **kwargs)

    processor.image_processor.__class__ = Stubborn
    with pytest.raises(ValueError, match="ignores the image-size limits"):
        apply_pixel_limits(processor, "qwen2_5_vl", 3136, 401408)
    with pytest.raises(ValueError, match="at most max_pixels"):
        apply_pixel_limits(processor, "qwen2_5_vl", 500_000, 401408)


def test_published_layout_is_the_hubs(published):
    files = {p.name for p in published["qwen2_5_vl"].iterdir()}
    assert "preprocessor_config.json" in files and "processor_config.json" not in files
    shipped = json.loads((published["qwen2_5_vl"] / "preprocessor_config.json").read_text())
    assert (shipped["min_pixels"], shipped["max_pixels"]) == (3136, 12845056)
    assert "size" in json.loads((published["qwen3_vl"] / "preprocessor_config.json").read_text())


def test_prompt_reward_and_drawing_share_the_processors_frame_through_a_run(published, tmp_path):
    """A short real GRPO run of a published-layout Qwen2.5-VL on photo-sized images: the prompt's frame
    and the frame the rewards and the drawn rollouts read are the size the processor really fed."""
    from backend.data.importer import import_dataset
    from backend.data.workspace import open_workspace
    from backend.engine.settings import preset
    from backend.jobs import training
    from backend.jobs.runs import create_run
    from backend.jobs.run_history import rollouts, run_json
    from tests.builders import detection_samples, write_coco, zip_dir

    samples = detection_samples(3, size=(1024, 768)) + detection_samples(1, seed=1, size=(4000, 3000))
    for i, s in enumerate(samples):
        s["file"] = f"photo{i}.jpg"
    write_coco(tmp_path / "photos", samples)
    ws = open_workspace(tmp_path / "data")
    import_dataset(ws.store, ws.data_dir, [zip_dir(tmp_path / "photos", tmp_path / "photos.zip")], "photos",
                   val_fraction=0.25)
    settings = preset("CPU demo", max_steps=1, num_generations=2, save_steps=1, rollout_steps=1)
    settings.prompts_per_step, settings.eval_max_examples, settings.max_completion_length = 1, 2, 8
    settings.rollout_groups_per_step = 1
    run_id = create_run(ws.store, "photos", str(published["qwen2_5_vl"]), settings)
    assert run_job_now(ws, run_id) == 0
    assert run_json(ws.store, run_id)["status"] == "completed"

    processor, _ = load_processor(str(published["qwen2_5_vl"]))
    stored = rollouts(ws.store, run_id)
    assert stored
    for r in stored:
        with Image.open(ws.data_dir / r.image) as im:
            fed = fed_size(processor, im.convert("RGB"))
        assert f"pixel coordinates of the {fed[0]}x{fed[1]} image" in r.prompt
        assert r.parsed["input_size"] == list(fed)
        assert fed[0] * fed[1] <= get_family("qwen2_5_vl").max_pixels


@pytest.fixture(scope="module")
def photo_data(tmp_path_factory) -> Path:
    """A data dir with a small COCO dataset of 1024x768 photos and one 4000x3000 photo."""
    from tests.builders import detection_samples, write_coco, zip_dir
    from tests.conftest import run_cli
    root = tmp_path_factory.mktemp("photos")
    samples = detection_samples(4, size=(1024, 768)) + detection_samples(1, seed=1, size=(4000, 3000))
    for i, s in enumerate(samples):
        s["file"] = f"photo{i}.jpg"
    write_coco(root / "photos", samples)
    run_cli("datasets", "import", str(zip_dir(root / "photos", root / "photos.zip")), "--name", "photos",
            data_dir=root / "data")
    return root / "data"


@pytest.mark.parametrize("arch", ARCHS)
def test_models_check_json_on_published_layouts(published, photo_data, arch):
    from tests.conftest import run_cli
    big = photo_data.parent / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 120, 200)).save(big)
    out = json.loads(run_cli("models", "check", str(published[arch]), "--dataset", "photos", "--image", str(big),
                             "--no-baseline", "--json", data_dir=photo_data).stdout)
    family = get_family(arch)
    assert (out["model"], out["family"]) == (str(published[arch]), arch)
    assert (out["min_pixels"], out["max_pixels"]) == (family.min_pixels, family.max_pixels)
    assert out["baseline"] is None and len(out["images"]) == 6
    processor, _ = load_processor(str(published[arch]))
    for im in out["images"]:
        assert set(im) == {"path", "original", "input", "frame", "visual_tokens"}
        assert im["input"] == list(fed_size(processor, Image.new("RGB", tuple(im["original"]))))
        assert im["frame"] == (im["input"] if arch == "qwen2_5_vl" else [1000, 1000])
    assert out["images"][-1]["path"] == str(big) and out["images"][-1]["original"] == [4000, 3000]
    assert out["largest_visual_tokens"] == max(im["visual_tokens"] for im in out["images"])

    smaller = json.loads(run_cli("models", "check", str(published[arch]), "--image", str(big), "--max-pixels",
                                 "100352", "--no-baseline", "--json", data_dir=photo_data).stdout)
    im = smaller["images"][0]
    assert smaller["max_pixels"] == 100352 and im["input"][0] * im["input"][1] <= 100352
    assert im["visual_tokens"] < out["images"][-1]["visual_tokens"]


def test_models_check_baseline_on_a_published_layout(published, photo_data):
    """Random weights never answer in the format: the baseline says so, with pictures and every reward."""
    from tests.conftest import run_cli
    out = json.loads(run_cli("models", "check", str(published["qwen2_5_vl"]), "--dataset", "photos", "--samples", "2",
                             "--signal-images", "1", "--json", data_dir=photo_data).stdout)
    base = out["baseline"]
    assert len(base["samples"]) == 2 and base["format_rate"] == 0.0
    for s in base["samples"]:
        assert set(s["rewards"]) == {"detection_iou", "detection_confidence", "format"}
        assert Path(s["picture"]).is_file()
        assert "pixel coordinates of the 728x532 image" in s["prompt"] or "4000" in s["image"]
    assert any("never answers in the expected" in a for a in out["advice"])
    assert out["ready"] is False and out["signal_check"]["format_rate"] == 0


def test_models_check_of_the_demo_with_baseline(tmp_path):
    from tests.conftest import run_cli
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    out = json.loads(run_cli("models", "check", "demo", "--dataset", "demo-shapes", "--samples", "3",
                             "--signal-images", "0", "--json", data_dir=data).stdout)
    assert out["family"] == "demo" and out["images"][0]["frame"] == [100, 100]
    base = out["baseline"]
    assert base["format_rate"] > 0.5 and len(base["samples"]) == 3      # the warm start answers in the format
    with Image.open(base["samples"][0]["picture"]) as pic:
        assert pic.size[0] >= 128
    assert out["advice"] == [] or all(isinstance(a, str) for a in out["advice"])


def test_models_check_mistakes_are_one_sentence(tmp_path):
    from tests.conftest import run_cli
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    for args, sentence in [(("demo",), "give a dataset (--dataset) or at least one image"),
                           (("demo", "--image", str(tmp_path / "none.jpg"), "--no-baseline"), "does not exist"),
                           (("demo", "--image", str(tmp_path / "none.jpg")), "does not exist"),
                           (("/nowhere/model", "--dataset", "demo-shapes"), "could not load '/nowhere/model'"),
                           (("demo", "--dataset", "demo-shapes", "--min-pixels", "900000", "--no-baseline"),
                            "at most max_pixels")]:
        proc = run_cli("models", "check", *args, data_dir=data, check=False)
        assert proc.returncode == 1 and sentence in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_the_memory_estimates_token_count_agrees_with_the_processor(published):
    """The page estimates memory without loading a processor; its token count must be the processor's."""
    from backend.engine.model_shapes import visual_tokens_for
    processor, family = load_processor(str(published["qwen2_5_vl"]))
    for w, h in [(1024, 768), (4000, 3000), (640, 480), (3024, 4032), (100, 60)]:
        assert visual_tokens_for(w, h, "Qwen/Qwen2.5-VL-7B-Instruct", max_pixels=family.max_pixels,
                                 min_pixels=family.min_pixels) == image_view(processor, "qwen2_5_vl", (w, h)).visual_tokens
