"""Authentication and authorisation of HTTP requests.

Writes (pushes, imports, silences, admin, reload) need the bearer token when one is configured;
reads stay open unless ``protect_reads`` is set. ``basic_auth_users`` (bcrypt hashes, as in
Prometheus' web config) gate every request. A valid bearer token grants everything; valid basic
credentials grant reads, and writes too when no bearer token is configured. The token is compared in
constant time; password checks (:meth:`AuthPolicy.check`) run on a small thread pool, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import bcrypt
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# bcrypt costs ~0.25 s of CPU per check by design: never on the event loop (a stream of wrong passwords would
# stall every request), at most two at a time, and a bounded queue (beyond it: 429) so guesses cannot pile up.
_BCRYPT_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mlwatch-bcrypt")
MAX_PENDING_BCRYPT = 32

# Form POSTs to these are queries, not changes of state.
_READ_POSTS = ("/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/labels", "/federate")


def is_write(request: web.Request) -> bool:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return False
    return not (request.method == "POST" and request.path in _READ_POSTS)


@dataclass
class AuthPolicy:
    bearer_token: str | None = None
    protect_reads: bool = False
    basic_users: Mapping[str, str] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set, repr=False)

    def _credentials(self, value: str) -> tuple[str, str, bytes] | None:
        """(user, password, digest) of a Basic credential for a known user; None when it cannot be valid."""
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        hashed = self.basic_users.get(user)
        if hashed is None:
            return None
        return user, password, hashlib.sha256(f"{user}\0{password}\0{hashed}".encode()).digest()

    def _check_basic(self, value: str) -> bool:
        creds = self._credentials(value)
        if creds is None:
            return False
        user, password, digest = creds
        # bcrypt is deliberately slow: remember credentials already verified (by digest only).
        if digest in self._verified:
            return True
        try:
            ok = bcrypt.checkpw(password.encode(), self.basic_users[user].encode())
        except ValueError:
            return False
        if ok:
            self._verified.add(digest)
        return ok

    def decide(self, request: web.Request, basic_ok: bool | None = None) -> web.HTTPException | None:
        """None if the request may proceed, else the 401/403 to answer with. ``basic_ok``: the outcome of
        the Basic credentials when already checked (else they are checked here, on the caller's thread)."""
        write = is_write(request)
        header = request.headers.get("Authorization", "")
        scheme, _, cred = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.bearer_token is not None:
            if hmac.compare_digest(cred.strip().encode(), self.bearer_token.encode()):
                return None
            return web.HTTPForbidden(text="invalid bearer token\n")
        if scheme == "basic" and self.basic_users and basic_ok is None:
            basic_ok = self._check_basic(cred.strip())
        basic_ok = bool(basic_ok) and scheme == "basic" and bool(self.basic_users)
        if scheme == "basic" and self.basic_users and not basic_ok:
            return _unauthorized("invalid username or password")
        needs_token = self.bearer_token is not None and (write or self.protect_reads)
        if basic_ok and not (write and self.bearer_token is not None):
            return None
        if self.basic_users and not basic_ok:
            return _unauthorized("authentication required")
        if needs_token:
            return _unauthorized("this endpoint needs 'Authorization: Bearer <token>'")
        return None

    async def check(self, request: web.Request) -> web.HTTPException | None:
        """:meth:`decide`, with a bcrypt verification (if one is needed) off the event loop."""
        scheme, _, cred = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic" or not self.basic_users:
            return self.decide(request)
        creds = self._credentials(cred.strip())
        if creds is None or creds[2] in self._verified:
            return self.decide(request, basic_ok=creds is not None)
        if _pending[0] >= MAX_PENDING_BCRYPT:
            return web.HTTPTooManyRequests(text="too many password checks in progress; retry later\n",
                                           headers={"Retry-After": "1"})
        _pending[0] += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(_BCRYPT_POOL, self._check_basic, cred.strip())
        finally:
            _pending[0] -= 1
        return self.decide(request, basic_ok=ok)


_pending = [0]  # bcrypt checks queued or running (the event loop is single-threaded: no lock needed)


def _unauthorized(message: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=message + "\n", headers={"WWW-Authenticate": 'Bearer realm="mlwatch", Basic realm="mlwatch"'}
    )
