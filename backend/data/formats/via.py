"""VGG Image Annotator (VIA 2): the project JSON (`_via_img_metadata`), its JSON export (`{key: {filename, size,
regions, file_attributes}}`; regions a list, or an object of them as VIA 1 wrote) or its CSV export
(`filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes`, the attributes
as JSON with doubled quotes; `#filename` in VIA 1). `rect` and `polygon` regions become boxes; the class is the value
of one region attribute (the only one, or the one named like a class: label, class, name, type ...), which the
summary names. Where a project's JSON and CSV are both uploaded, the JSON is read."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

from backend.data.common import Format, Parsed, Problems, RawSample, Upload, load_json, read_text
from backend.data.formats.ls_common import image_path
from backend.data.safety import ImportProblem

CSV_HEADER = ["filename", "file_size", "file_attributes", "region_count", "region_id", "region_shape_attributes",
              "region_attributes"]
_CLASS_ATTRS = ("label", "class", "class_name", "category", "name", "type", "object")

Entry = tuple[str, list[tuple[dict, dict]], str]  # (file name, [(shape_attributes, region_attributes)], where)


def _images_of(doc: object) -> dict | None:
    """The image entries of a VIA JSON: a project's `_via_img_metadata`, or the export's top-level object."""
    if isinstance(doc, dict) and isinstance(doc.get("_via_img_metadata"), dict):
        return doc["_via_img_metadata"]
    if (isinstance(doc, dict) and doc and
            all(isinstance(v, dict) and "filename" in v and "regions" in v for v in doc.values())):
        return doc
    return None


def _json_files(upload: Upload) -> list[Path]:
    out = []
    for p in upload.with_suffix(".json"):
        if '"regions"' not in p.read_text(encoding="utf-8-sig", errors="replace")[:200_000]:
            continue
        try:
            if _images_of(load_json(p, upload)) is not None:
                out.append(p)
        except Exception:  # noqa: BLE001 - detection only; parse reports the error
            continue
    return out


def _csv_files(upload: Upload) -> list[Path]:
    out = []
    for p in upload.with_suffix(".csv"):
        try:
            first = read_text(p, upload).lstrip("#").split("\n", 1)[0].strip()
        except ImportProblem:
            continue
        if [c.strip() for c in first.split(",")] == CSV_HEADER:
            out.append(p)
    return out


def detect(upload: Upload) -> bool:
    return bool(_json_files(upload) or _csv_files(upload))


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _from_json(path: Path, upload: Upload, problems: Problems) -> tuple[list[Entry], list[str]]:
    """The entries of a VIA JSON, and the region attributes its project declares (in order)."""
    doc = load_json(path, upload)
    where = upload.rel(path)
    attributes = doc.get("_via_attributes") if "_via_img_metadata" in doc else None
    region = attributes.get("region") if isinstance(attributes, dict) else None
    declared = list(region) if isinstance(region, dict) else []
    entries = []
    for key, entry in _images_of(doc).items():
        if not isinstance(entry, dict):
            problems.add(f"{where}: the entry '{key}' is not a JSON object with filename and regions")
            continue
        regions = entry.get("regions") or []
        if not isinstance(regions, (list, dict)):
            problems.add(f"{where}: the regions of '{entry.get('filename')}' are not a list")
            continue
        if isinstance(regions, dict):  # VIA 1: {"0": {...}, "1": {...}}
            regions = [regions[k] for k in sorted(regions, key=lambda k: int(k) if str(k).isdigit() else 0)]
        pairs = [(_dict(r.get("shape_attributes")), _dict(r.get("region_attributes")))
                 for r in regions if isinstance(r, dict)]
        entries.append((str(entry.get("filename") or ""), pairs, where))
    return entries, declared


def _from_csv(path: Path, upload: Upload, problems: Problems) -> list[Entry]:
    where = upload.rel(path)
    try:
        rows = list(csv.reader(io.StringIO(read_text(path, upload), newline="")))
    except csv.Error as e:
        raise ImportProblem(f"{where} is not a readable CSV file ({e})") from None
    by_file: dict[str, list[tuple[dict, dict]]] = {}
    for n, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(CSV_HEADER):
            problems.add(f"{where} row {n} has {len(row)} fields, not the {len(CSV_HEADER)} of VIA's CSV")
            continue
        regions = by_file.setdefault(row[0], [])
        try:
            shape, attrs = json.loads(row[5] or "{}"), json.loads(row[6] or "{}")
            if not (isinstance(shape, dict) and isinstance(attrs, dict)):
                raise ValueError
        except ValueError:
            problems.add(f"{where} row {n}: region_shape_attributes and region_attributes are not JSON objects")
            continue
        if shape:  # an image without regions has a row of '{}'
            regions.append((shape, attrs))
    return [(name, regions, where) for name, regions in by_file.items()]


def _class_attribute(entries: list[Entry], declared: list[str], problems: Problems) -> str | None:
    names = list(dict.fromkeys([*declared, *(k for _, regions, _ in entries for _, attrs in regions for k in attrs)]))
    named = [a for a in _CLASS_ATTRS if a in {n.lower() for n in names}]
    if len(names) == 1:
        return names[0]
    if named:
        return next(n for n in names if n.lower() == named[0])
    if names:
        problems.add(f"cannot tell which region attribute holds the class ({', '.join(names)}): name it 'label'")
    elif any(regions for _, regions, _ in entries):
        problems.add(f"the regions of {entries[0][2]} have no region attribute to give their class: add one (like "
                     "'label') in VIA")
    return None


def _label(value: object) -> str | None:
    """An attribute's value as a class: text (a dropdown's or radio's option id), or the one ticked checkbox."""
    if isinstance(value, dict):
        ticked = [k for k, v in value.items() if v]
        return str(ticked[0]).strip() if len(ticked) == 1 else None
    return str(value).strip() if value not in (None, "") else None


def _box(shape: dict) -> list[float]:
    if shape.get("name") == "rect":
        x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
        return [x, y, x + w, y + h]
    xs, ys = [float(v) for v in shape["all_points_x"]], [float(v) for v in shape["all_points_y"]]
    if len(xs) < 2 or len(xs) != len(ys):
        raise ValueError("unequal or too few points")
    return [min(xs), min(ys), max(xs), max(ys)]


def parse(upload: Upload, problems: Problems) -> Parsed:
    files, entries, declared = _json_files(upload), [], []
    for path in files:
        found, names = _from_json(path, upload, problems)
        entries += found
        declared += names
    if not files:
        files = _csv_files(upload)
        for path in files:
            entries += _from_csv(path, upload, problems)
    attribute = _class_attribute(entries, declared, problems)
    classes: list[str] = []
    samples = []
    polygons, left_out = 0, Counter()
    for name, regions, where in entries:
        image = upload.find_image(image_path(name), upload.root / Path(where).parent) if name else None
        if image is None:
            problems.add(f"{where} names image '{name}', which is not in the upload")
            continue
        sample = RawSample(image, where=f"{where}: {name}")
        for n, (shape, attrs) in enumerate(regions, 1):
            if shape.get("name") not in ("rect", "polygon"):
                left_out[str(shape.get("name"))] += 1
                continue
            try:
                box = _box(shape)
            except (KeyError, TypeError, ValueError):
                problems.add(f"{sample.where}: region {n} ({shape.get('name')}) has no complete coordinates")
                continue
            label = _label(attrs.get(attribute)) if attribute else None
            if attribute and label is None:
                problems.add(f"{sample.where}: region {n} has no single '{attribute}'")
                continue
            polygons += shape["name"] == "polygon"
            if label is not None:
                if label not in classes:
                    classes.append(label)
                sample.boxes.append([*box, label])
        samples.append(sample)
    warnings = [f"the class of each region is its region attribute '{attribute}'"] if attribute else []
    if polygons:
        warnings.append(f"{polygons} polygon{'s were' if polygons > 1 else ' was'} read as the bounding box of "
                        f"{'their' if polygons > 1 else 'its'} points")
    if left_out:
        warnings.append(f"{sum(left_out.values())} regions that are neither rect nor polygon were left out ("
                        + ", ".join(f"{k} {n}" for k, n in sorted(left_out.items())) + ")")
    return Parsed("detection", classes, samples, warnings, read=files)


FORMAT = Format("via", "detection", detect, parse)
