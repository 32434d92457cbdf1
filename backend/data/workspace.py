"""One data dir: its folders and its database, opened once per process."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from backend.data.exporter import PAGE_EXPORTS, sweep_page_exports
from storage import Store, open_store


STALE_STAGING_SECONDS = 3600


@dataclass
class Workspace:
    data_dir: Path
    store: Store


def open_workspace(data_dir: Path) -> Workspace:
    """Create the data dir's folders, migrate the database, clear staging a crash left behind.

    Only staging older than an hour goes: another process may be importing right now.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / ".staging"
    if staging.exists():
        for leftover in staging.iterdir():
            if leftover.name != PAGE_EXPORTS and time.time() - leftover.stat().st_mtime > STALE_STAGING_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
        sweep_page_exports(data_dir)  # what a killed export or page left there
    staging.mkdir(exist_ok=True)
    (data_dir / "datasets").mkdir(exist_ok=True)
    return Workspace(data_dir, open_store(data_dir))
