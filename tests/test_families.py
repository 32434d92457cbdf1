"""The model-family registry: each family's coordinates, limits and how a model name resolves."""
from __future__ import annotations

import json

import pytest

from backend.engine.models import DEMO_FOLDER, load, resolve_model
from backend.scoring.families import FAMILIES, KNOWN_MODELS, Convention


def test_every_family_declares_what_training_needs():
    for name, family in FAMILIES.items():
        assert family.name == name and isinstance(family.convention, Convention)
        assert all(KNOWN_MODELS[model] == name for model in family.hub_models)
        assert family.lora_targets and family.model_class.endswith("ForConditionalGeneration")
        assert 0 < family.min_pixels <= family.max_pixels


@pytest.mark.parametrize("model,family", [
    ("demo", "demo"),
    ("Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl"),
    ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl"),
    ("someone/my-qwen3-vl-finetune", "qwen3_vl"),
])
def test_resolve_model(model, family):
    assert resolve_model(model)[1].name == family


def test_demo_model_is_shipped():
    assert (DEMO_FOLDER / "config.json").is_file()
    assert json.loads((DEMO_FOLDER / "vrft_family.json").read_text()) == {"family": "demo"}


def test_unknown_model_is_one_sentence(tmp_path):
    with pytest.raises(ValueError, match=r"^could not load 'gpt-5': it is neither a local folder nor a known"):
        resolve_model("gpt-5")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match=r"model type 'llama' is not supported"):
        resolve_model(str(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen2_vl"}')
    with pytest.raises(ValueError, match=r"^could not load '.*broken': "):
        load(str(broken))
