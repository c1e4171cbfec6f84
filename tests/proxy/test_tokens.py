"""Token minting and verification (the module the Jupyter server imports)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys

import pytest
from claude_pods_proxy.tokens import (
    InvalidToken,
    TokenClaims,
    check_secret,
    mint_token,
    verify_token,
)

SECRET = b"s" * 32
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip_and_format() -> None:
    tok = mint_token(SECRET, "alice", "sess-1", 3600, now=NOW)
    prefix, payload, sig = tok.split(".")
    assert prefix == "cpp1"
    assert "=" not in tok
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert data == {
        "u": "alice",
        "s": "sess-1",
        "exp": int(NOW + 3600),
        "p": "session",
        "iat": int(NOW),
    }
    assert verify_token(SECRET, tok, now=NOW + 10) == TokenClaims(
        user="alice", session="sess-1", expires=NOW + 3600, purpose="session", issued_at=NOW
    )
    assert len(sig) == 43  # 32 bytes of HMAC-SHA256, base64url without padding


def test_expiry_is_exclusive() -> None:
    tok = mint_token(SECRET, "alice", "s", 100, now=NOW)
    verify_token(SECRET, tok, now=NOW + 99.9)
    with pytest.raises(InvalidToken) as err:
        verify_token(SECRET, tok, now=NOW + 100)
    assert err.value.reason == "expired"


def test_purpose_must_match() -> None:
    admin = mint_token(SECRET, "ops", "admin", 60, purpose="admin", now=NOW)
    assert verify_token(SECRET, admin, now=NOW, purpose="admin").purpose == "admin"
    with pytest.raises(InvalidToken) as err:
        verify_token(SECRET, admin, now=NOW)
    assert err.value.reason == "wrong purpose"
    session = mint_token(SECRET, "alice", "s", 60, now=NOW)
    with pytest.raises(InvalidToken) as err:
        verify_token(SECRET, session, now=NOW, purpose="admin")
    assert err.value.reason == "wrong purpose"


def test_signature_covers_everything() -> None:
    tok = mint_token(SECRET, "alice", "s", 60, now=NOW)
    prefix, payload, sig = tok.split(".")
    forged_payload = b64(
        json.dumps({"u": "bob", "s": "s", "exp": NOW + 60, "p": "session"}).encode()
    )
    for bad in (
        f"{prefix}.{forged_payload}.{sig}",
        f"{prefix}.{payload}.{sig[:-1]}A" if sig[-1] != "A" else f"{prefix}.{payload}.{sig[:-1]}B",
        f"{prefix}.{payload}x.{sig}",
    ):
        with pytest.raises(InvalidToken) as err:
            verify_token(SECRET, bad, now=NOW)
        assert err.value.reason == "bad signature"
    with pytest.raises(InvalidToken) as err:
        verify_token(b"t" * 32, tok, now=NOW)
    assert err.value.reason == "bad signature"


@pytest.mark.parametrize(
    "tok",
    ["", "cpp1", "cpp1..", "cpp1.a.b.c", "cpp2.a.b", "Bearer x", "cpp1.é.b", "x" * 3000],
)
def test_malformed(tok: str) -> None:
    with pytest.raises(InvalidToken) as err:
        verify_token(SECRET, tok, now=NOW)
    assert err.value.reason == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"u": "a", "s": "b", "p": "session"}',
        b'{"u": "a", "s": "b", "exp": true, "p": "session"}',
        b'{"u": "a", "s": "b", "exp": "1e99", "p": "session"}',
        b'{"u": "", "s": "b", "exp": 1e99, "p": "session"}',
        b'{"u": 1, "s": "b", "exp": 1e99, "p": "session"}',
    ],
)
def test_signed_but_malformed_payloads(payload: bytes) -> None:
    """Even a payload signed with the secret must have the right shape."""
    body = b64(payload)
    sig = b64(hmac.new(SECRET, f"cpp1.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(InvalidToken) as err:
        verify_token(SECRET, f"cpp1.{body}.{sig}", now=NOW)
    assert err.value.reason == "malformed"


def test_secret_and_argument_checks() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        check_secret(b"x" * 31)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        mint_token(b"short", "a", "s", 60)
    for user, session, ttl in [
        ("", "s", 60),
        ("a", "", 60),
        ("a\n", "s", 60),
        ("a", "s", 0),
        ("a", "s", float("inf")),
        ("a" * 257, "s", 60),
    ]:
        with pytest.raises(ValueError):
            mint_token(SECRET, user, session, ttl)
    with pytest.raises(ValueError, match="purpose"):
        mint_token(SECRET, "a", "s", 60, purpose="root")


def test_module_needs_only_the_standard_library() -> None:
    """The Jupyter server imports it: no Tornado, aiohttp or SQLite may come along."""
    code = (
        "import sys, claude_pods_proxy.tokens;"
        "bad = [m for m in ('tornado', 'aiohttp', 'sqlite3', 'yarl', 'prometheus_client')"
        " if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
