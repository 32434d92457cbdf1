"""Evaluating a loaded model on a dataset's held-out split, with the reward code's parsing."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

from PIL import Image

from backend.engine.inference import generate
from backend.scoring.evaluation import scoped_metrics
from backend.scoring.tasks import Example, Size, TaskSettings, detection_prompt, frame_solution, get_task

ALL_CLASSES_UP_TO = 12
"""Detection prompts every class per held-out image up to this many classes (full mAP); beyond,
the classes present plus two absent ones."""


def heldout_examples(task: str, classes: list[str], synonyms: dict, samples: list[dict], family: str,
                     settings: TaskSettings, seed: int = 0,
                     input_size_of: Callable[[Size], Size] | None = None) -> list[tuple[dict, Example]]:
    """(sample, example) pairs; `input_size_of(original size)` is what the model's processor resizes to."""
    rng = random.Random(seed)
    out = []
    for s in samples:
        size = (s["width"], s["height"])
        input_size = input_size_of(size) if input_size_of else None
        if task != "detection":
            out += [(s, e) for e in get_task(task).build_examples(s, classes, family, settings, rng, synonyms=synonyms,
                                                                  input_size=input_size)]
            continue
        present = {b[4] for b in s["boxes"]}
        asked = classes if len(classes) <= ALL_CLASSES_UP_TO else sorted(present) + rng.sample(
            [c for c in classes if c not in present], min(2, len(classes) - len(present)))
        for c in asked:
            sol = {**frame_solution(size, family, input_size), "boxes": [b[:4] for b in s["boxes"] if b[4] == c]}
            out.append((s, Example(detection_prompt(c, family, size, input_size), sol, c)))
    return out


GenerateFn = Callable[[list[tuple[Image.Image, str]], int], list[str]]
"""(image, prompt) pairs and max new tokens -> greedy completions, in order."""


def evaluate(loaded, data_dir: Path, dataset: dict, samples: list[dict], settings: TaskSettings,
             max_new_tokens: int, max_examples: int = 300, seed: int = 0,
             generate_fn: GenerateFn | None = None, novel: list[str] | None = None) -> dict:
    """The task's held-out metrics (mAP / accuracy / mIoU, and format rate) for `samples`, with the base and the
    `novel` classes' apart when classes were held out of training. `generate_fn` replaces HF generate on `loaded`
    (the training job passes its vLLM engine's, or one sharing the prompts among its processes)."""
    return scoped_metrics(dataset["task"], records(loaded, data_dir, dataset, samples, settings, max_new_tokens,
                                                   max_examples, seed, generate_fn), novel)


def records(loaded, data_dir: Path, dataset: dict, samples: list[dict], settings: TaskSettings,
            max_new_tokens: int, max_examples: int = 300, seed: int = 0,
            generate_fn: GenerateFn | None = None) -> list[dict]:
    """The first `max_examples` held-out prompts with the model's greedy completions, as METRICS reads them:
    the same prompts in the same order every time, so a prefix is a fixed subset (the held-out curve's)."""
    pairs = heldout_examples(dataset["task"], dataset["classes"], dataset.get("synonyms", {}), samples,
                             loaded.family.name, settings, seed, lambda size: loaded.view(size).input)[:max_examples]
    images = {}
    items = []
    for s, e in pairs:
        if s["file"] not in images:
            with Image.open(Path(data_dir) / dataset["folder"] / "images" / s["file"]) as im:
                images[s["file"]] = im.convert("RGB")
        items.append((images[s["file"]], e.prompt))
    completions = (generate_fn(items, max_new_tokens) if generate_fn is not None
                   else generate(loaded, items, max_new_tokens=max_new_tokens))
    return [{"image_id": s["file"], "category": e.category, "solution": e.solution, "completion": c}
            for (s, e), c in zip(pairs, completions)]
