"""Failed logins slowed down: per client address and per user name, each failure past a few free ones doubles the
wait before that address (or name) is heard again, up to a few minutes; a try that comes too soon is refused unheard
with a sentence saying when to retry. A success clears the count of its address and its name.

An ASGI middleware in front of Gradio's POST /login (the page's form and scripts alike): it reads the user name from
the form exactly as Gradio's route does (Starlette's form parser, FastAPI's OAuth2PasswordRequestForm: the last
`username` value, any case of content type, the form's charset), lets Gradio check the password, and counts the
answer (200 success, 400 wrong credentials). The address is the ASGI client, which is the socket's peer unless
`--forwarded-allow-ips` names a trusted proxy (ui/server.py sets uvicorn's list; it trusts none by default).

Nothing unauthenticated grows without bound: a /login body over MAX_BODY is refused (413) before it is read (a
declared length) or as soon as it passes the limit (a chunked one), and the failure table holds at most MAX_KEYS
entries of fixed size (user names kept as a digest), the longest since their last failure dropped first."""
from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
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
MAX_BODY = 64 * 1024
"""The largest /login body read (a user name and a password; Starlette alone would buffer 1 MB)."""
MAX_KEYS = 10_000
"""Counts kept (addresses and user names together, each under 100 bytes of key): a few MB at most."""
_ADDRESS_CHARS = 64
LOGIN_NOTE = ("Wrong passwords slow the next try down: after a few, each wait doubles (from 1 s up to 5 minutes). "
              "A login refused for now says when to try again.")


@dataclass(slots=True)
class Count:
    failures: int = 0
    until: float = 0.0
    """Not heard before this time (the throttle's clock)."""
    last: float = 0.0
    """The last failure."""


@dataclass
class Throttle:
    """Failure counts and the time before which each key (an address, a user name) is not heard; `counts` is in
    the order of the keys' last failures, oldest first."""
    clock: Callable[[], float] = time.monotonic
    max_keys: int = MAX_KEYS
    counts: OrderedDict[str, Count] = field(default_factory=OrderedDict)

    @staticmethod
    def keys(client: str, user: str) -> dict[str, int]:
        """The keys a try is counted under, with their free failures: the address (truncated: it is an IP address
        unless a proxy was trusted) and a digest of the user name as Gradio compares it (stripped), in lower case."""
        name = user.strip().lower().encode("utf-8", "surrogatepass")
        return {f"client {client[:_ADDRESS_CHARS]}": CLIENT_FREE,
                f"user {hashlib.blake2b(name, digest_size=16).hexdigest()}": USER_FREE}

    def wait(self, client: str, user: str) -> float:
        """Seconds before a try for (`client`, `user`) is heard; 0 now."""
        now = self.clock()
        return max([c.until - now for k in self.keys(client, user) if (c := self.counts.get(k))] + [0.0])

    def failed(self, client: str, user: str) -> float:
        """Count a failure; returns the wait it sets."""
        now = self.clock()
        self._forget(now)
        for key, free in self.keys(client, user).items():
            count = self.counts.pop(key, None) or Count()
            count.failures += 1
            count.last = now
            if count.failures > free:
                count.until = now + min(MAX_WAIT, FIRST_WAIT * 2 ** min(count.failures - free - 1, 30))
            self.counts[key] = count  # now the newest
        while len(self.counts) > self.max_keys:
            self.counts.popitem(last=False)
        return self.wait(client, user)

    def succeeded(self, client: str, user: str) -> None:
        for key in self.keys(client, user):
            self.counts.pop(key, None)

    def _forget(self, now: float) -> None:
        """Drop the counts whose last failure is over FORGET_AFTER old (their wait, at most MAX_WAIT, is over)."""
        while self.counts:
            key, count = next(iter(self.counts.items()))
            if now - count.last <= FORGET_AFTER or count.until > now:
                break
            del self.counts[key]


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
        body = await _read_body(scope, receive)
        if body is None:
            return await _answer(send, 413, f"The login form is over {MAX_BODY // 1024} KB, which no user name and "
                                 "password need: it was not read.")
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


async def _read_body(scope, receive) -> bytes | None:
    """The request's body, or None when it is over MAX_BODY: refused on a declared Content-Length without reading
    it, else read piece by piece only up to the limit."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                if int(value) > MAX_BODY:
                    return None
            except ValueError:
                return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left: what came, as far as it came
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


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
    """The form's `username` as Gradio's /login reads it: the same parser (Starlette's, through FastAPI's
    OAuth2PasswordRequestForm), so the same value: the last of repeated ones, any case of content type, urlencoded
    or multipart with its charset. "" when the body is no form."""
    from starlette.requests import Request
    try:
        form = await Request(scope, _replay(body)).form()
    except Exception:  # noqa: BLE001 - a malformed form: Gradio refuses it too (counted against the address)
        return ""
    try:
        value = form.get("username")
        return value if isinstance(value, str) else ""
    finally:
        await form.close()


async def _refuse(send, wait: float) -> None:
    await _answer(send, 429, retry_sentence(wait), [(b"retry-after", str(max(1, round(wait + 0.49))).encode())])


async def _answer(send, status: int, sentence: str, extra: list | None = None) -> None:
    payload = json.dumps({"detail": sentence}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": payload})
