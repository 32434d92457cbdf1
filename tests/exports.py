"""Exports laid out exactly as the labelling tools write them (Roboflow, Ultralytics, CVAT, LabelImg, Label Studio,
Hugging Face `datasets`), quirks included; each writer returns what the import must give back."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.builders import make_image

SIZE = (64, 48)
CELLS = ("Platelets", "RBC", "WBC")


def _box(i: int, k: int) -> list:
    """An exact pixel box (corners) for image i, object k."""
    x1, y1 = 4 + 6 * k + i % 5, 3 + 4 * k
    return [x1, y1, x1 + 16, y1 + 12]


def _yolo_line(cls: int, box: list, size=SIZE) -> str:
    (w, h), (x1, y1, x2, y2) = size, box
    return f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


def _readmes(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.dataset.txt").write_text("# BCCD > raw\nhttps://public.roboflow.ai/object-detection/bccd\n\n"
                                             "Provided by Roboflow\nLicense: MIT\n")
    (root / "README.roboflow.txt").write_text("\nBCCD - v3 raw\n==============================\n\nThis dataset was "
                                              "exported via roboflow.com on March 2, 2024\n")


def roboflow_yolov8(root: Path, counts=(6, 2, 2)) -> dict:
    """Roboflow 'YOLOv8': data.yaml (flow names, nc, roboflow:), train/valid/test each with images/ and labels/;
    Roboflow's renamed files; one empty label file (an image with no boxes)."""
    _readmes(root)
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 3\n"
        "names: ['Platelets', 'RBC', 'WBC']\n\nroboflow:\n  workspace: joseph-nelson\n  project: bccd\n"
        "  version: 3\n  license: MIT\n  url: https://universe.roboflow.com/joseph-nelson/bccd/dataset/3\n")
    truth: dict = {}
    i = 0
    for split, n in zip(("train", "valid", "test"), counts):
        for _ in range(n):
            name = f"BloodImage_{i:05d}_jpg.rf.{i:08x}c0ffee.jpg"
            boxes = [] if i == 1 else [[*_box(i, k), CELLS[(i + k) % 3]] for k in range(1 + i % 3)]
            make_image(root / split / "images" / name, *SIZE, boxes, seed=i)
            (root / split / "labels" / name).with_suffix(".txt").parent.mkdir(parents=True, exist_ok=True)
            (root / split / "labels" / Path(name).with_suffix(".txt").name).write_text(
                "".join(_yolo_line(CELLS.index(b[4]), b[:4]) + "\n" for b in boxes))
            truth[name] = ({"valid": "val"}.get(split, split), boxes)
            i += 1
    return truth


def ultralytics(root: Path, yaml_beside: bool = False) -> dict:
    """Ultralytics' own layout (coco8): images/{train,val} and labels/{train,val}; the yaml's `path:` is the
    exporting machine's, `names` a dict of id -> name, extra keys (download:), an empty `test:`."""
    data = root / "coco8" if yaml_beside else root
    yaml_text = ("# Ultralytics COCO8 dataset\npath: ../datasets/coco8 # dataset root dir\n"
                 "train: images/train # train images (relative to 'path') 4 images\n"
                 "val: images/val # val images (relative to 'path') 4 images\ntest: # test images (optional)\n\n"
                 "# Classes\nnames:\n  0: person\n  1: bicycle\n  2: car\n\n"
                 "download: https://github.com/ultralytics/assets/releases/download/v0.0.0/coco8.zip\n")
    root.mkdir(parents=True, exist_ok=True)
    (root / "coco8.yaml").write_text(yaml_text)
    truth: dict = {}
    for i in range(8):
        split = "train" if i < 4 else "val"
        name = f"{i:012d}.jpg"
        boxes = [[*_box(i, 0), ("person", "bicycle", "car")[i % 3]]]
        make_image(data / "images" / split / name, *SIZE, boxes, seed=i)
        label = data / "labels" / split / Path(name).with_suffix(".txt").name
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(_yolo_line(i % 3, boxes[0][:4]) + "\n")
        truth[name] = (split, boxes)
    return truth


def roboflow_coco(root: Path, counts=(6, 3, 2)) -> dict:
    """Roboflow 'COCO JSON': train/valid/test each with _annotations.coco.json; category 0 is the project's
    supercategory that no box uses; ids from 0; images beside their annotation file."""
    _readmes(root)
    truth: dict = {}
    i = 0
    for split, n in zip(("train", "valid", "test"), counts):
        cats = [{"id": 0, "name": "cells-mk3a", "supercategory": "none"}] + [
            {"id": k + 1, "name": c, "supercategory": "cells-mk3a"} for k, c in enumerate(CELLS)]
        images, anns = [], []
        for j in range(n):
            name = f"BloodImage_{i:05d}_jpg.rf.{i:08x}.jpg"
            boxes = [[*_box(i, k), CELLS[(i + k) % 3]] for k in range(1 + i % 2)]
            make_image(root / split / name, *SIZE, boxes, seed=i)
            images.append({"id": j, "license": 1, "file_name": name, "height": SIZE[1], "width": SIZE[0],
                           "date_captured": "2024-03-02T10:00:00+00:00"})
            for x1, y1, x2, y2, label in boxes:
                anns.append({"id": len(anns), "image_id": j, "category_id": CELLS.index(label) + 1,
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                             "segmentation": [], "iscrowd": 0})
            truth[name] = ({"valid": "val"}.get(split, split), boxes)
            i += 1
        (root / split / "_annotations.coco.json").write_text(json.dumps({
            "info": {"year": "2024", "version": "3", "description": "Exported from roboflow.com",
                     "contributor": "", "url": "https://public.roboflow.com/object-detection/undefined",
                     "date_created": "2024-03-02T10:00:00+00:00"},
            "licenses": [{"id": 1, "url": "https://opensource.org/licenses/MIT", "name": "MIT"}],
            "categories": cats, "images": images, "annotations": anns}))
    return truth


def roboflow_classes_csv(root: Path, counts=(6, 2, 2)) -> dict:
    """Roboflow 'Multi-Label Classification' CSV: `_classes.csv` per split, `filename, A, B` one-hot with a leading
    space in every cell after the first, class names with spaces."""
    _readmes(root)
    names = ("Red Blood Cell", "White Blood Cell")
    truth: dict = {}
    i = 0
    for split, n in zip(("train", "valid", "test"), counts):
        lines = ["filename, " + ", ".join(names)]
        for _ in range(n):
            name = f"cell_{i:03d}_png.rf.{i:06x}.jpg"
            label = names[i % 2]
            make_image(root / split / name, 32, 24, seed=i)
            lines.append(name + "".join(f", {int(c == label)}" for c in names))
            truth[name] = ({"valid": "val"}.get(split, split), label)
            i += 1
        (root / split / "_classes.csv").write_text("\n".join(lines) + "\n")
    return truth


def labelimg_voc(root: Path) -> dict:
    """LabelImg's Pascal VOC: the XML beside each image in train/ and test/, a Windows <path>, `.JPG` and `.jpg`."""
    root.mkdir(parents=True, exist_ok=True)
    truth: dict = {}
    for i in range(12):
        split = "train" if i < 9 else "test"
        name = f"IMG_{2000 + i}.{'JPG' if i % 2 else 'jpg'}"
        boxes = [[*_box(i, 0), "helmet"], [*_box(i, 1), "head"]][: 1 + i % 2]
        make_image(root / split / name, *SIZE, boxes, seed=i)
        objects = "".join(
            f"\n\t<object>\n\t\t<name>{label}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
            f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n"
            f"\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n\t</object>"
            for x1, y1, x2, y2, label in boxes)
        (root / split / Path(name).with_suffix(".xml").name).write_text(
            f"<annotation>\n\t<folder>{split}</folder>\n\t<filename>{name}</filename>\n"
            f"\t<path>C:\\Users\\ana\\Desktop\\helmets\\{split}\\{name}</path>\n\t<source>\n"
            f"\t\t<database>Unknown</database>\n\t</source>\n\t<size>\n\t\t<width>{SIZE[0]}</width>\n"
            f"\t\t<height>{SIZE[1]}</height>\n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>"
            f"{objects}\n</annotation>\n")
        truth[name] = (split, boxes)
    return truth


CVAT_LABELS = ("легковой автомобиль", "пешеход", "дорожный знак")
"""Cyrillic labels with spaces; the last is declared in the task but used by no box."""


def _cvat_boxes(i: int) -> list:
    x1, y1, x2, y2 = _box(i, 0)
    return [[x1 + 0.25, y1 + 0.5, x2 + 0.75, y2 + 0.5, CVAT_LABELS[i % 2]]]


def cvat_coco(root: Path) -> dict:
    """CVAT 'COCO 1.0' with two subsets: annotations/instances_<subset>.json and images/<subset>/; float boxes,
    `attributes`, polygons, category ids from 1, a declared label no box uses."""
    truth: dict = {}
    for subset, ids in (("train", range(0, 6)), ("test", range(6, 8))):
        images, anns = [], []
        for j, i in enumerate(ids, 1):
            name = f"кадр {i:03d}.png"
            boxes = _cvat_boxes(i)
            make_image(root / "images" / subset / name, *SIZE, boxes, seed=i)
            images.append({"id": j, "width": SIZE[0], "height": SIZE[1], "file_name": name, "license": 0,
                           "flickr_url": "", "coco_url": "", "date_captured": 0})
            for x1, y1, x2, y2, label in boxes:
                anns.append({"id": len(anns) + 1, "image_id": j, "category_id": CVAT_LABELS.index(label) + 1,
                             "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]], "area": (x2 - x1) * (y2 - y1),
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0,
                             "attributes": {"occluded": False, "rotation": 0.0, "цвет": "красный"}})
            truth[name] = (subset, boxes)
        doc = {"licenses": [{"name": "", "id": 0, "url": ""}],
               "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "",
                        "year": ""},
               "categories": [{"id": k + 1, "name": c, "supercategory": ""} for k, c in enumerate(CVAT_LABELS)],
               "images": images, "annotations": anns}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(doc, ensure_ascii=False),
                                                                       encoding="utf-8")
    return truth


def cvat_voc(root: Path) -> dict:
    """CVAT 'Pascal VOC 1.1': Annotations/, JPEGImages/, ImageSets/Main/{train,val}.txt, labelmap.txt with
    'background'; float coordinates, Cyrillic labels with spaces."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n" + "".join(
        f"{c}:{40 * k},{80 + k},{200 - k}::\n" for k, c in enumerate(CVAT_LABELS)), encoding="utf-8")
    sets: dict = {"train": [], "val": []}
    truth: dict = {}
    for i in range(8):
        split = "train" if i < 6 else "val"
        stem = f"frame_{i:06d}"
        boxes = _cvat_boxes(i)
        make_image(root / "JPEGImages" / f"{stem}.jpg", *SIZE, boxes, seed=i)
        objects = "".join(
            f"<object><name>{label}</name><pose>Unspecified</pose><truncated>0</truncated><occluded>0</occluded>"
            f"<difficult>0</difficult><bndbox><xmin>{x1:.2f}</xmin><ymin>{y1:.2f}</ymin><xmax>{x2:.2f}</xmax>"
            f"<ymax>{y2:.2f}</ymax></bndbox><attributes><attribute><name>rotation</name><value>0.0</value>"
            f"</attribute></attributes></object>" for x1, y1, x2, y2, label in boxes)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f'<?xml version="1.0" encoding="utf-8"?>\n<annotation><folder></folder><filename>{stem}.jpg</filename>'
            f"<source><database>Unknown</database><annotation>Unknown</annotation><image>Unknown</image></source>"
            f"<size><width>{SIZE[0]}</width><height>{SIZE[1]}</height><depth></depth></size>"
            f"<segmented>0</segmented>{objects}</annotation>", encoding="utf-8")
        sets[split].append(stem)
        truth[f"{stem}.jpg"] = (split, boxes)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for split, stems in sets.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(s + "\n" for s in stems))
    return truth


def labelstudio_yolo(root: Path) -> dict:
    """Label Studio's 'YOLO' export: classes.txt, notes.json, images/ and labels/ (no split)."""
    names = ("Airplane", "Car")
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    (root / "notes.json").write_text(json.dumps({"categories": [{"id": k, "name": n} for k, n in enumerate(names)],
                                                 "info": {"year": 2024, "version": "1.0",
                                                          "contributor": "Label Studio"}}))
    truth: dict = {}
    for i in range(5):
        name = f"{i:08x}-photo {i}.jpg"
        boxes = [[*_box(i, 0), names[i % 2]]]
        make_image(root / "images" / name, *SIZE, boxes, seed=i)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / Path(name).with_suffix(".txt").name).write_text(_yolo_line(i % 2, boxes[0][:4]) + "\n")
        truth[name] = (None, boxes)
    return truth


def one_hot_csv(root: Path, rows: list[str]) -> None:
    """A one-hot CSV with the given data rows, and an image for each name they use."""
    with open(root / "_classes.csv", "w", newline="") as f:
        f.write("filename, cat, dog\n" + "".join(r + "\n" for r in rows))
    for r in rows:
        make_image(root / next(csv.reader([r]))[0], 16, 16)
