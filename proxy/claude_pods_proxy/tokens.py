"""Session and admin tokens: what a sandbox holds instead of the real API key.

The Jupyter server mints a token when it starts a sandbox and hands it over as
``ANTHROPIC_AUTH_TOKEN`` (the CLI sends it as ``Authorization: Bearer``). The proxy
verifies it with the same shared secret, so no token database or network call is
needed to authenticate a request. A token is bound to one user and one session and
expires; ending it early is a revocation kept by the proxy (see :mod:`.store`).

Format (all base64url without padding)::

    cpp1.<payload>.<HMAC-SHA256(secret, "cpp1." + payload)>

with ``payload`` the JSON ``{"u": user, "s": session, "exp": unix_seconds,
"p": "session" | "admin", "iat": unix_seconds}``. ``iat`` lets the proxy revoke every
token a user holds *now* without also refusing the tokens minted after the revocation;
a token without ``iat`` counts as minted at time 0.

This module is imported by the Jupyter server, so it uses the standard library only.
The secret is distinct from the real API key and must be at least
:data:`MIN_SECRET_BYTES` long: a leaked token must not help guess the secret, and a
short secret would make forging tokens by brute force feasible.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from dataclasses import dataclass

__all__ = [
    "ADMIN",
    "MIN_SECRET_BYTES",
    "SESSION",
    "InvalidToken",
    "TokenClaims",
    "check_secret",
    "mint_token",
    "verify_token",
]

PREFIX = "cpp1"
SESSION = "session"
ADMIN = "admin"
PURPOSES = (SESSION, ADMIN)
MIN_SECRET_BYTES = 32
#: Longest user or session name accepted; they end up in logs and database keys.
MAX_NAME_CHARS = 256
#: Tokens longer than this are rejected before any decoding work.
MAX_TOKEN_CHARS = 2048

# Reasons carried by InvalidToken (stable strings: logged and tested).
MALFORMED = "malformed"
BAD_SIGNATURE = "bad signature"
EXPIRED = "expired"
WRONG_PURPOSE = "wrong purpose"


class InvalidToken(Exception):
    """The token cannot be used; :attr:`reason` says why (one of the module constants)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token asserts."""

    user: str
    session: str
    expires: float
    purpose: str
    issued_at: float


def check_secret(secret: bytes) -> bytes:
    """Return *secret* if it is long enough to sign tokens, else raise ``ValueError``."""
    if not isinstance(secret, bytes):
        raise TypeError("the token secret must be bytes")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the token secret must be at least {MIN_SECRET_BYTES} bytes (got {len(secret)})"
        )
    return secret


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, payload_b64: str) -> str:
    mac = hmac.new(secret, f"{PREFIX}.{payload_b64}".encode("ascii"), hashlib.sha256)
    return _b64encode(mac.digest())


def _check_name(kind: str, value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise ValueError(f"{kind} must be a non-empty string of at most {MAX_NAME_CHARS} chars")
    if not value.isprintable():
        raise ValueError(f"{kind} must not contain control characters")


def mint_token(
    secret: bytes,
    user: str,
    session: str,
    ttl: float,
    purpose: str = SESSION,
    now: float | None = None,
) -> str:
    """A token for *user*'s *session*, valid for *ttl* seconds from *now*."""
    check_secret(secret)
    _check_name("user", user)
    _check_name("session", session)
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}")
    if not (isinstance(ttl, (int, float)) and math.isfinite(ttl) and ttl > 0):
        raise ValueError("ttl must be a positive number of seconds")
    issued = time.time() if now is None else now
    payload = {"u": user, "s": session, "exp": int(issued + ttl), "p": purpose, "iat": int(issued)}
    payload_b64 = _b64encode(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    return f"{PREFIX}.{payload_b64}.{_signature(secret, payload_b64)}"


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidToken(MALFORMED)
    return float(value)


def verify_token(
    secret: bytes, token: str, now: float | None = None, purpose: str = SESSION
) -> TokenClaims:
    """The claims of *token*, or :class:`InvalidToken`.

    The signature is checked (in constant time) before the payload is parsed, so an
    attacker's JSON is never decoded unless the secret signed it.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise InvalidToken(MALFORMED)
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        raise InvalidToken(MALFORMED)
    payload_b64, signature = parts[1], parts[2]
    if not hmac.compare_digest(_signature(secret, payload_b64), signature):
        raise InvalidToken(BAD_SIGNATURE)
    try:
        payload = json.loads(_b64decode(payload_b64))
    except (binascii.Error, ValueError) as e:
        raise InvalidToken(MALFORMED) from e
    if not isinstance(payload, dict):
        raise InvalidToken(MALFORMED)
    user, session, kind = payload.get("u"), payload.get("s"), payload.get("p")
    if not (isinstance(user, str) and isinstance(session, str) and isinstance(kind, str)):
        raise InvalidToken(MALFORMED)
    if not user or not session:
        raise InvalidToken(MALFORMED)
    expires = _number(payload.get("exp"))
    issued_at = _number(payload.get("iat", 0))
    if kind != purpose:
        raise InvalidToken(WRONG_PURPOSE)
    if expires <= (time.time() if now is None else now):
        raise InvalidToken(EXPIRED)
    return TokenClaims(
        user=user, session=session, expires=expires, purpose=kind, issued_at=issued_at
    )
