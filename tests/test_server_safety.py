"""Safe by default: loopback only unless a login is set (the Docker image too), share links only with a login,
uploads capped and removed from gradio's cache once imported or refused."""
from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from tests.browser import ROOT, running_app


def _listening_addresses(port: int) -> set[str]:
    """Local addresses in LISTEN state for `port`, from /proc/net/tcp and tcp6."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                if len(addr) == 8:
                    found.add(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add(addr)
    return found


def test_listens_on_loopback_only_by_default(tmp_path):
    with running_app(tmp_path / "data") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        assert _listening_addresses(port) == {"127.0.0.1"}


def _login(url: str, user: str, password: str) -> int:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    data = urllib.parse.urlencode({"username": user, "password": password}).encode()
    try:
        return opener.open(f"{url}/login", data=data, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code


def test_auth_refuses_a_wrong_password(tmp_path):
    with running_app(tmp_path / "data", "--auth", "ada:s3cret") as (url, _):
        assert _login(url, "ada", "wrong") >= 400
        assert _login(url, "ada", "s3cret") == 200


def test_upload_over_the_limit_is_refused_with_a_message(tmp_path):
    with running_app(tmp_path / "data", env={"VRFT_MAX_UPLOAD": "10kb"}) as (url, _):
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.zip\"\r\n"
                f"Content-Type: application/zip\r\n\r\n").encode() + b"x" * 50_000 + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"{url}/gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            urllib.request.urlopen(req, timeout=10)
            raise AssertionError("an upload over the limit was accepted")
        except urllib.error.HTTPError as e:
            assert e.code == 413
            assert "maximum allowed size" in e.read().decode()


def test_data_dir_is_not_served(tmp_path):
    with running_app(tmp_path / "data") as (url, _):
        db = (tmp_path / "data" / "studio.db").resolve()
        for path in (f"/gradio_api/file={db}", f"/file={db}"):
            try:
                status = urllib.request.urlopen(url + path, timeout=10).status
            except urllib.error.HTTPError as e:
                status = e.code
            assert status >= 400


REFUSED = "refusing to serve on 0.0.0.0 without a login"


def _app(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "VRFT_AUTH"}
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**clean, **(env or {})})


def test_other_interfaces_without_a_login_are_refused_before_anything_starts(tmp_path):
    data = tmp_path / "data"
    for args, sentence in ((["--host", "0.0.0.0"], REFUSED),
                           (["--share"], "--share publishes the page on a public link, so it needs a login"),
                           (["--host", "0.0.0.0", "--share", "--insecure-no-auth"], "--share publishes the page")):
        proc = _app("--data-dir", str(data), *args)
        assert proc.returncode == 1 and proc.stderr.startswith(f"error: {sentence}"), proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not data.exists()  # no database, no worker: nothing started


def test_which_addresses_need_a_login():
    from ui.server import check_exposure
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        check_exposure(host, None, share=False, insecure_no_auth=False)
    for host in ("0.0.0.0", "::", "192.168.1.5", "studio.example.org"):
        with pytest.raises(ValueError, match=f"^refusing to serve on {re.escape(host)} without a login"):
            check_exposure(host, None, share=False, insecure_no_auth=False)
        check_exposure(host, ("ada", "s3cret"), share=False, insecure_no_auth=False)
        check_exposure(host, None, share=False, insecure_no_auth=True)  # a proxy in front asks for the login
    with pytest.raises(ValueError, match="^--share publishes"):
        check_exposure("127.0.0.1", None, share=True, insecure_no_auth=True)
    check_exposure("127.0.0.1", ("ada", "s3cret"), share=True, insecure_no_auth=False)


def test_the_docker_image_refuses_to_start_without_vrft_auth(tmp_path):
    """The Dockerfile's own CMD, run as the container would (with this machine's Python)."""
    cmd_line = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    cmd = json.loads(cmd_line[4:])
    assert "--insecure-no-auth" not in cmd and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    proc = subprocess.run([sys.executable, *cmd[1:]], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**{k: v for k, v in os.environ.items() if k != "VRFT_AUTH"},
                               "VRFT_DATA_DIR": str(tmp_path / "data")})
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {REFUSED}") and "VRFT_AUTH=USER:PASS" in proc.stderr
    assert not (tmp_path / "data").exists()


def test_all_interfaces_with_vrft_auth_ask_for_a_login(tmp_path):
    with running_app(tmp_path / "data", "--host", "0.0.0.0", env={"VRFT_AUTH": "ada:s3cret"}) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        assert _listening_addresses(port) == {"0.0.0.0"}
        try:
            status = urllib.request.urlopen(f"{url}/config", timeout=10).status
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == 401
        assert _login(url, "ada", "wrong") >= 400
        assert _login(url, "ada", "s3cret") == 200


def test_uploads_leave_gradio_cache_once_imported_or_refused(tmp_path):
    from gradio_client import Client, handle_file
    from tests import builders
    builders.write_coco(tmp_path / "pets", builders.detection_samples(4, size=(96, 64)))
    archive = builders.zip_dir(tmp_path / "pets", tmp_path / "pets.zip")
    junk = tmp_path / "junk.zip"
    junk.write_text("not a zip")
    cache = tmp_path / "gradio-cache"
    with running_app(tmp_path / "data", env={"GRADIO_TEMP_DIR": str(cache)}) as (url, _):
        client = Client(url, verbose=False)
        status, *_ = client.predict([handle_file(str(junk))], "junk", "auto", 0.2, api_name="/import_dataset")
        assert status == "⚠ junk.zip is not a valid zip archive"
        status, *_ = client.predict([handle_file(str(archive))], "pets", "auto", 0.2, api_name="/import_dataset")
        assert status == "✓ Imported **pets** (no split in the export: 20 % held out, stratified)."
        left = [p.name for p in cache.rglob("*") if p.is_file()]
        assert "pets.zip" not in left and "junk.zip" not in left, left


def _login_answer(url: str, user: str, password: str) -> tuple[int, str, str | None]:
    """(status, detail sentence, Retry-After) of one POST /login."""
    data = urllib.parse.urlencode({"username": user, "password": password}).encode()
    try:
        with urllib.request.urlopen(f"{url}/login", data=data, timeout=10) as r:
            return r.status, "", None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}").get("detail", ""), e.headers.get("Retry-After")


def test_failed_logins_are_slowed_down_and_say_when_to_retry(tmp_path):
    """100 wrong passwords used to be answered in 2.7 s. Now, after 3 wrong ones from an address, the next try is
    refused unheard (429) with a sentence saying when to retry, and each further failure doubles the wait; a correct
    login (from the start, or once the wait is over) is let in and clears the count."""
    import time
    with running_app(tmp_path / "data", "--auth", "ada:s3cret") as (url, _):
        assert _login_answer(url, "ada", "s3cret")[0] == 200  # a correct login: never slowed
        assert [_login_answer(url, "ada", f"guess{i}")[0] for i in range(3)] == [400, 400, 400]  # free
        assert _login_answer(url, "ada", "guess3")[0] == 400  # heard, and now the address waits 1 s
        status, sentence, retry = _login_answer(url, "ada", "s3cret")  # even the right one, until then
        assert status == 429 and retry == "1", (status, sentence)
        assert re.fullmatch(r"Too many failed logins from this address or for this user: try again in 1 second "
                            r"\(after \d\d:\d\d:\d\d\)\.", sentence), sentence
        started = time.monotonic()
        refused = sum(_login_answer(url, "ada", "guess")[0] == 429 for _ in range(50))
        assert refused >= 49 and time.monotonic() - started < 10  # a script's burst: refused, nothing checked
        time.sleep(1.1)
        assert _login_answer(url, "ada", "wrong")[0] == 400  # heard after the wait; the next wait doubles
        status, sentence, retry = _login_answer(url, "ada", "s3cret")
        assert status == 429 and retry == "2" and "try again in 2 seconds" in sentence
        time.sleep(2.1)
        assert _login_answer(url, "ada", "s3cret")[0] == 200  # the right password after the wait: in, count cleared
        assert _login_answer(url, "ada", "wrong")[0] == 400
        assert _login_answer(url, "ada", "s3cret")[0] == 200


def test_the_throttle_doubles_up_to_five_minutes_per_address_and_per_user():
    from ui.login_throttle import MAX_WAIT, Throttle
    now = [0.0]
    t = Throttle(clock=lambda: now[0])
    waits = [t.failed("10.0.0.1", "ada") for _ in range(14)]
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300] and MAX_WAIT == 300
    assert t.wait("10.0.0.2", "bob") == 0  # another address, another user: not slowed
    assert t.wait("10.0.0.2", "ada") == 8  # ada's name, from anywhere: 14 failures, 10 free: 1, 2, 4, 8
    now[0] += 301
    t.succeeded("10.0.0.1", "ada")
    assert t.wait("10.0.0.1", "ada") == 0 and t.failed("10.0.0.1", "ada") == 0
