"""Shots and novel classes from the command line: what `runs create` stores, the training rows it leads to (the
held-out split and the novel classes never among them), bad input as one sentence, and a trained run's stored
evaluation and `eval` with base and novel classes apart."""
from __future__ import annotations

import json

import pytest

from backend.data.catalog import get_dataset
from backend.data.importer import import_dataset
from backend.data.workspace import open_workspace
from backend.engine.settings import TrainSettings, preset
from backend.jobs.runs import create_run, get_run
from backend.jobs.training import train_rows
from tests.conftest import run_cli

NOVEL = ["red circle", "blue square"]
TINY = ("--num-generations", "2", "--prompts-per-step", "2", "--max-completion-length", "16", "--eval-max-examples",
        "24", "--ignore-memory-estimate")


def _create(data, *flags, check=True):
    return run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "demo", *TINY, *flags, "--json",
                   data_dir=data, check=check)


def test_shots_and_novel_classes_reach_the_training_rows_and_nothing_else(tmp_path):
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    run_id = json.loads(_create(data, "--shots", "1", "--novel-classes", ", ".join(NOVEL), "--max-steps", "1",
                                "--eval-steps", "0").stdout)["id"]
    ws = open_workspace(data)
    settings = TrainSettings.from_dict(get_run(ws.store, run_id).settings)
    assert (settings.shots, settings.novel_classes) == (1, NOVEL)

    dataset = get_dataset(ws.store, "demo-shapes")
    by_id = {s["id"]: s for s in dataset["samples"]}
    rows = train_rows(dataset, ws.data_dir, "demo", settings)
    assert {by_id[r["sample_id"]]["split"] for r in rows} == {"train"}
    for r in rows:
        assert r["category"] not in NOVEL and not any(c in r["prompt_text"] for c in NOVEL)
        truth = json.loads(r["solution"])["boxes"]
        # a prompt's truth is exactly the image's boxes of that (base) class
        assert truth == [b[:4] for b in by_id[r["sample_id"]]["boxes"] if b[4] == r["category"]]
    images = {r["sample_id"] for r in rows}
    held = {c: sum(1 for i in images if c in {b[4] for b in by_id[i]["boxes"]}) for c in dataset["classes"]}
    assert all(held[c] >= 1 for c in dataset["classes"] if c not in NOVEL)  # every base class: at least its shot
    assert len(images) <= 10  # 1 shot of each of the 10 base classes, an image counting for all it holds
    # The images of a novel object stay (it is never asked about): some chosen image holds one here.
    everything = train_rows(dataset, ws.data_dir, "demo", TrainSettings(novel_classes=NOVEL))
    assert any(b[4] in NOVEL for i in {r["sample_id"] for r in everything} for b in by_id[i]["boxes"])
    assert {by_id[r["sample_id"]]["split"] for r in everything} == {"train"}

    assert run_cli("worker", "--once", data_dir=data).returncode == 0
    shown = json.loads(run_cli("runs", "show", str(run_id), "--json", data_dir=data).stdout)
    assert shown["status"] == "completed", shown["error"]
    assert shown["training_set"]["images"] == len(images)
    assert shown["training_set"]["boxes"] == sum(len(json.loads(r["solution"])["boxes"]) for r in rows
                                                 if json.loads(r["solution"])["boxes"])
    after = shown["evaluation"]["after"]
    assert after["base"]["count"] + after["novel"]["count"] == after["count"] == 24
    assert {r for r in ("mean_iou", "ap50", "map")} <= set(after["novel"])
    log = run_cli("runs", "logs", str(run_id), data_dir=data).stdout
    assert f"trained on {len(images)} of 80 training images" in log

    evaluated = json.loads(run_cli("eval", "--run", str(run_id), "--checkpoint", "last", "--json",
                                   data_dir=data).stdout)
    assert {"base", "novel"} <= set(evaluated) and evaluated["novel"]["count"] > 0


@pytest.mark.parametrize("flags, sentence", [
    (("--shots", "0"), "error: shots must be at least 1 image per class"),
    (("--novel-classes", "red circle,pink star"), "error: unknown class 'pink star' in the novel classes"),
    (("--novel-fraction", "1.0"), "error: the novel fraction must be at least 0 and below 1"),
    (("--novel-fraction", "0.2", "--novel-classes", "red circle"), "error: name the novel classes or give a novel "
                                                                   "fraction, not both"),
])
def test_bad_shots_or_classes_are_one_sentence(tmp_path, flags, sentence):
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    out = _create(data, *flags, check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith(sentence)
    assert json.loads(run_cli("runs", "list", "--json", data_dir=data).stdout) == []  # nothing queued


def test_a_novel_fraction_is_drawn_once_and_kept(tmp_path):
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    first = json.loads(_create(data, "--novel-fraction", "0.25").stdout)["id"]
    second = json.loads(_create(data, "--novel-fraction", "0.25", "--seed", "1").stdout)["id"]
    ws = open_workspace(data)
    chosen = [get_run(ws.store, i).settings["novel_classes"] for i in (first, second)]
    assert len(chosen[0]) == 3 and chosen[0] == chosen[1]  # novel_seed, not the run's seed, draws them


def test_classification_leaves_novel_images_and_names_out(tmp_path):
    from tests.builders import classification_samples, write_folders, zip_dir
    write_folders(tmp_path / "pets", classification_samples(6, ("cat", "dog", "bird")))
    ws = open_workspace(tmp_path / "data")
    import_dataset(ws.store, ws.data_dir, [zip_dir(tmp_path / "pets", tmp_path / "pets.zip")], "pets")
    settings = preset("CPU demo", shots=2, novel_classes=["dog"])
    create_run(ws.store, "pets", "demo", settings)
    dataset = get_dataset(ws.store, "pets")
    by_id = {s["id"]: s for s in dataset["samples"]}
    rows = train_rows(dataset, ws.data_dir, "demo", settings)
    labels = sorted(by_id[r["sample_id"]]["label"] for r in rows)
    assert labels == ["bird", "bird", "cat", "cat"] and {by_id[r["sample_id"]]["split"] for r in rows} == {"train"}
    assert all("dog" not in r["prompt_text"] and "Answer with one of: " in r["prompt_text"] for r in rows)
