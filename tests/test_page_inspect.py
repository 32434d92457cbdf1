"""Seeing whether it works, in a real browser: the held-out curve filling in beside the reward, the best step
marked, the rollout inspector's group of G completions, the zero-signal chart, the Compare view of SFT and GRPO,
and the Test tab predicting with the best checkpoint."""
from __future__ import annotations

import json
import re
import time

from tests.browser import browser_page, need_chromium, running_app, screenshot
from tests.conftest import run_cli


def _create(data, *flags) -> int:
    return json.loads(run_cli("runs", "create", "--dataset", "demo-shapes", "--model", "demo", "--num-generations",
                              "4", "--prompts-per-step", "2", "--max-completion-length", "64",
                              "--eval-max-examples", "4", "--rollout-steps", "1",
                              "--ignore-memory-estimate", *flags, "--json", data_dir=data).stdout)["id"]


def _points(page) -> int:
    m = re.search(r"at each of (\d+) points", page.locator("#heldout-note").inner_text())
    return int(m.group(1)) if m else 0


def _pick(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def test_heldout_curve_inspector_compare_and_the_best_checkpoint(tmp_path):
    need_chromium()
    data = tmp_path / "data"
    run_cli("demo", data_dir=data)
    sft = _create(data, "--method", "sft", "--max-steps", "4", "--eval-steps", "2", "--save-steps", "10")
    grpo = _create(data, "--max-steps", "4", "--eval-steps", "1", "--save-steps", "10")
    with running_app(data) as (url, _), browser_page(height=1200) as page:
        page.goto(url)
        page.get_by_role("tab", name="Train").click()
        page.locator("#train-method").get_by_text("SFT: supervised").wait_for(timeout=30_000)  # the Method choice

        page.get_by_role("tab", name="Runs").click()
        page.locator("#runs-table").get_by_text("SFT").first.wait_for(timeout=30_000)
        _pick(page, "Run", str(grpo))
        status = page.locator("#run-status")
        status.get_by_text(f"Run {grpo}").wait_for(timeout=30_000)
        # Live: the held-out curve gains points while the run trains, beside the reward chart.
        deadline = time.time() + 600  # the machine may be busy with other work
        while not ("running" in status.inner_text() and _points(page) >= 2) and time.time() < deadline:
            time.sleep(0.5)
        seen_live = _points(page)
        assert "running" in status.inner_text() and seen_live >= 2
        while "completed" not in status.inner_text() and time.time() < deadline:
            time.sleep(1)
        assert "completed" in status.inner_text()
        page.wait_for_function("document.querySelector('#heldout-note').innerText.includes('at each of 5 points')",
                               timeout=20_000)
        assert seen_live < 5
        note = page.locator("#heldout-note").inner_text()
        assert "Best: mean_iou" in note and "took" in note
        assert "best" in status.inner_text()  # the best step, marked in the run's status line too
        for chart in ("#chart-reward", "#chart-heldout", "#chart-frac_reward_zero_std"):
            page.locator(f"{chart} canvas, {chart} svg").first.wait_for(timeout=20_000)
        page.wait_for_timeout(3000)  # the charts draw their last data
        screenshot(page, "inspect-1-curves")

        page.get_by_role("tab", name="Rollout inspector").click()
        cards = page.locator("#rollout-cards .rollout-card")
        cards.first.wait_for(timeout=20_000)
        assert cards.count() == 4  # all G completions of the group, side by side
        assert page.locator("#rollout-gallery img").count() == 4
        text = page.locator("#rollout-cards").inner_text()
        assert text.count("advantage") == 4 and "detection_soft_iou" in text and "classification_accuracy" not in text and "reasoning:" in text
        assert "group mean" in page.locator("#rollout-summary").inner_text()
        page.get_by_role("combobox", name="Prompt of that step").click()
        second = page.get_by_role("option").nth(1)  # the step's second group
        assert second.inner_text().startswith("prompt 2: ")
        second.click()
        page.locator("#rollout-summary").get_by_text("prompt 2").wait_for(timeout=20_000)
        screenshot(page, "inspect-2-rollouts")

        page.get_by_role("tab", name="Compare").click()
        page.wait_for_function("document.querySelector('#compare-table')?.innerText.includes('BASE')", timeout=20_000)
        shown = page.locator("#compare-table").inner_text()
        assert "SFT" in shown and "GRPO" in shown and "mean_iou at start" in shown and "best mean_iou (step)" in shown
        screenshot(page, "inspect-3-compare")

        run = json.loads(run_cli("runs", "show", str(grpo), "--json", data_dir=data).stdout)
        page.get_by_role("tab", name="Test").click()
        page.reload()
        page.get_by_role("tab", name="Test").click()
        _pick(page, "Tuned run", f"run {grpo} · GRPO · demo · detection · completed")
        image = next(data.glob("datasets/demo-shapes-*/images/shapes_001.png"))
        page.set_input_files("#test-images input[type=file]", str(image))
        page.get_by_label("Category to detect").fill("red circle")
        page.get_by_role("button", name="Predict").click()
        page.locator("#test-gallery img").nth(1).wait_for(timeout=120_000)
        tuned = f"Tuned: run {grpo} (best checkpoint, step {run['best']['step']})"
        assert tuned in page.locator("#test-reasoning").inner_text()
        assert page.locator("#test-gallery h4").first.inner_text() == tuned  # the heading over its picture
        screenshot(page, "inspect-4-test-best")
    assert run["status"] == "completed" and sft < grpo
