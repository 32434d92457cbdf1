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


def error_sentence(e: BaseException, data_dir: str | None) -> str | None:
    """One sentence naming the path for an error of the file system or the database (what a read-only data dir, a
    full disk or a file where a folder must be raise anywhere); None for any other error."""
    from sqlalchemy.exc import SQLAlchemyError
    if isinstance(e, OSError):
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        why = e.strerror or str(e) or type(e).__name__
        return f"could not use {where}: {why}" if where else f"a file system error: {why}"
    if isinstance(e, SQLAlchemyError):
        from storage.db import database_url
        try:
            url = database_url(resolve_data_dir(data_dir))
        except Exception:  # noqa: BLE001 - the sentence still names what it can
            url = "of the data dir"
        where = url[len("sqlite:///"):] if url.startswith("sqlite:///") else _hide_password(url)
        why = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        hint = (" (is the data dir read-only? give a writable --data-dir)"
                if "readonly" in why.replace("-", "").lower() or "unable to open" in why.lower() else "")
        return f"the database {where} cannot be used: {why}{hint}"
    return None


def _hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url.split("@")[-1]
