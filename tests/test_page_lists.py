"""Lists that follow the data: the dataset and run choices are read again from storage when their tab is
selected and after the actions that change them, keeping the person's choice while it exists."""
from __future__ import annotations

import gradio as gr

from backend.data.catalog import delete_dataset
from backend.data.importer import import_dataset
from backend.engine.settings import preset
from backend.jobs.runs import create_run
from storage.models import Run
from tests import builders


def _import(ws, tmp_path, name: str) -> None:
    builders.write_coco(tmp_path / name, builders.detection_samples(4))
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(tmp_path / name, tmp_path / f"{name}.zip")], name)


def _settle(ws, run_id: int, status: str) -> None:
    with ws.store.write() as s:
        s.get(Run, run_id).status = status


def test_the_train_tabs_datasets_follow_imports_and_deletes(ws, tmp_path):
    from ui.train_tab import create_train_tab
    with gr.Blocks():
        refresh, inputs, outputs = create_train_tab(ws, on_launched=lambda run_id: ())["refresh"]
    assert refresh(None) == gr.update(choices=[], value=None)
    _import(ws, tmp_path, "pets")
    _import(ws, tmp_path, "birds")
    assert refresh(None) == gr.update(choices=["pets", "birds"], value="birds")  # the newest
    _import(ws, tmp_path, "cars")
    assert refresh("pets") == gr.update(choices=["pets", "birds", "cars"])  # the choice stays
    delete_dataset(ws.store, ws.data_dir, "pets")
    assert refresh("pets") == gr.update(choices=["birds", "cars"], value="cars")


def test_the_data_tab_keeps_the_dataset_shown_while_it_exists(ws, tmp_path):
    from ui.data_tab import create_data_tab
    with gr.Blocks():
        refresh, _, _ = create_data_tab(ws)["refresh"]
    _import(ws, tmp_path, "pets")
    picker, summary, rows, gallery, pager, page = refresh(None, "all")
    assert picker == gr.update(choices=["pets"], value="pets") and "### pets" in summary and len(gallery) == 4
    assert (pager, page) == ("Images 1–4 of 4 (every split)", 1)
    _import(ws, tmp_path, "birds")
    assert refresh("pets", "all") == (gr.update(choices=["pets", "birds"]), *(gr.update(),) * 5)  # nothing redrawn


def test_the_test_tabs_runs_follow_runs_finishing_and_keep_the_choice(ws, tmp_path):
    from ui.test_tab import BASE, create_test_tab
    with gr.Blocks():
        refresh, _, _ = create_test_tab(ws)["refresh"]
    update, shown = refresh(None, [])
    assert update == gr.update(choices=[(BASE, BASE)], value=BASE)
    _import(ws, tmp_path, "pets")
    first = create_run(ws.store, "pets", "demo", preset("CPU demo", max_steps=2))
    assert refresh(BASE, shown) == (gr.update(), shown)  # queued: nothing to test yet, nothing sent
    _settle(ws, first, "completed")
    # "base model only" was the only choice there was: the finished run is taken
    update, shown = refresh(BASE, shown)
    assert update["value"] == str(first) and [label for label, _ in update["choices"]] == \
        [BASE, f"run {first} · GRPO · demo · detection · completed"]
    second = create_run(ws.store, "pets", "demo", preset("CPU demo", max_steps=2))
    _settle(ws, second, "running")
    update, shown = refresh(str(first), shown)
    assert "value" not in update and [value for _, value in update["choices"]] == [BASE, str(second), str(first)]
    assert refresh(BASE, shown) == (gr.update(), shown)  # chosen among runs: kept; unchanged: nothing sent
    _settle(ws, second, "completed")
    update, shown = refresh(BASE, shown)
    assert "value" not in update and update["choices"][1][0].endswith("· completed")


def test_each_list_is_refreshed_on_its_tab_and_after_the_actions_that_change_it(ws):
    """The wiring of the page: Data, Train and Test refresh their lists when selected; an import or a delete
    refreshes the Train tab's datasets too; the demo dataset being ready refreshes both dataset lists; the
    Test tab's run list is read on a timer (a run finishing)."""
    from ui.app import build_app
    config = build_app(ws).get_config_file()
    comps = {c["id"]: c for c in config["components"]}
    name = lambda i: comps[i]["props"].get("elem_id") or comps[i]["props"].get("label")  # noqa: E731
    deps = config["dependencies"]

    def outputs_of(trigger) -> list[set]:
        return [{name(o) for o in d["outputs"]} for d in deps
                if any(i in comps and (comps[i]["type"], name(i), ev) == trigger for i, ev in d["targets"])]

    assert {"Dataset"} <= outputs_of(("tabitem", "Data", "select"))[0]
    assert outputs_of(("tabitem", "Train", "select")) == [{"train-dataset"}]
    assert outputs_of(("tabitem", "Test", "select"))[0] >= {"test-run"}
    assert any("test-run" in out for out in outputs_of(("timer", None, "tick")))
    for button in ("Import", "Delete"):
        click = next(n for n, d in enumerate(deps) if any(
            i in comps and comps[i]["props"].get("value") == button and ev == "click" for i, ev in d["targets"]))
        assert any(d.get("trigger_after") == click and {name(o) for o in d["outputs"]} == {"train-dataset"}
                   for d in deps), f"{button} does not refresh the Train tab's datasets"
    banner = outputs_of(("markdown", "demo-banner", "change"))
    assert banner and "Dataset" in banner[0]


def test_in_the_browser_the_lists_follow_without_a_reload(tmp_path):
    """The page stays open throughout: an import shows in the Train tab, runs settling show in the Test tab
    (on selecting it, and while it is open), a delete leaves the Train tab's list."""
    import re

    from backend.data.workspace import open_workspace
    from tests.browser import browser_page, need_chromium, running_app, screenshot
    need_chromium()
    builders.write_coco(tmp_path / "pets", builders.detection_samples(6))
    archive = builders.zip_dir(tmp_path / "pets", tmp_path / "pets.zip")
    with running_app(tmp_path / "data") as (url, _), browser_page() as page:
        ws = open_workspace(tmp_path / "data")

        def settled_run(status: str) -> int:  # a run as a finished job leaves it (no job runs here)
            from backend.data.catalog import get_dataset
            info = get_dataset(ws.store, "demo-shapes", with_samples=False)
            with ws.store.write() as s:
                run = Run(dataset_id=info["id"], model="demo", family="demo", task="detection", status=status,
                          settings=preset("CPU demo", max_steps=2).to_dict(), max_steps=2, step=2)
                s.add(run)
                s.flush()
                run.folder = f"runs/{run.id}"
                return run.id

        def options(element: str) -> list[str]:
            page.locator(f"#{element} input").click()
            page.get_by_role("option").first.wait_for()
            page.wait_for_timeout(300)  # the list has faded in
            found = page.get_by_role("option").all_inner_texts()
            return [re.sub(r"^✓\s*", "", text).strip() for text in found]

        page.goto(url)
        page.wait_for_function("document.querySelector('#train-dataset input')?.value === 'demo-shapes'",
                               timeout=60_000)
        page.get_by_role("tab", name="Test").click()
        page.wait_for_function("document.querySelector('#test-run input')?.value === 'base model only'")

        page.get_by_role("tab", name="Data").click()
        page.set_input_files("#data-upload input[type=file]", str(archive))
        page.get_by_label("Dataset name").fill("pets")
        page.get_by_role("button", name="Import").click()
        page.get_by_text("Imported").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Train").click()
        assert options("train-dataset") == ["demo-shapes", "pets"]
        screenshot(page, "lists-train-datasets")
        page.keyboard.press("Escape")
        assert page.locator("#train-dataset input").input_value() == "demo-shapes"  # the choice stays

        first = settled_run("completed")
        page.get_by_role("tab", name="Test").click()  # the only choice was the base model: the run is taken
        page.wait_for_function(f"document.querySelector('#test-run input')?.value.startsWith('run {first} · ')",
                               timeout=20_000)
        second = settled_run("cancelled")  # while the tab is open: its timer reads the list again
        page.wait_for_timeout(7_000)
        labels = options("test-run")
        assert labels[0] == "base model only" and labels[1].startswith(f"run {second} · ") and \
            labels[1].endswith("· cancelled") and labels[2].startswith(f"run {first} · ")
        screenshot(page, "lists-test-runs")
        page.keyboard.press("Escape")
        assert page.locator("#test-run input").input_value().startswith(f"run {first} · ")

        page.get_by_role("tab", name="Data").click()
        page.on("dialog", lambda dialog: dialog.accept())
        page.get_by_role("combobox", name="Dataset").click()
        page.get_by_role("option", name="pets").click()
        page.locator("#dataset-summary").get_by_text("6 images").wait_for(timeout=20_000)
        page.get_by_role("button", name="Delete").click()
        page.get_by_text("Deleted").wait_for(timeout=20_000)
        page.get_by_role("tab", name="Train").click()
        assert options("train-dataset") == ["demo-shapes"]
        ws.store.close()
