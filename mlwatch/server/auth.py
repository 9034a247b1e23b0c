"""Authentication and authorisation of HTTP requests.

Writes (pushes, imports, silences, admin, reload) need the bearer token when one is configured;
reads stay open unless ``protect_reads`` is set. ``basic_auth_users`` (bcrypt hashes, as in
Prometheus' web config) gate every request. A valid bearer token grants everything; valid basic
credentials grant reads, and writes too when no bearer token is configured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import bcrypt
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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

    def _check_basic(self, value: str) -> bool:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.basic_users.get(user)
        if hashed is None:
            return False
        # bcrypt is deliberately slow: remember credentials already verified (by digest only).
        digest = hashlib.sha256(f"{user}\0{password}\0{hashed}".encode()).digest()
        if digest in self._verified:
            return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed.encode())
        except ValueError:
            return False
        if ok:
            self._verified.add(digest)
        return ok

    def decide(self, request: web.Request) -> web.HTTPException | None:
        """None if the request may proceed, else the 401/403 to answer with."""
        write = is_write(request)
        header = request.headers.get("Authorization", "")
        scheme, _, cred = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.bearer_token is not None:
            if hmac.compare_digest(cred.strip().encode(), self.bearer_token.encode()):
                return None
            return web.HTTPForbidden(text="invalid bearer token\n")
        basic_ok = scheme == "basic" and bool(self.basic_users) and self._check_basic(cred.strip())
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


def _unauthorized(message: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=message + "\n", headers={"WWW-Authenticate": 'Bearer realm="mlwatch", Basic realm="mlwatch"'}
    )
