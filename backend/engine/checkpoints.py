"""The published checkpoints the app knows, each with what a user weighs before picking one: its family and answer
convention, its size, the visual tokens a 1024x768 photo becomes, and the plan and memory the run plan gives it
on a GPU preset's card. The Train tab, `models list` and the README's families table all read this one table.
Pure Python (no torch): the estimate, never a loaded model."""
from __future__ import annotations

from backend.engine.run_plan import plan_run
from backend.engine.settings import PRESET_CARD_GIB, preset
from backend.scoring.families import FAMILIES, KNOWN_MODELS

PHOTO = (1024, 768)
"""The photo the table's token counts and memory are for."""


def convention_text(family_name: str) -> str:
    """How a family writes a box, in a few words."""
    c = FAMILIES[family_name].convention
    form = "<ref>label</ref><box>[[x1,y1,x2,y2]]</box>" if c.answer == "ref_box" else "JSON [x1,y1,x2,y2]"
    frame = f"0-{c.scale} of the image as fed" if c.kind == "normalized" else "pixels of the resized image"
    return f"{form}, {frame}" + ("" if FAMILIES[family_name].trained_boxes else " (ours: warm-start with SFT)")


def checkpoint_rows(preset_name: str = "24 GB GPU", vllm_installed: bool = True) -> list[dict]:
    """One row per known checkpoint: model, family, convention, parameters (billions), visual tokens of a
    1024x768 photo at the preset's image limits, and on the preset's card the run plan and its memory estimate."""
    if preset_name not in PRESET_CARD_GIB:
        raise ValueError(f"'{preset_name}' is not a GPU preset (GPU presets: {', '.join(PRESET_CARD_GIB)})")
    settings, card = preset(preset_name), PRESET_CARD_GIB[preset_name]
    rows = []
    for model, family in KNOWN_MODELS.items():  # every one has a shape (tests/test_checkpoints.py): an estimate
        plan = plan_run(settings, model, cuda=True, vllm_installed=vllm_installed, gpu_gib=card, image_size=PHOTO)
        job = plan.estimate.job
        rows.append({"model": model, "family": family, "convention": convention_text(family),
                     "params_b": round(job.model.total_params_b, 2), "visual_tokens": job.visual_tokens,
                     "card_gib": card, "plan": plan.describe(), "memory_gib": plan.estimate_gib, "fits": plan.fits})
    return rows


def checkpoint_table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """(headers, rows) for the page and the command line."""
    card = rows[0]["card_gib"] if rows else 0
    headers = ["model", "family", "parameters", "visual tokens (1024x768)", f"on a {card} GB card", "memory (GiB)"]
    return headers, [[r["model"], r["family"], f"{r['params_b']:.2f}B", r["visual_tokens"], r["plan"].split(", about")[0],
                      r["memory_gib"] if r["fits"] else f"{r['memory_gib']} (does not fit)"] for r in rows]
