"""Failed logins slowed down: per client address and per user name, each failure past a few free ones doubles the
wait before that address (or name) is heard again, up to a few minutes; a try that comes too soon is refused unheard
with a sentence saying when to retry. A success clears the count of its address and its name.

An ASGI middleware in front of Gradio's POST /login (the page's form and scripts alike): it reads the user name from
the form, lets Gradio check the password, and counts the answer (200 success, 400 wrong credentials)."""
from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable

CLIENT_FREE = 3
"""Failures from one address before it waits."""
USER_FREE = 10
"""Failures on one user name, from anywhere, before it waits (more: a person elsewhere should not be locked out by
someone else's guesses early on)."""
FIRST_WAIT = 1.0
MAX_WAIT = 300.0
FORGET_AFTER = 3600.0
"""A count with no failure for this long is forgotten."""
LOGIN_NOTE = ("Wrong passwords slow the next try down: after a few, each wait doubles (from 1 s up to 5 minutes). "
              "A login refused for now says when to try again.")


@dataclass
class Throttle:
    """Failure counts and the time before which each key (an address, a user name) is not heard."""
    clock: Callable[[], float] = time.monotonic
    failures: dict[str, int] = field(default_factory=dict)
    until: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def keys(client: str, user: str) -> dict[str, int]:
        return {f"client {client}": CLIENT_FREE, f"user {user.strip().lower()}": USER_FREE}

    def wait(self, client: str, user: str) -> float:
        """Seconds before a try for (`client`, `user`) is heard; 0 now."""
        now = self.clock()
        return max([self.until.get(k, now) - now for k in self.keys(client, user)] + [0.0])

    def failed(self, client: str, user: str) -> float:
        """Count a failure; returns the wait it sets."""
        now = self.clock()
        self._forget(now)
        for key, free in self.keys(client, user).items():
            n = self.failures[key] = self.failures.get(key, 0) + 1
            self.last[key] = now
            if n > free:
                self.until[key] = now + min(MAX_WAIT, FIRST_WAIT * 2 ** (n - free - 1))
        return self.wait(client, user)

    def succeeded(self, client: str, user: str) -> None:
        for key in self.keys(client, user):
            for table in (self.failures, self.until, self.last):
                table.pop(key, None)

    def _forget(self, now: float) -> None:
        for key in [k for k, t in self.last.items() if now - t > FORGET_AFTER and self.until.get(k, 0) < now]:
            for table in (self.failures, self.until, self.last):
                table.pop(key, None)


def retry_sentence(seconds: float) -> str:
    whole = max(1, round(seconds + 0.49))
    at = time.strftime("%H:%M:%S", time.localtime(time.time() + whole))
    return (f"Too many failed logins from this address or for this user: try again in {whole} second"
            f"{'s' if whole != 1 else ''} (after {at}).")


class LoginThrottle:
    """The middleware (starlette's Middleware(LoginThrottle) in the FastAPI app's `middleware`)."""

    def __init__(self, app, throttle: Throttle | None = None):
        self.app = app
        self.throttle = throttle or Throttle()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/login"):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        client = (scope.get("client") or ("unknown", 0))[0]
        user = await _user_name(scope, body)
        wait = self.throttle.wait(client, user)
        if wait > 0:
            return await _refuse(send, wait)

        replay = _replay(body)

        async def watch(message):
            if message["type"] == "http.response.start":
                if message["status"] == 200:
                    self.throttle.succeeded(client, user)
                elif message["status"] in (400, 401):
                    self.throttle.failed(client, user)
            await send(message)

        await self.app(scope, replay, watch)


def _replay(body: bytes):
    """An ASGI `receive` that gives the already-read request body once, then a disconnect."""
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


async def _user_name(scope, body: bytes) -> str:
    """The form's `username` (urlencoded or multipart, as the page's login form sends it)."""
    headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
    kind = headers.get("content-type", "")
    if kind.startswith("application/x-www-form-urlencoded"):
        return urllib.parse.parse_qs(body.decode(errors="replace")).get("username", [""])[0]
    if kind.startswith("multipart/form-data"):
        from starlette.requests import Request
        form = await Request(scope, _replay(body)).form()
        value = form.get("username")
        return value if isinstance(value, str) else ""
    return ""


async def _refuse(send, wait: float) -> None:
    payload = json.dumps({"detail": retry_sentence(wait)}).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"retry-after", str(max(1, round(wait + 0.49))).encode())]})
    await send({"type": "http.response.body", "body": payload})
