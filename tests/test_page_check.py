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
        page.get_by_role("button", name="Check", exact=True).click()
        page.locator("#check-gallery img").first.wait_for(timeout=120_000)
        summary = page.locator("#check-summary").inner_text()
        assert "demo (demo)" in summary and "Zero-shot baseline" in summary and "format rate" in summary
        # In this machine's terms: a CPU here, its plan and time per step; no GPU plan for the CPU demo preset.
        assert "On this machine's CPU (no GPU found): LoRA on a float32 base" in summary and " a step (" in summary
        assert "GPU plan" not in summary and "On a 24 GB GPU" not in summary
        assert "Ready" in summary  # the signal check's verdict line
        table = page.locator("#check-table").inner_text()
        assert f"{SIZE}×{SIZE}" in table and "100×100" in table  # the demo's 0-100 frame
        frame = page.locator("#check-frame").inner_text()
        assert "Coordinate frame" in frame and "numbers from 0 to 100 across the width" in frame
        assert page.locator("#check-gallery img").count() == 4
        screenshot(page, "train-check")
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(1000)
        screenshot(page, "train-check-390")


def test_the_known_checkpoints_table_follows_the_preset_and_picks_a_model(tmp_path):
    """Every family's published checkpoints with their size, the visual tokens of a photo and the plan and memory on
    the preset's card (the numbers are the estimate's own); a row picked becomes the model to train."""
    from backend.engine.checkpoints import checkpoint_rows
    need_chromium()
    with running_app(tmp_path / "data") as (url, _), browser_page() as page:
        page.goto(url)
        page.get_by_role("tab", name="Train").click()
        page.get_by_text("Known checkpoints: size, visual tokens, plan and memory on a GPU").click()
        table = page.locator("#checkpoints-table")
        table.get_by_text("google/gemma-3-4b-it").wait_for(timeout=30_000)
        text = table.inner_text()
        for row in checkpoint_rows("24 GB GPU"):
            assert row["model"] in text
        smol = next(r for r in checkpoint_rows("24 GB GPU") if r["model"].endswith("SmolVLM2-2.2B-Instruct"))
        assert f"{smol['params_b']:.2f}B" in text and str(smol["memory_gib"]) in text
        assert "24 GB GPU" in page.locator("#checkpoints-note").inner_text()
        page.get_by_role("radio", name="48 GB GPU").check()
        page.wait_for_function("document.querySelector('#checkpoints-note')?.innerText.includes('48 GB GPU')",
                               timeout=30_000)
        big = next(r for r in checkpoint_rows("48 GB GPU") if r["model"] == "OpenGVLab/InternVL3_5-8B-HF")
        page.wait_for_function(f"document.querySelector('#checkpoints-table')?.innerText.includes('on a 48 GB card')",
                               timeout=30_000)
        assert str(big["memory_gib"]) in table.inner_text()
        screenshot(page, "train-checkpoints")
        table.get_by_text("OpenGVLab/InternVL3_5-2B-HF").click()
        page.wait_for_function("[...document.querySelectorAll('input')].some(i => i.value === "
                               "'OpenGVLab/InternVL3_5-2B-HF')", timeout=30_000)
