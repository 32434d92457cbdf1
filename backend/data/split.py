"""The held-out split: fixed seed, stratified by class, decided once at import."""
from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict


def _rng(seed: int, stratum: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{stratum}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def assign_splits(strata: list[str], val_fraction: float, seed: int = 0) -> list[str]:
    """'train' or 'val' for each item, about `val_fraction` of each stratum held out.

    Every stratum keeps at least one training item; the val total is round(N * fraction)
    where the strata allow it (largest remainders get the leftover slots).
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(strata):
        groups[s].append(i)
    target = round(len(strata) * val_fraction)
    quota = {s: min(math.floor(len(ix) * val_fraction), len(ix) - 1) for s, ix in groups.items()}
    by_remainder = sorted(groups, key=lambda s: (-(len(groups[s]) * val_fraction - quota[s]), s))
    for s in by_remainder:
        if sum(quota.values()) >= target:
            break
        if quota[s] < len(groups[s]) - 1:
            quota[s] += 1
    split = ["train"] * len(strata)
    for s, ix in groups.items():
        ix = sorted(ix)
        _rng(seed, s).shuffle(ix)
        for i in ix[:quota[s]]:
            split[i] = "val"
    return split
