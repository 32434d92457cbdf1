"""Label Studio JSON-MIN export: one flat object per annotation (no `data` or `annotations` keys): the task's data
fields (the image as a URL or path), its `id`, one key per labelling tag holding that tag's regions
(`rectanglelabels` / `polygonlabels` in percent of `original_width/height`) or its choice (a string), and the
annotation's `annotator`, `annotation_id`, `created_at`. A task annotated several times has one object per annotation;
the latest is read. Label Studio's CSV export holds the same records as rows (backend.data.formats.labelstudio_csv)."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from backend.data.common import Format, Parsed, Problems, RawSample, Upload, load_json
from backend.data.formats.ls_common import META, Regions, find_image, image_path, latest
from backend.data.safety import IMAGE_SUFFIXES
from backend.data.split import split_named

_SPLIT_KEYS = ("split", "subset")
_CHOICE_NAMES = ("choice", "choices", "class", "label", "category")


def is_record(doc: object) -> bool:
    return isinstance(doc, dict) and "data" not in doc and "annotation_id" in doc and "annotator" in doc


def _min_files(upload: Upload) -> list[Path]:
    out = []
    for p in upload.with_suffix(".json"):
        if '"annotation_id"' not in p.read_text(encoding="utf-8-sig", errors="replace")[:200_000]:
            continue
        try:
            doc = load_json(p, upload)
        except Exception:  # noqa: BLE001 - detection only; parse reports the error
            continue
        if isinstance(doc, list) and doc and all(is_record(r) for r in doc):
            out.append(p)
    return out


def detect(upload: Upload) -> bool:
    return bool(_min_files(upload))


def _is_regions(value: object) -> bool:
    return isinstance(value, list) and any(isinstance(r, dict) for r in value)


def _image_key(records: list[dict]) -> str | None:
    """'image' (Label Studio's usual name), else the data field whose values name image files."""
    if any("image" in r for r in records):
        return "image"
    for key in dict.fromkeys(k for r in records for k in r if k not in META):
        values = [r[key] for r in records if isinstance(r.get(key), str) and r[key]]
        if values and all(PurePosixPath(image_path(v)).suffix.lower() in IMAGE_SUFFIXES for v in values):
            return key
    return None


def _choice_key(records: list[dict], skip: set[str], where: str, problems: Problems, notes: list[str]) -> str | None:
    """The field holding a Choices tag's answer (a string) where no record has regions: the only text field besides
    the image, or the one named like a class ('choice', as Label Studio's template names it; said in the summary);
    several others are refused, not guessed between."""
    if any(_is_regions(v) for r in records for v in r.values()):
        return None
    text = list(dict.fromkeys(k for r in records for k, v in r.items()
                              if k not in skip and isinstance(v, (str, dict)) and v))
    if len(text) == 1:
        return text[0]
    named = [k for k in text if k.lower() in _CHOICE_NAMES]
    if len(named) == 1:
        notes.append(f"the class of each task is its field '{named[0]}' (not read: "
                     f"{', '.join(k for k in text if k != named[0])})")
        return named[0]
    if len(text) > 1:
        problems.add(f"{where}: cannot tell which field holds the class ({', '.join(text)})")
    return None


def read_records(records: list[dict], where: str, base: Path, upload: Upload, problems: Problems,
                 regions: Regions) -> list[RawSample]:
    """One sample per task (the latest of its records), its regions or choice read onto it."""
    image_key = _image_key(records)
    if image_key is None:
        problems.add(f"{where} has no field naming each task's image (like 'image')")
        return []
    skip = {*META, image_key, *_SPLIT_KEYS}
    choice_key = _choice_key(records, skip, where, problems, regions.notes)
    by_task: dict = {}
    for n, record in enumerate(records):
        task_id = record.get("id", f"#{n + 1}")
        by_task.setdefault(task_id if isinstance(task_id, (int, str)) else str(task_id), []).append(record)
    samples = []
    for task_id, group in by_task.items():
        record, others = latest(group)
        regions.several += others > 0
        at = f"{where}: task {task_id}"
        ref = str(record.get(image_key) or "")
        image = find_image(upload, ref, base)
        if image is None:
            problems.add(f"{at} names image '{ref}', which is not in the upload")
            continue
        split = next((split_named(str(record[k])) for k in _SPLIT_KEYS if isinstance(record.get(k), str)), None)
        sample = RawSample(image, where=at, split=split)
        for key, value in record.items():
            if key in skip:
                continue
            if _is_regions(value):
                regions.read(value, sample, at)
            elif key == choice_key and isinstance(value, dict):  # several choices: {"choices": [...]}
                regions.read([{"type": "choices", **value}], sample, at)
            elif key == choice_key and isinstance(value, str) and value:
                regions.read([{"type": "choices", "choices": [value]}], sample, at)
        samples.append(sample)
    return samples


def parse_files(files: list[Path], records, upload: Upload, problems: Problems) -> Parsed:
    """The flat task records of every file (`records(path, upload)` reads one file's) as one dataset: JSON-MIN's and
    the CSV export's."""
    regions = Regions(problems)
    samples: list[RawSample] = []
    for path in files:
        samples += read_records(records(path, upload), upload.rel(path), path.parent, upload, problems, regions)
    task, classes, samples, warnings = regions.result(samples, "the export")
    return Parsed(task, classes, samples, warnings, read=files)


def parse(upload: Upload, problems: Problems) -> Parsed:
    return parse_files(_min_files(upload), load_json, upload, problems)


FORMAT = Format("labelstudio-min", None, detect, parse)
