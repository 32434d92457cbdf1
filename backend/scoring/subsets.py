"""Which training images and classes a run uses: k shots per class, and novel classes held out of training, chosen
with a fixed seed (pure, no I/O); and the base / novel split of held-out records.

Shots follow the few-shot literature: classification takes k images of each class; detection takes k images that
hold the class, an image counting for every class it holds (so a class may end with more than k when images
picked for other classes hold it too); grounding has no classes and takes k images.

Novel classes never appear in a training prompt, positive or negative. Detection keeps the images that hold a
novel object but never asks about a novel class (its boxes are dropped, and the "No Objects" prompts are drawn
from base classes only): asking only about base classes does not teach "nothing here" for a present novel object,
whereas leaving those images out would shrink the training set for nothing. Classification leaves out the images
whose label is novel and leaves novel names out of the class list its training prompts show.
"""
from __future__ import annotations

import random
from collections import Counter


def sample_classes(sample: dict, task: str) -> list[str]:
    """The classes an image holds: its boxes' labels (detection), its label (classification); none (grounding)."""
    if task == "detection":
        return sorted({b[4] for b in sample.get("boxes", [])})
    if task == "classification":
        return [sample["label"]]
    return []


def parse_class_list(text: str | list | None) -> list[str]:
    """'red circle, blue square' (or a list) -> ['red circle', 'blue square'], blanks and repeats dropped. A class
    whose name holds a comma is named in a JSON list: '["cat, striped", "dog"]'; ValueError (one sentence) for text
    that starts as a JSON list and is not one of names."""
    if isinstance(text, str) and text.strip().startswith("["):
        import json
        try:
            parts = json.loads(text)
        except ValueError as e:
            raise ValueError(f"the classes {text.strip()} start like a JSON list but are not one ({e}): write "
                             '["a, b", "c"] or a, c') from None
        if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
            raise ValueError(f"the classes {text.strip()} must be a JSON list of names, like [\"a, b\", \"c\"]")
    else:
        parts = text.split(",") if isinstance(text, str) else list(text or [])
    out: list[str] = []
    for p in parts:
        name = str(p).strip()
        if name and name not in out:
            out.append(name)
    return out


def choose_novel(classes: list[str], fraction: float, seed: int) -> list[str]:
    """`fraction` of the classes (at least one when above 0, never all of them), drawn with `seed`, sorted."""
    if not 0 <= fraction < 1:
        raise ValueError(f"the novel fraction must be at least 0 and below 1, got {fraction:g}")
    if fraction == 0:
        return []
    if len(classes) < 2:
        raise ValueError("holding classes out needs a dataset of at least two classes")
    n = min(len(classes) - 1, max(1, round(len(classes) * fraction)))
    return sorted(random.Random(seed).sample(sorted(classes), n))


def check_novel(novel: list[str], classes: list[str], task: str) -> None:
    """One sentence for novel classes that cannot work: unknown, all of them, or a task without classes."""
    if not novel:
        return
    if task == "grounding":
        raise ValueError("a grounding dataset has no classes to hold out (novel classes are for detection and "
                         "classification)")
    unknown = [c for c in novel if c not in classes]
    if unknown:
        raise ValueError(f"unknown class '{unknown[0]}' in the novel classes (the dataset's classes: "
                         f"{', '.join(classes)})")
    if len(set(novel)) >= len(classes):
        raise ValueError("every class is novel: keep at least one class to train on")


def check_shots(shots: int | None) -> None:
    if shots is not None and shots < 1:
        raise ValueError(f"shots must be at least 1 image per class (or empty for every training image), got {shots}")


def without_novel(samples: list[dict], task: str, novel: list[str]) -> list[dict]:
    """The samples as training may see them: detection images keep only their base boxes (an image of novel
    objects only stays, with no box); classification images of a novel class are left out."""
    if not novel:
        return list(samples)
    held = set(novel)
    if task == "classification":
        return [s for s in samples if s["label"] not in held]
    if task == "detection":
        return [{**s, "boxes": [b for b in s.get("boxes", []) if b[4] not in held]} for s in samples]
    return list(samples)


def select_shots(samples: list[dict], task: str, shots: int | None, seed: int) -> list[dict]:
    """k = `shots` images per class drawn with `seed` (None: every sample), in the samples' order.

    Each class draws from its own seeded shuffle (by sample id), so the draw of one class does not depend on the
    others'. Detection walks the classes rarest first and only tops a class up to k, counting the images already
    taken for classes before it, then drops the images no class needs any more; images without a box (nothing to
    count for) are not taken."""
    if shots is None:
        return list(samples)
    check_shots(shots)
    by_id = sorted(samples, key=lambda s: s["id"])
    if task == "grounding":
        chosen = set(s["id"] for s in random.Random(f"{seed}/images").sample(by_id, min(shots, len(by_id))))
        return [s for s in samples if s["id"] in chosen]
    holders: dict[str, list[dict]] = {}
    for s in by_id:
        for c in sample_classes(s, task):
            holders.setdefault(c, []).append(s)
    taken: list[dict] = []
    ids: set = set()
    for c in sorted(holders, key=lambda c: (len(holders[c]), c)):
        pool = list(holders[c])
        random.Random(f"{seed}/{c}").shuffle(pool)
        have = sum(1 for s in taken if c in sample_classes(s, task))
        for s in pool:
            if have >= shots:
                break
            if s["id"] not in ids:
                taken.append(s)
                ids.add(s["id"])
                have += 1
    # An image taken early may be needed no more once later ones hold its classes too: dropped, newest first
    # looked at last, so that no class has more images than it needs for k.
    target = {c: min(shots, len(pool)) for c, pool in holders.items()}
    count = Counter(c for s in taken for c in sample_classes(s, task))
    for s in list(taken):
        if all(count[c] > target[c] for c in sample_classes(s, task)):
            taken.remove(s)
            count.subtract(sample_classes(s, task))
    chosen = {s["id"] for s in taken}
    return [s for s in samples if s["id"] in chosen]


def training_samples(samples: list[dict], task: str, shots: int | None, novel: list[str], seed: int) -> list[dict]:
    """The training split's samples a run trains on: novel classes removed (without_novel), then `shots` per base
    class. Only samples of split "train" are ever returned."""
    train = [s for s in samples if s.get("split") == "train"]
    return select_shots(without_novel(train, task, novel), task, shots, seed)


def training_summary(samples: list[dict], task: str) -> dict:
    """{"images", "boxes" (detection; else None), "per_class": {class: images holding it}} of training samples."""
    per_class = Counter(c for s in samples for c in sample_classes(s, task))
    boxes = sum(len(s.get("boxes", [])) for s in samples) if task == "detection" else None
    return {"images": len(samples), "boxes": boxes, "per_class": dict(sorted(per_class.items()))}


def split_records(records: list[dict], novel: list[str]) -> tuple[list[dict], list[dict]]:
    """(base records, novel records) of held-out records, by the class each is about (its prompt's category:
    the class asked for in detection, the true label in classification)."""
    held = set(novel)
    base, new = [], []
    for r in records:
        (new if r.get("category") in held else base).append(r)
    return base, new
