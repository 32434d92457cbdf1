"""Classification from a CSV of `image,label` rows (a header row is optional)."""
from __future__ import annotations

import csv

from backend.data.common import Format, Parsed, Problems, RawSample, Upload, read_text
from backend.data.safety import ImportProblem

_IMAGE_COLS = ("image", "file", "filename", "file_name", "path")
_LABEL_COLS = ("label", "class", "category")


def detect(upload: Upload) -> bool:
    return bool(upload.with_suffix(".csv"))


def parse(upload: Upload, problems: Problems) -> Parsed:
    classes: list[str] = []
    samples = []
    for path in upload.with_suffix(".csv"):
        where = upload.rel(path)
        try:
            rows = list(csv.reader(read_text(path, upload).splitlines()))
        except csv.Error as e:
            raise ImportProblem(f"{where} is not a readable CSV file ({e})") from None
        if not rows:
            continue
        header = [h.strip().lower() for h in rows[0]]
        img_col = next((header.index(c) for c in _IMAGE_COLS if c in header), None)
        lab_col = next((header.index(c) for c in _LABEL_COLS if c in header), None)
        has_header = img_col is not None and lab_col is not None
        if has_header:
            rows = rows[1:]
        else:
            img_col, lab_col = 0, 1
        for n, row in enumerate(rows, 2 if has_header else 1):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(img_col, lab_col) or not row[lab_col].strip():
                problems.add(f"{where} row {n} needs an image and a label")
                continue
            ref, label = row[img_col].strip(), row[lab_col].strip()
            image = upload.find_image(ref, path.parent)
            if image is None:
                problems.add(f"{where} row {n} names image '{ref}', which is not in the upload")
                continue
            if label not in classes:
                classes.append(label)
            samples.append(RawSample(image, label=label, where=f"{where} row {n}"))
    return Parsed("classification", classes, samples)


FORMAT = Format("csv", "classification", detect, parse)
