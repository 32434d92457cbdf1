"""Classification from CSV files as tools write them: `image,label` rows (a header row optional), or one-hot
columns `filename, A, B, …` of 0/1 (Roboflow's `_classes.csv` in each split folder, cells with a leading space).
An optional `split` column, or the CSV's or the image's folder (train/, valid/, test/), gives the split."""
from __future__ import annotations

import csv

from backend.data.common import Format, Parsed, Problems, RawSample, Upload, read_text
from backend.data.safety import ImportProblem
from backend.data.split import split_in_path, split_named

_IMAGE_COLS = ("image", "file", "filename", "file_name", "image_name", "path", "image_path", "img")
_LABEL_COLS = ("label", "class", "category", "class_name", "label_name")
_SPLIT_COLS = ("split", "subset")


def detect(upload: Upload) -> bool:
    return bool(upload.with_suffix(".csv"))


def _rows(path, upload: Upload) -> list[list[str]]:
    try:
        return [[cell.strip() for cell in row] for row in csv.reader(read_text(path, upload).splitlines())]
    except csv.Error as e:
        raise ImportProblem(f"{upload.rel(path)} is not a readable CSV file ({e})") from None


def _label(row: list[str], label_col: int | None, one_hot: list[tuple[int, str]], at: str,
           problems: Problems) -> str | None:
    """The row's class, or None with the problem added: a label cell, or the one column marked 1."""
    if label_col is not None:
        if len(row) <= label_col or not row[label_col]:
            problems.add(f"{at} needs an image and a label")
            return None
        return row[label_col]
    marked = [name for i, name in one_hot if i < len(row) and row[i] in ("1", "1.0")]
    if len(marked) != 1:
        which = "no class" if not marked else f"{len(marked)} classes (" + ", ".join(marked) + ")"
        problems.add(f"{at} has {which} marked 1; one-hot rows need exactly one")
        return None
    return marked[0]


def parse(upload: Upload, problems: Problems) -> Parsed:
    classes: list[str] = []
    samples = []
    for path in upload.with_suffix(".csv"):
        where = upload.rel(path)
        rows = _rows(path, upload)
        if not rows:
            continue
        header = [h.lower() for h in rows[0]]
        img_col = next((header.index(c) for c in _IMAGE_COLS if c in header), None)
        lab_col = next((header.index(c) for c in _LABEL_COLS if c in header), None)
        split_col = next((header.index(c) for c in _SPLIT_COLS if c in header), None)
        one_hot: list[tuple[int, str]] = []
        if img_col is not None and lab_col is None:  # filename, A, B, ...: every other column a class
            one_hot = [(i, name) for i, name in enumerate(rows[0]) if i not in (img_col, split_col) and name]
            classes += [name for _, name in one_hot if name not in classes]  # declared: unused ones are dropped
        has_header = img_col is not None
        if has_header:
            rows = rows[1:]
        else:
            img_col, lab_col = 0, 1
        for n, row in enumerate(rows, 2 if has_header else 1):
            if not any(row):
                continue
            at = f"{where} row {n}"
            label = _label(row, lab_col, one_hot, at, problems)
            if label is None:
                continue
            ref = row[img_col] if img_col < len(row) else ""
            image = upload.find_image(ref, path.parent) if ref else None
            if image is None:
                problems.add(f"{at} names image '{ref}', which is not in the upload")
                continue
            if label not in classes:
                classes.append(label)
            split = split_named(row[split_col]) if split_col is not None and split_col < len(row) else None
            samples.append(RawSample(image, label=label, where=at, split=split or split_in_path(where)))
    return Parsed("classification", classes, samples, read=upload.with_suffix(".csv"))


FORMAT = Format("csv", "classification", detect, parse)
