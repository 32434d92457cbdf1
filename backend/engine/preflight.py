"""The pre-flight check: before any GPU hour is spent, what the model will see of the user's images
(input size, coordinate frame, visual tokens, memory) and how the base model does on a few of them
zero-shot (every reward term, boxes drawn), with plain advice when GRPO would get no signal.

`python app.py models check MODEL [--dataset NAME] [--image PATH]... [--json]`; the Train tab's Check
button runs the same command in its own process, so the page never loads a model.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

from PIL import Image, ImageOps

from backend.data.catalog import get_dataset
from backend.data.config import ImportLimits
from backend.data.safety import probe_image
from backend.engine.dense_scenes import dense_advice, dense_scenes
from backend.engine.settings import TrainSettings
from backend.scoring.draw import PREDICTION, TRUTH, draw_boxes
from backend.scoring.families import get_family
from backend.scoring.rewards import NOT_THE_TASK, REWARDS
from backend.scoring.tasks import get_task

DEFAULT_SAMPLES = 8
SIGNAL_IMAGES = 8
"""Training images whose groups the signal check samples."""
SIGNAL_SECONDS = 60.0
"""The signal check stops sampling further groups after this long (a large model on a CPU); the output says how many
groups it sampled in that time."""
SIGNAL_SPREAD = 0.05
SIGNAL_BEST = 0.5
"""A group has signal in a reward when its completions' rewards differ by at least SIGNAL_SPREAD (highest - lowest,
on the reward's 0-1 scale) and its best completion earns at least SIGNAL_BEST: a hit by the task's own standard (IoU
0.5 is where a box counts as found; a right class scores 1). GRPO divides a group's advantages by its std, so a
group whose boxes differ only by chance overlap (0.02 against 0.3 on a large object) is pushed as hard as one with a
real hit: that is noise to learn from, not signal."""


def _upright(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def _images(dataset: dict | None, image_paths: list[Path]) -> list[tuple[str, tuple[int, int]]]:
    """(label, upright original size) of every image to report: the dataset's, then the given ones."""
    out = []
    if dataset is not None:
        out += [(f"{dataset['name']}/{s['file']}", (s["width"], s["height"])) for s in dataset["samples"]]
    limits = ImportLimits.from_env()
    for p in image_paths:
        if not Path(p).is_file():
            raise ValueError(f"image '{p}' does not exist or is not a file")
        probe_image(Path(p), limits, Path(p).name)
        out.append((str(p), _upright(Path(p)).size))
    return out


def memory_line(model: str, settings: TrainSettings, *, visual_tokens: int | None = None,
                image_size: tuple[int, int] | None = None) -> dict | None:
    """The training job's plan (weights, generation engine) and GPU memory estimate for the largest image (its
    visual tokens, or its size resized within the settings' max_pixels), against this machine's GPU when it has
    one (without one, as the job would run on a GPU of unknown size). None when the model's shape is unknown."""
    from backend.engine import memory
    from backend.engine.gpus import installed
    from backend.engine.memory_advice import advice
    from backend.engine.models import resolve_model
    from backend.engine.run_plan import plan_run
    gpu = gpu_gib()
    try:
        source = resolve_model(model)[0]
    except ValueError:
        return None
    plan = plan_run(settings, source, cuda=True, vllm_installed=gpu is not None and installed("vllm"),
                    gpu_gib=gpu, image_size=image_size, visual_tokens=visual_tokens)
    est = plan.estimate
    if est is None:  # no card: as the job would run with HF generate (vLLM's share needs the card's size)
        try:
            est = memory.estimate(memory.job_from_settings(settings, source, visual_tokens=visual_tokens,
                                                           image_size=image_size, generation="hf", qlora=plan.qlora))
        except ValueError:  # a model whose shape is unknown
            return None
    fits = None if gpu is None else est.fits(gpu)
    return {"total_gib": round(est.total_gib, 1), "parts_gib": est.parts(), "visual_tokens": est.job.visual_tokens,
            "gpu_gib": gpu, "fits": fits, "advice": advice(est, gpu) if fits is False else [],
            "plan": plan.describe(), "summary": est.summary()}


def launch_check(ws, dataset_name: str, model: str, settings: TrainSettings) -> dict | None:
    """Before a run is queued: the estimate with the dataset's largest image. Raises ValueError (the
    reasons and what would make it fit) when it will not fit this machine's GPU, or when a setting is out of its
    range (check_values: the settings are read before anything is estimated from them)."""
    from backend.engine.run_plan import largest_image
    from backend.engine.settings import check_values
    check_values(settings)
    info = get_dataset(ws.store, dataset_name)
    if not info["samples"]:
        return None
    line = memory_line(model, settings, image_size=largest_image(info))
    if line and line["fits"] is False:
        raise ValueError(f"this run needs about {line['total_gib']} GiB of GPU memory and the GPU has "
                         f"{line['gpu_gib']} GiB. " + " ".join(line["advice"]))
    return line


def gpu_gib() -> float | None:
    """Memory of the first visible GPU, read through nvidia-smi (no CUDA initialised here); None without one."""
    import shutil
    import subprocess
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.split()
        return round(float(out[0]) / 1024, 1)
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def baseline(ws, loaded, dataset: dict, samples: int, max_new_tokens: int, out_dir: Path) -> dict:
    """The base model zero-shot on `samples` training images: completions, parsed boxes in original
    pixels, every reward term, a picture per sample (truth green, prediction red), and the means."""
    from backend.engine.inference import generate
    from backend.scoring.playground import parsed_view
    task = get_task(dataset["task"])
    rows, items = [], []
    rng = random.Random(0)
    train = [s for s in dataset["samples"] if s["split"] == "train"][:samples]
    for s in train:
        size = (s["width"], s["height"])
        ex = task.build_examples(s, dataset["classes"], loaded.family.name, TrainSettings().task_settings(), rng,
                                 synonyms=dataset.get("synonyms", {}), input_size=loaded.view(size).input)[0]
        picture = Image.open(Path(ws.data_dir) / dataset["folder"] / "images" / s["file"]).convert("RGB")
        rows.append((s, ex, picture))
        items.append((picture, ex.prompt))
    completions = generate(loaded, items, max_new_tokens=max_new_tokens, batch_size=4)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for (s, ex, picture), text in zip(rows, completions):
        rewards = {n: REWARDS[n]([text], solution=[ex.solution])[0] for n in task.default_rewards}
        parsed = parsed_view(dataset["task"], text, ex.solution)
        truth = ex.solution.get("boxes") or ([ex.solution["box"]] if "box" in ex.solution else [])
        path = out_dir / f"{Path(s['file']).stem}.png"
        draw_boxes(picture, [(truth, TRUTH), (parsed.get("boxes", []), PREDICTION)]).save(path)
        results.append({"image": s["file"], "prompt": ex.prompt, "completion": text, "category": ex.category,
                        "boxes": parsed.get("boxes", []), "label": parsed.get("label"),
                        "format_ok": parsed["format_ok"], "rewards": rewards, "picture": str(path)})
    means = {n: round(sum(r["rewards"][n] for r in results) / len(results), 4) for n in task.default_rewards}
    return {"samples": results, "means": means,
            "format_rate": round(sum(r["format_ok"] for r in results) / len(results), 4)}


def signal(ws, loaded, dataset: dict, settings: TrainSettings, images: int = SIGNAL_IMAGES,
           seconds: float = SIGNAL_SECONDS) -> tuple[dict, dict]:
    """What GRPO would learn from at its first steps: for `images` of the run's own training images (its shots, base
    classes only), the run's G completions sampled at its temperature and top_p from the starting model, scored with
    the run's rewards. Returns ({reward: {"mean", "groups_with_signal" (the share of groups that vary: has_signal),
    "groups_varied"}}, {how it was sampled: groups, asked, G, temperature, seconds, the share of groups whose weighted
    total differs, the format rate}). Sampling stops after `seconds`."""
    import torch

    from backend.engine.inference import generate
    from backend.scoring.subsets import training_samples
    task = get_task(dataset["task"])
    names = settings.rewards or list(task.default_rewards)
    weights = dict(zip(names, settings.reward_weights or [1.0] * len(names)))
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    # The run's own training images and prompts: its shots drawn with its seed, novel classes never asked about.
    train = training_samples(dataset["samples"], dataset["task"], settings.shots, settings.novel_classes, settings.seed)
    classes = [c for c in dataset["classes"] if c not in settings.novel_classes]  # as the job's train_rows
    chosen = random.Random(settings.seed).sample(train, min(images, len(train)))
    G, started = settings.num_generations, time.time()
    groups = []
    for s in chosen:
        if groups and time.time() - started > seconds:
            break
        ex = task.build_examples(s, classes, loaded.family.name, settings.task_settings(), rng,
                                 synonyms=dataset.get("synonyms", {}),
                                 input_size=loaded.view((s["width"], s["height"])).input)[0]
        with Image.open(Path(ws.data_dir) / dataset["folder"] / "images" / s["file"]) as im:
            picture = im.convert("RGB")
        texts = generate(loaded, [(picture, ex.prompt)] * G, max_new_tokens=settings.max_completion_length,
                         batch_size=G, do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
        scores = {n: REWARDS[n](texts, solution=[ex.solution] * G) for n in names}
        scores = {n: v for n, v in scores.items() if all(x is not None for x in v)}  # rewards of this task
        groups.append(scores)
    applied = [n for n in names if groups and all(n in g for g in groups)]
    out = {}
    for n in applied:
        varied = sum(has_signal(g[n]) for g in groups)
        out[n] = {"mean": round(sum(sum(g[n]) for g in groups) / (G * len(groups)), 4),
                  "groups_with_signal": round(varied / len(groups), 4), "groups_varied": varied}
    totals = [[sum(weights.get(n, 1.0) * g[n][i] for n in applied) for i in range(G)] for g in groups]
    total_varied = sum(max(t) - min(t) >= SIGNAL_SPREAD for t in totals)
    return out, {"groups": len(groups), "asked": len(chosen), "num_generations": G, "temperature": settings.temperature,
                 "seconds": round(time.time() - started, 1), "bound_seconds": seconds,
                 "total_groups_with_signal": round(total_varied / max(1, len(groups)), 4),
                 "format_rate": out.get("format", {}).get("mean")}


def has_signal(rewards: list[float]) -> bool:
    """Whether a group's rewards (of one function) give GRPO something to learn from (SIGNAL_SPREAD, SIGNAL_BEST)."""
    return max(rewards) - min(rewards) >= SIGNAL_SPREAD and max(rewards) >= SIGNAL_BEST


def ready(result: dict) -> bool:
    """Whether GRPO has something to learn from: some task reward (not format, nor detection_confidence, which a model
    that finds nothing earns too: NOT_THE_TASK) varies within at least one group, and some completion is in the
    answer format. True where no signal check ran (an SFT run, --no-baseline, --signal-images 0): readiness_line
    then says it was not checked."""
    if result.get("signal") is None:
        return True
    task_signal = any(v["groups_varied"] for n, v in result["signal"].items() if n not in NOT_THE_TASK)
    rate = result["signal_check"]["format_rate"]
    return task_signal and (rate is None or rate > 0)


def signal_sentences(result: dict) -> list[str]:
    """The signal check in words: per reward, in how many groups it varies, and what that means for GRPO."""
    if result.get("signal") is None:
        return []
    rewards, sig = result["signal"], result["signal_check"]
    k, G = sig["groups"], sig["num_generations"]
    bound = (f" (stopped at the {sig['bound_seconds']:.0f} s bound: {k} of {sig['asked']} images)"
             if k < sig["asked"] else "")
    lines = [f"Signal check: {G} completions sampled at temperature {sig['temperature']:g} for each of {k} training "
             f"images{bound}, {sig['seconds']:.0f} s."]
    for n, v in rewards.items():
        lines.append(f"{n} varies in {v['groups_varied']} of {k} groups (mean {v['mean']:.3f})")
    lines.append(f"(a group varies when its rewards differ by {SIGNAL_SPREAD:g} or more and its best completion earns "
                 f"{SIGNAL_BEST:g} or more)")
    task = [n for n, v in rewards.items() if n not in NOT_THE_TASK and v["groups_varied"]]
    if task:
        best = max(task, key=lambda n: rewards[n]["groups_varied"])
        lines.append(f"{best} varies in {rewards[best]['groups_varied']} of {k} groups: GRPO has something to learn "
                     "from.")
    return lines


def readiness_line(result: dict) -> str:
    """The check's last word: ready, not ready, or the signal not checked (and why)."""
    if result.get("signal") is None:
        return ("signal not checked (an SFT run, no baseline, or --signal-images 0): whether GRPO can learn the task "
                "from this start is not known")
    return ("ready: GRPO has a signal to learn the task from" if result["ready"] else
            "not ready: GRPO would not learn the task from this start (see the advice)")


def signal_advice(result: dict) -> list[str]:
    """Plain sentences when the signal check finds nothing for GRPO to learn the task from."""
    if result.get("signal") is None or ready(result):
        return []
    out = []
    sig = result["signal_check"]
    k = sig["groups"]
    if sig["format_rate"] == 0:
        out.append(f"No sampled completion of {k * sig['num_generations']} is in the "
                   "<think>…</think><answer>…</answer> format: GRPO gets no reward to learn from. Start from an "
                   "instruction-tuned checkpoint, or warm-start with SFT (--method sft, then a GRPO run with "
                   "--init-from RUN).")
    elif any(v["groups_varied"] for v in result["signal"].values()):
        varied = [n for n, v in result["signal"].items() if v["groups_varied"]]
        out.append(f"Only {' and '.join(varied)} var{'ies' if len(varied) == 1 else 'y'}: GRPO would teach "
                   f"{' and '.join(NOT_THE_TASK[n] for n in varied)}, not the task — start from a model trained for "
                   "it, warm-start with SFT (--method sft, then --init-from RUN), check the frame overlay (are the red "
                   "boxes near the objects, only shifted or scaled?), or raise G (num_generations).")
    else:
        out.append(f"No reward varies in any of the {k} groups: every completion of a group scores the same, so GRPO "
                   "has nothing to learn from. Warm-start with SFT, raise G or the temperature, or start from a model "
                   "trained for this task.")
    if result.get("demo_on_other_data"):
        out.append("The demo model only knows the synthetic shapes of demo-shapes (coloured circles, squares and "
                   "triangles): on these images it finds nothing. Choose a real checkpoint (`models list`).")
    return out


def advice(result: dict) -> list[str]:
    """Plain sentences for what would make GRPO fail or waste the card."""
    out = []
    base = result.get("baseline")
    if base:
        accuracy = [n for n in base["means"] if n != "format"]
        family = get_family(result["family"]) if result.get("family") else None
        if family and not family.trained_boxes and any(n.startswith(("detection", "grounding")) for n in accuracy):
            out.append(f"{family.name} was never trained to answer boxes; its boxes here are ours "
                       f"({family.convention.describe()} of the image as fed), so start with a short warm start "
                       "with --method sft on these images, then a GRPO run from it with --init-from RUN.")
        if base["format_rate"] == 0:
            out.append("The base model never answers in the expected <think>…</think><answer>…</answer> format: "
                       "GRPO will get no reward signal. Start from an instruction-tuned checkpoint, or warm-start "
                       "with SFT.")
        elif (result.get("signal") is None and accuracy
              and all(r["rewards"][n] == 0 for r in base["samples"] for n in accuracy)):  # the signal check says more
            out.append(f"Every sample scored 0 on {', '.join(accuracy)}: GRPO gets no signal from it. Check that "
                       "the drawn boxes sit near the objects; if they are shifted or scaled, the coordinate frame "
                       "does not match the model, otherwise warm-start with SFT or raise G.")
    mem = result.get("memory")
    if mem and mem.get("fits") is False:
        out += mem["advice"]
    return out + signal_advice(result) + dense_advice(result.get("dense"))


def check(ws, model: str, *, dataset_name: str | None = None, image_paths: list[Path] = (),
          min_pixels: int | None = None, max_pixels: int | None = None, samples: int = DEFAULT_SAMPLES,
          with_baseline: bool = True, settings: TrainSettings | None = None,
          signal_images: int = SIGNAL_IMAGES, start: Path | None = None) -> dict:
    """The whole check as one JSON-ready document (see the module docstring). `start`: the adapter a GRPO run would
    start from (--init-from's), which the baseline and the signal check load on the model."""
    from backend.engine.model_input import pixel_limits
    settings = settings or TrainSettings()
    dataset = get_dataset(ws.store, dataset_name) if dataset_name else None
    images = _images(dataset, list(image_paths))
    if not images:
        raise ValueError("give a dataset (--dataset) or at least one image (--image) to check")
    if with_baseline and dataset is None:
        raise ValueError("the zero-shot baseline needs a dataset (--dataset) with its annotations; "
                         "add --no-baseline to check image sizes only")
    if with_baseline:
        from backend.engine.models import load
        loaded = load(model, adapter=str(start) if start else None, min_pixels=min_pixels, max_pixels=max_pixels)
        processor, family = loaded.processor, loaded.family
    else:
        from backend.engine.models import load_processor
        processor, family = load_processor(model, min_pixels=min_pixels, max_pixels=max_pixels)
    from backend.engine.model_input import image_view
    views = [(label, image_view(processor, family.name, size)) for label, size in images]
    lo, hi = pixel_limits(processor)
    largest = max(v.visual_tokens for _, v in views)
    result = {"model": model, "family": family.name, "min_pixels": lo, "max_pixels": hi,
              "images": [{"path": label, **view.to_json()} for label, view in views],
              "largest_visual_tokens": largest,
              "memory": memory_line(model, settings, visual_tokens=largest), "baseline": None,
              "dense": None, "signal": None, "signal_check": None}
    if dataset is not None:  # the answer the densest image asks for, in this family's format and this tokenizer's tokens
        tokenizer = getattr(processor, "tokenizer", processor)
        result["dense"] = dense_scenes(dataset, family.name, lambda text: len(tokenizer(text)["input_ids"]),
                                       settings.max_completion_length,
                                       lambda size: image_view(processor, family.name, size).input)
    if with_baseline:
        out_dir = Path(ws.data_dir) / "checks" / time.strftime("%Y%m%d-%H%M%S")
        result["baseline"] = baseline(ws, loaded, dataset, samples, settings.max_completion_length, out_dir)
        if settings.method == "grpo" and signal_images > 0:
            result["signal"], result["signal_check"] = signal(ws, loaded, dataset, settings, signal_images)
            from backend.data.demo.dataset import DEMO_DATASET
            from backend.engine.models import DEMO_MODEL
            result["demo_on_other_data"] = model.strip() == DEMO_MODEL and dataset["name"] != DEMO_DATASET
    result["ready"] = ready(result)
    result["advice"] = advice(result)
    return result
