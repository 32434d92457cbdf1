"""Shots and novel classes from the page: the Train form queues a 2-shot run with novel classes (its training rows
checked: training split only, no novel class in any prompt), the run's page says what it trained on and reports
base and novel classes apart, and Runs → Compare shows the data-efficiency table and plot."""
from __future__ import annotations

import json
import time

from backend.data.catalog import get_dataset
from backend.data.workspace import open_workspace
from backend.engine.settings import TrainSettings
from backend.jobs.runs import get_run
from backend.jobs.training import train_rows
from tests.browser import browser_page, need_chromium, running_app, screenshot
from tests.conftest import run_cli
from tests.test_data_efficiency import NOVEL, _done, _scores


def _advanced(page, label: str, value: str) -> None:
    """Type into an advanced setting: a text one by its element, a number by its label."""
    key = label.replace(" ", "_")
    box = (page.locator(f"#setting-{key} textarea, #setting-{key} input").first if key in ("shots", "novel_classes")
           else page.get_by_label(label))
    box.fill(value)
    box.press("Tab")


def test_a_few_shot_run_with_novel_classes_from_the_train_form(tmp_path):
    need_chromium()
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    ws = open_workspace(data)
    start = _scores(0.2, 0.1)
    seeded = [_done(ws, _scores(0.4, 0.2), start, shots=4, seed=0, novel_classes=NOVEL),
              _done(ws, _scores(0.3, 0.1), start, shots=4, seed=0, method="sft", novel_classes=NOVEL)]
    with running_app(data) as (url, _), browser_page(height=1400) as page:
        page.goto(url)
        page.get_by_role("tab", name="Train").click()
        page.wait_for_function("document.querySelector('#train-dataset input')?.value === 'demo-shapes'",
                               timeout=30_000)
        page.get_by_text("Advanced settings", exact=True).click()
        for group in ("Data: shots, novel classes and prompts", "Evaluation and records"):  # closed at first
            page.get_by_text(group, exact=True).click()
        # A bad class is one sentence, and nothing is queued.
        _advanced(page, "novel classes", "blue circle, purple hexagon")
        page.get_by_role("button", name="Train", exact=True).click()
        page.locator("#launch-message").get_by_text("unknown class 'purple hexagon' in the novel classes").wait_for(
            timeout=20_000)
        _advanced(page, "shots", "0")
        _advanced(page, "novel classes", ", ".join(NOVEL))
        page.get_by_role("button", name="Train", exact=True).click()
        page.locator("#launch-message").get_by_text("shots must be at least 1").wait_for(timeout=20_000)

        for label, value in (("shots", "2"), ("max steps", "1"), ("num generations", "2"),
                             ("prompts per step", "2"), ("max completion length", "16"), ("eval max examples", "12")):
            _advanced(page, label, value)
        screenshot(page, "shots-1-train-form")
        page.get_by_role("button", name="Train", exact=True).click()
        run_id = max(seeded) + 1
        page.wait_for_function("document.querySelector('#launch-message')?.innerText.includes('Queued run')"
                               " || document.querySelector('#launch-message')?.innerText.includes('⚠ ') &&"
                               " !document.querySelector('#launch-message')?.innerText.includes('shots must')",
                               timeout=30_000)
        assert f"Queued run {run_id}" in page.locator("#launch-message").inner_text()

        # What the form stored is what trains: the rows built from it hold training images only, no novel class.
        settings = TrainSettings.from_dict(get_run(ws.store, run_id).settings)
        assert (settings.shots, settings.novel_classes) == (2, NOVEL)
        # The rewards ticked (the CPU demo preset's for detection), each with its weight.
        assert settings.rewards == ["format", "detection_soft_iou", "detection_confidence"]
        assert settings.reward_weights == [1.0, 1.0, 1.0]
        dataset = get_dataset(ws.store, "demo-shapes")
        split = {s["id"]: s["split"] for s in dataset["samples"]}
        rows = train_rows(dataset, ws.data_dir, "demo", settings)
        assert rows and {split[r["sample_id"]] for r in rows} == {"train"}
        assert not any(c in r["prompt_text"] or c in r["category"] for r in rows for c in NOVEL)
        images = {r["sample_id"] for r in rows}
        assert len(images) <= 2 * 9  # 2 shots of each of the 9 base classes, at most

        status = page.locator("#run-status")
        status.get_by_text(f"Run {run_id}").wait_for(timeout=30_000)
        trained = page.locator("#run-trained")
        trained.get_by_text(f"trained on {len(images)} of 80 training images").wait_for(timeout=20_000)
        assert "2 shots per class" in trained.inner_text() and "blue circle" in trained.inner_text()
        deadline = time.time() + 600  # the machine may be busy with other work
        while "completed" not in status.inner_text() and time.time() < deadline:
            time.sleep(1)
        assert "completed" in status.inner_text(), status.inner_text()
        page.wait_for_function("document.querySelector('#evaluation')?.innerText.includes('novel classes: mean_iou')",
                               timeout=20_000)
        assert "base classes: map" in page.locator("#evaluation").inner_text()
        screenshot(page, "shots-2-run")

        page.get_by_role("tab", name="Compare").click()
        page.wait_for_function("document.querySelector('#efficiency-table')?.innerText.includes('novel mean_iou')",
                               timeout=30_000)
        table = page.locator("#efficiency-table").inner_text()
        assert "base mean_iou" in table and "0.400" in table
        page.locator("#efficiency-plot canvas, #efficiency-plot svg").first.wait_for(timeout=20_000)
        assert "GRPO" in page.locator("#compare-table").inner_text()
        page.wait_for_timeout(2000)
        screenshot(page, "shots-3-compare")

        # gradio_client does what the form does: shots and novel classes, a bad class as one sentence.
        from gradio_client import Client
        client = Client(url, verbose=False)
        try:
            client.predict("demo-shapes", "demo", "CPU demo", 1, "", "grpo", 2, "pink star", api_name="/create_run")
            raise AssertionError("an unknown class was queued")
        except Exception as e:  # noqa: BLE001 - gradio_client's AppError carries the sentence
            assert "unknown class 'pink star' in the novel classes" in str(e)
        queued = client.predict("demo-shapes", "demo", "CPU demo", 1, "", "grpo", 3, "red circle",
                                api_name="/create_run")["id"]
        client.predict(queued, api_name="/cancel_run")
        stored = TrainSettings.from_dict(get_run(ws.store, queued).settings)
        assert (stored.shots, stored.novel_classes) == (3, ["red circle"])

    shown = json.loads(run_cli("runs", "show", str(run_id), "--json", data_dir=data).stdout)
    assert shown["training_set"]["images"] == len(images) and shown["training_set"]["shots"] == 2
    after = shown["evaluation"]["after"]
    assert {"base", "novel"} <= set(after) and after["novel"]["count"] > 0 and after["base"]["count"] > 0
    text = run_cli("runs", "show", str(run_id), data_dir=data).stdout
    assert f"trained on {len(images)} of 80 training images (" in text and "novel classes (never trained on)" in text
