"""Which family a model belongs to (the families are declared in backend/scoring/families.py).

A model (hub id or local folder) belongs to the family its config's `model_type` names; the
embedded demo says so in `vrft_family.json`.
"""
from __future__ import annotations

import json
from pathlib import Path

from backend.scoring.families import FAMILIES

FAMILY_FILE = "vrft_family.json"


def family_of_folder(folder: Path) -> str:
    """The family of a local model folder: vrft_family.json, else config.json's model_type."""
    marker = folder / FAMILY_FILE
    if marker.is_file():
        return json.loads(marker.read_text())["family"]
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(f"could not load '{folder}': it has no config.json")
    model_type = json.loads(config.read_text()).get("model_type")
    for f in FAMILIES.values():
        if f.model_type == model_type and f.name != "demo":
            return f.name
    raise ValueError(f"could not load '{folder}': model type '{model_type}' is not supported "
                     f"(supported: {', '.join(sorted({f.model_type for f in FAMILIES.values()}))})")


