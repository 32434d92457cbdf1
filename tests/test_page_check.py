"""The Train tab's Check button in a real browser: sizes fed to the model, the zero-shot baseline drawn, advice."""
from __future__ import annotations

from backend.data.demo.shapes import SIZE
from tests.browser import browser_page, need_chromium, running_app, screenshot


def test_check_shows_what_the_model_sees_and_its_baseline(tmp_path):
    need_chromium()
    with running_app(tmp_path / "data") as (url, _), browser_page() as page:
        page.goto(url)
        page.get_by_role("tab", name="Train").click()
        page.wait_for_function("document.querySelector('#train-dataset input')?.value === 'demo-shapes'",
                               timeout=60_000)
        page.get_by_role("button", name="Check").click()
        page.locator("#check-gallery img").first.wait_for(timeout=120_000)
        summary = page.locator("#check-summary").inner_text()
        assert "demo (demo)" in summary and "Zero-shot baseline" in summary and "format rate" in summary
        table = page.locator("#check-table").inner_text()
        assert f"{SIZE}×{SIZE}" in table and "100×100" in table  # the demo's 0-100 frame
        assert page.locator("#check-gallery img").count() == 4
        screenshot(page, "train-check")
