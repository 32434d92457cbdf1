"""Safe by default: loopback only, login when asked, uploads capped."""
from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request
import uuid

from tests.browser import running_app


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
