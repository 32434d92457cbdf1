"""Offline and firewalled machines: a hub id that cannot be had is one sentence within seconds (not minutes of
retries), saying how to pass a local folder; HF_HUB_OFFLINE is respected. `models check` as a person runs it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.builders import make_image
from tests.conftest import ROOT

HUB_ID = "Qwen/Qwen2-VL-2B-Instruct"


def _check(tmp_path, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    make_image(tmp_path / "a.png", 64, 48)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "app.py"), "--data-dir", str(tmp_path / "data"), "models",
                           "check", HUB_ID, "--image", str(tmp_path / "a.png"), "--no-baseline"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HOME": str(tmp_path / "hf"), **env})
    return proc, time.monotonic() - started


def test_hf_hub_offline_without_the_model_cached_is_one_sentence_at_once(tmp_path):
    proc, seconds = _check(tmp_path, {"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (f"error: could not load '{HUB_ID}': it is not in this machine's Hugging Face cache and "
                           f"HF_HUB_OFFLINE is set; download it where the hub can be reached (`hf download {HUB_ID} "
                           "--local-dir DIR`), copy DIR here and give that folder instead of the id (`--model DIR`, or "
                           "in the Model box)\n")
    assert seconds < 20, seconds  # the CLI's own start included


@pytest.fixture
def silent_hub():
    """A hub address that takes connections and never answers (a firewall or proxy swallowing them)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("where", ["silent", "unresolvable"])
def test_a_hub_that_cannot_be_reached_is_one_sentence_within_seconds(tmp_path, silent_hub, where):
    endpoint = silent_hub if where == "silent" else "https://hub.invalid"
    proc, seconds = _check(tmp_path, {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0"})
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: could not load '{HUB_ID}': the Hugging Face hub ({endpoint}) cannot be reached from this machine ("), \
        proc.stderr
    assert lines[0].endswith("give that folder instead of the id (`--model DIR`, or in the Model box)")
    assert seconds < 30, seconds  # the hub's timeout is 8 s; it used to retry for over two minutes
    print(f"{where} hub: the sentence after {seconds:.1f} s")
