"""The page as a newcomer and a phone see it, in Chromium (one app start): a 110-image export's preview paged to its
last image with the name filled in from the file, the rewards picked and the settings in groups, a run's log open
at its end without progress bars or notices, and at 390 px every tab in view, the narrow runs table, chart titles
and legends that wrap. Screenshots at 1400 and 390 px."""
from __future__ import annotations

from backend.data.catalog import get_dataset
from backend.data.workspace import open_workspace
from backend.engine.settings import preset
from backend.jobs.run_history import upsert_metrics
from storage.models import Run
from tests import builders, exports
from tests.browser import browser_page, need_chromium, running_app, screenshot

NOISE = ("Loading weights:   0%|          | 0/121 [00:00<?, ?it/s]\rLoading weights: 100%|██████████| 121/121 "
         "[00:00<00:00, 2758.50it/s]\n"
         "/venv/lib/python3.11/site-packages/trl/trainer/grpo_trainer.py:12: FutureWarning: `x` is deprecated\n"
         "  warnings.warn(\n"
         "[transformers] The tokenizer has new PAD/BOS/EOS tokens that differ from the model config.\n")
"""What a job's log holds besides its own lines: a tqdm bar, a library's warning, transformers' notice."""


def finished_run(ws, dataset: str, steps: int = 12) -> int:
    """A completed run as a job leaves it (no job runs here): metric points and a long, noisy train.log."""
    info = get_dataset(ws.store, dataset, with_samples=False)
    with ws.store.write() as s:
        run = Run(dataset_id=info["id"], model="demo", family="demo", task="detection", status="completed",
                  settings=preset("CPU demo", max_steps=steps).to_dict(), max_steps=steps, step=steps)
        s.add(run)
        s.flush()
        run.folder = f"runs/{run.id}"
        run_id = run.id
    for step in range(1, steps + 1):
        upsert_metrics(ws.store, run_id, step, {
            "reward": 1 + step / 20, "rewards/format/mean": 0.9, "rewards/detection_soft_iou/mean": step / 40,
            "rewards/detection_confidence/mean": 0.2, "step_time": 3.5, "completions/mean_length": 40 + step,
            "frac_reward_zero_std": 0.1})
    lines = [f"step {step}/{steps}: reward {1 + step / 20:.3f} · step time 3.5 s\n" + NOISE
             for step in range(1, steps + 1)] * 3
    log = ws.data_dir / f"runs/{run_id}/train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(lines) + "training done: the last line\n", encoding="utf-8")
    return run_id


def test_a_newcomer_on_a_wide_screen_and_a_phone(tmp_path):
    need_chromium()
    export = tmp_path / "cones.v1i.yolov8"
    exports.roboflow_yolov8(export, counts=(70, 25, 15))
    archive = builders.zip_dir(export, tmp_path / "cones.v1i.yolov8.zip")
    data = tmp_path / "data"
    with running_app(data) as (url, _), browser_page(height=1000) as page:
        ws = open_workspace(data)
        page.goto(url)

        # Data: the name comes from the file, and the preview pages through all 110 images, val and test too.
        page.get_by_role("tab", name="Data").click()
        page.set_input_files("#data-upload input[type=file]", str(archive))
        page.wait_for_function("document.querySelector('#data-name textarea, #data-name input')?.value === "
                               "'cones.v1i.yolov8'", timeout=30_000)
        page.get_by_role("button", name="Import").click()
        page.locator("#import-status").get_by_text("Imported cones.v1i.yolov8").wait_for(timeout=60_000)
        pager = page.locator("#dataset-pager")
        pager.get_by_text("Images 1–48 of 110 (every split) · page 1 of 3").wait_for(timeout=30_000)
        assert page.locator("#dataset-gallery img").count() == 48
        screenshot(page, "newcomer-data-page1-1400")
        captions = page.locator("#dataset-gallery").inner_text()
        for first in (49, 97):
            page.locator("#dataset-next").click()
            pager.get_by_text(f"Images {first}–").wait_for(timeout=30_000)
            page.wait_for_timeout(500)
            captions += page.locator("#dataset-gallery").inner_text()
        assert "Images 97–110 of 110 (every split) · page 3 of 3" in pager.inner_text()
        page.wait_for_function("document.querySelectorAll('#dataset-gallery img').length === 14", timeout=30_000)
        assert {"· train ·", "· val ·", "· test ·"} <= {s for s in ("· train ·", "· val ·", "· test ·") if s in captions}
        screenshot(page, "newcomer-data-page3-1400")
        page.get_by_label("val", exact=True).check()
        pager.get_by_text("Images 1–25 of 25 (the val split)").wait_for(timeout=30_000)

        # Train: the task's rewards as checkboxes (the preset's ticked, a weight beside each), the settings grouped.
        page.get_by_role("tab", name="Train").click()
        page.wait_for_function("document.querySelector('#train-dataset input')?.value === 'demo-shapes'",
                               timeout=60_000)
        ticked = lambda name: page.locator(f"#reward-{name} input[type=checkbox]")  # noqa: E731
        for name in ("format", "detection_soft_iou", "detection_confidence"):
            assert ticked(name).is_checked() and page.locator(f"#reward-weight-{name}").is_visible()
        assert not ticked("detection_iou").is_checked() and not page.locator("#reward-weight-detection_iou").is_visible()
        assert not page.locator("#reward-classification_accuracy").is_visible()  # another task's reward
        assert "Sum of matched IoUs" in page.locator("#reward-detection_iou").inner_text()
        ticked("detection_iou").check()
        page.locator("#reward-weight-detection_iou").wait_for(timeout=10_000)
        page.get_by_text("Advanced settings", exact=True).click()
        page.get_by_text("Optimiser steps. Default: 200; the CPU demo preset: 100.").wait_for(timeout=10_000)
        assert not page.get_by_label("num gpus").is_visible()  # the hardware plan starts closed
        page.get_by_text("Hardware plan", exact=True).click()
        page.get_by_label("num gpus").wait_for(timeout=10_000)
        screenshot(page, "newcomer-train-1400")
        page.get_by_label("Visual-RFT paper").check()  # a preset without rewards: the task's defaults
        page.wait_for_function("document.querySelector('#reward-detection_iou input').checked && "
                               "!document.querySelector('#reward-detection_soft_iou input').checked", timeout=20_000)

        # Runs: the log is open at its end; progress bars and notices are left out (the file keeps them).
        run_id = finished_run(ws, "cones.v1i.yolov8")
        page.get_by_role("tab", name="Runs").click()
        page.locator("#run-status").get_by_text(f"Run {run_id}").wait_for(timeout=30_000)
        page.wait_for_function("document.querySelector('#log-tail textarea')?.value.includes('the last line')",
                               timeout=30_000)
        shown = page.locator("#log-tail textarea").input_value()
        assert "it/s]" not in shown and "FutureWarning" not in shown and "[transformers]" not in shown
        assert "\r" not in shown and "progress bars" in shown and "train.log keeps every line" in shown
        page.wait_for_function("(() => { const t = document.querySelector('#log-tail textarea'); "
                               "return t.scrollHeight > t.clientHeight && "
                               "t.scrollTop + t.clientHeight >= t.scrollHeight - 4; })()", timeout=10_000)
        assert "it/s]" in (data / f"runs/{run_id}/train.log").read_text()
        head = page.locator("#chart-head-reward")
        assert "Reward (total and each function)" in head.inner_text() and "detection_soft_iou" in head.inner_text()
        screenshot(page, "newcomer-runs-1400")

        # A phone: every tab in view (no "⋯" menu), the narrow runs table, chart titles and legends wrapped.
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(1500)
        for tab in ("Data", "Train", "Runs", "Test", "Label", "Reward playground"):
            assert page.get_by_role("tab", name=tab, exact=True).is_visible(), tab
        assert not page.locator("button[aria-label='More tabs']").is_visible()
        assert page.locator("#runs-table-compact").is_visible() and not page.locator("#runs-table").is_visible()
        assert f"{run_id} · GRPO" in page.locator("#runs-table-compact").inner_text()
        width = page.evaluate("document.querySelector('#runs-table-compact').getBoundingClientRect().right")
        assert width <= 390
        legend = page.locator("#chart-head-reward .chart-legend")
        assert legend.evaluate("e => e.scrollWidth <= e.clientWidth + 1 && e.getBoundingClientRect().right <= 390")
        screenshot(page, "newcomer-runs-390")
        page.get_by_role("tab", name="Train", exact=True).click()
        page.wait_for_timeout(1000)
        screenshot(page, "newcomer-train-390")
        page.get_by_role("tab", name="Data").click()
        page.wait_for_timeout(1000)
        screenshot(page, "newcomer-data-390")
        page.get_by_role("tab", name="Reward playground").click()  # reached without a hidden menu
        page.wait_for_timeout(500)
        ws.store.close()


def test_the_name_comes_from_the_uploaded_file_and_the_preview_pages(ws, tmp_path):
    from backend.data.importer import import_dataset
    from ui.data_tab import PAGE_SIZE, dataset_view, suggest_name
    assert suggest_name(ws, ["/cache/ab12/cones.v1i.yolov8.zip"]) == "cones.v1i.yolov8"
    assert suggest_name(ws, ["/cache/a/img1.jpg", "/cache/b/_annotations.coco.json"]) == "annotations.coco"
    assert suggest_name(ws, ["/cache/a/My Photos (2).zip"]) == "My-Photos-2"  # made a valid name
    builders.write_coco(tmp_path / "pets", builders.detection_samples(PAGE_SIZE + 2))
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(tmp_path / "pets", tmp_path / "pets.zip")], "pets")
    assert suggest_name(ws, ["/cache/c/pets.zip"]) == "pets-2"  # a name no dataset has yet
    _, _, gallery, line, page = dataset_view(ws, "pets", "all", 2)
    assert (len(gallery), page) == (2, 2) and line.startswith(f"Images {PAGE_SIZE + 1}–{PAGE_SIZE + 2} of 50")
    assert dataset_view(ws, "pets", "all", 9)[3:] == (line, 2)  # past the last page: the last
    _, _, gallery, line, page = dataset_view(ws, "pets", "all")
    assert len(gallery) == PAGE_SIZE and "page 1 of 2: Next ▶ shows the next 2" in line
