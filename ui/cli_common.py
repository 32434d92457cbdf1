"""What every command of the command line shares: the mistake a person can fix, text or JSON output, the data dir."""
from __future__ import annotations

import argparse
import json
from typing import Any

from backend.data.config import data_dir as resolve_data_dir


class CliError(Exception):
    """A mistake the person can fix: printed as one sentence, exit status 1."""


def _print(obj: Any, as_json: bool, text: str) -> None:
    print(json.dumps(obj, indent=2, default=str) if as_json else text)


def _open(args: argparse.Namespace):
    from backend.data.workspace import open_workspace
    return open_workspace(resolve_data_dir(args.data_dir))
