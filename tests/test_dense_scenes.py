"""Dense scenes: the pre-flight counts boxes per image and says when the longest answer outgrows
max_completion_length, with the value that fits."""
from __future__ import annotations

from backend.engine.dense_scenes import dense_advice, dense_scenes


def _blood_cells(n_boxes: int) -> dict:
    """A 416-px blood-cell image holds 11-33 boxes, most of them 'RBC'."""
    samples = [{"file": f"b{k}.jpg", "width": 416, "height": 416,
                "boxes": [[4 * i, 4 * i, 4 * i + 30, 4 * i + 30, "RBC" if i % 6 else "WBC"] for i in range(n)]}
               for k, n in enumerate((11, n_boxes, 20))]
    return {"task": "detection", "samples": samples}


def words(text: str) -> int:
    """A stand-in tokenizer: about one token per three characters (Qwen splits numbers into single digits)."""
    return len(text) // 3


def test_a_dense_scene_over_the_limit_gets_the_value_that_fits():
    line = dense_scenes(_blood_cells(33), "qwen2_5_vl", words, 256, lambda size: size)
    assert line["boxes_per_image"] == [11, 33] and line["densest_image"] == "b1.jpg"
    assert (line["densest_class"], line["densest_boxes"]) == ("RBC", 27)
    assert line["answer_tokens"] > 256 and not line["fits"]
    assert line["suggested_max_completion_length"] % 64 == 0
    assert line["suggested_max_completion_length"] >= line["answer_tokens"] * 1.25
    (sentence,) = dense_advice(line)
    assert sentence.startswith("Dense scenes: images hold 11–33 boxes; 'b1.jpg' has 27 'RBC' boxes, an answer of "
                               f"about {line['answer_tokens']} tokens")
    assert sentence.endswith(f"Set max_completion_length to {line['suggested_max_completion_length']} or more.")


def test_sparse_scenes_and_other_tasks_say_nothing():
    line = dense_scenes(_blood_cells(12), "qwen2_5_vl", words, 1024, lambda size: size)
    assert line["fits"] and dense_advice(line) == []
    assert dense_scenes({"task": "classification", "samples": [{"label": "a"}]}, "qwen2_5_vl", words, 64) is None
