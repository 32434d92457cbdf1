"""Label Studio JSON export: a list of tasks, each with `data` (the image) and `annotations` whose results are
`rectanglelabels` and `polygonlabels` (boxes, in percent of the original size) or `choices` (the image's class). A
task annotated more than once is read from its latest annotation not cancelled, as Label Studio's own converter does.
A task file of pre-annotations (no `annotations` key, as our own export writes it) is read from each task's first
prediction; `data.split`, where a task has one, is its split."""
from __future__ import annotations

from pathlib import Path

from backend.data.common import Format, Parsed, Problems, RawSample, Upload, load_json
from backend.data.formats.ls_common import Regions, find_image, latest
from backend.data.split import split_named


def _is_ls(doc: object) -> bool:
    return (isinstance(doc, list) and bool(doc) and isinstance(doc[0], dict)
            and "data" in doc[0] and any(k in doc[0] for k in ("annotations", "completions", "predictions")))


def _ls_files(upload: Upload) -> list[Path]:
    out = []
    for p in upload.with_suffix(".json"):
        head = p.read_text(encoding="utf-8-sig", errors="replace")[:200_000]
        if '"data"' in head and any(f'"{k}"' in head for k in ("annotations", "completions", "predictions")):
            try:
                if _is_ls(load_json(p, upload)):
                    out.append(p)
            except Exception:  # noqa: BLE001 - detection only; parse reports the error
                continue
    return out


def detect(upload: Upload) -> bool:
    return bool(_ls_files(upload))


def _image_ref(data: dict) -> str:
    return str(data.get("image") or next((v for v in data.values() if isinstance(v, str)), ""))


def flat(result: dict) -> dict:
    """A result as JSON-MIN writes it: its `value`, with `type` and the original size beside it."""
    value = result.get("value") if isinstance(result.get("value"), dict) else {}
    return {**value, "type": result.get("type"), "original_width": result.get("original_width"),
            "original_height": result.get("original_height")}


def parse(upload: Upload, problems: Problems) -> Parsed:
    regions = Regions(problems)
    samples: list[RawSample] = []
    files = _ls_files(upload)
    for path in files:
        where = upload.rel(path)
        for n, task in enumerate(load_json(path, upload), 1):
            if not isinstance(task, dict):
                problems.add(f"{where}: task number {n} is not a JSON object")
                continue
            data = task.get("data") if isinstance(task.get("data"), dict) else {}
            ref = _image_ref(data)
            image = find_image(upload, ref, path.parent)
            if image is None:
                problems.add(f"{where}: task {task.get('id')} names image '{ref}', which is not in the upload")
                continue
            sample = RawSample(image, where=where, split=split_named(str(data.get("split") or "")))
            if "annotations" in task or "completions" in task:
                chosen, others = latest(task.get("annotations", task.get("completions")) or [])
                regions.several += others > 0
            else:  # pre-annotations only (a task Label Studio exports lists its annotations; if none: unlabelled)
                predictions = task.get("predictions")
                chosen = predictions[0] if isinstance(predictions, list) and predictions else None
            results = chosen.get("result") if isinstance(chosen, dict) else None
            regions.read([flat(r) for r in results if isinstance(r, dict)] if isinstance(results, list) else [], sample,
                         f"{where}: task {task.get('id')}")
            samples.append(sample)
    task_kind, classes, samples, warnings = regions.result(samples, "the export")
    return Parsed(task_kind, classes, samples, warnings, read=files)


FORMAT = Format("labelstudio", None, detect, parse)
