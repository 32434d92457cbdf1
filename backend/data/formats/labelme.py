"""LabelMe: one JSON per image (`shapes` of `label`, `points`, `shape_type`; `imagePath` relative to the JSON, often
with Windows separators; `imageData`, the image itself in base64, or null; `imageHeight`/`imageWidth`). Rectangles
(two opposite corners, in any order) and polygons become boxes; the image is the file `imagePath` names (beside the
JSON, or found by name), else the one beside the JSON with its name, else the embedded `imageData`, written out."""
from __future__ import annotations

import base64
import binascii
from collections import Counter
from pathlib import Path, PurePosixPath

from backend.data.common import Format, Parsed, Problems, RawSample, Upload, load_json

_BOXED = ("rectangle", "polygon")
_MAGIC = {b"\xff\xd8\xff": ".jpg", b"\x89PNG\r\n\x1a\n": ".png", b"BM": ".bmp", b"RIFF": ".webp",
          b"II*\x00": ".tif", b"MM\x00*": ".tif"}


def _is_labelme(doc: object) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("shapes"), list) and ("imagePath" in doc or "imageData" in doc)


def _labelme_files(upload: Upload) -> list[Path]:
    out = []
    for p in upload.with_suffix(".json"):
        if '"shapes"' not in p.read_text(encoding="utf-8-sig", errors="replace")[:100_000]:
            continue
        try:
            if _is_labelme(load_json(p, upload)):
                out.append(p)
        except Exception:  # noqa: BLE001 - detection only; parse reports the error
            continue
    return out


def detect(upload: Upload) -> bool:
    return bool(_labelme_files(upload))


def _embedded(doc: dict, ref: str, path: Path, upload: Upload, problems: Problems) -> Path | None:
    """`imageData` written beside the JSON under the name `imagePath` gives (its extension what the bytes are)."""
    where = upload.rel(path)
    try:
        data = base64.b64decode(str(doc["imageData"]), validate=True)
    except (binascii.Error, ValueError):
        problems.add(f"{where}: imageData is not base64")
        return None
    suffix = next((s for magic, s in _MAGIC.items() if data.startswith(magic)), None)
    if suffix is None:
        problems.add(f"{where}: imageData is not a JPEG, PNG, BMP, WebP or TIFF image")
        return None
    stem = PurePosixPath(ref.replace("\\", "/")).stem or path.stem
    target = path.parent / (stem + suffix)
    if target.exists():
        problems.add(f"{where} names image '{ref}', which is not in the upload (and '{upload.rel(target)}' is "
                     "another file)")
        return None
    target.write_bytes(data)
    return target


def _image(doc: dict, path: Path, upload: Upload, problems: Problems) -> Path | None:
    ref = str(doc.get("imagePath") or "")
    found = upload.find_image(ref, path.parent) if ref else None
    if found is None:  # LabelMe names the JSON after its image: 'a.json' beside 'a.jpg'
        beside = [p for p in upload.images if p.parent == path.parent and p.stem == path.stem]
        found = beside[0] if len(beside) == 1 else None
    if found is None and doc.get("imageData"):
        return _embedded(doc, ref, path, upload, problems)
    if found is None:
        problems.add(f"{upload.rel(path)} names image '{ref}', which is not in the upload (and holds no imageData)")
    return found


def parse(upload: Upload, problems: Problems) -> Parsed:
    classes: list[str] = []
    samples: list[RawSample] = []
    polygons, left_out = 0, Counter()
    files = _labelme_files(upload)
    for path in files:
        where = upload.rel(path)
        doc = load_json(path, upload)
        image = _image(doc, path, upload, problems)
        if image is None:
            continue
        sample = RawSample(image, where=where)
        try:
            sample.frame = (float(doc["imageWidth"]), float(doc["imageHeight"]))
            if not min(sample.frame) > 0:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            sample.frame = None  # no size said: the points are in the image's own pixels
        for n, shape in enumerate(doc["shapes"], 1):
            kind = str(shape.get("shape_type") or "polygon") if isinstance(shape, dict) else "?"
            if kind not in _BOXED:
                left_out[kind] += 1
                continue
            label = str(shape.get("label") or "").strip()
            try:
                xs, ys = zip(*((float(p[0]), float(p[1])) for p in shape["points"]))
                if len(xs) < 2:
                    raise ValueError
            except (KeyError, TypeError, ValueError, IndexError):
                problems.add(f"{where}: shape {n} ('{label}') has no [x, y] points")
                continue
            if not label:
                problems.add(f"{where}: shape {n} has no label")
                continue
            polygons += kind == "polygon"
            if label not in classes:
                classes.append(label)
            sample.boxes.append([min(xs), min(ys), max(xs), max(ys), label])
        samples.append(sample)
    warnings = []
    if polygons:
        warnings.append(f"{polygons} polygon{'s were' if polygons > 1 else ' was'} read as the bounding box of "
                        f"{'their' if polygons > 1 else 'its'} points")
    if left_out:
        warnings.append(f"{sum(left_out.values())} shapes that are neither rectangles nor polygons were left out ("
                        + ", ".join(f"{k} {n}" for k, n in sorted(left_out.items())) + ")")
    return Parsed("detection", classes, samples, warnings, read=files)


FORMAT = Format("labelme", "detection", detect, parse)
