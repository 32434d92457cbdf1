"""Answer parsing: every shape models emit; never raises; unreadable = None."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from backend.scoring.parsing import (Detection, completion_text, extract_answer, format_ok, label_matches,
                                     parse_detections)

B = (10.0, 20.0, 30.0, 40.0)


@pytest.mark.parametrize("answer,expected", [
    ("[{'Position': [10, 20, 30, 40], 'Confidence': 0.9}]", [Detection(B, 0.9)]),
    ('[{"Position": [10, 20, 30, 40], "Confidence": 0.9}]', [Detection(B, 0.9)]),
    ('[{"bbox_2d": [10, 20, 30, 40], "label": "cat"}]', [Detection(B, None, "cat")]),
    ("{'Position': [10, 20, 30, 40], 'Confidence': 1.7}", [Detection(B, 1.0)]),
    ("[10, 20, 30, 40]", [Detection(B)]),
    ("[[10, 20, 30, 40], [1, 2, 3, 4]]", [Detection(B), Detection((1.0, 2.0, 3.0, 4.0))]),
    ("(10,20),(30,40)", [Detection(B)]),
    ("<|box_start|>(10,20),(30,40)<|box_end|>", [Detection(B)]),
    ("[[10, 20], [30, 40]]", [Detection(B)]),
    ("```json\n[{\"Position\": [10, 20, 30, 40], \"Confidence\": 0.5}]\n```", [Detection(B, 0.5)]),
    ("[{'Position': [10, 20, 30, 40], 'Confidence': 0.9}, {'Position': [1, 2, 3", [Detection(B, 0.9)]),
    ("The box is [10, 20, 30, 40].", [Detection(B)]),
    ("<ref>cat</ref><box>[[10, 20, 30, 40]]</box>", [Detection(B, None, "cat")]),          # InternVL's own
    ("<ref>cat</ref><box>[[10, 20, 30, 40], [1, 2, 3, 4]]</box>",
     [Detection(B, None, "cat"), Detection((1.0, 2.0, 3.0, 4.0), None, "cat")]),
    ("<ref>cat</ref><box>[[10, 20, 30, 40]]</box> <ref>dog</ref><box>[[1, 2, 3, 4]]</box>",
     [Detection(B, None, "cat"), Detection((1.0, 2.0, 3.0, 4.0), None, "dog")]),
    ("<box>[[10, 20, 30, 40], [1, 2", [Detection(B)]),                                    # cut off mid-box
    ("<ref>cat</ref><box></box>", None),
    ("No Objects", []),
    ("[]", []),
    ("'No objects.'", []),
    ("", None),
    ("I cannot see it", None),
    ("[{'Position': 'left'}]", None),
    ("[1, 2, 3]", None),
    (None, None),
])
def test_parse_detections(answer, expected):
    assert parse_detections(answer) == expected


@pytest.mark.parametrize("text,ok", [
    ("<think>a</think><answer>b</answer>", True),
    ("<think>\na\n</think>\n<answer>b</answer>\n", True),
    ("Sure! <think>a</think><answer>b</answer>", False),
    ("<think>a</think><answer>b</answer> and more", False),
    ("<answer>b</answer>", False),
    ("<think>a</think><answer>b</answer><answer>c</answer>", False),
    ("Detect the cat. <think> ... </think> <answer>[...]</answer><think>a</think><answer>b</answer>", False),
    ("<think>a<answer>x</answer></think><answer>b</answer>", False),
])
def test_format_ok(text, ok):
    assert format_ok(text) is ok


@pytest.mark.parametrize("text,answer", [
    ("<think>x</think><answer> cat </answer>", "cat"),
    ("<think>x</think><answer>[1, 2, 3, 4]", "[1, 2, 3, 4]"),   # truncated before </answer>
    ("<answer>a</answer><answer>b</answer>", "b"),
    ("no tags at all", None),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_completion_text_accepts_trl_shapes():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "chat"}]) == "chat"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "blocks"}]}]) == "blocks"


@pytest.mark.parametrize("answer,names,ok", [
    ("Golden Retriever", ["golden_retriever"], True),
    ("golden-retriever.", ["Golden Retriever"], True),
    ("'Cats'", ["cat"], True),
    ("boxes", ["box"], True),
    ("golden", ["golden retriever", "golden"], True),
    ("", ["cat"], False),
    ("cat or dog", ["cat"], False),
    ("cat, dog", ["cat"], False),
    ("a cat", ["cat"], False),
    (None, ["cat"], False),
])
def test_label_matches(answer, names, ok):
    assert label_matches(answer, names) is ok


@given(st.text(max_size=300))
def test_parsing_never_raises(text):
    parse_detections(text)
    format_ok(text)
    extract_answer(text)
