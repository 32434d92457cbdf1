"""Exports as LabelMe, Label Studio (JSON, JSON-MIN, CSV), CreateML and VGG Image Annotator write them, quirks
included; each writer returns what the import must give back: {image name: (split or None, boxes or class)}."""
from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from PIL import Image

from tests.builders import make_image

SIZE = (64, 48)
LS_SIZE = (200, 100)
"""Label Studio fixtures: integer percentages of 200x100 are whole pixels."""


def _box(i: int, k: int) -> list:
    x1, y1 = 4 + 6 * k + i % 5, 3 + 4 * k
    return [x1, y1, x1 + 16, y1 + 12]


def _grey_jpeg(path: Path, seed: int) -> None:
    """A grayscale JPEG, as scanned or X-ray images are (Label Studio shows them as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", LS_SIZE, 40 + 9 * seed).save(path, "JPEG")


def _labelme_doc(shapes: list, image_path: str, image_data: str | None) -> str:
    """LabelMe 5's file: keys in its order, indent=2, ensure_ascii=False."""
    return json.dumps({"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path,
                       "imageData": image_data, "imageHeight": SIZE[1], "imageWidth": SIZE[0]},
                      ensure_ascii=False, indent=2)


def _shape(label: str, points: list, kind: str) -> dict:
    return {"label": label, "points": points, "group_id": None, "description": "", "shape_type": kind, "flags": {},
            "mask": None}


def labelme(root: Path) -> dict:
    """LabelMe as people save it: in train/, the JSON beside its image with the image embedded (LabelMe's default);
    one image only embedded (its file was not kept); in val/, JSONs saved on Windows into annotations/ with
    `..\\images\\` paths and `imageData: null`. Rectangles drawn from the bottom-right corner, a polygon, a point
    (not a box: left out)."""
    truth: dict = {}
    for i in range(8):
        split = "train" if i < 6 else "val"
        name = f"IMG_{i:04d}.jpg"
        boxes = [[*_box(i, 0), "cat"]] + ([[*_box(i, 1), "dog"]] if i % 2 else [])
        folder = root / split / ("images" if split == "val" else "")
        make_image(folder / name, *SIZE, boxes, seed=i)
        shapes = [_shape(label, [[float(x2), float(y2)], [float(x1), float(y1)]], "rectangle")
                  for x1, y1, x2, y2, label in boxes[:1]]
        for x1, y1, x2, y2, label in boxes[1:]:  # a polygon whose points reach each side of the box
            shapes.append(_shape(label, [[float(x1), float(y1 + 3)], [float(x1 + 5), float(y1)],
                                         [float(x2), float(y2 - 2)], [float(x1 + 2), float(y2)]], "polygon"))
        if i == 2:
            shapes.append(_shape("cat", [[5.0, 5.0]], "point"))
        if split == "train":
            data = base64.b64encode((folder / name).read_bytes()).decode()
            (folder / f"IMG_{i:04d}.json").write_text(_labelme_doc(shapes, name, data), encoding="utf-8")
            if i == 5:
                (folder / name).unlink()  # only embedded in its JSON
        else:
            (root / split / "annotations").mkdir(parents=True, exist_ok=True)
            (root / split / "annotations" / f"IMG_{i:04d}.json").write_text(
                _labelme_doc(shapes, f"..\\images\\{name}", None), encoding="utf-8")
        truth[name] = (split, boxes)
    return truth


def _ls_tasks() -> list[dict]:
    """Six tasks in Label Studio's own terms: the image reference, and each annotation's regions in integer percent
    of 200x100 with its time. Task 3 was annotated twice (the later annotation is the one read), task 6 not at all;
    images come from uploads (hash-prefixed), local files, S3 and a presigned HTTPS URL."""
    refs = ["/data/upload/7/1f3a9c2e-xray 0.jpg", "/data/upload/7/0b7d44aa-xray 1.jpg",
            "/data/local-files/?d=scans/xray%202.jpg", "s3://clinic-bucket/scans/xray 3.jpg",
            "https://storage.example.org/scans/xray%204.jpg?X-Amz-Expires=3600&X-Amz-Signature=9f2c",
            "/data/upload/7/5c6d7e8f-xray 5.jpg"]
    tasks = []
    for i, ref in enumerate(refs):
        regions = [{"x": 10 + i, "y": 20, "width": 30, "height": 40, "rotation": 0,
                    "rectanglelabels": ["nodule" if i % 2 else "opacity"]}]
        if i == 1:
            regions.append({"points": [[50, 10], [70, 30], [60, 60]], "closed": True, "polygonlabels": ["opacity"]})
        annotations = [(regions, f"2024-05-0{i + 1}T10:00:00.000000Z")] if i != 5 else []
        if i == 3:  # a first, older annotation with another box: not the one read
            annotations.insert(0, ([{**regions[0], "x": 1, "width": 5}], "2024-04-01T09:00:00.000000Z"))
        tasks.append({"id": 101 + i, "ref": ref, "annotations": annotations})
    return tasks


def _ls_truth(tasks: list[dict]) -> dict:
    w, h = LS_SIZE
    truth = {}
    for i, task in enumerate(tasks):
        boxes = []
        for r in (max(task["annotations"], key=lambda a: a[1])[0] if task["annotations"] else []):
            if "points" in r:
                xs, ys = [p[0] * w / 100 for p in r["points"]], [p[1] * h / 100 for p in r["points"]]
                boxes.append([min(xs), min(ys), max(xs), max(ys), r["polygonlabels"][0]])
            else:
                x, y = r["x"] * w / 100, r["y"] * h / 100
                boxes.append([x, y, x + r["width"] * w / 100, y + r["height"] * h / 100, r["rectanglelabels"][0]])
        truth[f"xray {i}.jpg"] = (None, boxes)
    return truth


def _ls_records(tasks: list[dict]) -> list[dict]:
    """Label Studio's converter: one record per annotation (the latest first), the task's data, `id`, one key per tag
    (`label`) with its regions flattened (`type` dropped, `original_width/height` added), then the annotation."""
    records = []
    for task in tasks:
        annotations = sorted(task["annotations"], key=lambda a: a[1], reverse=True) or [(None, None)]
        for n, (regions, created) in enumerate(annotations):
            record: dict = {"image": task["ref"], "id": task["id"]}
            if regions:
                record["label"] = [{**r, "original_width": LS_SIZE[0], "original_height": LS_SIZE[1]}
                                   for r in regions]
            record.update({"annotator": 1 + n if created else None, "annotation_id": 500 + task["id"] * 2 + n
                           if created else None, "created_at": created, "updated_at": created,
                           "lead_time": 12.5 if created else None})
            records.append(record)
    return records


def _ls_images(root: Path, tasks: list[dict]) -> None:
    for i, _ in enumerate(tasks):
        _grey_jpeg(root / "images" / f"xray {i}.jpg", i)


def labelstudio_min(root: Path) -> dict:
    """Label Studio 'JSON-MIN': result.json of flat records (written as its converter streams them: '[\\n', records at
    indent=2 joined by ',\\n', '\\n]') beside the images, grayscale JPEGs under their own names."""
    tasks = _ls_tasks()
    _ls_images(root, tasks)
    (root / "result.json").write_text(
        "[\n" + ",\n".join(json.dumps(r, indent=2, ensure_ascii=False) for r in _ls_records(tasks)) + "\n]",
        encoding="utf-8")
    return _ls_truth(tasks)


def labelstudio_csv(root: Path) -> dict:
    """Label Studio 'CSV': the same records as rows, columns sorted, QUOTE_NONNUMERIC, regions as compact JSON."""
    tasks = _ls_tasks()
    _ls_images(root, tasks)
    _write_ls_csv(root / "project-7-at-2024-05-09-10-00-1f2e3d4c.csv", _ls_records(tasks))
    return _ls_truth(tasks)


def _write_ls_csv(path: Path, records: list[dict]) -> None:
    always = {"annotator", "annotation_id", "created_at", "updated_at", "lead_time"}
    keys = sorted(always | {k for r in records for k in r})
    with open(path, "w", encoding="utf8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, quoting=csv.QUOTE_NONNUMERIC)
        writer.writeheader()
        for r in records:
            writer.writerow({k: (json.dumps(v, ensure_ascii=False, separators=(",", ":"))
                                 if isinstance(v, (list, dict)) else v) for k, v in r.items()})


def labelstudio_csv_choices(root: Path) -> dict:
    """Label Studio 'CSV' of an image classification project (a Choices tag named 'choice'): the cell is the chosen
    class; one task annotated by two people (the later read); uploads with their hash prefix kept in the file names."""
    names, records, truth = ("healthy", "rust", "scab"), [], {}
    for i in range(9):
        file = f"{i:08x}-leaf_{i}.jpg"
        make_image(root / "media" / "upload" / "2" / file, *SIZE, seed=i)
        label = names[i % 3]
        people = [("ana@example.com", "2024-05-01T10:00:00Z", label)]
        if i == 4:
            people.insert(0, ("bo@example.com", "2024-05-02T11:00:00Z", "healthy"))
            label = "healthy"
        for n, (who, created, chosen) in enumerate(people):
            records.append({"image": f"/data/upload/2/{file}", "id": 40 + i, "choice": chosen, "annotator": who,
                            "annotation_id": 90 + 2 * i + n, "created_at": created, "updated_at": created,
                            "lead_time": 3.25})
        truth[file] = (None, label)
    _write_ls_csv(root / "result.csv", records)
    return truth


def labelstudio_json(root: Path) -> dict:
    """Label Studio 'JSON': full tasks; task 3 with two annotations and a later cancelled one (the latest not
    cancelled is read), a polygon, a keypoint (left out) and an unlabelled task."""
    tasks, out = _ls_tasks(), []
    _ls_images(root, tasks)
    for task in tasks:
        annotations = []
        for n, (regions, created) in enumerate(task["annotations"]):
            result = [{"id": f"r{task['id']}{n}{k}", "type": "polygonlabels" if "points" in r else "rectanglelabels",
                       "from_name": "label", "to_name": "image", "original_width": LS_SIZE[0],
                       "original_height": LS_SIZE[1], "image_rotation": 0, "origin": "manual", "value": r}
                      for k, r in enumerate(regions)]
            if task["id"] == 101:
                result.append({"id": "kp", "type": "keypointlabels", "from_name": "kp", "to_name": "image",
                               "original_width": 200, "original_height": 100, "image_rotation": 0,
                               "value": {"x": 5, "y": 5, "width": 0.5, "keypointlabels": ["tip"]}})
            annotations.append({"id": 500 + task["id"] * 2 + n, "completed_by": 1, "result": result,
                                "was_cancelled": False, "ground_truth": False, "created_at": created,
                                "updated_at": created, "lead_time": 9.1, "task": task["id"]})
        if task["id"] == 104:
            annotations.append({"id": 999, "completed_by": 2, "result": [], "was_cancelled": True,
                                "created_at": "2024-06-01T00:00:00.000000Z", "task": task["id"]})
        out.append({"id": task["id"], "annotations": annotations, "drafts": [], "predictions": [],
                    "data": {"image": task["ref"]}, "meta": {}, "created_at": "2024-05-01T09:00:00.000000Z",
                    "updated_at": "2024-05-01T09:00:00.000000Z", "inner_id": task["id"] - 100, "total_annotations":
                    len(annotations), "cancelled_annotations": int(task["id"] == 104), "total_predictions": 0,
                    "comment_count": 0, "unresolved_comment_count": 0, "last_comment_updated_at": None,
                    "project": 7, "updated_by": 1, "comment_authors": []})
    (root / "project-7-at-2024-05-09-10-00-1f2e3d4c.json").write_text(json.dumps(out, indent=2, ensure_ascii=False))
    return _ls_truth(tasks)


def createml(root: Path, counts=(5, 2, 1)) -> dict:
    """Roboflow 'CreateML': train/ valid/ test/, each with _annotations.createml.json (x, y the box's centre, in
    pixels) beside its images."""
    truth: dict = {}
    i = 0
    for split, n in zip(("train", "valid", "test"), counts):
        entries = []
        for _ in range(n):
            name = f"helmet_{i:03d}_jpg.rf.{i:032x}.jpg"
            boxes = [[*_box(i, k), ("helmet", "head")[(i + k) % 2]] for k in range(1 + i % 2)]
            boxes[0][2] += 1  # an odd width: a centre on a half pixel
            make_image(root / split / name, *SIZE, boxes, seed=i)
            entries.append({"image": name, "annotations": [
                {"label": label, "coordinates": {"x": (x1 + x2) / 2, "y": (y1 + y2) / 2, "width": x2 - x1,
                                                 "height": y2 - y1}} for x1, y1, x2, y2, label in boxes]})
            truth[name] = ({"valid": "val"}.get(split, split), boxes)
            i += 1
        (root / split / "_annotations.createml.json").write_text(json.dumps(entries))
    return truth


def _via_regions(i: int) -> tuple[list, list]:
    """(VIA regions, the boxes they give): a rect, a polygon on odd images, a point (left out) on image 2."""
    x1, y1, x2, y2 = _box(i, 0)
    regions = [{"shape_attributes": {"name": "rect", "x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1},
                "region_attributes": {"label": "balloon", "occluded": {}}}]
    boxes = [[x1, y1, x2, y2, "balloon"]]
    if i % 2:
        px, py = [20, 30, 36, 25], [20, 18, 30, 40]
        regions.append({"shape_attributes": {"name": "polygon", "all_points_x": px, "all_points_y": py},
                        "region_attributes": {"label": "kite", "occluded": {"yes": True}}})
        boxes.append([min(px), min(py), max(px), max(py), "kite"])
    if i == 2:
        regions.append({"shape_attributes": {"name": "point", "cx": 10, "cy": 10}, "region_attributes": {}})
    return regions, boxes


def via_project(root: Path) -> dict:
    """A VIA 2.0.10 project file (Save project): `_via_settings`, `_via_img_metadata` keyed 'name+size',
    `_via_attributes` with a dropdown 'label' and a checkbox 'occluded'; one image without regions."""
    truth, meta = {}, {}
    for i in range(6):
        name = f"sky {i}.jpg"
        regions, boxes = _via_regions(i) if i != 5 else ([], [])
        make_image(root / "images" / name, *SIZE, boxes, seed=i)
        size = (root / "images" / name).stat().st_size
        meta[f"{name}{size}"] = {"filename": name, "size": size, "regions": regions, "file_attributes": {}}
        truth[name] = (None, boxes)
    project = {"_via_settings": {"ui": {"annotation_editor_height": 25, "annotation_editor_fontsize": 0.8,
                                        "leftsidebar_width": 18,
                                        "image_grid": {"img_height": 80, "rshape_fill": "none",
                                                       "rshape_fill_opacity": 0.3, "rshape_stroke": "yellow",
                                                       "rshape_stroke_width": 2, "show_region_shape": True,
                                                       "show_image_policy": "all"},
                                        "image": {"region_label": "label",
                                                  "region_color": "__via_default_region_color__",
                                                  "region_label_font": "10px Sans",
                                                  "on_image_annotation_editor_placement": "NEAR_REGION"}},
                                 "core": {"buffer_size": 18, "filepath": {}, "default_filepath": "images/"},
                                 "project": {"name": "balloons"}},
               "_via_img_metadata": meta,
               "_via_attributes": {"region": {
                   "label": {"type": "dropdown", "description": "", "options": {"balloon": "", "kite": ""},
                             "default_options": {}},
                   "occluded": {"type": "checkbox", "description": "", "options": {"yes": ""},
                                "default_options": {}}}, "file": {}},
               "_via_data_format_version": "2.0.10", "_via_image_id_list": list(meta)}
    (root / "via_project_2May2024_10h12m.json").write_text(json.dumps(project, separators=(",", ":")))
    return truth


def via_export_json(root: Path) -> dict:
    """Matterport's balloon layout: train/ and val/, each with VIA's 'Export annotations (as json)' file
    via_region_data.json beside the images; the only region attribute is 'name'."""
    truth = {}
    for split, ids in (("train", range(0, 5)), ("val", range(5, 7))):
        meta = {}
        for i in ids:
            name = f"{i:05d}_balloon.jpg"
            regions, boxes = _via_regions(i)
            for r in regions:
                r["region_attributes"] = {"name": r["region_attributes"]["label"]} if r["region_attributes"] else {}
            make_image(root / split / name, *SIZE, boxes, seed=i)
            size = (root / split / name).stat().st_size
            meta[f"{name}{size}"] = {"filename": name, "size": size, "regions": regions, "file_attributes": {}}
            truth[name] = (split, boxes)
        (root / split / "via_region_data.json").write_text(json.dumps(meta, separators=(",", ":")))
    return truth


def via_csv(root: Path) -> dict:
    """VIA's 'Export annotations (as csv)', written as via.js does it: the header, then each row prefixed by '\\n' (no
    final newline), the attributes JSON.stringify'd with their quotes doubled, an image without regions as
    ',0,0,"{}","{}"'."""
    lines = ["filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes"]
    truth = {}
    for i in range(6):
        name = f"sky_{i}.png"
        regions, boxes = _via_regions(i) if i != 4 else ([], [])
        make_image(root / name, *SIZE, boxes, seed=i, fmt="PNG")
        size = (root / name).stat().st_size
        prefix = f"\n{name},{size},\"{{}}\""

        def quoted(value: dict) -> str:
            return '"' + json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace('"', '""') + '"'
        if not regions:
            lines.append(prefix + ',0,0,"{}","{}"')
        for n, r in enumerate(regions):
            lines.append(",".join([prefix, str(len(regions)), str(n), quoted(r["shape_attributes"]),
                                   quoted(r["region_attributes"])]))
        truth[name] = (None, boxes)
    (root / "via_export_csv.csv").write_text("".join(lines), encoding="utf-8")
    return truth


def csv_text(path: Path) -> list[list[str]]:
    """A CSV file's rows (for checks on what a fixture wrote)."""
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
