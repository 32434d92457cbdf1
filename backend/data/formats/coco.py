"""COCO detection JSON: images, annotations with [x, y, w, h] boxes, categories. One file per split as Roboflow
(`train/_annotations.coco.json`), CVAT (`annotations/instances_train.json`) and COCO itself
(`instances_val2017.json`) write them: the file's name or folder gives its images' split."""
from __future__ import annotations

import json
from pathlib import Path

from backend.data.common import Format, Parsed, Problems, RawSample, Upload, load_json
from backend.data.split import split_in_path, split_named


def _coco_files(upload: Upload) -> list[Path]:
    found = []
    for p in upload.with_suffix(".json"):
        head = p.read_text(encoding="utf-8-sig", errors="replace")[:1_000_000]
        if '"annotations"' in head and '"images"' in head and '"categories"' in head:
            try:
                doc = json.loads(p.read_text(encoding="utf-8-sig"))
            except ValueError:
                continue
            if isinstance(doc, dict) and {"images", "annotations", "categories"} <= doc.keys():
                found.append(p)
    return found


def detect(upload: Upload) -> bool:
    return bool(_coco_files(upload))


def parse(upload: Upload, problems: Problems) -> Parsed:
    classes: list[str] = []
    samples: list[RawSample] = []
    warnings: list[str] = []
    files = _coco_files(upload)
    for path in files:
        where = upload.rel(path)
        doc = load_json(path, upload)
        cats = {c.get("id"): str(c.get("name")).strip() for c in doc["categories"] if isinstance(c, dict)}
        split = split_named(path.stem) or split_in_path(where)
        for name in cats.values():
            if name not in classes:
                classes.append(name)
        by_image: dict = {}
        for img in doc["images"]:
            ref = str(img.get("file_name", ""))
            found = upload.find_image(ref, path.parent)
            if found is None:
                problems.add(f"{where} names image '{ref}', which is not in the upload")
                continue
            by_image[img.get("id")] = RawSample(found, where=where, split=split)
        known_ids = {img.get("id") for img in doc["images"]}
        crowd = 0
        for ann in doc["annotations"]:
            if ann.get("image_id") not in known_ids:
                problems.add(f"{where}: annotation {ann.get('id')} refers to unknown image id {ann.get('image_id')}")
                continue
            sample = by_image.get(ann["image_id"])
            if sample is None:  # its image is missing, already reported
                continue
            if ann.get("category_id") not in cats:
                problems.add(f"{where}: annotation {ann.get('id')} has unknown category id {ann.get('category_id')}")
                continue
            if ann.get("iscrowd"):
                crowd += 1
                continue
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4):
                problems.add(f"{where}: annotation {ann.get('id')} has no [x, y, w, h] bbox")
                continue
            x, y, w, h = bbox
            sample.boxes.append([x, y, x + w, y + h, cats[ann["category_id"]]])
        if crowd:
            warnings.append(f"{where}: {crowd} crowd annotations (iscrowd=1) were left out")
        samples.extend(by_image.values())
    return Parsed("detection", classes, samples, warnings, read=files)


FORMAT = Format("coco", "detection", detect, parse)
