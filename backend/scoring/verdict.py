"""Did training help? The paired bootstrap of a held-out metric's change, the verdict it supports, and whether a
training reward rose through the answer's format alone. Pure Python: the Runs tab, `runs show`, compare and the
pre-flight read these and nothing else."""
from __future__ import annotations

import math
import random
from functools import lru_cache

from backend.scoring.rewards import NOT_THE_TASK

RESAMPLES = 2000
LEVEL = 0.90
SEED = 0
MIN_IMAGES = 10
"""Fewer paired held-out images than this and a percentile interval is too narrow to trust (one image gives a
zero-width interval): the verdict is then never "improved" or "worse", and says why."""

Scores = dict[str, list[float]]
"""Per held-out image, the main metric of each of its prompts (in the same order each time it is evaluated)."""


def paired_bootstrap(before: Scores, after: Scores, resamples: int = RESAMPLES, level: float = LEVEL,
                     seed: int = SEED) -> dict | None:
    """The change of the mean over prompts from `before` to `after`, paired over the images both scored, and its
    `level` percentile interval: images drawn with replacement `resamples` times (a prompt goes with its image, so
    an image's several prompts are not counted as independent), seeded. The two sides may hold other prompts of
    the same images (base against novel classes). None when no image was scored by both."""
    def kept(values):  # a score stored as missing (NaN) is left out
        return [v for v in values or [] if v is not None]
    pairs = tuple((sum(kept(before[i])), len(kept(before[i])), sum(kept(after[i])), len(kept(after[i])))
                  for i in sorted(set(before) & set(after)) if kept(before[i]) and kept(after[i]))
    return _bootstrap(pairs, resamples, level, seed) if pairs else None


@lru_cache(maxsize=256)  # the Runs tab asks again at every poll while nothing changed
def _bootstrap(pairs: tuple[tuple[float, int, float, int], ...], resamples: int, level: float, seed: int) -> dict:
    mean_before = sum(p[0] for p in pairs) / sum(p[1] for p in pairs)
    mean_after = sum(p[2] for p in pairs) / sum(p[3] for p in pairs)
    rng = random.Random(seed)
    k = len(pairs)
    deltas = []
    for _ in range(resamples):
        sb = nb = sa = na = 0.0
        for j in rng.choices(range(k), k=k):
            b, m, a, n = pairs[j]
            sb, nb, sa, na = sb + b, nb + m, sa + a, na + n
        deltas.append(sa / na - sb / nb)
    deltas.sort()
    tail = (1 - level) / 2
    return {"before": mean_before, "after": mean_after, "delta": mean_after - mean_before,
            "interval": [_quantile(deltas, tail), _quantile(deltas, 1 - tail)], "images": k,
            "n": sum(p[3] for p in pairs), "level": level, "resamples": resamples}


def _quantile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated linearly (numpy's default)."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def status(change: dict | None) -> str:
    """"improved" or "worse" only when the interval excludes 0 and rests on MIN_IMAGES images or more; "no_change"
    otherwise; "pending" without one."""
    if change is None:
        return "pending"
    if change["images"] < MIN_IMAGES:
        return "no_change"
    lo, hi = change["interval"]
    return "improved" if lo > 0 else "worse" if hi < 0 else "no_change"


def within_noise(change: dict | None) -> str:
    """The change and its interval in words: "+0.091 (90 % interval +0.052 … +0.130)", and "— within noise" when the
    interval holds 0."""
    if change is None:
        return "—"
    lo, hi = change["interval"]
    text = f"{change['delta']:+.3f} ({round(100 * change['level'])} % interval {lo:+.3f} … {hi:+.3f})"
    return text + (" — within noise" if lo <= 0 <= hi else "")


RISE = 0.05
"""A reward (on its own 0–1 scale) rose when its mean over the last quarter of the steps exceeds the first quarter's
by more than this (reward_changes)."""


def reward_changes(metrics: dict[str, list[list[float]]]) -> dict[str, float]:
    """Per reward function (TRL's `rewards/<name>/mean` points), its mean over the last quarter of the logged steps
    minus the first quarter's, each quarter at least 3 steps where the run has 6 (one step's mean is mostly the
    sampling of its few prompts); rewards with fewer than two points are left out."""
    out = {}
    for key, points in metrics.items():
        if not (key.startswith("rewards/") and key.endswith("/mean")) or len(points) < 2:
            continue
        values = [v for _, v in sorted(points) if v is not None and math.isfinite(v)]
        if len(values) < 2:
            continue
        q = max(len(values) // 4, min(3, len(values) // 2))  # a quarter, but 3 steps a side where there are 6
        out[key.split("/")[1]] = sum(values[-q:]) / q - sum(values[:q]) / q
    return out


def format_only(changes: dict[str, float], weights: dict[str, float]) -> bool:
    """Whether the training reward rose mainly through the format reward while the task rewards stayed flat: the
    format reward rose by more than RISE, it gives at least two thirds of the weighted rise of the rewards that
    rose, and no task reward (NOT_THE_TASK aside: detection_confidence rises for a model that finds nothing but
    says so) rose by more than RISE."""
    rise = changes.get("format", 0.0)
    if rise <= RISE:
        return False
    gains = {name: weights.get(name, 1.0) * change for name, change in changes.items() if change > 0}
    task_rose = any(change > RISE for name, change in changes.items() if name not in NOT_THE_TASK)
    return not task_rose and gains["format"] > 0 and gains["format"] >= (2 / 3) * sum(gains.values())


def verdict(metric: str, before: Scores | None, after: Scores | None, changes: dict[str, float],
            weights: dict[str, float], final: bool) -> dict:
    """The run's verdict (`runs show --json`'s "verdict"): its main held-out metric before training and at its
    latest evaluation (after training once `final`), the change and its paired interval, "improved" / "worse" only
    when the interval excludes 0, and whether its training reward rose through the format alone."""
    change = paired_bootstrap(before, after) if before and after else None
    return {"status": status(change), "metric": metric, "final": final,
            "before": None if change is None else round(change["before"], 4),
            "after": None if change is None else round(change["after"], 4),
            "delta": None if change is None else round(change["delta"], 4),
            "interval": None if change is None else [round(v, 4) for v in change["interval"]],
            "level": LEVEL, "n": None if change is None else change["n"],
            "images": None if change is None else change["images"],
            "too_few_images": change is not None and change["images"] < MIN_IMAGES,
            "format_only": format_only(changes, weights),
            "reward_changes": {k: round(v, 4) for k, v in changes.items()}}


def verdict_sentence(v: dict, why_pending: str = "no held-out evaluation after training started yet") -> str:
    """The verdict as the run header says it (`why_pending`: what it waits for, or why it will not come)."""
    if v["status"] == "pending":
        text = f"Verdict: pending — {why_pending}."
    else:
        when = "after training" if v["final"] else "at the latest evaluation"
        word = {"improved": "improved", "worse": "worse", "no_change": "no change beyond noise"}[v["status"]]
        lo, hi = v["interval"]
        text = (f"Verdict: {word} — held-out {v['metric']} {v['before']:.3f} before, {v['after']:.3f} {when} "
                f"({v['delta']:+.3f}; {round(100 * v['level'])} % interval {lo:+.3f} … {hi:+.3f} over {v['images']} "
                f"images, {v['n']} prompts)." + (f" Too few held-out images (under {MIN_IMAGES}) to call it better "
                                                  "or worse." if v.get("too_few_images") else ""))
    if v["format_only"]:
        text += (" ⚠ The training reward rose through the format reward alone: the model learned the answer's shape, "
                 "not the task.")
    return text
