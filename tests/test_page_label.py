"""The Label tab, driven in Chromium: a tuned demo run labels a folder of new images through the worker; the person
accepts some, rejects one, adds the accepted ones to a new dataset and exports them as COCO and YOLO; both exports
import back with the same boxes."""
from __future__ import annotations

import time
from pathlib import Path

from backend.data.catalog import get_dataset
from backend.data.demo.shapes import make_scene
from backend.data.importer import import_dataset
from backend.data.workspace import open_workspace
from backend.jobs import label_queue
from tests.browser import browser_page, need_chromium, running_app, screenshot
from tests.tuned import tuned_demo_run


def _pick(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def _boxes(info: dict) -> dict:
    return {s["file"].rsplit("/", 1)[-1]:
            sorted(tuple(b) for b in s["boxes"]) for s in info["samples"]}


def test_label_review_add_and_export_through_the_page(tmp_path):
    need_chromium()
    data = tmp_path / "data"
    ws = open_workspace(data)
    run_id = tuned_demo_run(ws)
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    images = []
    for i in range(3):
        images.append(folder / f"new{i}.png")
        make_scene(800 + i).image.save(images[-1])

    with running_app(data) as (url, _), browser_page(height=1400) as page:
        page.goto(url)
        page.get_by_role("tab", name="Label").click()
        _pick(page, "Tuned run (its best checkpoint)", f"run {run_id} · demo · completed")
        page.set_input_files("#label-images input[type=file]", [str(p) for p in images])
        page.get_by_label("Classes").fill("red circle, blue square")
        page.get_by_role("button", name="Label images").click()
        page.wait_for_function("document.querySelector('#label-status')?.innerText.includes('done, 3 of 3')",
                               timeout=240_000)
        page.locator("#label-gallery img").nth(2).wait_for(timeout=20_000)
        assert "0 accepted · 0 rejected · 3 to review" in page.locator("#label-counts").inner_text()
        page.wait_for_function("document.querySelector('#label-job input')?.value.includes('3/3 · done')",
                               timeout=20_000)  # the job picker's counts follow the job
        screenshot(page, "label-1-labelled")

        # Per box: the picked (first) image's boxes are ticked; unticking one rejects that box alone.
        ticks = page.locator("#label-boxes input[type=checkbox]")
        rejected_one = ticks.count() > 1
        if rejected_one:
            ticks.first.uncheck()
            page.wait_for_function("!document.querySelector('#label-boxes input[type=checkbox]').checked")
            deadline = time.time() + 20
            while label_queue.items(ws, label_queue.jobs(ws)[0]["id"])[0]["rejected_boxes"] != [0]:
                assert time.time() < deadline, "the unticked box was not stored as rejected"
                time.sleep(0.2)
            screenshot(page, "label-1b-box-rejected")

        steps = [("Accept", "1 accepted · 0 rejected · 2 to review"), ("Reject", "1 accepted · 1 rejected · 1 to review"),
                 ("Accept", "2 accepted · 1 rejected · 0 to review")]
        for button, counts in steps:  # each decision moves on to the next image to review
            page.get_by_role("button", name=button, exact=True).click()
            page.wait_for_function(f"document.querySelector('#label-counts')?.innerText.includes({counts!r})",
                                   timeout=30_000)
        assert "2 accepted · 1 rejected · 0 to review" in page.locator("#label-counts").inner_text()
        screenshot(page, "label-2-reviewed")
        # The job stays open across a reload (kept in the browser), its reviews shown on the pictures.
        page.reload()
        page.get_by_role("tab", name="Label").click()
        page.wait_for_function("document.querySelector('#label-job input')?.value.includes('3/3 · done')",
                               timeout=30_000)
        page.wait_for_function("document.querySelector('#label-counts')?.innerText.includes('2 accepted')",
                               timeout=30_000)
        assert "ACCEPTED" in page.locator("#label-counts").inner_text()  # the counts say how the tiles show it
        assert "#1 · new1.png · " in page.locator("#label-gallery").inner_text()  # captions whole
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(1000)
        screenshot(page, "label-2-reviewed-390")
        page.set_viewport_size({"width": 1400, "height": 1400})

        page.get_by_label("New dataset's name").fill("reviewed")
        page.get_by_role("button", name="Add accepted to dataset").click()
        page.get_by_text("Added 2 accepted images to dataset 'reviewed'").wait_for(timeout=30_000)

        exported = {}
        for fmt in ("coco", "yolo"):
            page.get_by_label(fmt, exact=True).check()
            page.get_by_role("button", name="Export accepted").click()
            page.get_by_text(f"Exported 2 accepted images as {fmt}").wait_for(timeout=30_000)
            with page.expect_download() as download:
                page.locator("#label-download a").first.click()
            exported[fmt] = tmp_path / f"accepted-{fmt}.zip"
            download.value.save_as(exported[fmt])
        screenshot(page, "label-3-exported")

    job_id = label_queue.jobs(ws)[0]["id"]
    items = label_queue.items(ws, job_id)
    accepted = {Path(i["name"]).name: sorted(tuple([*b[:4], b[4]]) for b in label_queue.kept_boxes(i))
                for i in items if i["review"] == "accepted"}
    if rejected_one:
        assert len(label_queue.kept_boxes(items[0])) == len(items[0]["boxes"]) - 1
    assert len(accepted) == 2 and [i["review"] for i in items] == ["accepted", "rejected", "accepted"]
    assert any(accepted.values()), "the tuned run found shapes on the accepted images"
    reviewed = get_dataset(ws.store, "reviewed")
    assert reviewed["counts"]["train"] == 2 and reviewed["counts"]["total"] == 2
    assert _boxes(reviewed) == accepted
    for fmt, archive in exported.items():
        import_dataset(ws.store, ws.data_dir, [archive], f"back-{fmt}")
        back = get_dataset(ws.store, f"back-{fmt}")
        got = {name: [tuple(round(v, 1) if isinstance(v, float) else v for v in b) for b in boxes]
               for name, boxes in _boxes(back).items()}
        want = {name: [tuple(round(float(v), 1) if not isinstance(v, str) else v for v in b) for b in boxes]
                for name, boxes in accepted.items()}
        assert got == want, fmt
    ws.store.close()


def test_a_tile_shows_its_review_without_a_caption():
    from PIL import Image
    from ui.label_tab import REVIEW_LOOK, with_review
    picture = Image.new("RGB", (200, 150), (10, 20, 30))
    accepted, rejected, pending = (with_review(picture.copy(), r) for r in ("accepted", "rejected", None))
    assert accepted.getpixel((1, 148)) == REVIEW_LOOK["accepted"][0]  # framed in green
    assert accepted.getpixel((100, 75)) == (10, 20, 30)
    assert all(c > 120 for c in rejected.getpixel((100, 75)))  # greyed out
    assert pending.getpixel((100, 75)) == (10, 20, 30) and pending.getpixel((1, 148)) == (10, 20, 30)
    for review, tile in (("accepted", accepted), ("rejected", rejected), (None, pending)):
        assert tile.getpixel((2, 2)) == REVIEW_LOOK[review][0]  # the tag in the corner
