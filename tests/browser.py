"""Driving the real page: start `python app.py` on a free port, open it in headless Chromium."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def need_chromium() -> None:
    """Browser tests run wherever Chromium is; in CI its absence is a failure, not a skip."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(data_dir: Path, *extra: str, port: int | None = None, env: dict | None = None):
    """`python app.py --data-dir DIR --port P` until the page answers; stopped afterwards."""
    port = port or free_port()
    log = open(data_dir.parent / f"app-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--data-dir", str(data_dir), "--port", str(port), *extra],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"app.py did not start:\n{(data_dir.parent / f'app-{port}.log').read_text()}")
                time.sleep(0.3)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        stop_worker(data_dir)


def stop_worker(data_dir: Path) -> None:
    """The page's worker outlives the page by design; a test stops it (and any job) itself."""
    from backend.jobs.background import worker_pid
    pid = worker_pid(data_dir)
    if pid:
        try:
            os.killpg(pid, 9)
        except ProcessLookupError:
            pass
    from backend.jobs.job_records import job_pid
    for job in data_dir.glob("runs/*/job.pid"):
        try:
            os.killpg(job_pid(job.parent), 9)
        except (ProcessLookupError, TypeError):
            pass


@contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
