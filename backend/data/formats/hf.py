"""Hugging Face `datasets` folders: `save_to_disk` output, or parquet files as on the Hub (`data/train-0000-of-0001
.parquet`, `CONFIG/train/0000.parquet`), with an image column and either `objects` (`bbox` as COCO x/y/w/h or
corners, `category` as ClassLabel ids or names) for detection or a `label` ClassLabel for classification; each
split kept. The images are written out as files (their own names where the dataset keeps them)."""
from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from PIL import Image

from backend.data.common import Format, Parsed, Problems, RawSample, Upload
from backend.data.safety import IMAGE_SUFFIXES, ImportProblem, reason
from backend.data.split import split_in_path, split_named

_OBJECTS = ("objects", "annotations", "objects_list")
_BBOX = ("bbox", "bboxes", "box", "boxes")
_CATEGORY = ("category", "categories", "category_id", "label", "labels", "class", "class_id")
_LABEL = ("label", "labels", "class", "category", "fine_label", "coarse_label")
_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}
_FRACTION_MAX = 1.5
"""Boxes whose every coordinate is at most this are read as fractions of the image size."""


def _saved_roots(upload: Upload) -> list[Path]:
    return [p.parent for p in upload.files if p.name == "state.json" and any(p.parent.glob("*.arrow"))]


def detect(upload: Upload) -> bool:
    return bool(_saved_roots(upload) or upload.with_suffix(".parquet"))


def _tables(upload: Upload) -> Iterator[tuple[str | None, str, Any, Any]]:
    """(split, where, features, pyarrow table) for each split of each dataset in the upload."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    for root in _saved_roots(upload):
        where = upload.rel(root) if root != upload.root else "the dataset folder"
        try:
            ds = datasets.load_from_disk(str(root))
        except Exception as e:  # noqa: BLE001 - a damaged or foreign folder: one sentence
            raise ImportProblem(f"{where} is not a readable Hugging Face dataset "
                                f"({reason(e, (upload.root, 'the upload'))})") from None
        split = split_named(root.name) or split_named(str(ds.split or "")) or split_in_path(f"{upload.rel(root)}/x")
        yield split, where, ds.features, ds.data.table
    groups: dict[tuple[Path, str | None], list[Path]] = {}
    for p in upload.with_suffix(".parquet"):
        split = split_named(p.stem.split("-")[0]) or split_in_path(upload.rel(p))
        groups.setdefault((p.parent, split), []).append(p)
    for (_, split), files in groups.items():
        where = upload.rel(files[0])
        try:
            table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
            features = datasets.Features.from_arrow_schema(table.schema)
        except Exception as e:  # noqa: BLE001 - not parquet, or parts that do not fit together
            raise ImportProblem(f"{where} is not a readable parquet file of a Hugging Face dataset "
                                f"({reason(e, (upload.root, 'the upload'))})") from None
        yield split, where, features, table


def _column(features, names: tuple[str, ...], want=None) -> str | None:
    for name in names:
        if name in features and (want is None or want(features[name])):
            return name
    return None


def _inner(feature):
    """Through lists and sequences to what they hold."""
    while True:
        if isinstance(feature, (list, tuple)) and len(feature) == 1:
            feature = feature[0]
        elif hasattr(feature, "feature") and not hasattr(feature, "names"):
            feature = feature.feature
        else:
            return feature


def _class_names(feature) -> list[str] | None:
    inner = _inner(feature)
    return list(inner.names) if hasattr(inner, "names") else None


def _image_column(features) -> str | None:
    import datasets
    found = [k for k, f in features.items() if isinstance(f, datasets.Image)]
    return found[0] if found else None


def _object_fields(features, column: str) -> tuple[str | None, str | None, list[str] | None]:
    inner = features[column]
    inner = inner if isinstance(inner, dict) else _inner(inner)
    if not isinstance(inner, dict):
        return None, None, None
    bbox, category = _column(inner, _BBOX), _column(inner, _CATEGORY)
    return bbox, category, _class_names(inner[category]) if category else None


def _objects(value) -> list[dict]:
    """A row's objects as a list of dicts, whether stored as a dict of lists (Sequence) or a list of dicts."""
    if isinstance(value, dict):
        keys = list(value)
        return [dict(zip(keys, vals)) for vals in zip(*(value[k] or [] for k in keys))]
    return [v for v in value or [] if isinstance(v, dict)]


def _write_image(cell, upload: Upload, split: str | None, index: int, taken: set[str]) -> Path | str:
    """The image of one row as a file in the upload (or what is wrong with it)."""
    if not isinstance(cell, dict):
        return "has no image"
    data, path = cell.get("bytes"), cell.get("path")
    if data is None and path:
        found = upload.find_image(str(path))
        return found if found is not None else f"names image '{path}', which is not in the dataset"
    if not data:
        return "has no image"
    name = PurePosixPath(str(path or "").replace("\\", "/")).name
    if not name or name in taken or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        try:
            with Image.open(io.BytesIO(data)) as im:
                ext = _EXT.get(im.format or "", ".img")
        except Exception:  # noqa: BLE001 - the image checks name it; keep a name that shows it is broken
            ext = ".img"
        name = f"{Path(name).stem or f'{index:05d}'}{ext}"
        if name in taken:
            name = f"{index:05d}{ext}"
    taken.add(name)
    target = upload.root / "images" / (split or "all") / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def _rows(table) -> Iterator[dict]:
    for batch in table.to_batches(max_chunksize=64):
        yield from batch.to_pylist()


def _box_reading(boxes: list[tuple[list[float], tuple[int, int]]]) -> str:
    """'xywh' (COCO), 'corners' or 'fractions': what the dataset's boxes fit best. Corners with x2 < x1 cannot
    be corners; x/y/w/h that reach past the image cannot be x/y/w/h."""
    if boxes and all(max(b) <= _FRACTION_MAX for b, _ in boxes):
        return "fractions"
    not_corners = sum(b[2] < b[0] or b[3] < b[1] for b, _ in boxes)
    not_xywh = sum(b[0] + b[2] > w * 1.05 or b[1] + b[3] > h * 1.05 for b, (w, h) in boxes)
    return "corners" if not_xywh > not_corners else "xywh"


def _size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - the image checks report it
        return 1, 1


def parse(upload: Upload, problems: Problems) -> Parsed:
    import datasets
    classes: list[str] = []
    samples: list[RawSample] = []
    raw_boxes: list[tuple[RawSample, list[list[float]], list[str]]] = []
    task = None
    for split, where, features, table in _tables(upload):
        taken: set[str] = set()
        image_col = _image_column(features)
        if image_col is None:
            raise ImportProblem(f"{where} has no image column (a `datasets.Image` feature)")
        objects_col = _column(features, _OBJECTS)
        label_col = None if objects_col else _column(
            features, _LABEL, lambda f: isinstance(f, datasets.ClassLabel) or getattr(f, "dtype", "") == "string")
        if objects_col is None and label_col is None:
            raise ImportProblem(f"{where} has neither an 'objects' column (boxes) nor a 'label' column (classes)")
        this_task = "detection" if objects_col else "classification"
        if task not in (None, this_task):
            raise ImportProblem(f"{where} holds {this_task} annotations, other splits {task}")
        task = this_task
        bbox_key, cat_key, names = _object_fields(features, objects_col) if objects_col else (None, None, None)
        if objects_col and (bbox_key is None or cat_key is None):
            raise ImportProblem(f"{where}: the '{objects_col}' column needs a 'bbox' and a 'category' per object")
        if label_col:
            names = _class_names(features[label_col])
        for name in names or []:
            if name not in classes:
                classes.append(name)
        for i, row in enumerate(_rows(table)):
            at = f"{where} row {i}"
            image = _write_image(row.get(image_col), upload, split, i, taken)
            if isinstance(image, str):
                problems.add(f"{at} {image}")
                continue
            sample = RawSample(image, where=at, split=split)
            if label_col:
                label = _name(row.get(label_col), names)
                if label is None:
                    problems.add(f"{at} has no label")
                    continue
                sample.label = label
                classes += [label] if label not in classes else []
            else:
                coords, labels = [], []
                for obj in _objects(row.get(objects_col)):
                    box, label = obj.get(bbox_key), _name(obj.get(cat_key), names)
                    if not (isinstance(box, (list, tuple)) and len(box) == 4 and label is not None):
                        problems.add(f"{at} has an object without a 4-number bbox and a category")
                        continue
                    coords.append([float(v) for v in box])
                    labels.append(label)
                    classes += [label] if label not in classes else []
                raw_boxes.append((sample, coords, labels))
            samples.append(sample)
    if task is None:
        raise ImportProblem("the Hugging Face dataset holds no split with rows")
    if task == "detection" and raw_boxes and not any(coords for _, coords, _ in raw_boxes):
        raise ImportProblem(f"every row's '{objects_col}' is empty: the Hugging Face dataset has no boxes, so there "
                            "is no class to train on")
    warnings = _read_boxes(raw_boxes)
    roots = _saved_roots(upload)
    read = [p for p in upload.files
            if p.suffix.lower() == ".parquet" or p.name == "dataset_dict.json" or p.parent in roots]
    return Parsed(task, classes, samples, warnings, read=read)


def _name(value, names: list[str] | None) -> str | None:
    if value is None or (isinstance(value, int) and value < 0):  # -1: ClassLabel's 'no label'
        return None
    if isinstance(value, int) and names is not None:
        return names[value] if value < len(names) else None
    return str(value).strip() or None


def _read_boxes(raw_boxes: list[tuple[RawSample, list[list[float]], list[str]]]) -> list[str]:
    """Turn each row's boxes into corners once the whole dataset says how its boxes are written."""
    sized = [(b, _size(s.image)) for s, coords, _ in raw_boxes for b in coords]
    reading = _box_reading(sized)
    for sample, coords, labels in raw_boxes:
        for (a, b, c, d), label in zip(coords, labels):
            corners = [a, b, a + c, b + d] if reading == "xywh" else [a, b, c, d]
            sample.boxes.append([*corners, label])
        sample.normalised = reading == "fractions"
    if not sized:
        return []
    said = {"xywh": "COCO x, y, width, height in pixels", "corners": "corners x1, y1, x2, y2 in pixels",
            "fractions": "corners x1, y1, x2, y2 in fractions of the image size"}[reading]
    return [f"the dataset's boxes were read as {said} (what fits all of them)"]


FORMAT = Format("huggingface", None, detect, parse)
