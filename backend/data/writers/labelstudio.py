"""Label Studio pre-annotations: `tasks.json`, a list of tasks whose `predictions` hold rectangle labels in percent of
the original size, each with a `score` (the model's confidence; 1 for a box a person drew), ready to import into a
project for correction; `label_config.xml` is the labelling config their names refer to. Images sit in
`images/<split>/` and tasks point at them as local files (`/data/local-files/?d=images/...`: serve the export's
folder as Label Studio's LOCAL_FILES_DOCUMENT_ROOT)."""
from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

from backend.data.common import ExportSet, Writer
from backend.data.writers.files import by_split, confidence, copy_image

MODEL_VERSION = "visual-rft-studio"


def region(box: list, width: int, height: int, index: int) -> dict:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    score = confidence(box)
    return {"id": f"r{index}", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": x1 / width * 100, "y": y1 / height * 100, "width": (x2 - x1) / width * 100,
                      "height": (y2 - y1) / height * 100, "rotation": 0, "rectanglelabels": [box[4]]},
            "score": 1.0 if score is None else round(score, 4)}


def write(export_set: ExportSet, folder: Path) -> None:
    tasks = []
    for split, images in by_split(export_set).items():
        for im in images:
            rel = f"images/{split}/{im.name}"
            copy_image(im, folder / rel)
            result = [region(b, im.width, im.height, k) for k, b in enumerate(im.boxes)]
            score = sum(r["score"] for r in result) / len(result) if result else 1.0
            tasks.append({"id": len(tasks) + 1, "data": {"image": f"/data/local-files/?d={rel}", "split": split},
                          "predictions": [{"model_version": MODEL_VERSION, "score": round(score, 4),
                                           "result": result}]})
    (folder / "tasks.json").write_text(json.dumps(tasks, indent=1, ensure_ascii=False), encoding="utf-8")
    labels = "".join(f"    <Label value={quoteattr(c)}/>\n" for c in export_set.classes)
    (folder / "label_config.xml").write_text(
        f'<View>\n  <Image name="image" value="$image"/>\n  <RectangleLabels name="label" toName="image">\n'
        f"{labels}  </RectangleLabels>\n</View>\n", encoding="utf-8")


WRITER = Writer("labelstudio", "Label Studio: tasks.json with predictions (scored) and label_config.xml", write)
