"""Classification from one folder per class: `<class>/<image>`, or `<split>/<class>/<image>` as Roboflow's folder
export writes it (train/, valid/, test/). Chosen only for an upload with no annotation-like file: folders are never
guessed to be the classes of an export whose annotations went unread."""
from __future__ import annotations

from pathlib import Path

from backend.data.common import Format, Parsed, Problems, RawSample, Upload
from backend.data.formats.yolo import is_label_file
from backend.data.split import split_named

ANNOTATION_LIKE = (".json", ".jsonl", ".xml", ".csv", ".yaml", ".yml", ".parquet", ".arrow")


def annotation_like(upload: Upload) -> list[Path]:
    """Files that look like annotations: JSON, XML, CSV, YAML, parquet, and text files of label rows (a README or
    licence is none; nor is synonyms.json, which any dataset may add)."""
    return [p for p in upload.files if p.name != "synonyms.json" and (
        p.suffix.lower() in ANNOTATION_LIKE or (p.suffix.lower() == ".txt" and is_label_file(p, upload)))]


def detect(upload: Upload) -> bool:
    return (bool(upload.images) and all(len(img.relative_to(upload.root).parts) >= 2 for img in upload.images)
            and not annotation_like(upload))


def parse(upload: Upload, problems: Problems) -> Parsed:
    classes: list[str] = []
    samples = []
    for image in upload.images:
        rel = image.relative_to(upload.root)
        if len(rel.parts) < 2 or split_named(rel.parts[-2]) is not None:
            problems.add(f"{rel.as_posix()} is not inside a class folder")
            continue
        label = rel.parts[-2].strip()
        if label not in classes:
            classes.append(label)
        samples.append(RawSample(image, label=label, where=rel.as_posix()))
    return Parsed("classification", sorted(classes), samples, read=[])


FORMAT = Format("folders", "classification", detect, parse)
