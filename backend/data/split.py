"""The held-out split: the export's own where it has one (train / valid / test), else ours, stratified with a fixed seed;
byte-identical images always on one side."""
from __future__ import annotations

import hashlib
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from backend.data.safety import ImportProblem

SPLITS = ("train", "val", "test")
"""As stored: train trains; val is the held-out split evaluations use; test is held out and kept apart from val."""
HELD_OUT = ("val", "test")
_WORDS = {"train": "train", "training": "train", "valid": "val", "validation": "val", "val": "val", "dev": "val",
          "test": "test", "testing": "test"}
_TOKEN = re.compile(r"^(?:obj_|instances_|images_|labels_)?([a-z]+?)(?:[_-]?\d{2,4})?(?:_data|_set)?$")
"""'train', 'Valid', 'val2017', 'obj_train_data' (CVAT YOLO), 'instances_val2017' (COCO), 'test_set'."""


def split_named(name: str) -> str | None:
    """The split a folder or file stem names ('valid' -> 'val'), None when it names none ('images', 'default')."""
    m = _TOKEN.match(name.strip().lower())
    return _WORDS.get(m.group(1)) if m else None


def split_in_path(rel: str) -> str | None:
    """The split the deepest folder of a relative path names that names one: 'train/images/a.jpg' -> 'train'."""
    for part in reversed(PurePosixPath(rel).parts[:-1]):
        if (found := split_named(part)) is not None:
            return found
    return None


@dataclass
class SplitDecision:
    """Each row's split, where it came from ('export' or 'stratified') and the notes the summary shows."""
    splits: list[str]
    origin: str
    notes: list[str] = field(default_factory=list)


def decide_splits(export: list[str | None], strata: list[str], groups: list[str], val_fraction: float,
                  seed: int = 0) -> SplitDecision:
    """The export's split when it names a held-out split (images outside any split train), else ours.

    `groups` are content hashes: identical images land on one side (the most held-out one their copies have).
    """
    if not any(s in HELD_OUT for s in export):
        return SplitDecision(assign_splits(strata, val_fraction, seed, groups), "stratified")
    if "train" not in export and None not in export:
        raise ImportProblem("the export puts every image in a held-out split (" + " and ".join(
            s for s in HELD_OUT if s in export) + "): there is nothing to train on; add the training images")
    splits = [s or "train" for s in export]
    notes = []
    loose = export.count(None)
    if loose:
        notes.append(f"{loose} image{'s' if loose > 1 else ''} outside the export's split folders "
                     f"{'were' if loose > 1 else 'was'} put in train")
    rank = {s: i for i, s in enumerate(SPLITS)}
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    moved = 0
    for members in by_group.values():
        side = max((splits[i] for i in members), key=rank.__getitem__)
        for i in members:
            moved += splits[i] != side
            splits[i] = side
    if moved:
        notes.append(f"{moved} image{'s' if moved > 1 else ''} in the export's split had a byte-identical copy in "
                     f"a held-out split and {'were' if moved > 1 else 'was'} held out with it")
    return SplitDecision(splits, "export", notes)


def _rng(seed: int, stratum: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{stratum}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def assign_splits(strata: list[str], val_fraction: float, seed: int = 0, groups: list[str] | None = None) -> list[str]:
    """'train' or 'val' for each item, about `val_fraction` of each stratum held out.

    Every stratum keeps at least one training item; the val total is round(N * fraction)
    where the strata allow it (largest remainders get the leftover slots). Items of one group
    (byte-identical images) share the split of the group's first item.
    """
    first: dict[str, int] = {}
    units = [i for i, g in enumerate(groups or range(len(strata))) if first.setdefault(str(g), i) == i]
    unit_splits = _assign([strata[i] for i in units], val_fraction, seed)
    of_first = dict(zip(units, unit_splits))
    return [of_first[first[str(g)]] for g in (groups or range(len(strata)))]


def _assign(strata: list[str], val_fraction: float, seed: int) -> list[str]:
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
