"""An export leaves nothing of its own behind: one killed with SIGKILL leaves a hidden work folder named with its
writer (`.NAME.partial-vrft-HOST-PID-START-TOKEN`), which the next export into that folder, or the next start for
the page's exports, removes (only folders so named whose writer is gone); the Label tab's "Export accepted" removes
its zip as soon as Gradio has its own copy."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backend.data.exporter import PAGE_EXPORTS, owned_folder, write_export
from backend.data.common import ExportImage, ExportSet
from backend.data.workspace import open_workspace
from tests import builders
from tests.conftest import ROOT

STALLS = """
import sys, time
from pathlib import Path
from backend.data.common import ExportImage, ExportSet, Writer
from backend.data.exporter import write_export
from backend.data.writers import WRITERS

def stall(export_set, folder):
    (folder / "half.json").write_text("{")
    print("writing", flush=True)
    time.sleep(600)

WRITERS["coco"] = Writer("coco", "a writer that never ends", stall)
image = Path(sys.argv[2])
write_export(ExportSet("x", ["a"], [ExportImage(image, "a.png", "train", 32, 32, [])]), "coco", Path(sys.argv[1]))
"""


def _one_image(tmp_path) -> ExportSet:
    image = tmp_path / "a.png"
    builders.make_image(image, 32, 32)
    return ExportSet("x", ["a"], [ExportImage(image, "a.png", "train", 32, 32, [[1, 1, 9, 9, "a"]])])


def _killed_export(out: Path, image: Path) -> None:
    """An export of `out` killed with SIGKILL while it writes."""
    proc = subprocess.Popen([sys.executable, "-c", STALLS, str(out), str(image)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_the_next_export_removes_what_a_killed_export_left_and_only_that(tmp_path):
    export_set = _one_image(tmp_path)
    target = tmp_path / "exports"
    _killed_export(target / "first.zip", export_set.images[0].source)
    left = _hidden(target)
    assert len(left) == 1 and left[0].startswith(".first.zip.partial-vrft-"), left
    # Not ours to remove: another tool's hidden folder, and the work folder of an export still running (this process).
    (target / ".first.zip.partial-abc123").mkdir()
    alive = owned_folder(target, "busy.zip")

    assert write_export(export_set, "coco", target / "second.zip").is_file()
    assert _hidden(target) == sorted([".first.zip.partial-abc123", alive.name])
    assert not (target / "first.zip").exists()


def test_a_start_removes_what_a_killed_page_export_left(tmp_path):
    data = tmp_path / "data"
    open_workspace(data).store.close()
    exports = data / ".staging" / PAGE_EXPORTS
    _killed_export(exports / "labelling-1-coco.zip", _one_image(tmp_path).images[0].source)
    assert len(_hidden(exports)) == 1
    alive = owned_folder(exports, "download")  # this process is alive: its folder stays
    open_workspace(data).store.close()
    assert _hidden(exports) == [alive.name]
