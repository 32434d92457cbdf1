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


def test_export_accepted_leaves_no_zip_of_ours(ws, tmp_path):
    """The Label tab's "Export accepted" hands Gradio its zip and removes its own copy (it left one in a temp folder
    at every export); the download is Gradio's copy, in its cache, which Gradio sweeps."""
    import tempfile
    import zipfile

    from gradio.utils import get_upload_folder

    from backend.jobs import label_queue
    from backend.jobs.labelling import Source
    from tests.test_label_queue import _labeller, _scenes
    from ui.app import build_app
    job_id = label_queue.submit(ws, Source(model="demo", classes=["red circle"]), [_scenes(tmp_path / "in", 2)])
    label_queue.claim(ws, "a", None)
    label_queue.work(ws, job_id, "a", label=_labeller([]))
    label_queue.review(ws, job_id, [0, 1], "accepted")
    on_export = next(f.fn for f in build_app(ws).fns.values() if getattr(f.fn, "__name__", "") == "on_export")
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("vrft-export-*"))

    note, download = on_export(str(job_id), "coco")
    assert note.startswith("Exported 2 accepted images as coco"), note
    assert Path(download).is_relative_to(get_upload_folder()), download
    assert Path(download).name == f"labelling-{job_id}-coco.zip"
    with zipfile.ZipFile(download) as zf:
        assert "annotations/instances_train.json" in zf.namelist()
    assert set(temp.glob("vrft-export-*")) == before, "a zip of ours left in a temp folder"
    assert list((ws.data_dir / ".staging" / PAGE_EXPORTS).iterdir()) == []
    Path(download).unlink()
