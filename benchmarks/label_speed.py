"""Labelling speed on the CPU demo: images per minute through the app's labelling paths against the model's bare
`generate` on the same images and prompts. Run by hand:

    .venv/bin/python benchmarks/label_speed.py [--images 1000] [--classes "red circle"] [--paths cli,job,bare1,bare]

The app's paths: `python app.py label` (backend.jobs.labelling.label_paths) and a labelling job as the worker's
answerer runs it (backend.jobs.label_queue.work: BATCH images a batched generate, each answer written to the
database). The bare model: the demo loaded once, `generate` greedy with the same prompts and max_new_tokens, one
prompt a call and as many as the app batches. Prints one line per path and a final JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.data.demo.shapes import make_scene  # noqa: E402
from backend.data.workspace import open_workspace  # noqa: E402
from backend.jobs import label_queue  # noqa: E402
from backend.jobs.labelling import BATCH, Source, label_paths  # noqa: E402

MAX_NEW_TOKENS = 256
"""What predict() gives a base model (a run gives its max_completion_length)."""


def per_minute(n: int, seconds: float) -> float:
    return round(60 * n / seconds, 1)


def bare(folder: Path, classes: list[str], batch: int) -> tuple[float, list[str]]:
    """The demo's own generate on every (image, class) prompt, `batch` prompts a call; (seconds, completions)."""
    from PIL import Image

    from backend.engine.inference import generate
    from backend.engine.models import load
    from backend.scoring.tasks import detection_prompt
    loaded = load("demo")
    items = []
    for path in sorted(folder.glob("*.png")):
        picture = Image.open(path).convert("RGB")
        view = loaded.view(picture.size)
        items += [(picture, detection_prompt(c, loaded.family.name, picture.size, view.input)) for c in classes]
    generate(loaded, items[:1], max_new_tokens=MAX_NEW_TOKENS)  # warm, as the app's answerer is
    start = time.perf_counter()
    out = generate(loaded, items, max_new_tokens=MAX_NEW_TOKENS, batch_size=batch)
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--classes", default="red circle")
    p.add_argument("--paths", default="cli,job,bare1,bare",
                   help="which to time: cli (`label`), job (the answerer's), bare1 (generate, one prompt a call), "
                        "bare (generate, as many prompts a call as the app batches)")
    args = p.parse_args()
    paths = set(args.paths.split(","))
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="vrft-label-"))
    folder = tmp / "unlabelled"
    folder.mkdir()
    for i in range(args.images):
        make_scene(100_000 + i).image.save(folder / f"img{i:05d}.png")
    ws = open_workspace(tmp / "data")
    source = Source(model="demo", classes=classes)
    results = {"images": args.images, "classes": classes}

    label_paths(ws, [folder / "img00000.png"], source)  # the model loaded once, as a warm answerer has it
    if "cli" in paths:
        start = time.perf_counter()
        cli = label_paths(ws, [folder], source)
        results["app_label_cli"] = per_minute(args.images, time.perf_counter() - start)
        results["boxes_found"] = sum(len(i["boxes"]) for i in cli["images"])
        print(f"app, `label`: {results['app_label_cli']} images/min", flush=True)
    if "job" in paths:
        job_id = label_queue.submit(ws, source, [folder])
        assert label_queue.claim(ws, "bench", None) == job_id
        start = time.perf_counter()
        label_queue.work(ws, job_id, "bench")
        results["app_label_job"] = per_minute(args.images, time.perf_counter() - start)
        print(f"app, a labelling job as the answerer runs it: {results['app_label_job']} images/min", flush=True)
    batches = [b for b, name in ((1, "bare1"), (BATCH * len(classes), "bare")) if name in paths]
    for batch in batches:
        seconds, _ = bare(folder, classes, batch)
        results[f"bare_generate_batch_{batch}"] = per_minute(args.images, seconds)
        print(f"bare generate, {batch} prompt(s) a call: {results[f'bare_generate_batch_{batch}']} images/min",
              flush=True)
    same = results.get(f"bare_generate_batch_{BATCH * len(classes)}")
    if same and "app_label_job" in results:
        results["app_job_vs_bare_same_batch"] = round(results["app_label_job"] / same, 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
