"""Label Studio CSV export: the JSON-MIN records as rows (columns in alphabetical order: the task's data fields,
`id`, one column per labelling tag, `annotator`, `annotation_id`, `created_at`, `updated_at`, `lead_time`); a tag's
regions are a JSON list in its cell, a single choice is the cell's text."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from backend.data.common import Format, Parsed, Problems, Upload, read_text
from backend.data.formats.labelstudio_min import parse_files
from backend.data.safety import ImportProblem

_REQUIRED = {"annotation_id", "annotator", "lead_time"}


def _header(path: Path, upload: Upload) -> list[str]:
    try:
        return next(csv.reader([read_text(path, upload).split("\n", 1)[0]]), [])
    except (csv.Error, ImportProblem):
        return []


def _csv_files(upload: Upload) -> list[Path]:
    return [p for p in upload.with_suffix(".csv") if _REQUIRED <= set(_header(p, upload))]


def detect(upload: Upload) -> bool:
    return bool(_csv_files(upload))


def _cell(value: str) -> object:
    """A cell as JSON-MIN has it: regions and several choices are JSON, anything else text ('' for none)."""
    if value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _records(path: Path, upload: Upload) -> list[dict]:
    try:
        rows = list(csv.DictReader(io.StringIO(read_text(path, upload), newline="")))
    except csv.Error as e:
        raise ImportProblem(f"{upload.rel(path)} is not a readable CSV file ({e})") from None
    return [{k: _cell(v) for k, v in row.items() if k is not None and v not in (None, "")} for row in rows]


def parse(upload: Upload, problems: Problems) -> Parsed:
    return parse_files(_csv_files(upload), _records, upload, problems)


FORMAT = Format("labelstudio-csv", None, detect, parse)
