"""Small datasets in every supported format, written the way the exporting tools write them."""
from __future__ import annotations

import csv
import json
import random
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {"cat": (220, 80, 60), "dog": (60, 120, 220), "bird": (60, 180, 90)}


def make_image(path: Path, width: int, height: int, boxes=(), seed: int = 0, fmt: str | None = None) -> None:
    """A noisy background with each box filled in its class colour."""
    rng = random.Random(seed)
    im = Image.new("RGB", (width, height), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    draw = ImageDraw.Draw(im)
    for x1, y1, x2, y2, label in boxes:
        draw.rectangle([x1, y1, x2, y2], fill=COLORS.get(label, (200, 200, 0)))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt)


def detection_samples(n: int = 10, seed: int = 0, size=(200, 100)) -> list[dict]:
    """Images with 1-2 boxes each, coordinates chosen so format conversions are exact."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        w, h = size
        boxes = []
        for k in range(1 + i % 2):
            x1, y1 = rng.randrange(0, w // 2, 10), rng.randrange(0, h // 2, 10)
            boxes.append([x1, y1, x1 + rng.randrange(20, w // 2, 10), y1 + rng.randrange(20, h // 2, 10),
                          ["cat", "dog", "bird"][(i + k) % 3]])
        out.append({"file": f"img{i:03d}.jpg", "width": w, "height": h, "boxes": boxes})
    return out


def _images(root: Path, samples: list[dict], folder: str = "images") -> None:
    for i, s in enumerate(samples):
        make_image(root / folder / s["file"], s["width"], s["height"], s.get("boxes", ()), seed=i)


def zip_dir(root: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root.parent).as_posix())
    return out


def write_coco(root: Path, samples: list[dict], classes=("cat", "dog", "bird")) -> Path:
    _images(root, samples)
    cats = [{"id": i + 1, "name": c, "supercategory": "animal"} for i, c in enumerate(classes)]
    images, anns = [], []
    for i, s in enumerate(samples):
        images.append({"id": i + 1, "file_name": s["file"], "width": s["width"], "height": s["height"]})
        for x1, y1, x2, y2, label in s["boxes"]:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": classes.index(label) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    path = root / "annotations" / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def write_yolo(root: Path, samples: list[dict], classes=("cat", "dog", "bird"), names_file="classes.txt") -> None:
    _images(root, samples, "images/train")
    if names_file == "classes.txt":
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    else:
        (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n" +
                                        "".join(f"  {i}: {c}\n" for i, c in enumerate(classes)))
    for s in samples:
        w, h = s["width"], s["height"]
        lines = [f"{classes.index(l)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                 for x1, y1, x2, y2, l in s["boxes"]]
        p = root / "labels" / "train" / Path(s["file"]).with_suffix(".txt")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(lines) + "\n")


def write_voc(root: Path, samples: list[dict]) -> None:
    _images(root, samples, "JPEGImages")
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for s in samples:
        objs = "".join(f"<object><name>{l}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                       f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for x1, y1, x2, y2, l in s["boxes"])
        (root / "Annotations" / Path(s["file"]).with_suffix(".xml").name).write_text(
            f"<annotation><folder>JPEGImages</folder><filename>{s['file']}</filename><size><width>{s['width']}</width>"
            f"<height>{s['height']}</height><depth>3</depth></size>{objs}</annotation>")


def write_labelstudio(root: Path, samples: list[dict]) -> None:
    """Label Studio's JSON export: uploads are renamed '<8 hex>-<name>' in data.image."""
    _images(root, samples)
    tasks = []
    for i, s in enumerate(samples):
        w, h = s["width"], s["height"]
        result = [{"id": f"r{i}{k}", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                   "original_width": w, "original_height": h, "image_rotation": 0,
                   "value": {"x": x1 / w * 100, "y": y1 / h * 100, "width": (x2 - x1) / w * 100,
                             "height": (y2 - y1) / h * 100, "rotation": 0, "rectanglelabels": [l]}}
                  for k, (x1, y1, x2, y2, l) in enumerate(s["boxes"])]
        tasks.append({"id": i + 1, "data": {"image": f"/data/upload/3/{i:08x}-{s['file']}"},
                      "annotations": [{"id": i + 1, "result": result, "was_cancelled": False}]})
    (root / "project-3-export.json").write_text(json.dumps(tasks))


def classification_samples(n_per_class: int = 5, classes=("cat", "dog")) -> list[dict]:
    return [{"file": f"{c}/{c}{i}.png", "label": c, "width": 32, "height": 24}
            for c in classes for i in range(n_per_class)]


def write_folders(root: Path, samples: list[dict]) -> None:
    for i, s in enumerate(samples):
        make_image(root / s["file"], s["width"], s["height"], seed=i)


def write_csv(root: Path, samples: list[dict]) -> None:
    for i, s in enumerate(samples):
        make_image(root / "images" / Path(s["file"]).name, s["width"], s["height"], seed=i)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        for s in samples:
            w.writerow([f"images/{Path(s['file']).name}", s["label"]])


def grounding_samples(n: int = 6) -> list[dict]:
    return [{"file": f"g{i}.jpg", "width": 120, "height": 90, "expression": f"the red square number {i}",
             "box": [10 + i, 20, 60 + i, 70]} for i in range(n)]


def write_jsonl(root: Path, samples: list[dict]) -> None:
    for i, s in enumerate(samples):
        make_image(root / "images" / s["file"], s["width"], s["height"], [[*s["box"], "cat"]], seed=i)
    (root / "refs.jsonl").write_text("".join(json.dumps({"image": f"images/{s['file']}", "expression": s["expression"],
                                                         "box": s["box"]}) + "\n" for s in samples))
