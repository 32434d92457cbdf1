"""Serving the page: safe defaults (loopback only, a login required anywhere else, upload cap, share link only
with a login)."""
from __future__ import annotations

import ipaddress
import os
import signal
from pathlib import Path

from backend.data.workspace import open_workspace

MAX_UPLOAD = os.environ.get("VRFT_MAX_UPLOAD", "1gb")


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """'user:pass' -> ('user', 'pass'); None when no login is wanted."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth must be USER:PASS")
    return user, password


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(host: str, credentials: tuple[str, str] | None, share: bool, insecure_no_auth: bool) -> None:
    """ValueError (one sentence) when the page would be reachable by others without a login."""
    if credentials is not None:
        return
    if share:
        raise ValueError("--share publishes the page on a public link, so it needs a login: set --auth USER:PASS "
                         "(or VRFT_AUTH=USER:PASS)")
    if not is_loopback(host) and not insecure_no_auth:
        raise ValueError(f"refusing to serve on {host} without a login, since anyone who can reach the port could "
                         "upload files, start GPU jobs and read every dataset: set --auth USER:PASS (or "
                         "VRFT_AUTH=USER:PASS; with Docker, docker run -e VRFT_AUTH=USER:PASS), or pass "
                         "--insecure-no-auth if a proxy in front of the app asks for the login")


def serve(data_dir: Path, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None,
          share: bool = False, insecure_no_auth: bool = False) -> int:
    credentials = parse_auth(auth or os.environ.get("VRFT_AUTH"))
    check_exposure(host, credentials, share, insecure_no_auth)  # before anything starts

    from ui.app import build_app

    from backend.jobs.background import DemoSetup, ensure_worker, stop_started_worker

    ws = open_workspace(data_dir)
    demo = DemoSetup(ws)
    signal.signal(signal.SIGTERM, _interrupt)  # `docker stop`, `systemctl stop`: as Ctrl-C
    worker = ensure_worker(ws.data_dir)
    try:
        app = build_app(ws, demo)
        print(f"Visual-RFT Studio: http://{host}:{port} (data in {ws.data_dir.resolve()}, worker pid {worker}); "
              "Ctrl-C stops the page and the worker it started", flush=True)
        from starlette.middleware import Middleware

        from ui.login_throttle import LOGIN_NOTE, LoginThrottle
        app.queue(default_concurrency_limit=4).launch(
            server_name=host, server_port=port, auth=credentials, share=share, max_file_size=MAX_UPLOAD,
            footer_links=["api"], show_error=False, quiet=True, ssr_mode=False,
            auth_message=LOGIN_NOTE if credentials else None,
            app_kwargs={"middleware": [Middleware(LoginThrottle)]})  # failed logins slowed down
    except KeyboardInterrupt:
        pass
    finally:  # the page's own worker stops with it (jobs checkpointed, runs re-queued); one started apart does not
        stop_started_worker(worker)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
