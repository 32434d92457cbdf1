"""IoU/GIoU properties and coordinate round-trips per model family."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from backend.scoring.coords import from_model, model_frame, to_model, to_model_int
from backend.scoring.families import FAMILIES
from backend.scoring.geometry import giou, greedy_match, iou

coord = st.floats(0, 2000, allow_nan=False)


@st.composite
def boxes(draw):
    x1, x2 = sorted((draw(coord), draw(coord)))
    y1, y2 = sorted((draw(coord), draw(coord)))
    return [x1, y1, x2, y2]


@given(boxes(), boxes())
def test_iou_and_giou_bounds_and_symmetry(a, b):
    assert 0.0 <= iou(a, b) <= 1.0
    assert -1.0 <= giou(a, b) <= 1.0 + 1e-12
    assert iou(a, b) == pytest.approx(iou(b, a))
    assert giou(a, b) == pytest.approx(giou(b, a))
    assert giou(a, b) <= iou(a, b) + 1e-12


@given(boxes())
def test_iou_with_itself(a):
    if (a[2] - a[0]) * (a[3] - a[1]) > 0:
        assert iou(a, a) == pytest.approx(1.0)
        assert giou(a, a) == pytest.approx(1.0)


@pytest.mark.parametrize("a,b,i,g", [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0, 1.0),
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150, 50 / 150),
    ([0, 0, 10, 10], [20, 0, 30, 10], 0.0, -1 / 3),
    ([0, 0, 10, 10], [0, 0, 0, 0], 0.0, -0.0),
])
def test_iou_giou_table(a, b, i, g):
    assert iou(a, b) == pytest.approx(i)
    assert giou(a, b) == pytest.approx(g, abs=1e-9)


def test_greedy_match_takes_best_unmatched_above_half():
    truths = [[0, 0, 10, 10], [20, 20, 30, 30]]
    preds = [[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 29, 30]]
    assert [j for j, _ in greedy_match(preds, truths)] == [0, None, 1]


def test_frames_per_family():
    # Qwen2.5-VL answers in pixels of the resized input: the size comes from the loaded processor
    # (backend/engine/model_input.py, tested against the processor's own output in test_model_input.py).
    assert model_frame("qwen2_5_vl", (640, 480), (644, 476)) == (644.0, 476.0)
    with pytest.raises(ValueError, match="input size"):
        model_frame("qwen2_5_vl", (640, 480))
    assert model_frame("qwen2_vl", (640, 480)) == (1000.0, 1000.0)
    assert model_frame("demo", (640, 480)) == (100.0, 100.0)
    assert model_frame(None, (640, 480)) == (640.0, 480.0)


@given(boxes(), st.integers(16, 1000), st.integers(16, 1000), st.sampled_from(sorted(FAMILIES)))
def test_round_trip_within_a_pixel(box, w, h, family):
    box = [min(box[0], w), min(box[1], h), min(box[2], w), min(box[3], h)]
    inp = (max(28, round(w / 28) * 28), max(28, round(h / 28) * 28))  # a resized input of about the same size
    back = from_model(to_model(box, family, (w, h), inp), family, (w, h), inp)
    assert back == pytest.approx(box, abs=1e-6)
    # Written as integers (what a prompt or answer holds), the error is half a model unit.
    fw, fh = model_frame(family, (w, h), inp)
    unit = max(w / fw, h / fh)
    back_int = from_model(to_model_int(box, family, (w, h), inp), family, (w, h), inp)
    assert max(abs(a - b) for a, b in zip(back_int, box)) <= unit / 2 + 1e-6
    if family != "demo":  # 0-1000 grids and resized pixels are finer than these images
        assert max(abs(a - b) for a, b in zip(back_int, box)) <= 1.0
