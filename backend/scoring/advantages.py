"""What a GRPO step's groups say: each completion's weighted reward, its group's mean and std, the advantage
TRL gave it, and a plain-language reading of how many groups carried no learning signal. Pure Python, no torch.

The rule is TRL 1.16's `GRPOTrainer._generate_and_score_completions` (multi_objective_aggregation
"sum_then_normalize", the default): a reward function's None is NaN and left out of the weighted sum (nansum);
a completion every function left out is unscorable (NaN, advantage 0); the group mean is a nan-mean and the std
a nan-std with Bessel's correction (trl.trainer.utils.nanstd); advantage = (r - mean) / (std + 1e-4), without the
division for scale_rewards "none" and with the whole batch's std for "batch".
https://github.com/huggingface/trl/blob/v1.16.0/trl/trainer/grpo_trainer.py
"""
from __future__ import annotations

import math
from typing import Sequence

EPSILON = 1e-4
"""TRL adds this to the std before dividing."""


def weighted_totals(rewards: dict[str, Sequence[float | None]], weights: dict[str, float]) -> list[float]:
    """Per completion, the sum of weight x reward over the functions that scored it; NaN when none did."""
    n = len(next(iter(rewards.values()))) if rewards else 0
    out = []
    for i in range(n):
        terms = [weights.get(name, 1.0) * values[i] for name, values in rewards.items()
                 if values[i] is not None and not math.isnan(values[i])]
        out.append(sum(terms) if terms else math.nan)
    return out


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _nanstd(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    if len(kept) < 2:
        return math.nan
    mean = sum(kept) / len(kept)
    return math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1))


def group_stats(totals: Sequence[float], group_size: int, scale_rewards: str = "group") -> list[dict]:
    """For completions in groups of `group_size` consecutive rows (TRL's order: a prompt's G generations
    together): {"total", "mean", "std", "advantage", "zero_std"} each, with None for NaN."""
    if group_size < 1 or len(totals) % group_size:
        raise ValueError(f"{len(totals)} completions do not make groups of {group_size}")
    if scale_rewards not in ("group", "batch", "none"):
        raise ValueError(f"unknown scale_rewards '{scale_rewards}'")
    batch_std = _nanstd(totals)
    out = []
    for start in range(0, len(totals), group_size):
        group = list(totals[start:start + group_size])
        mean = _nanmean(group)
        std = batch_std if scale_rewards == "batch" else (_nanstd(group) if group_size > 1 else 0.0)
        for r in group:
            advantage = r - mean
            if scale_rewards != "none":
                advantage = advantage / (std + EPSILON)
            out.append({"total": _none(r), "mean": _none(mean), "std": _none(std),
                        "advantage": 0.0 if math.isnan(advantage) else advantage,
                        "zero_std": not math.isnan(std) and math.isclose(std, 0.0, abs_tol=1e-8)})
    return out


def _none(v: float) -> float | None:
    return None if math.isnan(v) else v


ZERO_SIGNAL_SHARE = 0.5
"""A step where at least this share of completions sat in groups with one reward for all carries little signal."""
ZERO_SIGNAL_STEPS = 5
"""The hint speaks once the share stayed that high over this many recent logged steps."""


def zero_signal_hint(points: Sequence[Sequence[float]]) -> str | None:
    """A sentence when `frac_reward_zero_std` ([[step, share], ...]) stays high, else None."""
    recent = [v for _, v in points[-ZERO_SIGNAL_STEPS:]]
    if len(recent) < ZERO_SIGNAL_STEPS or sum(recent) / len(recent) < ZERO_SIGNAL_SHARE:
        return None
    share = sum(recent) / len(recent)
    return (f"Over the last {len(recent)} steps {share:.0%} of the groups got the same reward for every sample, so "
            "they teach the model nothing: raise the number of generations (G) or the temperature, or the task is "
            "too easy or too hard for this model (look at the rollouts: all right, or all wrong?).")
