"""The Data tab's handlers: every outcome of an import or a delete is one sentence on the page, and uploads
leave gradio's cache once imported or refused."""
from __future__ import annotations

import re
import shutil

import gradio as gr
import pytest

from backend.data.importer import import_dataset
from tests import builders


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """gradio's upload cache (GRADIO_TEMP_DIR), where the page's uploads land: one folder per file."""
    folder = tmp_path / "gradio-cache"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


def _uploaded(cache, src, folder: str) -> str:
    dest = cache / folder / src.name
    dest.parent.mkdir()
    shutil.copyfile(src, dest)
    return str(dest)


@pytest.fixture
def tab(ws):
    from ui.data_tab import create_data_tab
    with gr.Blocks():
        return create_data_tab(ws)


def test_bad_uploads_show_their_sentence_and_leave_the_cache(ws, tmp_path, cache, tab):
    junk = tmp_path / "notes.zip"
    junk.write_text("not a zip")
    latin = tmp_path / "latin"
    builders.write_yolo(latin, builders.detection_samples(2))
    next(latin.glob("labels/**/*.txt")).write_bytes(b"0 0.5 \xe9\n")
    cases = {
        str(junk): "⚠ notes.zip is not a valid zip archive",
        str(builders.zip_dir(latin, tmp_path / "latin.zip")): r"⚠ labels/train/img00\d.txt is not UTF-8 text",
    }
    for i, (src, sentence) in enumerate(cases.items()):
        path = _uploaded(cache, tmp_path / src, f"h{i}")
        status, *rest, files = tab["import"]([path], "pets", "auto", 0.2)
        assert re.fullmatch(sentence + r"[^\n]*", status), status
        assert files is None  # the input is emptied: its file is gone
    assert list(cache.iterdir()) == []


def test_a_good_upload_is_imported_then_removed_from_the_cache(ws, tmp_path, cache, tab):
    builders.write_coco(tmp_path / "c", builders.detection_samples(4))
    path = _uploaded(cache, builders.zip_dir(tmp_path / "c", tmp_path / "c.zip"), "abc")
    status, picker, *_ = tab["import"]([path], "pets", "auto", 0.0)
    assert status == "✓ Imported **pets** (no split in the export: nothing held out)." and picker["value"] == "pets"
    assert list(cache.iterdir()) == []


def test_a_refused_name_keeps_the_upload_to_try_again(ws, tmp_path, cache, tab):
    builders.write_coco(tmp_path / "c", builders.detection_samples(4))
    path = _uploaded(cache, builders.zip_dir(tmp_path / "c", tmp_path / "c.zip"), "abc")
    status, *rest = tab["import"]([path], "no spaces please", "auto", 0.0)
    assert status.startswith("⚠ 'no spaces please' is not a valid dataset name")
    assert (cache / "abc" / "c.zip").is_file()
    status, *rest = tab["import"]([path], "pets", "auto", 0.0)
    assert status.startswith("✓ Imported **pets**") and list(cache.iterdir()) == []


def test_a_bug_is_still_a_sentence(ws, tmp_path, cache, tab, monkeypatch):
    import ui.data_tab

    def broken(*a, **kw):
        raise KeyError("data")
    monkeypatch.setattr(ui.data_tab, "import_dataset", broken)
    builders.make_image(tmp_path / "a.png", 10, 10)
    path = _uploaded(cache, tmp_path / "a.png", "x")
    status, *rest = tab["import"]([path], "pets", "auto", 0.0)
    assert status == "⚠ The import failed unexpectedly (KeyError: 'data'); nothing was imported."
    assert list(cache.iterdir()) == []


def test_files_outside_the_upload_cache_are_never_deleted(tmp_path, cache):
    from ui.data_tab import discard_uploads
    mine = tmp_path / "mine.zip"
    mine.write_text("x")
    discard_uploads([str(mine), str(cache / ".." / "mine.zip")])
    assert mine.is_file()


def test_a_dataset_deleted_elsewhere_is_a_sentence_when_picked(ws, tmp_path, tab):
    assert tab["pick"]("gone", "all") == ("⚠ there is no dataset named 'gone'", [], [], "", 1)


def test_the_tab_says_where_the_split_came_from(ws, tmp_path, cache, tab):
    from tests import exports
    exports.roboflow_coco(tmp_path / "rf")
    path = _uploaded(cache, builders.zip_dir(tmp_path / "rf", tmp_path / "rf.zip"), "rf")
    status, _, summary, rows, *_ = tab["import"]([path], "cells", "auto", 0.2)
    assert status == "✓ Imported **cells** (split from the export: 6 train / 3 val / 2 test)."
    assert ("**Split:** split from the export: 6 train / 3 val / 2 test (held-out evaluation uses val; test is kept "
            "apart)") in summary
    assert ["RBC", 3, 1, 2, 6] in rows


def test_a_hub_name_alone_is_imported(ws, tmp_path, tab, monkeypatch):
    """What reaches the importer is the hf: name; here a local export stands in for the download."""
    import ui.data_tab
    seen = []
    builders.write_coco(tmp_path / "c", builders.detection_samples(4))
    local = builders.zip_dir(tmp_path / "c", tmp_path / "c.zip")

    def fake(store, data_dir, sources, name, **kw):
        seen.append(sources)
        return import_dataset(store, data_dir, [local], name, val_fraction=kw["val_fraction"])
    monkeypatch.setattr(ui.data_tab, "import_dataset", fake)
    status, *_ = tab["import"](None, "cppe", "auto", 0.25, "rishitdagli/cppe-5")
    assert seen == [["hf:rishitdagli/cppe-5"]]
    assert status == "✓ Imported **cppe** (no split in the export: 25 % held out, stratified)."
