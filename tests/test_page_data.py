"""The Data tab in a real browser: upload a zip, see counts and the boxes drawn; a bad upload gets a sentence."""
from __future__ import annotations

import time

from tests import builders
from tests.browser import browser_page, need_chromium, running_app, screenshot


def test_page_starts_fast_and_imports_a_detection_zip(tmp_path):
    need_chromium()
    builders.write_coco(tmp_path / "pets", builders.detection_samples(12, size=(320, 240)))
    archive = builders.zip_dir(tmp_path / "pets", tmp_path / "pets.zip")
    junk = tmp_path / "notes.zip"
    junk.write_text("not a zip")
    builders.write_yolo(tmp_path / "latin", builders.detection_samples(2))
    (tmp_path / "latin" / "labels" / "train" / "img000.txt").write_bytes(b"0 0.5 \xe9\n")  # not UTF-8
    latin = builders.zip_dir(tmp_path / "latin", tmp_path / "latin.zip")

    started = time.perf_counter()
    with running_app(tmp_path / "data") as (url, _), browser_page() as page:
        startup = time.perf_counter() - started
        page.goto(url)
        page.get_by_role("tab", name="Data").click()
        screenshot(page, "data-tab-empty")

        page.set_input_files("#data-upload input[type=file]", str(junk))
        page.get_by_label("Dataset name").fill("junk")
        page.get_by_role("button", name="Import").click()
        page.get_by_text("notes.zip is not a valid zip archive").wait_for(timeout=20_000)
        # A refused upload leaves gradio's cache and the input: the next file goes in at once.
        page.set_input_files("#data-upload input[type=file]", str(latin))
        page.get_by_role("button", name="Import").click()
        page.get_by_text("labels/train/img000.txt is not UTF-8 text (save it as UTF-8)").wait_for(timeout=20_000)

        page.set_input_files("#data-upload input[type=file]", str(archive))
        page.get_by_label("Dataset name").fill("pets")
        page.get_by_role("button", name="Import").click()
        page.get_by_text("Imported").wait_for(timeout=30_000)
        page.locator("#dataset-summary").get_by_text("12 images").wait_for()
        thumbs = page.locator("#dataset-gallery img")
        thumbs.first.wait_for()
        assert thumbs.count() == 12
        screenshot(page, "data-tab-imported")

        page.reload()  # the page holds no state: a reload reads the dataset back from storage
        page.get_by_role("tab", name="Data").click()
        page.get_by_role("combobox", name="Dataset").click()
        page.get_by_role("option", name="pets").click()
        page.locator("#dataset-summary").get_by_text("12 images").wait_for(timeout=20_000)
    assert startup < 30, f"the page took {startup:.1f} s to answer"
