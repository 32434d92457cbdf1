"""An export keeps every class of the dataset (or labelling job) in its order, a box of it kept or not, so class ids
never shift against the dataset a run was trained on; the message names every file it wrote."""
from __future__ import annotations

import json
import zipfile

import yaml

from backend.data.demo.shapes import make_scene
from backend.data.exporter import write_export
from backend.jobs import label_queue
from backend.jobs.labelling import Source
from ui.label_tab import export_note

CLASSES = ["red circle", "blue square", "green triangle"]


def _labelled_squares_only(ws, tmp_path) -> int:
    """A labelling job asked about three classes whose accepted images kept boxes of the second only."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        make_scene(800 + i).image.save(folder / f"scene{i}.png")

    def squares(ws, images, source):
        return [[[1.0, 2.0, 30.0, 40.0, "blue square", 0.9], [5.0, 5.0, 20.0, 20.0, "red circle", 0.3]]
                for _ in images]
    job_id = label_queue.submit(ws, Source(model="demo", classes=CLASSES), [folder])
    label_queue.claim(ws, "a", None)
    assert label_queue.work(ws, job_id, "a", label=squares) == 2
    for position in (0, 1):
        label_queue.reject_boxes(ws, job_id, position, [1])  # the circles were wrong
    label_queue.review(ws, job_id, [0, 1], "accepted")
    return job_id


def test_yolo_of_a_labelled_set_keeps_every_class_id(ws, tmp_path):
    export_set = label_queue.accepted_set(ws, _labelled_squares_only(ws, tmp_path))
    assert export_set.classes == CLASSES
    write_export(export_set, "yolo", tmp_path / "yolo")
    doc = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert (doc["nc"], doc["names"]) == (3, {0: "red circle", 1: "blue square", 2: "green triangle"})
    lines = [line for p in sorted((tmp_path / "yolo" / "labels" / "train").iterdir())
             for line in p.read_text().splitlines()]
    assert len(lines) == 2 and all(line.startswith("1 ") for line in lines), "blue square keeps id 1"


def test_coco_voc_and_label_studio_of_a_labelled_set_keep_every_class(ws, tmp_path):
    export_set = label_queue.accepted_set(ws, _labelled_squares_only(ws, tmp_path))
    write_export(export_set, "coco", tmp_path / "coco")
    doc = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())
    assert [(c["id"], c["name"]) for c in doc["categories"]] == [(1, "red circle"), (2, "blue square"),
                                                                 (3, "green triangle")]
    assert [a["category_id"] for a in doc["annotations"]] == [2, 2]
    write_export(export_set, "voc", tmp_path / "voc")
    assert [line.split(":")[0] for line in (tmp_path / "voc" / "labelmap.txt").read_text().splitlines()[1:]] == CLASSES
    write_export(export_set, "labelstudio", tmp_path / "ls")
    config = (tmp_path / "ls" / "label_config.xml").read_text()
    assert all(f'<Label value="{c}"/>' in config for c in CLASSES)


def test_the_export_message_names_every_file_and_survives_markdown(ws, tmp_path):
    export_set = label_queue.accepted_set(ws, _labelled_squares_only(ws, tmp_path))
    out = write_export(export_set, "coco", tmp_path / "labelling-coco.zip")
    note = export_note(2, "coco", out)
    assert note == ("Exported 2 accepted images as coco (COCO JSON: annotations/instances_&lt;split&gt;.json and a "
                    "folder of images per split): annotations/instances_train.json, train/: 2 images")
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["annotations/instances_train.json", "train/scene0.png", "train/scene1.png"]
    write_export(export_set, "yolo", tmp_path / "yolo")
    assert export_note(2, "yolo", tmp_path / "yolo").endswith(
        ": data.yaml, labels/train/scene0.txt, labels/train/scene1.txt, images/train/: 2 images")
