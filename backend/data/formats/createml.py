"""CreateML object-detection JSON (Apple's layout, and Roboflow's `_annotations.createml.json` in each split folder): a
list of `{"image": name, "annotations": [{"label": ..., "coordinates": {"x", "y", "width", "height"}}]}` in pixels,
x and y the box's centre. The file's folder or name gives the split."""
from __future__ import annotations

from pathlib import Path

from backend.data.common import Format, Parsed, Problems, RawSample, Upload, load_json
from backend.data.split import split_in_path, split_named


def _is_createml(doc: object) -> bool:
    return (isinstance(doc, list) and bool(doc) and all(isinstance(e, dict) and "image" in e for e in doc)
            and all(isinstance(e.get("annotations"), list) for e in doc)
            and any(isinstance(a, dict) and "coordinates" in a for e in doc for a in e["annotations"]))


def _createml_files(upload: Upload) -> list[Path]:
    out = []
    for p in upload.with_suffix(".json"):
        if '"coordinates"' not in p.read_text(encoding="utf-8-sig", errors="replace")[:200_000]:
            continue
        try:
            if _is_createml(load_json(p, upload)):
                out.append(p)
        except Exception:  # noqa: BLE001 - detection only; parse reports the error
            continue
    return out


def detect(upload: Upload) -> bool:
    return bool(_createml_files(upload))


def parse(upload: Upload, problems: Problems) -> Parsed:
    classes: list[str] = []
    samples: list[RawSample] = []
    files = _createml_files(upload)
    for path in files:
        where = upload.rel(path)
        split = split_named(path.stem) or split_in_path(where)
        for entry in load_json(path, upload):
            ref = str(entry.get("image") or "")
            image = upload.find_image(ref, path.parent) if ref else None
            if image is None:
                problems.add(f"{where} names image '{ref}', which is not in the upload")
                continue
            sample = RawSample(image, where=where, split=split)
            for n, ann in enumerate(entry["annotations"], 1):
                label = str(ann.get("label") or "").strip() if isinstance(ann, dict) else ""
                try:
                    c = ann["coordinates"]
                    x, y, w, h = (float(c[k]) for k in ("x", "y", "width", "height"))
                except (KeyError, TypeError, ValueError):
                    problems.add(f"{where}: annotation {n} of '{ref}' has no coordinates x, y, width, height")
                    continue
                if not label:
                    problems.add(f"{where}: annotation {n} of '{ref}' has no label")
                    continue
                if label not in classes:
                    classes.append(label)
                sample.boxes.append([x - w / 2, y - h / 2, x + w / 2, y + h / 2, label])
            samples.append(sample)
    return Parsed("detection", classes, samples, read=files)


FORMAT = Format("createml", "detection", detect, parse)
