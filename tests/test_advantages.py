"""Group statistics of a GRPO step: the same totals, means, stds and advantages TRL 1.16 computes, and the hint
when groups carry no signal."""
from __future__ import annotations

import math
import random

import pytest

from backend.scoring.advantages import group_stats, weighted_totals, zero_signal_hint


@pytest.mark.parametrize("rewards, weights, expected", [
    ({"a": [1.0, 0.0], "b": [0.5, 0.5]}, {"a": 1.0, "b": 2.0}, [2.0, 1.0]),
    ({"a": [None, 1.0], "b": [0.5, None]}, {}, [0.5, 1.0]),  # None: left out of the sum (TRL's nansum)
    ({"a": [None], "b": [None]}, {}, [math.nan]),  # every function declined: unscorable
])
def test_weighted_totals(rewards, weights, expected):
    got = weighted_totals(rewards, weights)
    assert [(math.isnan(g), g if not math.isnan(g) else 0) for g in got] == \
        [(math.isnan(e), e if not math.isnan(e) else 0) for e in expected]


@pytest.mark.parametrize("totals, size, scale, advantages, zero", [
    ([1.0, 3.0], 2, "group", [-1 / (math.sqrt(2) + 1e-4), 1 / (math.sqrt(2) + 1e-4)], [False, False]),
    ([1.0, 3.0], 2, "none", [-1.0, 1.0], [False, False]),
    ([2.0, 2.0, 0.0, 1.0], 2, "group", [0.0, 0.0, -0.5 / (math.sqrt(0.5) + 1e-4), 0.5 / (math.sqrt(0.5) + 1e-4)],
     [True, True, False, False]),
    ([1.0, math.nan, 3.0], 3, "group", [-1 / (math.sqrt(2) + 1e-4), 0.0, 1 / (math.sqrt(2) + 1e-4)],
     [False, False, False]),
])
def test_group_stats_table(totals, size, scale, advantages, zero):
    stats = group_stats(totals, size, scale)
    assert [s["advantage"] for s in stats] == pytest.approx(advantages)
    assert [s["zero_std"] for s in stats] == zero


def test_group_stats_refuses_a_batch_that_is_not_whole_groups():
    with pytest.raises(ValueError, match="3 completions do not make groups of 2"):
        group_stats([1.0, 2.0, 3.0], 2)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trls_formula(scale):
    """TRL 1.16 grpo_trainer.py (sum_then_normalize), with its own nanstd, on random rewards with declines."""
    import torch
    from trl.trainer.utils import nanstd

    rng = random.Random(0)
    for _ in range(50):
        g, prompts = rng.choice([2, 4, 8]), rng.choice([1, 2, 3])
        names, weights = ["iou", "conf", "format"], [1.0, 0.5, 2.0]
        rewards = {n: [None if rng.random() < 0.1 else rng.choice([0.0, 1.0, rng.random()]) for _ in range(g * prompts)]
                   for n in names}
        ours = group_stats(weighted_totals(rewards, dict(zip(names, weights))), g, scale)

        per_func = torch.tensor([[math.nan if rewards[n][i] is None else rewards[n][i] for n in names]
                                 for i in range(g * prompts)], dtype=torch.float32)
        unscorable = torch.isnan(per_func).all(dim=1)
        r = (per_func * torch.tensor(weights).unsqueeze(0)).nansum(dim=1)
        r[unscorable] = torch.nan
        mean = torch.nanmean(r.view(-1, g), dim=1).repeat_interleave(g, dim=0)
        std = nanstd(r).expand_as(r) if scale == "batch" else nanstd(r.view(-1, g), dim=1).repeat_interleave(g, dim=0)
        adv = r - mean
        if scale != "none":
            adv = adv / (std + 1e-4)
        adv = torch.nan_to_num(adv, nan=0.0)
        assert [s["advantage"] for s in ours] == pytest.approx(adv.tolist(), abs=1e-4)
        assert [s["zero_std"] for s in ours] == torch.isclose(std, torch.zeros_like(std)).tolist()


def test_the_hint_speaks_only_when_most_groups_stay_flat():
    assert zero_signal_hint([[s, 0.9] for s in range(1, 4)]) is None  # too few steps to say
    assert zero_signal_hint([[s, 0.2] for s in range(1, 20)]) is None
    hint = zero_signal_hint([[s, 0.1] for s in range(1, 10)] + [[s, 0.8] for s in range(10, 15)])
    assert hint.startswith("Over the last 5 steps 80% of the groups got the same reward for every sample")
    assert "raise the number of generations (G) or the temperature" in hint
