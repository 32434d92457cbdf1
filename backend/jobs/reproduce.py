"""Taking a run elsewhere: how to load and serve its exported adapter, and the run as a plain TRL script (its rows,
images, rewards, LoRA and GRPOConfig) that trains outside the app."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from pprint import pformat

from backend.data.catalog import get_dataset
from backend.data.workspace import Workspace
from backend.engine.settings import TrainSettings
from backend.jobs.runs import dataset_name, get_run

SCRIPT = "train_trl.py"
ROWS = "train_rows.jsonl"


def usage(model: str, out: Path, merged: bool) -> str:
    """How to load the export with transformers (and PEFT) and how to serve it with vLLM."""
    out = Path(out).resolve()
    if merged:
        return (f"Load it:   transformers.AutoModelForImageTextToText.from_pretrained('{out}'), "
                f"transformers.AutoProcessor.from_pretrained('{out}')\n"
                f"Serve it:  vllm serve {out}   (or any server that loads a transformers folder)")
    return (f"Load it:   model = transformers.AutoModelForImageTextToText.from_pretrained('{model}'); "
            f"model = peft.PeftModel.from_pretrained(model, '{out}'); "
            f"processor = transformers.AutoProcessor.from_pretrained('{out}')   (the run's image-size limits)\n"
            f"Serve it:  vllm serve {model} --enable-lora --max-lora-rank 64 --lora-modules tuned={out}   "
            f"(then ask for model 'tuned'; or export --merged for one folder)")


def write_trl_script(ws: Workspace, run_id: int, out: Path) -> Path:
    """`out/` (created) holding train_trl.py, the run's training rows (train_rows.jsonl, in the frame its model
    answers in), their images, and a copy of backend/scoring (the rewards, pure Python): `python train_trl.py`
    trains the run's GRPO setup with TRL alone. GRPO runs only (an SFT run's script would be SFTTrainer's)."""
    from backend.engine.models import load_processor, lora_config, resolve_model
    from backend.engine.grpo import grpo_config_kwargs
    from backend.engine.run_plan import RunPlan
    from backend.jobs.training import train_rows
    run = get_run(ws.store, run_id)
    settings = TrainSettings.from_dict(run.settings)
    if settings.method != "grpo":
        raise ValueError(f"run {run_id} was trained by {settings.method.upper()}; the TRL script is for GRPO runs")
    dataset = get_dataset(ws.store, dataset_name(ws.store, run))
    processor, family = load_processor(run.model, min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
    from backend.engine.model_input import input_size, pixel_limits
    rows = train_rows(dataset, ws.data_dir, family.name, settings, lambda size: input_size(processor, size))
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    with open(out / ROWS, "w") as f:
        for row in rows:
            image = Path(row["image"])
            if not (out / "images" / image.name).exists():
                shutil.copy2(image, out / "images" / image.name)
            f.write(json.dumps({"prompt": row["prompt"], "image": f"images/{image.name}", "solution": row["solution"],
                                "category": row["category"], "sample_id": row["sample_id"],
                                "prompt_text": row["prompt_text"], "image_rel": row["image_rel"]}) + "\n")
    package = Path(__file__).resolve().parents[1]  # backend/
    shutil.copytree(package / "scoring", out / "backend" / "scoring", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (out / "backend" / "__init__.py").write_text('"""The rewards Visual-RFT Studio trained with (backend/scoring)."""\n')
    config = grpo_config_kwargs(settings, Path("checkpoints/run"), "cuda", RunPlan("hf", False), vllm_available=False)
    config.update(output_dir="checkpoints", report_to=[])
    lora = lora_config(family, settings.lora_rank, settings.lora_alpha)
    lo, hi = pixel_limits(processor)
    source = resolve_model(run.model)[0]
    (out / SCRIPT).write_text(SCRIPT_TEMPLATE.format(
        run=run_id, model=run.model, dataset=dataset["name"], source=repr(source),
        model_class=family.model_class, min_pixels=lo, max_pixels=hi, rewards=repr(list(settings.rewards)),
        config=pformat(config, sort_dicts=False, width=110),
        lora=pformat({"r": lora.r, "lora_alpha": lora.lora_alpha, "lora_dropout": lora.lora_dropout,
                      "target_modules": lora.target_modules, "task_type": "CAUSAL_LM"}, sort_dicts=False, width=110)))
    return out / SCRIPT


SCRIPT_TEMPLATE = '''"""Run {run} of Visual-RFT Studio ({model} on {dataset}) as a plain TRL script: the same training rows
(train_rows.jsonl: prompts and truths in the frame the model answers in), rewards (backend/scoring, copied beside
this file), LoRA and GRPOConfig. Install the app's requirements.txt (the same pins) and run `python {script}`."""
import json
from pathlib import Path

import torch
import transformers
from datasets import Dataset, Image
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer

from backend.scoring.rewards import REWARDS

HERE = Path(__file__).resolve().parent
MODEL = {source}
MODEL_CLASS = "{model_class}"
MIN_PIXELS, MAX_PIXELS = {min_pixels}, {max_pixels}
"""The image-size limits the run trained with: prompts and rewards are in the frame they give."""
REWARD_NAMES = {rewards}
CONFIG = {config}
LORA = {lora}

cuda = torch.cuda.is_available()
if not cuda:  # the app's CPU settings
    CONFIG.update(use_cpu=True, bf16=False, gradient_checkpointing=False)
rows = [json.loads(line) for line in (HERE / "{rows}").read_text().splitlines()]
for row in rows:
    row["image"] = str(HERE / row["image"])
train = Dataset.from_list(rows).cast_column("image", Image())
processor = transformers.AutoProcessor.from_pretrained(MODEL)
processor.image_processor.size = {{"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}}
for holder in (processor.tokenizer, processor):  # a checkpoint's own limits must not win over the run's
    for key in ("min_pixels", "max_pixels"):
        getattr(holder, "init_kwargs", {{}}).pop(key, None)
processor.tokenizer.padding_side = "left"
model = getattr(transformers, MODEL_CLASS).from_pretrained(MODEL, dtype=torch.bfloat16 if cuda else torch.float32)
trainer = GRPOTrainer(model=model, processing_class=processor, args=GRPOConfig(**CONFIG), train_dataset=train,
                      reward_funcs=[REWARDS[name] for name in REWARD_NAMES], peft_config=LoraConfig(**LORA))
trainer.train()
trainer.save_model(str(HERE / "adapter"))
'''.replace("{script}", SCRIPT).replace("{rows}", ROWS)
