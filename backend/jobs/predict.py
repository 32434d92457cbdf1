"""Using a tuned model: predict on a new image, evaluate a run, export its adapter or merged model."""
from __future__ import annotations

import shutil
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from PIL import Image, ImageOps
from sqlalchemy import select

from backend.data.catalog import get_dataset, heldout_split
from backend.data.config import ImportLimits
from backend.data.safety import probe_image
from backend.data.workspace import Workspace
from backend.engine.inference import generate
from backend.engine.vllm_answers import OneEngine
from backend.engine.settings import TrainSettings
from backend.jobs.runs import dataset_name, get_run
from backend.jobs.run_history import best_point, latest_checkpoint
from backend.scoring.playground import parsed_view
from backend.scoring.tasks import (FORMAT_INSTRUCTION, classification_prompt, detection_prompt, frame_solution,
                                   grounding_prompt)
from storage.models import Checkpoint


CHECKPOINTS = ("best", "last")
"""Which of a run's adapters to use: the checkpoint with the best held-out metric (the default), or the last."""
TRAINER_FILES = ("optimizer.pt", "scheduler.pt", "rng_state*.pth", "trainer_state.json", "training_args.bin",
                 "scaler.pt")
"""What a checkpoint folder holds besides the adapter and processor: only resuming needs it."""


def chosen_adapter(ws: Workspace, run_id: int, which: str = "best") -> tuple[Path, dict]:
    """(folder, {"which", "step"}): with "best", the complete checkpoint of the step with the best held-out
    metric (the final adapter when that is the last step); with "last", or before any evaluation during
    training, the final adapter, else the newest complete checkpoint (a run still training)."""
    if which not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, not '{which}'")
    run = get_run(ws.store, run_id)
    final = ws.data_dir / run.folder / "adapter"
    has_final = (final / "adapter_config.json").is_file()
    best = best_point(ws.store, run_id, run.task) if which == "best" else None
    if best is not None:
        if best["step"] == run.step and has_final:
            return final, {"which": "best", "step": best["step"]}
        with ws.store.read() as s:
            ck = s.scalar(select(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.step == best["step"],
                                                   Checkpoint.complete.is_(True)))
        if ck is not None and (ws.data_dir / ck.path / "adapter_config.json").is_file():
            return ws.data_dir / ck.path, {"which": "best", "step": best["step"]}
    if has_final:
        return final, {"which": "last", "step": run.step}
    ck = latest_checkpoint(ws.store, ws.data_dir, run_id)
    if ck is None:
        raise ValueError(f"run {run_id} has no adapter yet (status {run.status})")
    return ws.data_dir / ck.path, {"which": "last", "step": ck.step}


def adapter_dir(ws: Workspace, run_id: int, which: str = "best") -> Path:
    """The folder of the run's best (or last) adapter: see `chosen_adapter`."""
    return chosen_adapter(ws, run_id, which)[0]


def copy_adapter(source: Path, out: Path) -> Path:
    """The adapter and processor files of an adapter or checkpoint folder (not the trainer's resume state)."""
    shutil.copytree(source, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*TRAINER_FILES))
    return out


@dataclass
class Answering:
    """A model ready to answer: `loaded` says what it sees of an image (family, view), `generate(items,
    max_new_tokens, base=False)` gives greedy completions, tuned or (base) from its base model."""
    loaded: Any
    generate: Callable[..., list[str]]


def _answering(model: str, adapter: str | None, min_pixels: int | None = None,
               max_pixels: int | None = None) -> Answering:
    """The engine training generates with on this machine (backend.engine.vllm_answers.answer_engine): vLLM
    on a GPU where it is installed, its base loaded once and the adapter a LoRA request; else transformers."""
    from backend.engine.models import device_name
    from backend.engine.vllm_answers import adapter_rank, answer_engine
    if answer_engine(device_name()) == "vllm":
        rank = adapter_rank(adapter) if adapter else 8
        loaded, engine = _vllm_engine(model, min_pixels, max_pixels, rank)
        return Answering(loaded, lambda items, n, base=False: engine.generate(items, n, None if base else adapter))
    loaded = _loaded(model, adapter, min_pixels, max_pixels)

    def hf(items, n, base=False):
        with _base_only(loaded) if base else nullcontext():
            return generate(loaded, items, max_new_tokens=n)
    return Answering(loaded, hf)


def _make_vllm_engine(model: str, min_pixels: int | None, max_pixels: int | None, rank: int):
    from backend.engine.models import Loaded, load_processor, resolve_model
    from backend.engine.vllm_answers import VllmAnswers, lora_rank_limit
    processor, family = load_processor(model, min_pixels=min_pixels, max_pixels=max_pixels)
    engine = VllmAnswers(resolve_model(model)[0], processor, max_lora_rank=lora_rank_limit(max(rank, 8)))
    return Loaded(None, processor, family, "cuda", False), engine


_vllm_engine = OneEngine(_make_vllm_engine)
"""(loaded, engine) for a base model: one engine at a time, the previous one closed before the next is made."""


@lru_cache(maxsize=2)
def _loaded(model: str, adapter: str | None, min_pixels: int | None = None, max_pixels: int | None = None):
    from backend.engine.models import load
    return load(model, adapter=adapter, qlora=None, min_pixels=min_pixels, max_pixels=max_pixels)


_USING = threading.Lock()
"""One prediction at a time with the cached models: a base answer switches off the adapter of the very model a
tuned answer uses, and two first requests at once would each load it."""


def _run_answering(ws: Workspace, run_id: int, checkpoint: str = "best", base: bool = False) -> Answering:
    """The run's base model with its best (or last) adapter, fed images the way it was trained. Its base
    model's answers come from the same weights without the adapter, so tuned and base side by side load the
    model once. With `base` and no adapter yet, the base model alone."""
    run = get_run(ws.store, run_id)
    settings = TrainSettings.from_dict(run.settings)
    try:
        adapter = str(adapter_dir(ws, run_id, checkpoint))
    except ValueError:
        if not base:
            raise
        adapter = None
    return _answering(run.model, adapter, settings.min_pixels, settings.max_pixels)


def _base_only(loaded):
    """While open, the model answers as its base model: the adapter (when it has one) is disabled."""
    from peft import PeftModel
    return loaded.model.disable_adapter() if isinstance(loaded.model, PeftModel) else nullcontext()


def _trained_classification_prompt(ws: Workspace, run) -> str:
    """The prompt a classification run was trained with (its dataset's classes, its object kind)."""
    settings = TrainSettings.from_dict(run.settings)
    try:
        classes = get_dataset(ws.store, dataset_name(ws.store, run), with_samples=False)["classes"]
    except ValueError:  # the dataset was deleted: the prompt without the list of classes
        classes = None
    return classification_prompt(classes if settings.classes_in_prompt else None, settings.object_kind)


def predict(ws: Workspace, image: Path, *, run_id: int | None = None, model: str | None = None,
            category: str | None = None, question: str | None = None, max_new_tokens: int = 256,
            base: bool = False, checkpoint: str = "best") -> dict:
    """Reasoning, answer and (when there are any) boxes in pixels of the given image. With a run, the
    prompt is the one it was trained with, the adapter its best checkpoint (or `checkpoint="last"`, reported
    as "checkpoint": {"which", "step"}); `base` asks the run's base model the same way (the same loaded
    weights, with the adapter disabled)."""
    return predict_many(ws, [(Path(image), category, question)], run_id=run_id, model=model,
                        max_new_tokens=max_new_tokens, base=base, checkpoint=checkpoint)[0]


def predict_many(ws: Workspace, asks: list[tuple[Path, str | None, str | None]], *, run_id: int | None = None,
                 model: str | None = None, max_new_tokens: int = 256, base: bool = False,
                 checkpoint: str = "best") -> list[dict]:
    """predict() for several (image, category, question) asks of one model, answered in batches (the engine's own
    batch size): what labelling many images uses. One result per ask, in order."""
    limits = ImportLimits.from_env()
    for image in dict.fromkeys(Path(image) for image, _, _ in asks):  # labelling asks each image once per class
        probe_image(image, limits, image.name)
    with _USING:
        return _predict(ws, asks, run_id, model, max_new_tokens, base, checkpoint)


def _predict(ws: Workspace, asks: list[tuple[Path, str | None, str | None]], run_id: int | None, model: str | None,
             max_new_tokens: int, base: bool, checkpoint: str) -> list[dict]:
    task = run = used = None
    if run_id is not None:
        run = get_run(ws.store, run_id)
        model, task = run.model, run.task
        used = None if base else chosen_adapter(ws, run_id, checkpoint)[1]
        answering = _run_answering(ws, run_id, checkpoint, base)
        max_new_tokens = TrainSettings.from_dict(run.settings).max_completion_length
    else:
        answering = _answering(model, None)
    loaded = answering.loaded
    family = loaded.family.name
    classification_prompt = _trained_classification_prompt(ws, run) if task == "classification" else None
    seen: dict[Path, tuple] = {}  # each image read, turned upright and sized once, however many asks name it
    prompts = []
    for image, category, question in asks:
        if task == "detection" and not category:
            raise ValueError("this run detects objects: give a category to detect")
        if task == "grounding" and not question:
            raise ValueError("this run finds regions: describe the region to find")
        if task is None and not (category or question):
            raise ValueError("give a category to detect or a question")
        if Path(image) not in seen:
            with Image.open(image) as im:
                picture = ImageOps.exif_transpose(im).convert("RGB")  # upright, as imports store photos
            seen[Path(image)] = (picture, loaded.view(picture.size))
        picture, view = seen[Path(image)]
        size = picture.size
        if task == "classification":
            prompt, kind = classification_prompt, "classification"
        elif category:
            prompt, kind = detection_prompt(category, family, size, view.input), "detection"
        elif task == "grounding":
            prompt, kind = grounding_prompt(question, family, size, view.input), "grounding"
        else:
            prompt, kind = f"{question} {FORMAT_INSTRUCTION}", "classification"
        prompts.append((picture, prompt, kind, view))
    completions = answering.generate([(picture, prompt) for picture, prompt, _, _ in prompts], max_new_tokens,
                                     base=base)
    results = []
    for (picture, prompt, kind, view), completion in zip(prompts, completions):
        size = picture.size
        sol = {**frame_solution(size, family, view.input), "boxes": []}  # no truth: only the parsing matters
        parsed = parsed_view("detection", completion, sol)  # boxes in pixels, when the answer holds any
        if kind == "classification":
            parsed["label"] = parsed_view("classification", completion, sol)["label"]
        results.append({"prompt": prompt, "completion": completion, "family": family, "image_size": list(size),
                        "view": view.to_json(), "checkpoint": used,
                        **{k: parsed[k] for k in ("think", "answer", "format_ok", "boxes", "confidences", "label")
                           if k in parsed}})
    return results


def answer_request(ws: Workspace, request: dict) -> list[dict]:
    """A Test-tab request's answers: for each image, the run's tuned answer and (with "compare") its base
    model's, asked the same way from the same loaded model; or a base model's alone. Each answer is
    `predict`'s dict with "image" (the image's index) and "source" ("run 3 (best, step 40)", "base")."""
    category, question = (request.get("category") or "").strip(), (request.get("question") or "").strip()
    ask = {"category": category or None, "question": None if category else question or None}
    run_id, checkpoint = request.get("run_id"), request.get("checkpoint", "best")
    if run_id is not None:
        sources = [(f"run {run_id}", {"run_id": int(run_id), "checkpoint": checkpoint})]
        if request.get("compare"):
            sources.append(("base", {"run_id": int(run_id), "base": True, "checkpoint": checkpoint}))
    else:
        sources = [("base", {"model": request["model"].strip()})]
    answers = []
    for index, image in enumerate(request["images"]):
        for name, source in sources:
            result = predict(ws, ws.data_dir / image, **source, **ask)
            used = result.get("checkpoint")
            answers.append({**result, "image": index,
                            "source": f"{name} ({used['which']}, step {used['step']})" if used else name})
    return answers


def evaluate_run(ws: Workspace, run_id: int, checkpoint: str = "best", split: str | None = None) -> dict:
    """The run's adapter on its dataset's held-out split (val, else test; or the `split` named), the split named in
    the result."""
    from backend.engine import heldout
    run = get_run(ws.store, run_id)
    dataset = get_dataset(ws.store, dataset_name(ws.store, run))
    if split is None:
        split, val = heldout_split(dataset)
    else:
        val = [s for s in dataset["samples"] if s["split"] == split]
    if not val:
        raise ValueError(f"dataset '{dataset['name']}' has no held-out images" + (f" in '{split}'" if split else ""))
    answering = _run_answering(ws, run_id, checkpoint=checkpoint)
    settings = TrainSettings.from_dict(run.settings)
    return {**heldout.evaluate(answering.loaded, ws.data_dir, dataset, val, settings.task_settings(),
                               settings.max_completion_length, settings.eval_max_examples,
                               generate_fn=answering.generate, novel=settings.novel_classes), "split": split}


def export(ws: Workspace, run_id: int, out: Path, merged: bool = False, checkpoint: str = "best") -> Path:
    """The run's best (or last) adapter as saved, or merged into the full-precision base (never a 4-bit one:
    merging into quantised weights gives wrong weights)."""
    source = adapter_dir(ws, run_id, checkpoint)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty")
    if not merged:
        return copy_adapter(source, out)
    from backend.engine.models import load
    run = get_run(ws.store, run_id)
    settings = TrainSettings.from_dict(run.settings)
    loaded = load(run.model, adapter=str(source), qlora=False, min_pixels=settings.min_pixels,
                  max_pixels=settings.max_pixels)  # the saved processor keeps the run's image limits
    model = loaded.model.merge_and_unload()
    model.save_pretrained(out)
    loaded.processor.save_pretrained(out)
    marker = Path(loaded.model.peft_config["default"].base_model_name_or_path or "") / "vrft_family.json"
    if marker.is_file():
        shutil.copy(marker, out / marker.name)
    return out
