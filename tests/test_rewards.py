"""The rewards: table-driven cases, the known hacks, the registry, and agreement with the reference formula."""
from __future__ import annotations

import inspect
import json
import random

import pytest

from backend.scoring.geometry import iou
from backend.scoring.rewards import REWARDS

T = "<think>looking</think>"


def ans(body: str) -> str:
    return f"{T}<answer>{body}</answer>"


def one(name: str, completion: str, solution: dict):
    return REWARDS[name]([completion], solution=[json.dumps(solution)])[0]


def dets(*boxes, conf=0.9) -> str:
    return ans(json.dumps([{"Position": list(b), "Confidence": conf} for b in boxes]))


DOG = [10, 10, 110, 110]
CAT = [200, 50, 300, 150]
DET = {"boxes": [DOG, CAT]}


@pytest.mark.parametrize("completion,expected_iou", [
    (dets(DOG, CAT), 1.0),                                   # perfect
    (dets(DOG), 0.5),                                        # found one of two
    (dets([10, 10, 100, 110], CAT), (0.9 + 1.0) / 2),        # one box a little short
    (dets([500, 500, 600, 600]), 0.0),                       # wrong place
    (ans("I think there are two"), 0.0),                     # unparseable
    (ans(""), 0.0),                                          # empty answer while objects exist
    (ans("No Objects"), 0.0),                                # "nothing" while objects exist
    ("[{'Position': [10, 10, 110, 110], 'Confidence': 1}]", 0.0),  # no answer tags: no answer
])
def test_detection_iou_table(completion, expected_iou):
    assert one("detection_iou", completion, DET) == pytest.approx(expected_iou)


@pytest.mark.parametrize("completion,truth,expected", [
    (ans("No Objects"), [], 1.0),       # correct empty answer: full marks (the reference gives 0)
    (ans("[]"), [], 1.0),
    (dets(DOG), [], 0.0),               # a box where there is nothing
    (ans(""), [], 0.0),                 # saying nothing is not saying "No Objects"
])
def test_detection_empty_truth(completion, truth, expected):
    assert one("detection_iou", completion, {"boxes": truth}) == expected


def test_spraying_boxes_earns_at_most_one_over_their_count():
    rng = random.Random(0)
    spray = [[x, y, x + 100, y + 100] for x in range(0, 400, 40) for y in range(0, 200, 40)]
    rng.shuffle(spray)
    spray.append(DOG)
    r = one("detection_iou", dets(*spray), {"boxes": [DOG]})
    assert r <= 1 / len(spray) + 1e-12


def test_repeating_a_box_earns_no_more_than_giving_it_once():
    once = one("detection_iou", dets(DOG), DET)
    for repeated in (dets(DOG, DOG, DOG), dets(DOG, [10, 10, 110, 111], [11, 10, 110, 110])):
        assert one("detection_iou", repeated, DET) <= once
        assert one("detection_confidence", repeated, DET) <= one("detection_confidence", dets(DOG), DET) + 1e-12


def test_wrong_coordinate_scale_scores_as_the_wrong_boxes():
    truth = {"boxes": [[64, 48, 320, 240]], "image_size": [640, 480], "family": "qwen2_vl"}
    right = dets([100, 100, 500, 500])        # 0-1000 normalised: exactly the truth
    pixels = dets([64, 48, 320, 240])         # pixel numbers where the family wants 0-1000
    assert one("detection_iou", right, truth) == pytest.approx(1.0)
    # read as 0-1000 they land on [41, 23, 205, 115] px: IoU 0.17 with the truth, no match
    assert iou([40.96, 23.04, 204.8, 115.2], [64, 48, 320, 240]) < 0.5
    assert one("detection_iou", pixels, truth) == 0.0
    resized = {"boxes": [[64, 48, 320, 240]], "image_size": [640, 480], "family": "qwen2_5_vl", "input_size": [644, 476]}
    assert one("detection_iou", dets([round(64 * 644 / 640), round(48 * 476 / 480), round(320 * 644 / 640),
                                      round(240 * 476 / 480)]), resized) > 0.99
    assert one("detection_iou", right, resized) == 0.0


@pytest.mark.parametrize("completion,expected", [
    (dets(DOG, CAT, conf=1.0), 1.0),
    (dets(DOG, conf=0.8), 0.8),
    (dets([500, 500, 600, 600], conf=0.3), 0.7),           # unmatched: 1 - c
    (ans("[{'Position': [10, 10, 110, 110]}]"), 1.0),       # no confidence given: read as 1.0
    (ans("garbage"), 0.0),
])
def test_detection_confidence_table(completion, expected):
    assert one("detection_confidence", completion, DET) == pytest.approx(expected)


CLS = {"label": "golden_retriever", "synonyms": ["golden"]}


@pytest.mark.parametrize("completion,expected", [
    (ans("Golden Retriever"), 1.0),           # perfect, after normalisation
    (ans("golden retrievers."), 1.0),         # plural and punctuation
    (ans("golden"), 1.0),                     # declared synonym
    (ans("labrador"), 0.0),                   # wrong
    (ans("golden retriever or labrador or poodle"), 0.0),  # naming several classes: a hack
    (ans(""), 0.0),                           # empty answer: a hack in the reference
    ("golden retriever", 0.0),                # no answer tags
    (ans("retriever"), 0.0),                  # part of the name is not the name
])
def test_classification_accuracy_table(completion, expected):
    assert one("classification_accuracy", completion, CLS) == expected


GRD = {"box": [10, 10, 110, 110]}


@pytest.mark.parametrize("completion,iou_v,giou_v", [
    (ans("[10, 10, 110, 110]"), 1.0, 1.0),
    (ans("(10,10),(60,110)"), 0.5, 0.75),
    (ans("[210, 10, 310, 110]"), 0.0, (1 - 1 / 3) / 2),   # GIoU = -(30000 - 20000) / 30000
    (ans("[10, 10, 110, 110] [500, 500, 600, 600]"), 1.0, 1.0),   # only the first box counts
    (ans("somewhere on the left"), 0.0, 0.0),
])
def test_grounding_table(completion, iou_v, giou_v):
    assert one("grounding_iou", completion, GRD) == pytest.approx(iou_v)
    assert one("grounding_giou", completion, GRD) == pytest.approx(giou_v)


@pytest.mark.parametrize("completion,expected", [
    (ans("x"), 1.0),
    ("<think>a</think><answer>b", 0.0),
    ("Detect all cats. <think>a</think><answer>b</answer>", 0.0),   # the prompt echoed back
    ("<answer>b</answer>", 0.0),
])
def test_format_table(completion, expected):
    assert one("format", completion, {}) == expected


def test_rewards_return_none_for_other_tasks():
    assert REWARDS["detection_iou"]([ans("cat")], solution=[CLS]) == [None]
    assert REWARDS["classification_accuracy"]([dets(DOG)], solution=[DET]) == [None]
    assert REWARDS["grounding_giou"]([dets(DOG)], solution=[DET]) == [None]


def test_registry_keys_signatures_and_ranges():
    rng = random.Random(1)
    samples = [(dets(DOG), DET), (ans("labrador"), CLS), (ans("[0, 0, 50, 50]"), GRD), (ans("x"), {}),
               (ans("No Objects"), {"boxes": []}), ("junk", DET)]
    for name, fn in REWARDS.items():
        assert fn.__name__ == name
        params = inspect.signature(fn).parameters
        assert "completions" in params and any(p.kind is p.VAR_KEYWORD for p in params.values())
        assert fn.__doc__ and fn.__doc__.strip()
        for completion, sol in samples + [(dets([rng.randrange(300)] * 2 + [400, 400]), DET) for _ in range(20)]:
            # TRL also hands chat-style completions and extra columns
            out = fn([[{"role": "assistant", "content": completion}]], solution=[sol], prompts=["p"], trainer_state=None)
            assert len(out) == 1 and (out[0] is None or 0.0 <= out[0] <= 1.0)


def reference_detection(preds: list[tuple[list[float], float]], truths: list[list[float]]) -> tuple[float, float]:
    """Visual-RFT's reference formula, written from its description (identical positions dropped)."""
    unique, seen = [], set()
    for box, c in preds:
        if tuple(box) not in seen:
            seen.add(tuple(box))
            unique.append((box, c))
    unique.sort(key=lambda p: p[1], reverse=True)
    matched_truth, ious, flags = set(), [], []
    for box, _ in unique:
        best, best_j = 0.0, None
        for j, t in enumerate(truths):
            if j not in matched_truth and iou(box, t) > best:
                best, best_j = iou(box, t), j
        if best_j is not None and best > 0.5:
            matched_truth.add(best_j)
            ious.append(best)
            flags.append(True)
        else:
            ious.append(0.0)
            flags.append(False)
    r_iou = min(1.0, sum(ious) / max(len(truths), len(unique)))
    r_conf = sum(c if f else 1 - c for (_, c), f in zip(unique, flags)) / len(unique)
    return r_iou, r_conf


def test_detection_reward_agrees_with_the_reference_formula():
    rng = random.Random(7)
    for _ in range(500):
        truths = []
        for _ in range(rng.randint(1, 4)):
            x, y = rng.randint(0, 300), rng.randint(0, 300)
            truths.append([x, y, x + rng.randint(10, 150), y + rng.randint(10, 150)])
        preds = []
        for _ in range(rng.randint(1, 6)):
            base = rng.choice(truths)
            jitter = [v + rng.randint(-25, 25) for v in base]
            box = [min(jitter[0], jitter[2]), min(jitter[1], jitter[3]), max(jitter[0], jitter[2]), max(jitter[1], jitter[3])]
            preds.append((box, round(rng.random(), 2)))
        completion = ans(str([{"Position": b, "Confidence": c} for b, c in preds]))
        want_iou, want_conf = reference_detection(preds, truths)
        sol = {"boxes": truths}
        assert one("detection_iou", completion, sol) == pytest.approx(want_iou, abs=1e-9)
        assert one("detection_confidence", completion, sol) == pytest.approx(want_conf, abs=1e-9)


def test_soft_iou_counts_overlaps_under_the_match_threshold():
    from backend.scoring.rewards import REWARDS
    sol = {"boxes": [[0, 0, 100, 100]]}
    partial = "<think>x</think><answer>[{'Position': [0, 0, 100, 40], 'Confidence': 0.9}]</answer>"
    exact = "<think>x</think><answer>[{'Position': [0, 0, 100, 100], 'Confidence': 0.9}]</answer>"
    assert REWARDS["detection_iou"]([partial], solution=[sol]) == [0.0]
    assert REWARDS["detection_soft_iou"]([partial], solution=[sol]) == [pytest.approx(0.4)]
    assert REWARDS["detection_soft_iou"]([exact], solution=[sol]) == REWARDS["detection_iou"]([exact], solution=[sol])
    assert REWARDS["detection_soft_iou"]([exact], solution=[{"label": "cat"}]) == [None]
    # spraying boxes earns no more than one good box
    spray = "<answer>[" + ", ".join(f"{{'Position': [0, 0, 100, {40 + i}], 'Confidence': 0.9}}" for i in range(5)) + "]</answer>"
    assert REWARDS["detection_soft_iou"]([spray], solution=[sol])[0] <= 0.5 / 5 + 1e-9
