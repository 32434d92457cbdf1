"""Classification from one folder per class: `<class>/<image>`, or `<split>/<class>/<image>` as Roboflow's folder
export writes it (train/, valid/, test/)."""
from __future__ import annotations

from backend.data.common import Format, Parsed, Problems, RawSample, Upload
from backend.data.split import split_named


def detect(upload: Upload) -> bool:
    return bool(upload.images) and all(len(img.relative_to(upload.root).parts) >= 2 for img in upload.images)


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
    return Parsed("classification", sorted(classes), samples)


FORMAT = Format("folders", "classification", detect, parse)
