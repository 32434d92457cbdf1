"""Serving the page: safe defaults (loopback only, a login required anywhere else, upload cap, share link only
with a login, proxy headers believed only from proxies named with --forwarded-allow-ips)."""
from __future__ import annotations

import ipaddress
import os
import signal
import time
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


def parse_forwarded_allow_ips(value: str | None) -> str:
    """--forwarded-allow-ips 'ADDR,NET/BITS,...' checked: the proxies whose X-Forwarded-For (and -Proto) uvicorn
    believes, as uvicorn's FORWARDED_ALLOW_IPS takes them ('*': any, only when every client comes through the
    proxy). '' (the default) trusts none: the client's address is the socket's peer, whatever headers it sends."""
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    if items == ["*"]:
        return "*"
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False) if "/" in item else ipaddress.ip_address(item)
        except ValueError:
            raise ValueError(f"--forwarded-allow-ips: '{item}' is not an IP address or network (like 127.0.0.1 or "
                             "10.0.0.0/8; '*' for any)") from None
    return ",".join(items)


def trust_proxies(value: str) -> None:
    """Make the uvicorn that Gradio's launch creates believe proxy headers only from `value`'s addresses: Gradio
    builds uvicorn.Config itself without forwarded_allow_ips, so uvicorn reads FORWARDED_ALLOW_IPS, and left unset
    it trusts 127.0.0.1 (a client reaching the page through a local proxy or an SSH tunnel could then name any
    address in X-Forwarded-For). Set here, never inherited."""
    os.environ["FORWARDED_ALLOW_IPS"] = value


def serve(data_dir: Path, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None,
          share: bool = False, insecure_no_auth: bool = False, forwarded_allow_ips: str | None = None) -> int:
    credentials = parse_auth(auth or os.environ.get("VRFT_AUTH"))
    check_exposure(host, credentials, share, insecure_no_auth)  # before anything starts
    proxies = parse_forwarded_allow_ips(forwarded_allow_ips if forwarded_allow_ips is not None
                                        else os.environ.get("VRFT_FORWARDED_ALLOW_IPS"))

    from ui.app import build_app
    from ui.page_style import PAGE_CSS

    from backend.jobs.background import DemoSetup, WorkerKeeper, stop_started_worker

    ws = open_workspace(data_dir)
    demo = DemoSetup(ws)
    stop = _StopSignals()  # Ctrl-C and `docker stop`/`systemctl stop` (SIGTERM) alike, from here on
    keeper = WorkerKeeper(ws.data_dir)  # a worker, found or started, and another whenever it dies
    try:
        app = build_app(ws, demo, keeper)
        if not stop.asked:
            print(f"Visual-RFT Studio: http://{host}:{port} (data in {ws.data_dir.resolve()}, worker pid "
                  f"{keeper.pid}); Ctrl-C stops the page and the worker it started", flush=True)
            from starlette.middleware import Middleware

            from ui.login_throttle import LOGIN_NOTE, LoginThrottle
            trust_proxies(proxies)
            app.queue(default_concurrency_limit=4).launch(
                server_name=host, server_port=port, auth=credentials, share=share, max_file_size=MAX_UPLOAD,
                footer_links=["api"], show_error=False, quiet=True, ssr_mode=False, css=PAGE_CSS,
                auth_message=LOGIN_NOTE if credentials else None, prevent_thread_lock=True,
                app_kwargs={"middleware": [Middleware(LoginThrottle)]})  # failed logins slowed down
            stop.wait(lambda: not app.is_running)
            _close(app)
    finally:  # the page's own worker stops with it (jobs checkpointed, runs re-queued); one started apart does not
        stop.restore()  # a Ctrl-C while the worker stops is a KeyboardInterrupt again: stop_started_worker passes it on
        stop_started_worker(keeper.stop())
    return 0


class _StopSignals:
    """SIGINT and SIGTERM only set a flag, which the main thread reads between sleeps. A KeyboardInterrupt raised
    wherever the main thread happens to be is lost when it lands in a finaliser (`Exception ignored in ...
    __del__`) or in a library's `except Exception`, and the page then served on, deaf to the signal."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.asked = False
        for sig in self.SIGNALS:
            signal.signal(sig, self._ask)

    def _ask(self, signum, frame) -> None:
        self.asked = True

    def wait(self, done=lambda: False, every: float = 0.2) -> None:
        """Until a stop signal (or `done()`)."""
        while not self.asked and not done():
            time.sleep(every)

    def restore(self) -> None:
        """Signals raise KeyboardInterrupt again (SIGTERM too: as Ctrl-C)."""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)


def _close(app) -> None:
    """What Gradio's own blocking loop does when interrupted: the server closed, any share tunnel ended."""
    from gradio.tunneling import CURRENT_TUNNELS
    app.close(verbose=False)
    for tunnel in CURRENT_TUNNELS:
        tunnel.kill()


def _interrupt(signum, frame):
    raise KeyboardInterrupt
