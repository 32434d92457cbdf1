"""COCO detection JSON as COCO itself lays it out: `annotations/instances_<split>.json` (images, annotations with
[x, y, w, h] pixel boxes and 1-based category ids, categories) beside one image folder per split (`train/`, `val/`,
`test/`). A box a model gave carries its confidence as `score`, as COCO's results files do."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from backend.data.common import ExportSet, Writer
from backend.data.writers.files import by_split, confidence, copy_image, number


def write(export_set: ExportSet, folder: Path) -> None:
    cats = [{"id": i + 1, "name": c, "supercategory": "object"} for i, c in enumerate(export_set.classes)]
    ids = {c["name"]: c["id"] for c in cats}
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    for split, images in by_split(export_set).items():
        doc_images, anns = [], []
        for image_id, im in enumerate(images, 1):
            copy_image(im, folder / split / im.name)
            doc_images.append({"id": image_id, "file_name": im.name, "width": im.width, "height": im.height})
            for box in im.boxes:
                x1, y1, x2, y2 = (float(v) for v in box[:4])
                ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": ids[box[4]],
                       "bbox": [number(x1), number(y1), number(x2 - x1), number(y2 - y1)],
                       "area": number((x2 - x1) * (y2 - y1)), "iscrowd": 0}
                if (score := confidence(box)) is not None:
                    ann["score"] = round(score, 4)
                anns.append(ann)
        doc = {"info": {"description": f"{export_set.name} ({split})", "version": "1.0",
                        "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
               "licenses": [], "images": doc_images, "annotations": anns, "categories": cats}
        (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")


WRITER = Writer("coco", "COCO JSON: annotations/instances_<split>.json and a folder of images per split", write)
