"""The Test tab's questions go to the worker: queued, answered by an answerer process it starts (on a free GPU,
or on the CPU when asked), with the place in line shown while they wait. The page loads no model."""
from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from backend.jobs import prediction_queue
from backend.jobs.answerer import Answerer
from backend.jobs.worker import make_slots, tend_answerers, work
from storage.models import PredictionRequest, Run
from tests.test_side_by_side import run_with_adapter
from ui.test_tab import ask, follow, pictures_html, shown, waiting_text


def _image(ws):
    return next((ws.data_dir / "datasets").glob("demo-shapes-*/images/*.png"))


def _answered(ws, request_id: int) -> list[dict]:
    updates = list(follow(ws, request_id, poll=0.05))
    assert all(isinstance(u, str) for u in updates[:-1])
    return updates[-1]


def test_the_worker_answers_a_tuned_run_beside_its_base_and_forgets_the_images(ws):
    run_id = run_with_adapter(ws)
    image = _image(ws)
    request_id = ask(ws, str(run_id), None, [str(image)], "red circle", "", compare=True)
    assert prediction_queue.state(ws, request_id)["status"] == "queued"
    assert (ws.data_dir / "predictions" / str(request_id)).is_dir()

    work(ws, once=True)  # starts an answerer process, which answers and ends

    state = prediction_queue.state(ws, request_id)
    assert state["status"] == "done", state["error"]
    assert state["result"]["by"].endswith(":all")  # a worker without GPUs answers every request on the CPU
    answers = _answered(ws, request_id)
    assert [a["source"] for a in answers] == [f"run {run_id} (last, step 2)", "base"]
    assert all(a["image"] == 0 and "red circle" in a["prompt"] for a in answers)
    assert answers[0]["completion"] != answers[1]["completion"]  # the adapter is on for one, off for the other
    items, text = shown([str(image)], answers)
    assert [caption.split(" · ")[1] for _, caption in items] == [a["source"] for a in answers]
    assert f"Tuned: run {run_id} (last checkpoint, step 2)" in text and "Base model" in text
    page = pictures_html([str(image)], items, answers)  # each picture under its heading, its caption whole
    assert page.count("<figure") == 2 and page.count("<img src='data:image/jpeg;base64,") == 2
    assert page.index(f"Tuned: run {run_id} (last checkpoint, step 2)") < page.index("Base model")
    assert f"{image.name} · {len(answers[1].get('boxes', []))} box" in page
    assert not (ws.data_dir / "predictions" / str(request_id)).exists(), "answered: its images are removed"
    with ws.store.read() as s:
        assert s.get(PredictionRequest, request_id) is None, "read by the page: forgotten"


def test_a_request_that_cannot_be_answered_gets_its_sentence(ws):
    from backend.data.demo.dataset import ensure_demo_dataset
    from backend.engine.settings import preset
    from backend.jobs.runs import create_run
    ensure_demo_dataset(ws.store, ws.data_dir, n=4)
    run_id = create_run(ws.store, "demo-shapes", "demo", preset("CPU demo"))  # queued: no adapter yet
    with ws.store.write() as s:
        s.get(Run, run_id).status = "cancelled"
    request_id = ask(ws, str(run_id), None, [str(_image(ws))], "red circle", "", compare=False)
    work(ws, once=True)
    with pytest.raises(ValueError, match=f"run {run_id} has no adapter yet"):
        _answered(ws, request_id)


def test_bad_input_is_refused_before_anything_is_queued(ws, tmp_path):
    with pytest.raises(ValueError, match="upload at least one image"):
        ask(ws, None, "demo", [], "red circle", "", compare=False)
    with pytest.raises(ValueError, match="choose a run or a base model"):
        ask(ws, None, " ", [str(tmp_path)], "red circle", "", compare=False)
    fake = tmp_path / "photo.png"
    fake.write_text("not an image")
    with pytest.raises(ValueError):
        ask(ws, None, "demo", [str(fake)], "red circle", "", compare=False)
    with ws.store.read() as s:
        assert s.query(PredictionRequest).count() == 0
    assert not (ws.data_dir / "predictions").exists() or not any((ws.data_dir / "predictions").iterdir())


def test_an_answer_nobody_reads_is_swept_by_a_later_one(ws, tmp_path):
    """A browser that left mid-wait never reads its answer; the next answer given removes it after an hour."""
    from datetime import timedelta

    from backend.data.demo.dataset import ensure_demo_dataset
    ensure_demo_dataset(ws.store, ws.data_dir, n=4)
    image = str(_image(ws))
    left, recent, later = (ask(ws, None, "demo", [image], "red circle", "", compare=False) for _ in range(3))
    prediction_queue.finish(ws, left, result={"answers": []})
    prediction_queue.finish(ws, recent, result={"answers": []})
    with ws.store.write() as s:
        row = s.get(PredictionRequest, left)
        row.finished_at -= timedelta(hours=prediction_queue.UNREAD_HOURS, minutes=1)
    prediction_queue.finish(ws, later, error="the model could not be loaded")
    with ws.store.read() as s:
        assert s.get(PredictionRequest, left) is None
        assert s.get(PredictionRequest, recent).status == "done", "an answer younger than an hour stays to be read"
        assert s.get(PredictionRequest, later).status == "failed"


def test_place_in_line_and_what_a_gpu_request_waits_for(ws, tmp_path):
    from backend.data.demo.dataset import ensure_demo_dataset
    from backend.engine.settings import preset
    from backend.jobs.runs import create_run
    ensure_demo_dataset(ws.store, ws.data_dir, n=4)
    run_id = create_run(ws.store, "demo-shapes", "demo", preset("CPU demo"))
    with ws.store.write() as s:
        s.get(Run, run_id).status = "running"
    image = str(_image(ws))
    first = ask(ws, None, "demo", [image], "red circle", "", compare=False)
    second = ask(ws, None, "demo", [image], "red circle", "", compare=False)
    on_cpu = ask(ws, None, "demo", [image], "red circle", "", compare=False, on_cpu=True)
    assert prediction_queue.state(ws, first)["ahead"] == 0
    waiting = prediction_queue.state(ws, second)
    assert waiting["ahead"] == 1 and waiting["waiting_for"] == [run_id]
    line = waiting_text(waiting, 3.0)
    assert "1 question ahead" in line and f"training: run {run_id}" in line and "Answer on the CPU" in line
    cpu = prediction_queue.state(ws, on_cpu)
    assert cpu["ahead"] == 0 and cpu["waiting_for"] == [], "a CPU request waits neither for GPU ones nor for runs"
    with ws.store.write() as s:
        s.get(Run, run_id).status = "completed"
    assert "is the worker running?" in waiting_text(prediction_queue.state(ws, first), 45.0)


def test_a_gpu_busy_training_answers_nothing_while_the_cpu_answers_who_asked(ws, monkeypatch):
    """Which answerers the worker starts, on a worker with one (named) GPU: the processes are real."""
    started: list[tuple[str, str | None]] = []

    def start(ws_, owner, serves, gpu, linger=0):
        started.append((serves, gpu))
        return Answerer(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]), f"{owner}:{serves}", gpu)

    monkeypatch.setattr("backend.jobs.worker.start_answerer", start)
    image = Image.new("RGB", (64, 64))
    path = ws.data_dir / "q.png"
    image.save(path)
    gpu_request = ask(ws, None, "demo", [str(path)], "red circle", "", compare=False)
    slots = make_slots(ws, "spawn", ["7"])
    slots[0].job = object()  # training a run
    cpu = tend_answerers(ws, "w", slots, None)
    assert started == [] and cpu is None and slots[0].answerer is None, "the busy GPU waits; nothing asked the CPU"

    cpu_request = ask(ws, None, "demo", [str(path)], "red circle", "", compare=False, on_cpu=True)
    cpu = tend_answerers(ws, "w", slots, cpu)
    assert started == [("cpu", None)]

    slots[0].job = None  # the run ended
    cpu = tend_answerers(ws, "w", slots, cpu)
    assert started == [("cpu", None), ("gpu", "7")] and not slots[0].free()
    assert prediction_queue.state(ws, gpu_request)["status"] == "queued"

    # An answerer that dies while answering: the request gets a sentence instead of hanging.
    assert prediction_queue.claim(ws, slots[0].answerer.owner, cpu=False)["id"] == gpu_request
    slots[0].answerer.proc.kill()
    slots[0].answerer.proc.wait()
    cpu.proc.kill()
    cpu.proc.wait()
    cpu = tend_answerers(ws, "w", slots, cpu)
    assert slots[0].answerer is None, "nothing is queued for the GPU any more"
    state = prediction_queue.state(ws, gpu_request)
    assert state["status"] == "failed" and "ended (exit status -9) before answering" in state["error"]
    assert started[-1] == ("cpu", None), "started again: the CPU request is still queued"

    # The worker stopping ends its answerers; a question one was answering gets a sentence.
    assert prediction_queue.claim(ws, cpu.owner, cpu=True)["id"] == cpu_request
    cpu.stop(ws)
    state = prediction_queue.state(ws, cpu_request)
    assert state["status"] == "failed" and state["error"] == "the worker stopped before answering: ask again"
