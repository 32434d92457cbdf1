"""Labelling jobs go through the worker: queued, labelled a few images at a time by its answerer, with progress and an
ETA, cancellable, and taken up again after a crash: every answer already given is kept, none is given twice."""
from __future__ import annotations

from datetime import timedelta

import pytest

from backend.data.demo.shapes import make_scene
from backend.jobs import label_queue
from backend.jobs.labelling import Source
from backend.jobs.worker import work
from storage.models import LabelItem, LabelJob


def _scenes(folder, n, start=700):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        make_scene(start + i).image.save(folder / f"scene{i}.png")
    return folder


class Crash(BaseException):
    """The answerer's process dies in the middle of a batch (nothing after it runs)."""


def _labeller(calls: list, crash_at: int | None = None):
    """label_images' stand-in: records each image it is given; dies on the `crash_at`-th."""
    def label(ws, images, source):
        for image in images:
            calls.append(image.name)
            if len(calls) == crash_at:
                raise Crash()
        return [[[1.0, 2.0, 30.0, 40.0, source.classes[0], 0.9]] for _ in images]
    return label


def test_a_crashed_answerer_loses_no_answer_and_none_is_given_twice(ws, tmp_path):
    job_id = label_queue.submit(ws, Source(model="demo", classes=["red circle"]), [_scenes(tmp_path / "in", 5)])
    assert label_queue.progress(ws, job_id)["status"] == "queued"
    assert label_queue.pending(ws, None)

    first: list = []
    assert label_queue.claim(ws, "answerer-a", None) == job_id
    with pytest.raises(Crash):
        label_queue.work(ws, job_id, "answerer-a", label=_labeller(first, crash_at=3), batch=2)
    state = label_queue.progress(ws, job_id)
    assert (state["status"], state["answered"]) == ("running", 2), "the first batch's two answers are kept"
    assert label_queue.claim(ws, "answerer-b", None) is None, "its heartbeat is fresh: nobody takes it yet"

    with ws.store.write() as s:  # STALE_SECONDS pass without a heartbeat
        s.get(LabelJob, job_id).heartbeat_at -= timedelta(seconds=label_queue.STALE_SECONDS + 1)
    assert label_queue.pending(ws, None)
    assert label_queue.claim(ws, "answerer-b", None) == job_id
    second: list = []
    assert label_queue.work(ws, job_id, "answerer-b", label=_labeller(second), batch=2) == 3
    assert [n[6:] for n in first] == ["scene0.png", "scene1.png", "scene2.png"]
    assert [n[6:] for n in second] == ["scene2.png", "scene3.png", "scene4.png"], "only the images without an answer"
    state = label_queue.progress(ws, job_id)
    assert (state["status"], state["answered"], state["total"], state["eta_seconds"]) == ("done", 5, 5, 0.0)
    got = label_queue.items(ws, job_id)
    assert [i["position"] for i in got] == [0, 1, 2, 3, 4]
    assert all(i["boxes"] == [[1.0, 2.0, 30.0, 40.0, "red circle", 0.9]] for i in got)
    assert got[0]["name"].endswith("in/scene0.png") and (ws.data_dir / got[0]["image"]).is_file()

    # the first answerer, back from the dead, writes nothing more
    assert label_queue.work(ws, job_id, "answerer-a", label=_labeller([])) == 0


def test_progress_eta_cancel_and_review(ws, tmp_path):
    job_id = label_queue.submit(ws, Source(model="demo", classes=["red circle"]), [_scenes(tmp_path / "in", 4)])
    label_queue.claim(ws, "a", None)
    answered = []
    assert label_queue.work(ws, job_id, "a", stop=lambda: len(answered) >= 2, label=_labeller(answered),
                            batch=1) == 2
    state = label_queue.progress(ws, job_id)
    assert state["status"] == "queued", "stopped to let a question through: back in the queue"
    with ws.store.write() as s:
        for item in s.query(LabelItem).filter(LabelItem.job_id == job_id, LabelItem.seconds.is_not(None)):
            item.seconds = 3.0
    state = label_queue.progress(ws, job_id)
    assert (state["answered"], state["seconds_per_image"], state["eta_seconds"]) == (2, 3.0, 6.0)
    assert label_queue.cancel(ws, job_id) == "cancelled"
    assert label_queue.claim(ws, "b", None) is None and not label_queue.pending(ws, None)
    assert label_queue.review(ws, job_id, [0], "accepted") == 1
    assert label_queue.review(ws, job_id, [1, 3], "rejected") == 1, "image 3 has no answer to review"
    assert [i["review"] for i in label_queue.items(ws, job_id)] == ["accepted", "rejected"]
    with pytest.raises(ValueError, match="a review is one of accepted, rejected"):
        label_queue.review(ws, job_id, [0], "maybe")


def test_bad_submissions_leave_nothing(ws, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"no")
    with pytest.raises(ValueError, match="broken.png"):
        label_queue.submit(ws, Source(model="demo", classes=["x"]), [tmp_path / "in"])
    with pytest.raises(ValueError, match="name the classes"):
        label_queue.submit(ws, Source(model="demo"), [_scenes(tmp_path / "ok", 1)])
    with ws.store.read() as s:
        assert s.query(LabelJob).count() == 0 and s.query(LabelItem).count() == 0
    assert not list((ws.data_dir / label_queue.FOLDER).glob("*")), "no images copied in"


def test_the_worker_labels_a_job_with_the_demo_model(ws, tmp_path):
    job_id = label_queue.submit(ws, Source(model="demo", classes=["red circle"]), [_scenes(tmp_path / "in", 2)])
    work(ws, once=True)  # starts an answerer process, which labels the images and ends
    state = label_queue.progress(ws, job_id)
    assert (state["status"], state["answered"]) == ("done", 2), state
    assert state["seconds_per_image"] > 0
    got = label_queue.items(ws, job_id)
    assert any(i["boxes"] for i in got), "the warm-started demo model finds shapes"
    for item in got:
        for x1, y1, x2, y2, label, conf in item["boxes"]:
            assert label == "red circle" and 0 <= x1 < x2 <= item["width"] and 0 <= y1 < y2 <= item["height"]
            assert 0 <= conf <= 1


def test_accepted_images_join_an_existing_dataset_as_training_images(ws, tmp_path):
    from backend.data.additions import add_to_dataset
    from backend.data.catalog import get_dataset
    from backend.data.demo.dataset import ensure_demo_dataset
    ensure_demo_dataset(ws.store, ws.data_dir, n=4)
    before = get_dataset(ws.store, "demo-shapes")
    job_id = label_queue.submit(ws, Source(model="demo", classes=["purple star"]), [_scenes(tmp_path / "in", 3)])
    label_queue.claim(ws, "a", None)
    label_queue.work(ws, job_id, "a", label=_labeller([]))
    with pytest.raises(ValueError, match="no image is accepted yet"):
        label_queue.accepted_set(ws, job_id)
    label_queue.review(ws, job_id, [0, 2], "accepted")
    label_queue.review(ws, job_id, [1], "rejected")
    accepted = label_queue.accepted_set(ws, job_id)
    assert [im.name for im in accepted.images] == ["scene0.png", "scene2.png"] and accepted.classes == ["purple star"]
    assert add_to_dataset(ws.store, ws.data_dir, "demo-shapes", accepted.images, new=False) == 2
    after = get_dataset(ws.store, "demo-shapes")
    assert after["counts"]["train"] == before["counts"]["train"] + 2 and after["counts"]["val"] == before["counts"]["val"]
    assert after["classes"] == [*before["classes"], "purple star"]
    added = [s for s in after["samples"] if s["file"].startswith("labelled-")]
    assert [s["boxes"] for s in added] == [[[1.0, 2.0, 30.0, 40.0, "purple star"]]] * 2, "the confidence is dropped"
    assert all((ws.data_dir / after["folder"] / "images" / s["file"]).is_file() for s in added)
    with pytest.raises(ValueError, match="already exists"):
        add_to_dataset(ws.store, ws.data_dir, "demo-shapes", accepted.images, new=True)


def test_a_rejected_box_leaves_an_accepted_image(ws, tmp_path):
    """Per box: an accepted image keeps the boxes the person did not reject, in the dataset and the export."""
    def two_boxes(ws, images, source):
        return [[[1.0, 2.0, 30.0, 40.0, "red circle", 0.9], [50.0, 50.0, 90.0, 95.0, "red circle", 0.4]]
                for _ in images]
    job_id = label_queue.submit(ws, Source(model="demo", classes=["red circle"]), [_scenes(tmp_path / "in", 2)])
    label_queue.claim(ws, "a", None)
    assert label_queue.work(ws, job_id, "a", label=two_boxes) == 2
    assert label_queue.reject_boxes(ws, job_id, 0, [1]) == [1]
    label_queue.review(ws, job_id, [0, 1], "accepted")
    kept = {im.name.split("_")[-1]: im.boxes for im in label_queue.accepted_set(ws, job_id).images}
    assert kept == {"scene0.png": [[1.0, 2.0, 30.0, 40.0, "red circle", 0.9]],
                    "scene1.png": [[1.0, 2.0, 30.0, 40.0, "red circle", 0.9],
                                   [50.0, 50.0, 90.0, 95.0, "red circle", 0.4]]}
    assert label_queue.reject_boxes(ws, job_id, 0, []) == []  # taken back
    assert len(label_queue.accepted_set(ws, job_id).images[0].boxes) == 2
    with pytest.raises(ValueError, match=r"^image #0 has 2 boxes; there is no box 3$"):
        label_queue.reject_boxes(ws, job_id, 0, [2])


def _answerers(ws) -> list[int]:
    """Answerer processes serving this data dir (their command line names it)."""
    from pathlib import Path
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"backend.jobs.answerer" in cmd and str(ws.data_dir).encode() in cmd:
            pids.append(int(proc.name))
    return pids


IMAGES = 64
"""Enough that a worker killed after its first batch is still part-way: 8 batches of 8, about half a second each on
the CPU demo alone, and the answerer finishes at most the batch it is on."""


def _answers(ws, job_id) -> dict:
    """position -> (when it was answered, its boxes), for the job's answered images."""
    with ws.store.read() as s:
        return {i.position: (i.answered_at, list(i.boxes)) for i in s.query(LabelItem).filter_by(job_id=job_id)
                if i.answered_at is not None}


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_worker_killed_mid_labelling_loses_no_answer_and_repeats_none(ws, tmp_path, how):
    """The real worker (`app.py worker`, its answerer a process of its own) labels with the demo model and is killed
    (SIGKILL: its answerer notices it gone; SIGTERM: it stops them) part-way: the answerer ends after the image it is
    on, the job goes back to the queue with every answer given, and a worker started afterwards labels only the
    rest. An answer given before the kill is never given again (its time and boxes unchanged)."""
    import signal

    from tests.test_stopping import _wait, _worker
    job_id = label_queue.submit(ws, Source(model="demo", classes=["red circle"]), [_scenes(tmp_path / "in", IMAGES)])
    worker = _worker(ws)
    try:
        assert _wait(lambda: label_queue.progress(ws, job_id)["answered"] >= 2, 240), \
            (ws.data_dir / "worker.log").read_text()
        worker.send_signal(getattr(signal, how))
        assert worker.wait(60) is not None
        assert _wait(lambda: not _answerers(ws), 60), "an answerer outlived its worker"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    before = _answers(ws, job_id)
    state = label_queue.progress(ws, job_id)
    assert state["status"] == "queued" and 2 <= len(before) < IMAGES, (state, (ws.data_dir / "worker.log").read_text())

    again = _worker(ws, "--once")
    assert again.wait(400) == 0, (ws.data_dir / "worker.log").read_text()
    state = label_queue.progress(ws, job_id)
    assert (state["status"], state["answered"]) == ("done", IMAGES), state
    after = _answers(ws, job_id)
    assert {p: after[p] for p in before} == before, "an answer given before the kill was given again"
    log = (ws.data_dir / "predictions.log").read_text()  # the answerers' log
    assert f"labelled {IMAGES - len(before)} images of labelling job {job_id}" in log, log


def test_a_run_keeps_the_training_images_it_started_with(ws, tmp_path):
    """Accepted labels added to the dataset a run trains on change neither what the run reports it trained on nor
    what a resumed job trains on: its training split and classes are pinned at its first start."""
    from backend.data.additions import add_to_dataset
    from backend.data.catalog import get_dataset
    from backend.data.demo.dataset import ensure_demo_dataset
    from backend.engine.settings import preset
    from backend.jobs.run_history import run_json
    from backend.jobs.runs import create_run, pinned_dataset
    from backend.jobs.training import train_rows
    from tests.conftest import run_job_now
    ensure_demo_dataset(ws.store, ws.data_dir, n=6)
    settings = preset("CPU demo", max_steps=1, num_generations=2, eval_steps=0)
    settings.prompts_per_step, settings.eval_max_examples, settings.max_completion_length = 1, 1, 8
    run_id = create_run(ws.store, "demo-shapes", "demo", settings)
    assert run_job_now(ws, run_id) == 0
    trained = run_json(ws.store, run_id, data_dir=ws.data_dir)["training_set"]

    job_id = label_queue.submit(ws, Source(model="demo", classes=["purple star"]), [_scenes(tmp_path / "in", 3)])
    label_queue.claim(ws, "a", None)
    label_queue.work(ws, job_id, "a", label=_labeller([]))
    label_queue.review(ws, job_id, [0, 1, 2], "accepted")
    assert add_to_dataset(ws.store, ws.data_dir, "demo-shapes", label_queue.accepted_set(ws, job_id).images,
                          new=False) == 3
    now = get_dataset(ws.store, "demo-shapes")
    assert now["counts"]["train"] == trained["of_images"] + 3 and "purple star" in now["classes"]

    assert run_json(ws.store, run_id, data_dir=ws.data_dir)["training_set"] == trained
    pinned = pinned_dataset(now, ws.data_dir / f"runs/{run_id}")
    assert pinned["counts"]["train"] == trained["of_images"] and "purple star" not in pinned["classes"]
    rows = train_rows(pinned, ws.data_dir, "demo", settings)
    assert rows and not any("labelled-" in r["image"] or "purple star" in str(r["prompt"]) for r in rows)
    assert {s["id"] for s in pinned["samples"] if s["split"] == "val"} == \
        {s["id"] for s in now["samples"] if s["split"] == "val"}, "held-out images are left as they are"
