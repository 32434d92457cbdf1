"""Box geometry: IoU, GIoU, clipping and greedy matching. Pure Python, no torch."""
from __future__ import annotations

from typing import Sequence

Box = Sequence[float]  # [x1, y1, x2, y2], x2 >= x1, y2 >= y1


def area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou(a: Box, b: Box) -> float:
    """Intersection over union in [0, 1]; 0 when both boxes are empty."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def giou(a: Box, b: Box) -> float:
    """Generalised IoU in [-1, 1] (Rezatofighi et al., 2019)."""
    union_iou = iou(a, b)
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = area(a) + area(b) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    if hull <= 0:
        return union_iou
    return union_iou - (hull - union) / hull


def normalise_box(box: Box) -> list[float]:
    """Order the corners so that x1 <= x2 and y1 <= y2."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]


def greedy_match(preds: Sequence[Box], truths: Sequence[Box], threshold: float = 0.5) -> list[tuple[int | None, float]]:
    """Match predictions (already in priority order) to truths, one truth each.

    Each prediction takes the unmatched truth with the highest IoU; the pair counts
    only when that IoU exceeds `threshold`. Returns, per prediction, (truth index or
    None, IoU of the match or 0.0). This is the Visual-RFT reference rule.
    """
    taken: set[int] = set()
    out: list[tuple[int | None, float]] = []
    for p in preds:
        best, best_iou = None, 0.0
        for j, t in enumerate(truths):
            if j in taken:
                continue
            v = iou(p, t)
            if best is None or v > best_iou:
                best, best_iou = j, v
        if best is not None and best_iou > threshold:
            taken.add(best)
            out.append((best, best_iou))
        else:
            out.append((None, 0.0))
    return out
