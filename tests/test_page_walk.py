"""The whole walk in a real browser: upload, train the demo, watch it live, reload mid-run, test the model. The
lists follow the data without a reload: the new dataset in the Train tab, the run in the Test tab."""
from __future__ import annotations

import json
import re
import time

from tests import builders
from tests.browser import ARTIFACTS, browser_page, need_chromium, running_app, screenshot


def _reward_points(page) -> int:
    m = re.search(r"\((\d+) points\)", page.locator("#run-status").inner_text())
    return int(m.group(1)) if m else 0


def _step(page) -> int:
    m = re.search(r"step (\d+)/", page.locator("#run-status").inner_text())
    return int(m.group(1)) if m else 0


def test_upload_train_watch_reload_and_test(tmp_path):
    need_chromium()
    builders.write_coco(tmp_path / "pets", builders.detection_samples(12, size=(320, 240)))
    archive = builders.zip_dir(tmp_path / "pets", tmp_path / "pets.zip")
    timings = {}
    with running_app(tmp_path / "data") as (url, _):
        with browser_page() as page:
            page.goto(url)
            page.get_by_role("tab", name="Data").click()
            page.set_input_files("#data-upload input[type=file]", str(archive))
            page.get_by_label("Dataset name").fill("pets")
            page.get_by_role("button", name="Import").click()
            page.get_by_text("Imported").wait_for(timeout=30_000)
            page.locator("#dataset-gallery img").first.wait_for()
            screenshot(page, "walk-1-data")

            page.get_by_role("tab", name="Train").click()
            # wait for the page's load events (they fill the form from storage) before typing
            page.wait_for_function("document.querySelector('#train-dataset input')?.value === 'demo-shapes'",
                                   timeout=30_000)
            # The dataset imported a moment ago is listed (selecting the tab read the list again); the choice stays.
            page.locator("#train-dataset input").click()
            page.get_by_role("option", name="pets", exact=True).wait_for(timeout=10_000)
            page.wait_for_timeout(500)  # the list has faded in
            screenshot(page, "walk-2-train-datasets")
            page.keyboard.press("Escape")
            assert page.locator("#train-dataset input").input_value() == "demo-shapes"
            page.get_by_text("Advanced settings", exact=True).click()
            page.get_by_text("Evaluation and records", exact=True).click()  # a group that starts closed
            cap = page.get_by_label("eval max examples")  # the held-out curve on 12 prompts: the walk, not the metric
            cap_shown = time.time() + 20  # the preset's value reaches the group it opened before anything is typed
            while cap.input_value() != "60" and time.time() < cap_shown:
                page.wait_for_timeout(200)
            steps = page.get_by_label("max steps")
            steps.fill("8")
            steps.press("Tab")
            cap.fill("12")
            cap.press("Tab")
            page.wait_for_timeout(500)
            assert steps.input_value() == "8" and cap.input_value() == "12"
            screenshot(page, "walk-2-train")
            pressed = time.perf_counter()
            page.get_by_role("button", name="Train", exact=True).click()
            page.locator("#run-status").get_by_text("Run 1").wait_for(timeout=20_000)
            deadline = time.time() + 300
            while _reward_points(page) < 1 and time.time() < deadline:
                time.sleep(0.5)
            timings["train_to_first_reward_point_s"] = round(time.perf_counter() - pressed, 1)
            while _reward_points(page) < 3 and time.time() < deadline:
                time.sleep(0.5)
            assert _reward_points(page) >= 3
            page.get_by_role("tab", name="Rollout inspector").click()
            page.locator("#rollout-gallery img").first.wait_for(timeout=60_000)
            assert "reasoning:" in page.locator("#rollout-cards").inner_text()
            screenshot(page, "walk-3-runs-live")
            page.get_by_role("tab", name="Training").click()
            seen_step = _step(page)
            # The page was loaded before the run existed: the Test tab lists it all the same, and takes it.
            page.get_by_role("tab", name="Test").click()
            page.wait_for_function("document.querySelector('#test-run input')?.value.startsWith('run 1 · GRPO')",
                                   timeout=20_000)

        # The browser is gone; a new one re-attaches to the same run, still progressing.
        with browser_page() as page:
            page.goto(url)
            page.get_by_role("tab", name="Runs").click()
            page.locator("#run-status").get_by_text("Run 1").wait_for(timeout=20_000)
            deadline = time.time() + 300
            while "completed" not in page.locator("#run-status").inner_text() and time.time() < deadline:
                time.sleep(1)
            assert _step(page) == 8 and _step(page) > seen_step
            page.locator("#evaluation").get_by_text("mean_iou").wait_for(timeout=30_000)
            screenshot(page, "walk-4-runs-done")

            # This page was loaded while the run was training: the Test tab shows it finished, without a reload.
            page.get_by_role("tab", name="Test").click()
            page.wait_for_function("document.querySelector('#test-run input')?.value.endsWith('· completed')",
                                   timeout=20_000)
            image = next((tmp_path / "data" / "datasets").glob("demo-shapes-*/images/shapes_001.png"))
            page.set_input_files("#test-images input[type=file]", str(image))
            page.get_by_label("Category to detect").fill("red circle")
            page.get_by_role("button", name="Predict").click()
            page.locator("#test-gallery img").nth(1).wait_for(timeout=120_000)  # tuned and base, side by side
            assert "answer" in page.locator("#test-reasoning").inner_text()
            # A heading over each picture says whose answer it is; the caption is whole.
            headings = page.locator("#test-gallery h4").all_inner_texts()
            assert len(headings) == 2 and headings[0].startswith("Tuned: run 1 (best checkpoint, step ")
            assert headings[1] == "Base model"
            assert "shapes_001.png · " in page.locator("#test-gallery figcaption").first.inner_text()
            screenshot(page, "walk-5-test")
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(1000)
            screenshot(page, "walk-5-test-390")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings))
    print(timings)
