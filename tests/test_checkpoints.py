"""The known checkpoints of every family: memory shapes (the table's, and a local folder's from its config.json
as transformers writes it), the table the Train tab and `models list` show, and image-size limits a fixed-size
family cannot honour refused when the run is created."""
from __future__ import annotations

import json

import pytest
import transformers

from backend.engine.checkpoints import checkpoint_rows
from backend.engine.memory import estimate, job_from_settings
from backend.engine.model_shapes import MODEL_SHAPES, model_shape
from backend.engine.settings import PRESET_CARD_GIB, preset
from backend.scoring.families import FAMILIES, KNOWN_MODELS
from tests.conftest import run_cli

# The published configs' sizes (text and vision), written as transformers writes them.
PUBLISHED_CONFIGS = {
    "google/gemma-3-4b-it": lambda: transformers.Gemma3Config(
        text_config=dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
                         num_key_value_heads=4, head_dim=256, vocab_size=262208),
        vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                           image_size=896, patch_size=14), mm_tokens_per_image=256),
    "HuggingFaceTB/SmolVLM2-500M-Video-Instruct": lambda: transformers.SmolVLMConfig(
        text_config=dict(model_type="llama", hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, vocab_size=49280),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=512, patch_size=16), scale_factor=4, tie_word_embeddings=True),
    "OpenGVLab/InternVL3_5-8B-HF": lambda: transformers.InternVLConfig(
        text_config=dict(model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=[448, 448], patch_size=[14, 14]), downsample_ratio=0.5,
        tie_word_embeddings=False),
}


def test_every_known_checkpoint_has_a_memory_shape():
    assert set(KNOWN_MODELS) <= set(MODEL_SHAPES)
    for model in KNOWN_MODELS:
        assert model_shape(model).name == model
        assert model_shape(model.lower()).name == model  # a hub id as a person types it
    assert model_shape("OpenGVLab/InternVL3_5-4B-HF-finetuned").name == "OpenGVLab/InternVL3_5-4B-HF"


@pytest.mark.parametrize("model", list(PUBLISHED_CONFIGS))
def test_a_local_folder_is_measured_from_its_config_like_the_table(tmp_path, model):
    """A downloaded checkpoint of each new family: its config.json gives the shape the table has."""
    config = PUBLISHED_CONFIGS[model]()
    config.save_pretrained(tmp_path)
    folder, table = model_shape(str(tmp_path)), MODEL_SHAPES[model]
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == FAMILIES[KNOWN_MODELS[model]].model_type
    assert folder.language_params_b == pytest.approx(table.language_params_b, rel=0.05)
    assert folder.vision_params_b == pytest.approx(table.vision_params_b, rel=0.15)
    assert (folder.tiling, folder.tile, folder.tile_tokens, folder.head_dim) == \
        (table.tiling, table.tile, table.tile_tokens, table.head_dim)
    settings = preset("24 GB GPU")
    assert job_from_settings(settings, str(tmp_path)).visual_tokens == job_from_settings(settings, model).visual_tokens
    assert estimate(job_from_settings(settings, str(tmp_path), qlora=False)).total_gib == pytest.approx(
        estimate(job_from_settings(settings, model, qlora=False)).total_gib, rel=0.05)


def test_the_table_is_the_estimate_and_run_plan_on_each_presets_card():
    from backend.engine.run_plan import plan_run
    for name, card in PRESET_CARD_GIB.items():
        rows = checkpoint_rows(name)
        assert [r["model"] for r in rows] == list(KNOWN_MODELS)
        for r in rows:
            plan = plan_run(preset(name), r["model"], cuda=True, vllm_installed=True, gpu_gib=card,
                            image_size=(1024, 768))
            assert (r["plan"], r["memory_gib"], r["card_gib"]) == (plan.describe(), round(plan.estimate.total_gib, 1), card)
    gemma = {r["model"]: r for r in checkpoint_rows("24 GB GPU")}["google/gemma-3-4b-it"]
    assert gemma["visual_tokens"] == 256 and gemma["fits"] and "warm-start with SFT" in gemma["convention"]


def test_models_list_prints_every_checkpoint(tmp_path):
    out = run_cli("models", "list", "--preset", "48 GB GPU", data_dir=tmp_path / "data").stdout
    assert "on a 48 GB card" in out
    for r in checkpoint_rows("48 GB GPU"):
        assert r["model"] in out and f"{r['params_b']:.2f}B" in out
    rows = json.loads(run_cli("models", "list", "--json", data_dir=tmp_path / "data").stdout)
    assert rows == checkpoint_rows("24 GB GPU")
    bad = run_cli("models", "list", "--preset", "CPU demo", data_dir=tmp_path / "data", check=False)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_limits_a_fixed_size_family_cannot_honour_are_one_sentence_at_creation(tmp_path):
    run_cli("demo", data_dir=tmp_path / "data")
    proc = run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "google/gemma-3-4b-it", "--preset",
                   "48 GB GPU", "--max-pixels", "401408", "--ignore-memory-estimate", data_dir=tmp_path / "data",
                   check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "gemma3 sees every image as one 896x896 square" in proc.stderr and "leave min_pixels and max_pixels" \
        in proc.stderr
    listed = run_cli("runs", "list", data_dir=tmp_path / "data").stdout
    assert "gemma" not in listed  # nothing queued
