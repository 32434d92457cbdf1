"""Deleting a dataset that runs use: refused while queued or running runs use it (CLI and page), and finished
runs keep what they show (rollouts with their images and truth, metrics, evaluation); the Runs tab never
raises on a missing file."""
from __future__ import annotations

import json

import gradio as gr
import pytest
from PIL import Image

from backend.data.catalog import delete_dataset, get_dataset
from backend.data.importer import import_dataset
from backend.engine.settings import preset
from backend.jobs.runs import cancel_run, create_run, resume_run
from backend.jobs.run_history import rollouts, run_json, store_rollouts, upsert_metrics
from storage.models import Evaluation, Run
from tests import builders
from tests.conftest import run_cli


def _pets(ws, tmp_path, name="pets") -> dict:
    builders.write_coco(tmp_path / name, builders.detection_samples(6, size=(160, 120)))
    import_dataset(ws.store, ws.data_dir, [builders.zip_dir(tmp_path / name, tmp_path / f"{name}.zip")], name)
    return get_dataset(ws.store, name)


def _finished_run(ws, info: dict) -> int:
    """A completed run of `info` with metrics, an evaluation, a log and two rollouts of the dataset's images."""
    run_id = create_run(ws.store, info["name"], "demo", preset("CPU demo", max_steps=2))
    with ws.store.write() as s:
        run = s.get(Run, run_id)
        run.status, run.step = "completed", 2
        s.add(Evaluation(run_id=run_id, phase="after", metrics={"map": 0.5, "format_rate": 1.0}))
    upsert_metrics(ws.store, run_id, 1, {"reward": 0.25})
    samples = [s for s in info["samples"] if s["boxes"]][:2]
    store_rollouts(ws.store, run_id, 1, [
        {"sample_id": s["id"], "image": f"{info['folder']}/images/{s['file']}", "prompt": "find the cats",
         "completion": "<think>there</think><answer>[]</answer>", "parsed": {"boxes": [[1, 1, 20, 20]]},
         "rewards": {"format": 1.0}, "prompt_index": i, "sample_index": 0} for i, s in enumerate(samples)])
    (ws.data_dir / f"runs/{run_id}").mkdir(parents=True, exist_ok=True)
    (ws.data_dir / f"runs/{run_id}/train.log").write_text("step 1\nstep 2\n")
    return run_id


def _runs_tab(ws):
    """The Runs tab's live view as a function returning {output name: value}."""
    from ui.runs_tab import create_runs_tab
    with gr.Blocks():
        tab = create_runs_tab(ws)
    return lambda *args: dict(zip(tab["names"], tab["live"][0](*args)))


def test_cli_refuses_while_a_queued_run_uses_the_dataset(tmp_path):
    data = tmp_path / "data"
    builders.write_voc(tmp_path / "voc", builders.detection_samples(4))
    run_cli("datasets", "import", str(builders.zip_dir(tmp_path / "voc", tmp_path / "voc.zip")), "--name", "pets",
            data_dir=data)
    run_id = json.loads(run_cli("runs", "create", "--dataset", "pets", "--model", "demo", "--max-steps", "2",
                                "--ignore-memory-estimate", "--json", data_dir=data).stdout)["id"]

    refused = run_cli("datasets", "delete", "pets", data_dir=data, check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"error: dataset 'pets' is used by run {run_id} (queued); cancel it or wait "
                                      "until it finishes, then delete the dataset")
    assert [d["name"] for d in json.loads(run_cli("datasets", "list", "--json", data_dir=data).stdout)] == ["pets"]
    assert len(list((data / "datasets").iterdir())) == 1  # the images are still there

    run_cli("runs", "cancel", str(run_id), data_dir=data)
    run_cli("datasets", "delete", "pets", data_dir=data)
    assert json.loads(run_cli("datasets", "list", "--json", data_dir=data).stdout) == []


def test_running_runs_are_named_and_a_resume_after_deletion_is_refused(ws, tmp_path):
    info = _pets(ws, tmp_path)
    first, second = (create_run(ws.store, "pets", "demo", preset("CPU demo", max_steps=2)) for _ in range(2))
    with ws.store.write() as s:
        s.get(Run, first).status = "running"
    with pytest.raises(ValueError) as refused:
        delete_dataset(ws.store, ws.data_dir, "pets")
    assert str(refused.value) == (f"dataset 'pets' is used by runs {first} (running) and {second} (queued); cancel "
                                  "them or wait until they finish, then delete the dataset")
    assert (ws.data_dir / info["folder"]).is_dir()

    cancel_run(ws.store, second)
    with ws.store.write() as s:
        s.get(Run, first).status = "failed"
    delete_dataset(ws.store, ws.data_dir, "pets")
    with pytest.raises(ValueError, match=f"run {second} cannot resume: its dataset was deleted"):
        resume_run(ws.store, second)


def test_finished_runs_keep_their_rollouts_metrics_and_evaluation(ws, tmp_path):
    info = _pets(ws, tmp_path)
    run_id = _finished_run(ws, info)
    before = rollouts(ws.store, run_id)
    live = _runs_tab(ws)
    shown_before = live(run_id, None, True)
    before_live = {p: live(run_id, None, True, p) for p in (0, 1)}

    delete_dataset(ws.store, ws.data_dir, "pets")
    assert not (ws.data_dir / info["folder"]).exists()

    after = rollouts(ws.store, run_id)
    assert [r.completion for r in after] == [r.completion for r in before]
    for old, new in zip(before, after):
        assert new.image.startswith(f"runs/{run_id}/rollout-images/")
        assert Image.open(ws.data_dir / new.image).size == (160, 120)  # the very image, copied
        assert new.sample_id is None and new.truth["boxes"]  # the truth outlives its sample row
    run = run_json(ws.store, run_id)
    assert run["metrics"]["reward"] == [[1, 0.25]] and run["evaluation"]["after"]["map"] == 0.5

    # The Runs tab draws them as before, truth boxes included (each rollout its own prompt's group here).
    assert shown_before["prompt"]["choices"] == [("prompt 1: find the cats", 0), ("prompt 2: find the cats", 1)]
    for prompt in (0, 1):
        gallery_before = before_live[prompt]["gallery"]["value"]
        gallery_after = live(run_id, None, True, prompt)["gallery"]["value"]
        assert len(gallery_after) == len(gallery_before) == 1
        for (a, _), (b, _) in zip(gallery_before, gallery_after):
            assert a.tobytes() == b.tobytes()


def test_runs_tab_never_raises_on_missing_files(ws, tmp_path):
    info = _pets(ws, tmp_path)
    run_id = _finished_run(ws, info)
    live = _runs_tab(ws)
    # A dataset folder removed by hand (or a crash mid-delete), the log and the adapter gone:
    import shutil
    shutil.rmtree(ws.data_dir / info["folder"])
    (ws.data_dir / f"runs/{run_id}/train.log").unlink()
    (ws.data_dir / f"runs/{run_id}/adapter").mkdir(parents=True)
    (ws.data_dir / f"runs/{run_id}/adapter/adapter_config.json").write_text("{}")  # and nothing else to zip
    with ws.store.write() as s:
        s.get(Run, run_id).log_tail = "the stored tail"
    shown = live(run_id, None, True)
    gallery, log, download = shown["gallery"]["value"], shown["log"], shown["download"]
    assert [im.size for im, _ in gallery] == [(320, 240)]  # a placeholder saying the image is gone
    assert [im.size for im, _ in live(run_id, None, True, 1)["gallery"]["value"]] == [(320, 240)]
    assert log.startswith("the stored tail")
    assert download is None or str(download).endswith(".zip")


def test_page_delete_shows_the_sentence(ws, tmp_path):
    from ui.data_tab import create_data_tab
    _pets(ws, tmp_path)
    run_id = create_run(ws.store, "pets", "demo", preset("CPU demo", max_steps=2))
    with gr.Blocks():
        on_delete = create_data_tab(ws)["delete"]
    note, picker, summary, *_ = on_delete("pets")
    assert note == (f"⚠ dataset 'pets' is used by run {run_id} (queued); cancel it or wait until it finishes, "
                    "then delete the dataset")
    assert picker["value"] == "pets" and "pets" in summary
    cancel_run(ws.store, run_id)
    note, picker, summary, *_ = on_delete("pets")
    assert note == "✓ Deleted **pets**." and picker["value"] is None
    # picked in a page opened before the deletion: a sentence, not an error
    note, picker, summary, *_ = on_delete("pets")
    assert note == "⚠ there is no dataset named 'pets'"
