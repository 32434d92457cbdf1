"""Classification from one folder per class: `<class>/<image>`."""
from __future__ import annotations

from backend.data.common import Format, Parsed, Problems, RawSample, Upload


def detect(upload: Upload) -> bool:
    return bool(upload.images) and all(len(img.relative_to(upload.root).parts) >= 2 for img in upload.images)


def parse(upload: Upload, problems: Problems) -> Parsed:
    classes: list[str] = []
    samples = []
    for image in upload.images:
        rel = image.relative_to(upload.root)
        if len(rel.parts) < 2:
            problems.add(f"{rel.as_posix()} is not inside a class folder")
            continue
        label = rel.parts[-2]
        if label not in classes:
            classes.append(label)
        samples.append(RawSample(image, label=label, where=rel.as_posix()))
    return Parsed("classification", sorted(classes), samples)


FORMAT = Format("folders", "classification", detect, parse)
