"""What a client sends is data, never a server path: every upload input of the page (Data, Test, Label, the reward
playground) takes only regular files that this app's /upload received, of a kind the tab takes, and refuses anything
else (Gradio's upload cache folder itself, a folder or file in it that no request uploaded here, a link) in one
sentence naming the file as its sender called it, with nothing queued or copied and nothing registered for Gradio
to delete."""
from __future__ import annotations

import json
import os
import shutil
import urllib.request
import uuid
from pathlib import Path

from tests import builders
from tests.browser import running_app


def _upload(url: str, path: Path) -> str:
    """POST /gradio_api/upload as the page and gradio_client do; the server's path of the stored file."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{url}/gradio_api/upload", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)[0]


def _file(path: str | Path, orig_name: str | None = None) -> dict:
    return {"path": str(path), "orig_name": orig_name, "meta": {"_type": "gradio.FileData"}}


def _call(url: str, api: str, data: list) -> tuple[str, object]:
    """POST /gradio_api/call/<api> then read its event stream: (the last event's name, its data)."""
    req = urllib.request.Request(f"{url}/gradio_api/call/{api}", data=json.dumps({"data": data}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        event_id = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{url}/gradio_api/call/{api}/{event_id}", timeout=120) as r:
        text = r.read().decode()
    event, data_line = None, None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data_line = line.split(":", 1)[1].strip()
    return event, json.loads(data_line) if data_line else None


def _sentence(event: str, data) -> str:
    """The refusal a tab shows: its message output (a ⚠ line), or the error Gradio passes on (the playground)."""
    if event == "error":
        return data["error"] if isinstance(data, dict) else str(data)
    return next(v for v in data if isinstance(v, str) and v.startswith("⚠"))


def _one_sentence(text: str) -> None:
    assert text.count(". ") == 0 and "\n" not in text and "Traceback" not in text, text


def test_uploads_are_data_never_server_paths(tmp_path):
    cache = tmp_path / "gradio-cache"
    data_dir = tmp_path / "data"
    # what another session (or another app sharing the cache) left there: an upload folder with images
    theirs = cache / ("f" * 40)
    for i in range(3):
        builders.make_image(theirs / f"private{i}.png", 32, 24, seed=i)
    link = cache / ("e" * 40) / "mine.png"
    link.parent.mkdir(parents=True)
    os.symlink(theirs / "private0.png", link)
    builders.make_image(tmp_path / "ok.png", 32, 24)
    (tmp_path / "notes.txt").write_text("not an image")
    with running_app(data_dir, env={"GRADIO_TEMP_DIR": str(cache)}) as (url, _):
        notes = _upload(url, tmp_path / "notes.txt")
        hostile = {
            "the cache folder": _file(cache),
            "another session's upload folder": _file(theirs),
            "a file no request uploaded here": _file(theirs / "private1.png", "private1.png"),
            "a link in the cache": _file(link, "mine.png"),
            "a kind the tab does not take": _file(notes, "notes.txt"),
        }
        for what, payload in hostile.items():
            for api, data in (("label", [None, "/no/such/model", [payload], "x", 0, True]),
                              ("import_dataset", [[payload], "stolen", "auto", 0.2, ""]),
                              ("predict", [None, "/no/such/model", [payload], "x", "", False, "best", True]),
                              ("score", ["detection", "pixels (no family)", payload, "", "", '{"boxes": []}',
                                         "<answer>[]</answer>"])):
                if api in ("import_dataset",) and what == "a kind the tab does not take":
                    continue  # the Data tab takes annotation text files
                event, out = _call(url, api, data)
                sentence = _sentence(event, out)
                assert str(cache) not in sentence and str(tmp_path) not in sentence, (what, api, sentence)
                _one_sentence(sentence)
                if what == "a kind the tab does not take":
                    assert "notes.txt is not an image" in sentence, (api, sentence)
                elif what in ("the cache folder", "another session's upload folder"):  # sent with no name
                    assert sentence.lstrip("⚠ ").startswith("the file sent is not a file uploaded to this page"), \
                        (what, api, sentence)
                elif what in ("a file no request uploaded here", "a link in the cache"):
                    assert Path(payload["orig_name"]).name in sentence, (what, api, sentence)
                assert api == "score" or event == "complete", (what, api, event, out)
        # nothing queued, nothing copied, no dataset made
        from backend.data.catalog import dataset_names
        from backend.data.workspace import open_workspace
        from backend.jobs import label_queue
        ws = open_workspace(data_dir)
        try:
            assert label_queue.jobs(ws) == [] and "stolen" not in dataset_names(ws.store)
        finally:
            ws.store.close()
        assert not list((data_dir / "labelling").glob("*/*")) and not list((data_dir / "predictions").glob("*/*"))
        # a file this app's /upload received is still taken (the guard is not a wall)
        mine = _upload(url, tmp_path / "ok.png")
        event, out = _call(url, "label", [None, "/no/such/model", [_file(mine, "ok.png")], "x", 0, True])
        assert event == "complete" and out[1] == "", out
    # Gradio's shutdown deleted only what this app made: the cache folder and others' files are still there
    assert cache.is_dir() and sorted(p.name for p in theirs.iterdir()) == [f"private{i}.png" for i in range(3)]
    assert link.is_symlink()
    log = (tmp_path / f"app-{url.rsplit(':', 1)[1]}.log").read_text()
    assert "IsADirectoryError" not in log, log[-3000:]
    shutil.rmtree(cache, ignore_errors=True)
