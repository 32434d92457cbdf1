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


# --- the login throttle reads the form as Gradio does, keys the socket's peer, and bounds its memory ---

def _login_harness(throttle, seen: list):
    """LoginThrottle in front of a FastAPI /login that reads its form exactly as Gradio's does (the same
    OAuth2PasswordRequestForm dependency, gradio/routes.py), records the user name it saw and refuses every password
    but RIGHT; the peer address comes from the test's X-Test-Peer header."""
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.security import OAuth2PasswordRequestForm
    from fastapi.testclient import TestClient

    from ui.login_throttle import LoginThrottle
    inner = FastAPI()

    @inner.post("/login")
    async def login(form_data=Depends(OAuth2PasswordRequestForm)):  # routes.py's, without the annotation
        seen.append(form_data.username.strip())
        if form_data.password != "RIGHT":
            raise HTTPException(status_code=400, detail="Incorrect credentials.")
        return {"success": True}

    guarded = LoginThrottle(inner, throttle)

    async def app(scope, receive, send):
        peer = dict(scope.get("headers", [])).get(b"x-test-peer")
        if peer:
            scope["client"] = (peer.decode(), 4321)
        await guarded(scope, receive, send)
    return TestClient(app)


def _multipart(*fields: tuple[str, bytes], charset: str | None = None) -> tuple[bytes, str]:
    boundary = "b0undary"
    parts = ([("_charset_", charset.encode())] if charset else []) + list(fields)
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n".encode() + v + b"\r\n"
                    for k, v in parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


FORM = "application/x-www-form-urlencoded"
ODD_FORMS = [  # (body, content type): each counted against the name Gradio reads
    (b"username=decoy&username=u&password=x", FORM),
    (b"username=u&password=x", FORM.upper()),
    (b"username=u&password=x", "Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
    (b"username=%75&password=x", FORM),
    (b"username=+U+&password=x", FORM),
    ("username=\xe9&password=x".encode("latin-1"), FORM),
    ("username=\xe9&password=x".encode("utf-8"), FORM),
    ("username=\xe9&password=x".encode("utf-8"), f"{FORM}; charset=latin-1"),
    _multipart(("username", b"decoy"), ("username", b"u"), ("password", b"x")),
    (_multipart(("username", b"u"), ("password", b"x"))[0], "MULTIPART/FORM-DATA; boundary=b0undary"),
    _multipart(("username", "\xe9".encode("latin-1")), ("password", b"x"), charset="latin-1"),
    _multipart(("username", "\xe9".encode("utf-8")), ("password", b"x")),
]


def test_the_throttle_counts_the_user_name_gradio_reads():
    """Whatever the form's shape (a repeated field, the content type's case, its charset, percent escapes,
    multipart), the failure is counted against the very name Gradio's /login checked."""
    from ui.login_throttle import Throttle
    for n, (body, kind) in enumerate(ODD_FORMS):
        t, seen = Throttle(clock=lambda: 0.0), []
        client = _login_harness(t, seen)
        answer = client.post("/login", content=body, headers={"content-type": kind, "x-test-peer": f"10.1.0.{n}"})
        assert answer.status_code == 400 and len(seen) == 1, (body, kind, answer.text)
        user_key = list(t.keys(f"10.1.0.{n}", seen[0]))[1]
        assert user_key in t.counts and t.counts[user_key].failures == 1, (body, kind, seen)


def test_a_locked_user_name_stays_locked_whatever_the_form_looks_like():
    """Issue 29: with `u` locked, `username=decoy&username=u&password=RIGHT` and the content type in capitals were
    let in (the throttle read the first value and matched the type's case); both are refused unheard now."""
    from ui.login_throttle import USER_FREE, Throttle
    t, seen = Throttle(clock=lambda: 0.0), []
    client = _login_harness(t, seen)
    for n in range(USER_FREE + 1):  # from as many addresses: only the name's count locks
        assert client.post("/login", data={"username": "u", "password": "guess"},
                           headers={"x-test-peer": f"10.2.0.{n}"}).status_code == 400
    tries = [(b"username=decoy&username=u&password=RIGHT", FORM), (b"username=u&password=RIGHT", FORM.upper()),
             _multipart(("username", b"decoy"), ("username", b"u"), ("password", b"RIGHT"))]
    for n, (body, kind) in enumerate(tries):
        answer = client.post("/login", content=body, headers={"content-type": kind, "x-test-peer": f"10.3.0.{n}"})
        assert answer.status_code == 429, (body, kind, answer.status_code)
    heard = len(seen)
    assert client.post("/login", content=b"username=decoy&password=RIGHT", headers={
        "content-type": FORM, "x-test-peer": "10.4.0.1"}).status_code == 200 and len(seen) == heard + 1


def test_a_login_body_over_64_kb_is_refused_before_it_is_read():
    """Issue 29: the throttle buffered the whole /login body with `body +=` (80 MB: 23 s and +280 MB). A declared
    length over 64 KB is refused (413) without reading a byte; a chunked body is read up to 64 KB, then refused."""
    import asyncio

    from ui.login_throttle import MAX_BODY, LoginThrottle, Throttle
    assert MAX_BODY == 64 * 1024
    called = []

    async def inner(scope, receive, send):
        called.append(scope)

    def run(headers, receive):
        sent = []

        async def send(message):
            sent.append(message)
        scope = {"type": "http", "method": "POST", "path": "/login", "client": ("127.0.0.1", 1),
                 "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
        asyncio.run(LoginThrottle(inner, Throttle())(scope, receive, send))
        if not sent:
            return None, b""
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    async def never():
        raise AssertionError("the body was read")
    status, body = run({"content-type": FORM, "content-length": str(80 * 1024 ** 2)}, never)
    assert status == 413 and json.loads(body)["detail"].startswith("The login form is over 64 KB")
    reads = []

    async def endless():
        reads.append(1)
        return {"type": "http.request", "body": b"u" * 16384, "more_body": True}
    status, _ = run({"content-type": FORM, "transfer-encoding": "chunked"}, endless)
    assert status == 413 and len(reads) == 5 and not called  # 5 x 16 KB: the first read past 64 KB
    full = b"username=u&password=x".ljust(MAX_BODY, b"&")

    async def once():
        return {"type": "http.request", "body": full, "more_body": False}
    assert run({"content-type": FORM, "content-length": str(MAX_BODY)}, once) == (None, b"")
    assert len(called) == 1  # a form of exactly 64 KB goes on to Gradio


def test_the_failure_table_is_bounded_in_entries_and_bytes():
    """Issue 29: every failure was kept for an hour with no cap: 300 failures with 500 KB user names held +150 MB.
    Names are kept as a fixed-size digest, and past max_keys the entries that failed longest ago go first."""
    import tracemalloc

    from ui.login_throttle import Throttle
    now = [0.0]
    t = Throttle(clock=lambda: now[0], max_keys=100)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(300):
            t.failed(f"10.5.{i // 256}.{i % 256}", f"{i}-" + "n" * 500_000)
            now[0] += 0.001
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(t.counts) <= 100 and max(len(k) for k in t.counts) <= 80
    assert held < 1_000_000, held
    assert list(t.keys("10.5.1.43", "299-" + "n" * 500_000))[1] in t.counts  # the newest kept
    assert not any(k in t.counts for k in t.keys("10.5.0.0", "0-" + "n" * 500_000))  # the oldest dropped
    for _ in range(20):  # a locked name stays locked when the table fills with others: it is touched last
        t.failed("10.6.0.1", "ada")
    assert t.wait("10.6.0.2", "ada") > 0


def _status_line(url: str, head: bytes, chunks=(), timeout: float = 10.0) -> int:
    """The status of a raw HTTP request to the server at `url` (a body sent in pieces, which the server may
    cut short by answering first)."""
    import socket
    host, port = url.rsplit("/", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try:
            s.sendall(head)
            for chunk in chunks:
                s.sendall(chunk)
        except OSError:
            pass  # answered and closed before the body was sent
        return int(s.recv(4096).split(b" ", 2)[1])


def test_x_forwarded_for_does_not_reset_the_count_and_big_bodies_are_refused_unread(tmp_path):
    """Issue 29: uvicorn trusted X-Forwarded-For from loopback, so a client behind a local proxy or an SSH tunnel
    rotated addresses at will. Without --forwarded-allow-ips the socket's peer is the address."""
    with running_app(tmp_path / "data", "--auth", "ada:s3cret") as (url, _):
        head = (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 80000000\r\n\r\n")
        assert _status_line(url, head, timeout=5) == 413  # before any byte of the 80 MB
        chunked = (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")
        assert _status_line(url, chunked, [b"4000\r\n" + b"u" * 0x4000 + b"\r\n"] * 8, timeout=5) == 413
        assert [_login_answer(url, "ada", f"guess{i}")[0] for i in range(4)] == [400] * 4
        assert _login_answer(url, "ada", "s3cret")[0] == 429
        assert _forwarded_login(url, "ada", "s3cret", "10.0.0.2")[0] == 429


def _forwarded_login(url: str, user: str, password: str, forwarded_for: str, body: bytes | None = None,
                     kind: str = FORM) -> tuple[int, str]:
    data = body if body is not None else urllib.parse.urlencode({"username": user, "password": password}).encode()
    req = urllib.request.Request(f"{url}/login", data=data, method="POST",
                                 headers={"Content-Type": kind, "X-Forwarded-For": forwarded_for})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, ""
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_a_named_proxy_is_trusted_and_a_locked_name_cannot_be_dodged(tmp_path):
    """--forwarded-allow-ips names the proxy whose X-Forwarded-For is believed: each client behind it is counted
    on its own, while the user name's count holds however the form is written."""
    with running_app(tmp_path / "data", "--auth", "u:RIGHT", "--forwarded-allow-ips", "127.0.0.1") as (url, _):
        assert [_forwarded_login(url, "u", "guess", f"10.7.0.{n}")[0] for n in range(11)] == [400] * 11
        assert _forwarded_login(url, "", "", "10.7.1.1", b"username=decoy&username=u&password=RIGHT")[0] == 429
        assert _forwarded_login(url, "u", "RIGHT", "10.7.1.2", kind=FORM.upper())[0] == 429
        assert _forwarded_login(url, "someone", "else", "10.7.1.3")[0] == 400  # another client, another name: heard


def test_forwarded_allow_ips_is_checked_before_anything_starts(tmp_path):
    proc = _app("--data-dir", str(tmp_path / "data"), "--forwarded-allow-ips", "127.0.0.1,proxy.example")
    assert proc.returncode == 1 and proc.stderr.startswith("error: --forwarded-allow-ips: 'proxy.example' is not an "
                                                           "IP address or network"), proc.stderr
    assert not (tmp_path / "data").exists()


def test_the_page_reports_nothing_to_gradio(ws, monkeypatch):
    """Gradio's telemetry is on unless turned off: building a page would start a thread (not a daemon, so it holds up
    the page's exit) that asks Gradio's servers for the latest version, and launching it would report the page's
    components there. The page turns it off itself, whatever the environment says."""
    import threading

    from ui.app import build_app
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    before = set(threading.enumerate())
    app = build_app(ws)
    assert app.analytics_enabled is False
    assert [t.name for t in set(threading.enumerate()) - before if not t.daemon] == []
