"""The reward playground from the command line: `app.py score`."""
from __future__ import annotations

import json

from tests.conftest import run_cli


def test_score_detection_json(tmp_path):
    completion = "<think>one cat</think><answer>[{'Position': [100, 100, 500, 500], 'Confidence': 0.8}]</answer>"
    out = run_cli("score", "--task", "detection", "--truth", '{"boxes": [[64, 48, 320, 240]]}',
                  "--completion", completion, "--family", "qwen2_vl", "--image-size", "640x480", "--json",
                  data_dir=tmp_path)
    result = json.loads(out.stdout)
    assert set(result["rewards"]) == {"format", "detection_iou", "detection_soft_iou", "detection_confidence"}
    assert result["rewards"]["detection_iou"] == 1.0 and result["rewards"]["detection_confidence"] == 0.8
    assert result["total"] == 2.8
    assert result["parsed"]["boxes"] == [[64.0, 48.0, 320.0, 240.0]]


def test_score_classification_text(tmp_path):
    out = run_cli("score", "--task", "classification", "--truth", '{"label": "cat", "synonyms": ["kitty"]}',
                  "--completion", "<think>x</think><answer>Kitty</answer>", data_dir=tmp_path)
    assert "classification_accuracy: 1.0000" in out.stdout and "total: 2.0000" in out.stdout


def test_score_grounding_has_both_rewards(tmp_path):
    result = json.loads(run_cli("score", "--task", "grounding", "--truth", '{"box": [0, 0, 10, 10]}', "--completion",
                                "<think>x</think><answer>[0, 0, 5, 10]</answer>", "--json", data_dir=tmp_path).stdout)
    assert result["rewards"]["grounding_iou"] == 0.5 and result["rewards"]["grounding_giou"] == 0.75


def test_score_errors_are_one_sentence(tmp_path):
    bad = run_cli("score", "--task", "detection", "--truth", "{oops", "--completion", "x", data_dir=tmp_path, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: --truth is not valid JSON")
    size = run_cli("score", "--task", "detection", "--truth", '{"boxes": []}', "--completion", "x",
                   "--family", "qwen2_vl", data_dir=tmp_path, check=False)
    assert size.returncode == 1 and "image size" in size.stderr and "Traceback" not in size.stderr
