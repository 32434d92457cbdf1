"""The Runs tab's rollout inspector: one prompt of one stored step, all G completions of its group side by
side, boxes drawn (truth green, prediction red), with reasoning, answer, each reward term, the total, the group's
mean and std and each completion's advantage."""
from __future__ import annotations

import html

from backend.data.workspace import Workspace
from backend.jobs.run_history import rollouts, steps_with_rollouts
from backend.scoring.draw import PREDICTION, TRUTH, draw_file


def fmt(v, signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def inspector(ws: Workspace, run_id: int, step: int | None, prompt: int | None, steps: list[int] | None = None
              ) -> tuple[list[int], list[tuple[str, int]], int | None, int | None, list, str, str]:
    """(steps with rollouts, prompt choices, the step and prompt shown, gallery items, group summary, cards):
    all G completions of one prompt of one step, boxes drawn (truth green, prediction red), with reasoning,
    answer, each reward term, the total and the advantage.

    Never raises on a missing file: an image deleted with its dataset (or by hand) is a placeholder; the
    truth comes from the row when the dataset is gone. `steps`: the run's steps with rollouts, when the caller
    has just read them."""
    from backend.data.catalog import sample_json
    from storage.models import Sample
    steps = steps_with_rollouts(ws.store, run_id) if steps is None else steps
    if not steps:
        return [], [], None, None, [], "No rollouts yet.", ""
    step = step if step in steps else steps[-1]
    rows = rollouts(ws.store, run_id, step)
    groups: dict[int, list] = {}
    for position, r in enumerate(rows):  # rows stored before prompt indices existed: one group each
        groups.setdefault(r.prompt_index if r.prompt_index is not None else position, []).append(r)
    choices = [(f"prompt {index + 1}: {_asked(group[0].prompt) or group[0].prompt[:40]}", index)
               for index, group in sorted(groups.items())]
    prompt = prompt if prompt in groups else choices[0][1]
    group = sorted(groups[prompt], key=lambda r: r.sample_index or 0)
    items, cards = [], []
    with ws.store.read() as s:
        sample = s.get(Sample, group[0].sample_id) if group[0].sample_id else None
        truth = (sample_json(sample) if sample else group[0].truth or {})
    truth_boxes = truth.get("boxes") or ([truth["box"]] if truth.get("box") else [])
    category = _asked(group[0].prompt)
    if category and any(len(b) > 4 and b[4] == category for b in truth_boxes):  # a detection prompt: its class
        truth_boxes = [b for b in truth_boxes if len(b) > 4 and b[4] == category]
    elif category and "boxes" in truth:  # asked for a class the image does not have
        truth_boxes = []
    for j, r in enumerate(group):
        image = draw_file(ws.data_dir / r.image, [(truth_boxes, TRUTH), (r.parsed.get("boxes", []), PREDICTION)], 320)
        items.append((image, f"#{j + 1} · total {fmt(r.total)} · advantage {fmt(r.advantage, True)}"))
        terms = "".join(f"<tr><td>{html.escape(k)}</td><td>{fmt(v)}</td></tr>" for k, v in r.rewards.items()
                        if v is not None)  # a reward of another task scores nothing here
        colour = "#16a34a" if (r.advantage or 0) > 0 else "#dc2626" if (r.advantage or 0) < 0 else "#6b7280"
        answer = r.parsed.get("answer") if r.parsed.get("answer") is not None else r.parsed.get("label")
        cards.append(
            f"<div class='rollout-card' style='border:1px solid #e5e7eb;border-radius:8px;padding:8px'>"
            f"<div><b>#{j + 1}</b> · advantage <b style='color:{colour}'>{fmt(r.advantage, True)}</b> · total "
            f"{fmt(r.total)}</div><table style='font-size:12px'>{terms}</table>"
            f"<div style='font-size:12px'><i>reasoning:</i> {html.escape(r.parsed.get('think') or '(none)')}</div>"
            f"<div style='font-size:12px'><i>answer:</i> <code>{html.escape(str(answer or '(none)'))}</code></div>"
            f"<details style='font-size:11px'><summary>raw completion</summary><pre style='white-space:pre-wrap'>"
            f"{html.escape(r.completion)}</pre></details></div>")
    first = group[0]
    zero = first.group_std is not None and abs(first.group_std) < 1e-8
    summary = (f"**Step {step}, prompt {prompt + 1}** — {len(group)} completions · group mean {fmt(first.group_mean)}"
               f" · std {fmt(first.group_std)}" + (" · ⚠ every completion got the same reward: this group teaches "
                                                     "nothing" if zero else "")
               + f"\n\n> {html.escape(first.prompt)}")  # the prompt's <think>/<answer> tags shown, not parsed
    grid = (f"<div style='display:grid;grid-template-columns:repeat({min(len(group), 4)},minmax(0,1fr));gap:8px'>"
            + "".join(cards) + "</div>")
    return steps, choices, step, prompt, items, summary, grid


def _asked(prompt: str) -> str | None:
    """What a prompt asks for: the first quoted phrase (a detection prompt's category, a grounding prompt's
    description), else None."""
    parts = prompt.split("'")
    return parts[1] if len(parts) >= 3 else None
