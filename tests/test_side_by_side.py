"""The Test tab's side by side: a run's tuned answer beside its base model's, from one loaded model."""
from __future__ import annotations

import pytest
from PIL import Image

from backend.engine.settings import preset
from backend.jobs.runs import create_run
from storage.models import Run


def run_with_adapter(ws) -> int:
    """A completed demo run whose adapter is saved as training saves it (LoRA on the language model), with
    random weights, so that it surely changes the model's answers."""
    from peft import get_peft_model

    from backend.data.demo.dataset import ensure_demo_dataset
    from backend.engine.models import load, lora_config
    ensure_demo_dataset(ws.store, ws.data_dir, n=4)
    settings = preset("CPU demo", max_steps=2)
    settings.max_completion_length = 24
    run_id = create_run(ws.store, "demo-shapes", "demo", settings)
    with ws.store.write() as s:
        run = s.get(Run, run_id)
        run.status, run.step = "completed", 2
    loaded = load("demo", min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
    config = lora_config(loaded.family, settings.lora_rank, settings.lora_alpha)
    config.init_lora_weights = False  # trained-looking: B is not zero
    get_peft_model(loaded.model, config).save_pretrained(str(ws.data_dir / f"runs/{run_id}/adapter"))
    return run_id


@pytest.fixture
def model_loads(monkeypatch):
    """The model folders loaded from now on (every from_pretrained of the demo's model class)."""
    import transformers

    from backend.scoring.families import get_family
    from backend.jobs.predict import _loaded
    cls = getattr(transformers, get_family("demo").model_class)
    original = cls.from_pretrained
    loads: list[str] = []

    def counted(klass, source, *args, **kwargs):
        loads.append(str(source))
        return original(source, *args, **kwargs)

    _loaded.cache_clear()
    monkeypatch.setattr(cls, "from_pretrained", classmethod(counted))
    yield loads
    _loaded.cache_clear()


def test_side_by_side_loads_the_model_once_and_the_base_answer_is_the_base_models(ws, model_loads):
    from backend.engine.inference import generate
    from backend.engine.models import load
    from backend.engine.settings import TrainSettings
    from backend.jobs.predict import answer_request, predict
    from backend.jobs.runs import get_run

    run_id = run_with_adapter(ws)
    image = next((ws.data_dir / "datasets").glob("demo-shapes-*/images/*.png"))
    model_loads.clear()
    answers = answer_request(ws, {"run_id": run_id, "category": "red circle", "compare": True,
                                  "images": [str(image.relative_to(ws.data_dir))]})  # what the answerer does
    assert [a["source"] for a in answers] == [f"run {run_id} (last, step 2)", "base"]
    assert len(model_loads) == 1, "tuned and base side by side load the weights once"

    tuned = predict(ws, image, run_id=run_id, category="red circle")
    base = predict(ws, image, run_id=run_id, category="red circle", base=True)
    assert len(model_loads) == 1
    assert base["checkpoint"] is None and tuned["checkpoint"] == {"which": "last", "step": 2}
    assert tuned["completion"] != base["completion"], "the adapter changes the answer (else this proves nothing)"

    settings = TrainSettings.from_dict(get_run(ws.store, run_id).settings)
    alone = load("demo", min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)  # no adapter at all
    with Image.open(image) as im:
        own = generate(alone, [(im.convert("RGB"), base["prompt"])], max_new_tokens=settings.max_completion_length)
    assert base["completion"] == own[0]
    # And the tuned answer did not stay switched off.
    assert predict(ws, image, run_id=run_id, category="red circle")["completion"] == tuned["completion"]
