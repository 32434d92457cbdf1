"""Serving the page: safe defaults (loopback only, optional login, upload cap, no share link)."""
from __future__ import annotations

import os
from pathlib import Path

from backend.workspace import open_workspace

MAX_UPLOAD = os.environ.get("VRFT_MAX_UPLOAD", "1gb")


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """'user:pass' -> ('user', 'pass'); None when no login is wanted."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth must be USER:PASS")
    return user, password


def serve(data_dir: Path, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None,
          share: bool = False) -> int:
    from ui.app import build_app

    from backend.background import DemoSetup, ensure_worker

    credentials = parse_auth(auth or os.environ.get("VRFT_AUTH"))
    ws = open_workspace(data_dir)
    demo = DemoSetup(ws)
    worker = ensure_worker(ws.data_dir)
    app = build_app(ws, demo)
    print(f"Visual-RFT Studio: http://{host}:{port} (data in {ws.data_dir.resolve()}, worker pid {worker})",
          flush=True)
    app.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=port, auth=credentials, share=share, max_file_size=MAX_UPLOAD,
        footer_links=["api"], show_error=False, quiet=True, ssr_mode=False)
    return 0
