"""GPU smoke test and benchmark: Qwen2.5-VL-3B/7B-shaped models trained by the app's own worker.

Needs one CUDA GPU and no download. Random-weight models with the published shapes of
Qwen/Qwen2.5-VL-3B-Instruct and -7B-Instruct are built in bf16 on the GPU and saved with a processor
laid out like the published checkpoint (its preprocessor_config.json; the tokenizer is the project's
own locally trained one, as the demo and test models use, since no hub is reachable). Ten 1024x768
photo-like JPEGs with COCO boxes are imported through the app's importer into a temporary data dir,
a run is created with the app's own code per configuration and trained for --steps steps by
`python app.py --data-dir D worker --once`:

    3B and 7B x {QLoRA + HF generate, LoRA (bf16) + HF generate, LoRA + HF compiled (static cache,
    compile_generation), LoRA + vLLM colocated (when vLLM is installed)}, G 8, 256 new tokens; what the
    run plan's `auto` picks for this card is printed beside them.

Per configuration one line: peak GPU memory (nvidia-smi memory.used sampled every 0.5 s, less what
was in use before the worker started), s/step (median of the job's step_time metric, step 1 left
out: it warms caches) and completion tokens/s (TRL's completions/mean_length x G x prompts per step
/ step_time over the same steps). The last line is one JSON object: {"configs": [...]}.

A random model rarely samples its end token, so completions run to the full 256 tokens: the
worst case for memory and time. Most sampled ids lie beyond the small tokenizer and decode to
nothing; rewards are zero, which does not change the cost of a step.

    .venv/bin/python benchmarks/gpu.py [--steps 3] [--models 3B,7B] [--keep]
    .venv/bin/python benchmarks/gpu.py --dry-run   # on a CPU: tiny models, dataset import, runs created, no training
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Published shapes (config.json of each checkpoint); the vision tower is the same in both.
SHAPES: dict[str, dict] = {
    "3B": dict(published="Qwen/Qwen2.5-VL-3B-Instruct", vocab_size=151936, hidden_size=2048,
               intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
               max_window_layers=70, tie_word_embeddings=True),
    "7B": dict(published="Qwen/Qwen2.5-VL-7B-Instruct", vocab_size=152064, hidden_size=3584,
               intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               max_window_layers=28, tie_word_embeddings=False),
}
TEXT_COMMON = dict(hidden_act="silu", max_position_embeddings=128000, rms_norm_eps=1e-6, sliding_window=32768,
                   use_sliding_window=False, attention_dropout=0.0,
                   rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
VISION = dict(depth=32, hidden_act="silu", hidden_size=1280, intermediate_size=3420, num_heads=16, in_channels=3,
              patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
              fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
# --dry-run: the same config code with small sizes (head_dim stays 128 = 2 x sum(mrope_section)).
TINY_TEXT = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, max_window_layers=2)
TINY_VISION = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, fullatt_block_indexes=[1])

VARIANTS = [  # (label, quant, backend, compile_generation)
    ("QLoRA + HF", "nf4", "hf", False),
    ("LoRA + HF", "bf16", "hf", False),
    ("LoRA + HF compiled", "bf16", "hf", True),
    ("LoRA + vLLM", "bf16", "vllm", False),
]
PRESET = "Visual-RFT paper"
CATEGORIES = ["person", "car", "dog", "bicycle"]
IMAGE_SIZE = (1024, 768)
N_IMAGES = 10
DATASET = "gpu-bench"
MEAN_LENGTH = "completions/mean_length"
"""TRL GRPOTrainer's metric: mean completion length (tokens) of the step's completions."""


class BenchError(Exception):
    """A reason to stop, printed as one sentence."""


# ---------------------------------------------------------------- models


def model_config(shape: str, tok, tiny: bool = False):
    """transformers' Qwen2_5_VLConfig with the published sizes of `shape` (small ones with `tiny`)."""
    import transformers

    from backend.engine.demo.builder import _token_ids
    s = SHAPES[shape]
    text = dict(TEXT_COMMON, vocab_size=s["vocab_size"], hidden_size=s["hidden_size"],
                intermediate_size=s["intermediate_size"], num_hidden_layers=s["num_hidden_layers"],
                num_attention_heads=s["num_attention_heads"], num_key_value_heads=s["num_key_value_heads"],
                max_window_layers=s["max_window_layers"], bos_token_id=None, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(VISION)
    if tiny:
        text.update(TINY_TEXT)
        vision.update(TINY_VISION)
    vision["out_hidden_size"] = text["hidden_size"]
    return transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                         tie_word_embeddings=s["tie_word_embeddings"], **_token_ids(tok))


def write_processor(out: Path, tok) -> None:
    """The project's tokenizer + Qwen2.5-VL processor, laid out like the published checkpoint."""
    from backend.engine.demo.builder import publish_layout, tiny_processor
    tiny_processor("qwen2_5_vl", tok, 3136, 12845056).save_pretrained(out)
    publish_layout(out, "qwen2_5_vl")


def build_model(shape: str, out: str, tiny: bool, device: str) -> None:
    """A random-weight bf16 model of `shape` plus its processor, saved to `out`."""
    import torch
    import transformers

    from backend.engine.demo.examples import corpus
    from backend.engine.demo.tokenizer import train_tokenizer
    torch.manual_seed(0)
    tok = train_tokenizer(corpus())
    config = model_config(shape, tok, tiny)
    with torch.device(device):
        model = transformers.Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    write_processor(out_dir, tok)
    n = sum(p.numel() for p in model.parameters())
    (out_dir / "bench_params.txt").write_text(str(n))


def build(shape: str, out: Path, tiny: bool) -> float:
    """Build in this process on a CPU (--dry-run), else in a spawned child so that this process
    never holds GPU memory; returns the parameter count in billions."""
    if tiny:
        build_model(shape, str(out), True, "cpu")
    else:
        import multiprocessing
        child = multiprocessing.get_context("spawn").Process(target=build_model, args=(shape, str(out), False, "cuda"))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise BenchError(f"building the {shape} model failed (exit status {child.exitcode}, see above)")
    return int((out / "bench_params.txt").read_text()) / 1e9


def check_processor(folder: Path) -> str:
    """How many visual tokens a 1024x768 image becomes at the checkpoint's own limits and at the app's
    (the family's, which the app applies), both from the processor itself."""
    import transformers

    from backend.engine.model_input import image_view
    from backend.engine.models import load_processor
    shipped = transformers.AutoProcessor.from_pretrained(str(folder))
    applied, family = load_processor(str(folder))
    ip = shipped.image_processor
    return (f"{type(shipped).__name__} ({type(ip).__name__}, patch {ip.patch_size}, merge {ip.merge_size}, "
            f"pixels {ip.size['shortest_edge']}..{ip.size['longest_edge']}): a {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} image "
            f"is {image_view(shipped, family.name, IMAGE_SIZE).visual_tokens} visual tokens, "
            f"{image_view(applied, family.name, IMAGE_SIZE).visual_tokens} at the app's "
            f"{family.min_pixels}..{family.max_pixels}")


# ---------------------------------------------------------------- dataset


def photo(rng: random.Random, seed: int):
    """A photo-like image (smooth coloured light, luminance texture, shaded objects, sensor noise) and
    its boxes as [x, y, w, h, category]."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter
    w, h = IMAGE_SIZE
    nrng = np.random.default_rng(seed)

    def smooth(cells: tuple[int, int], channels: int, lo: float, hi: float) -> np.ndarray:
        small = nrng.uniform(lo, hi, (cells[1], cells[0], channels)).astype(np.uint8).squeeze()
        big = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float32)
        return big if channels == 3 else big[:, :, None]

    def texture() -> np.ndarray:  # grey detail at two scales, zero mean
        return (smooth((48, 36), 1, 0, 255) - 127.5) * 0.25 + (smooth((160, 120), 1, 0, 255) - 127.5) * 0.1

    img = smooth((3, 2), 3, 50, 190) + texture()
    img *= 0.75 + 0.45 * np.linspace(0, 1, h, dtype=np.float32)[:, None, None]  # light from above
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    boxes = []
    for _ in range(rng.randint(1, 3)):
        bw, bh = rng.randint(w // 8, w // 3), rng.randint(h // 8, h // 3)
        x1, y1 = rng.randint(0, w - bw - 1), rng.randint(0, h - bh - 1)
        shade = np.linspace(1.15, 0.7, bh, dtype=np.float32)[:, None, None]
        body = (nrng.uniform(20, 235, 3) + texture()[y1:y1 + bh, x1:x1 + bw]) * shade
        mask = Image.new("L", (bw, bh), 0)
        draw = ImageDraw.Draw(mask)
        (draw.ellipse if rng.random() < 0.5 else draw.rounded_rectangle)([0, 0, bw - 1, bh - 1], fill=255)
        im.paste(Image.fromarray(np.clip(body, 0, 255).astype(np.uint8)), (x1, y1), mask)
        boxes.append([x1, y1, bw, bh, rng.choice(CATEGORIES)])
    im = im.filter(ImageFilter.GaussianBlur(0.8))
    noisy = np.asarray(im, dtype=np.float32) + nrng.normal(0, 4, (h, w, 1)) + nrng.normal(0, 2, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), boxes


def write_dataset(folder: Path, n: int = N_IMAGES, seed: int = 0) -> list[Path]:
    """n JPEGs and a COCO instances.json; returns the files to upload."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images, anns, files = [], [], []
    for i in range(n):
        im, boxes = photo(rng, seed * 1000 + i)
        path = folder / f"photo_{i:03d}.jpg"
        im.save(path, "JPEG", quality=90)
        files.append(path)
        images.append({"id": i + 1, "file_name": path.name, "width": im.width, "height": im.height})
        for x, y, bw, bh, label in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": CATEGORIES.index(label) + 1,
                         "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": i + 1, "name": c, "supercategory": "thing"} for i, c in enumerate(CATEGORIES)]}
    ann = folder / "instances.json"
    ann.write_text(json.dumps(coco))
    return files + [ann]


def import_photos(ws, folder: Path) -> str:
    from backend.data.catalog import get_dataset
    from backend.data.importer import import_dataset
    files = write_dataset(folder)
    # No held-out split: the job then skips its before/after evaluation and only trains.
    import_dataset(ws.store, ws.data_dir, files, DATASET, task="detection", fmt="coco", val_fraction=0.0)
    info = get_dataset(ws.store, DATASET, with_samples=False)
    c = info["counts"]
    return (f"dataset {DATASET}: {c['total']} images ({c['train']} train), "
            f"{sum(n['train'] for n in info['per_class'].values())} boxes in {len(info['classes'])} classes")


# ---------------------------------------------------------------- runs


def vllm_problem() -> str | None:
    """Why the vLLM variant is skipped, or None when vLLM is installed."""
    from backend.engine.gpus import installed
    if not installed("vllm"):
        return "vLLM is not installed (pip install -r requirements.txt -r requirements-gpu.txt)"
    return None


def bench_settings(args, quant: str = "nf4", backend: str = "hf", compiled: bool = False):
    from backend.engine.settings import preset
    settings = preset(PRESET, max_steps=args.steps, num_generations=args.generations, save_steps=max(args.steps, 50))
    settings.max_completion_length = args.max_new_tokens
    if args.prompts_per_step:
        settings.prompts_per_step = args.prompts_per_step
    settings.qlora, settings.generation_backend, settings.compile_generation = quant == "nf4", backend, compiled
    return settings


def create(ws, model_dir: Path, quant: str, backend: str, compiled: bool, args) -> int:
    from backend.jobs.runs import create_run
    return create_run(ws.store, DATASET, str(model_dir), bench_settings(args, quant, backend, compiled))


def auto_plan(shape: str, args, gpu_gib: float | None) -> str:
    """What `auto` (qlora and generation backend left open) would run this shape as on this card."""
    from backend.engine.run_plan import plan_run
    settings = bench_settings(args)
    settings.qlora, settings.generation_backend = None, "auto"
    return plan_run(settings, SHAPES[shape]["published"], cuda=True, vllm_installed=vllm_problem() is None,
                    gpu_gib=gpu_gib, image_size=IMAGE_SIZE).describe()


class MemorySampler(threading.Thread):
    """Peak of nvidia-smi's memory.used (MiB) on one GPU, sampled every `interval` seconds."""

    def __init__(self, gpu: str, interval: float = 0.5):
        super().__init__(daemon=True)
        self.gpu, self.interval, self.peak, self.done = gpu, interval, 0.0, threading.Event()

    def sample(self) -> float:
        out = subprocess.run(["nvidia-smi", f"--id={self.gpu}", "--query-gpu=memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
        try:
            return float(out.stdout.split()[0])
        except (IndexError, ValueError):
            return 0.0

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.sample())
            self.done.wait(self.interval)

    def stop(self) -> float:
        self.done.set()
        self.join()
        return max(self.peak, self.sample())


def run_worker(ws, run_id: int, log: Path, gpu: str, timeout: float) -> float:
    """`app.py worker --once` until the queue is empty; returns peak GPU MiB above the idle level."""
    sampler = MemorySampler(gpu)
    idle = sampler.sample()
    sampler.start()
    cmd = [sys.executable, str(ROOT / "app.py"), "--data-dir", str(ws.data_dir), "worker", "--once"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            from backend.jobs.runs import cancel_run
            _stop(proc, ws.data_dir / "runs" / str(run_id))
            sampler.stop()
            cancel_run(ws.store, run_id)  # so the next configuration's worker does not pick it up again
            raise BenchError(f"run {run_id} did not finish within {timeout:.0f} s (log: {log})") from None
    return max(0.0, sampler.stop() - idle)


def _stop(proc: subprocess.Popen, run_dir: Path) -> None:
    """Stop the worker we started and the job it started (each leads its own process group)."""
    from backend.jobs.job_records import job_pid
    pids = [proc.pid]
    if job_pid(run_dir) is not None:
        pids.append(job_pid(run_dir))
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()


def measure(ws, run_id: int, generations: int) -> dict:
    """s/step and completion tokens/s from the run's stored metrics, step 1 left out."""
    from backend.jobs.run_history import metrics, run_json
    run = run_json(ws.store, run_id, with_metrics=False)
    if run["status"] != "completed":
        raise BenchError(f"run {run_id} ended {run['status']}: {run['error'] or 'no error stored'}")
    m = metrics(ws.store, run_id)
    times = {int(s): v for s, v in m.get("step_time", [])}
    lengths = {int(s): v for s, v in m.get(MEAN_LENGTH, [])}
    steps = [s for s in sorted(times) if s > 1] or sorted(times)
    if not steps:
        raise BenchError(f"run {run_id} stored no step_time metric")
    per_step = generations * run["settings"]["prompts_per_step"]
    timed = [s for s in steps if s in lengths]
    return {"s_per_step": round(statistics.median(times[s] for s in steps), 3),
            "tokens_per_s": round(sum(lengths[s] * per_step for s in timed) / sum(times[s] for s in timed), 1)
            if timed else None}


# ---------------------------------------------------------------- main


def cuda_problem() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA driver was found (nvidia-smi is not on PATH)"
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # ask NVML: no CUDA context in this process
    import torch
    if not torch.cuda.is_available():
        return "PyTorch sees no CUDA device"
    return None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="GPU smoke test and benchmark: Qwen2.5-VL-3B/7B-shaped random models "
                                "trained for a few GRPO steps by the app's own worker; prints peak GPU memory, "
                                "s/step and completion tokens/s per configuration, then one JSON line.")
    p.add_argument("--steps", type=int, default=3, help="training steps per configuration (>= 2; step 1 is not timed)")
    p.add_argument("--models", default="3B,7B", help="comma-separated shapes to measure (default 3B,7B)")
    p.add_argument("--generations", type=int, default=8, help="completions per prompt, G (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="completion length cap (default 256)")
    p.add_argument("--prompts-per-step", type=int, help=f"prompts per step (default: the '{PRESET}' preset's)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds one configuration may take (default 1800)")
    p.add_argument("--work-dir", help="where models, images and the data dir go (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the work dir and models (default: models removed after "
                   "use, the rest when all went well)")
    p.add_argument("--dry-run", action="store_true", help="on a CPU: tiny models of the same configs, processor "
                   "layout, dataset writing and import, runs created; the worker is not started")
    args = p.parse_args(argv)
    shapes = [s.strip().upper() for s in args.models.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        p.error(f"--models takes a comma-separated list of {', '.join(SHAPES)}")
    if args.steps < 2:
        p.error("--steps must be at least 2: step 1 warms up and is left out of the timing")
    if args.generations < 2:
        p.error("--generations must be at least 2")
    args.shapes = shapes
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.dry_run:
        problem = cuda_problem()
        if problem:
            print(f"benchmarks/gpu.py needs a CUDA GPU and {problem}; `--dry-run` checks everything but "
                  "the training on a CPU.", file=sys.stderr)
            return 1
    try:
        return bench(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def bench(args) -> int:
    from backend.data.workspace import open_workspace
    started = time.time()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vrft-gpu-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    gpu = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip()
    card_gib = None
    if not args.dry_run:
        name = subprocess.run(["nvidia-smi", f"--id={gpu}", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip()
        print(f"GPU {gpu}: {name}")
        from backend.engine.preflight import gpu_gib
        card_gib = gpu_gib()
    dry = " (dry run: tiny models on the CPU, runs created but not started)" if args.dry_run else ""
    print(f"work dir: {work}{dry}")
    ws = open_workspace(work / "data")
    print(import_photos(ws, work / "photos"))
    skipped = vllm_problem()
    if skipped:
        print(f"LoRA + vLLM: skipped: {skipped}")
    variants = [v for v in VARIANTS if not (skipped and v[2] == "vllm")]
    results, failed = [], False
    for shape in args.shapes:
        model_dir = work / "models" / f"qwen2.5-vl-{shape.lower()}{'-tiny' if args.dry_run else ''}"
        t = time.time()
        try:
            params = build(shape, model_dir, args.dry_run)
        except BenchError as e:
            print(f"{shape}: {e}")
            results += [entry(shape, v, args, error=str(e)) for v in variants]
            failed = True
            continue
        print(f"{shape}: built {params:.2f}B parameters ({SHAPES[shape]['published']} shapes"
              f"{', tiny sizes' if args.dry_run else ''}) in {time.time() - t:.0f} s; {check_processor(model_dir)}")
        print(f"{shape}: auto plans {auto_plan(shape, args, card_gib)} on this card")
        for variant in variants:
            name, quant, backend, compiled = variant
            label = f"{shape} {name:<18} G={args.generations}"
            try:
                run_id = create(ws, model_dir, quant, backend, compiled, args)
            except ValueError as e:  # what this machine cannot run (compiled generation on a CPU dry run)
                print(f"{label}: not created: {e}")
                results.append(entry(shape, variant, args, error=str(e)))
                failed = failed or not args.dry_run
                continue
            if args.dry_run:
                print(f"{label}: run {run_id} created, queued (dry run: the worker is not started)")
                results.append(entry(shape, variant, args))
                continue
            log = work / f"worker-run{run_id}.log"
            try:
                peak = run_worker(ws, run_id, log, gpu, args.timeout)
                m = measure(ws, run_id, args.generations)
            except BenchError as e:
                print(f"{label}: failed: {e} (log: {log})")
                results.append(entry(shape, variant, args, error=str(e)))
                failed = True
                continue
            gib = round(peak / 1024, 2)
            tps = (f"{m['tokens_per_s']:.0f} completion tokens/s" if m["tokens_per_s"] is not None
                   else f"no {MEAN_LENGTH} metric")
            print(f"{label}: peak {gib:.1f} GiB, {m['s_per_step']:.2f} s/step, {tps} (run {run_id})", flush=True)
            results.append(entry(shape, variant, args, peak_gib=gib, **m))
        if not args.keep:
            shutil.rmtree(model_dir, ignore_errors=True)  # the next shape needs the disk
    if args.keep or failed:
        print(f"kept {work}" + (" (worker logs there)" if failed else ""))
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f"done in {time.time() - started:.0f} s")
    print(json.dumps({"configs": results}))
    return 1 if failed else 0


def entry(shape: str, variant: tuple, args, peak_gib=None, s_per_step=None, tokens_per_s=None,
          error: str | None = None) -> dict:
    name, quant, backend, compiled = variant
    out = {"model": shape, "quant": quant, "backend": backend, "G": args.generations, "peak_gib": peak_gib,
           "s_per_step": s_per_step, "tokens_per_s": tokens_per_s, "variant": name, "compiled": compiled,
           "new_tokens": args.max_new_tokens}
    if error:
        out["error"] = error
    return out


if __name__ == "__main__":
    sys.exit(main())
