"""Calls the Jupyter server makes to the proxy: revoke a session or user, read usage.

Uses Tornado's ``AsyncHTTPClient`` (already a dependency of the Jupyter server) and
mints a short-lived admin token per call from the shared secret, so the server keeps
no long-lived admin credential. Redirects are not followed: an admin token must only
ever go to the configured proxy.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from .tokens import ADMIN, mint_token

__all__ = ["ProxyAdminError", "fetch_usage", "revoke", "revoke_user"]

#: Lifetime of the admin token minted for one call.
ADMIN_TOKEN_TTL = 60.0
ADMIN_USER = "jupyter-server"


class ProxyAdminError(RuntimeError):
    """The proxy refused or failed an admin call (``code`` is the HTTP status, 599 if none)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"proxy admin call failed ({code}): {message}")
        self.code = code


async def _call(
    base_url: str,
    secret: bytes,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    timeout: float,
) -> dict[str, Any]:
    token = mint_token(secret, ADMIN_USER, "admin", ADMIN_TOKEN_TTL, purpose=ADMIN)
    try:
        response = await AsyncHTTPClient().fetch(
            base_url.rstrip("/") + path,
            method=method,
            body=None if body is None else json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            follow_redirects=False,
            connect_timeout=timeout,
            request_timeout=timeout,
        )
    except HTTPClientError as e:
        message = e.message or ""
        if e.response is not None and e.response.body:
            try:
                message = json.loads(e.response.body)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = e.response.body[:200].decode("utf-8", "replace")
        raise ProxyAdminError(e.code, message) from e
    except OSError as e:
        raise ProxyAdminError(599, str(e)) from e
    result: dict[str, Any] = json.loads(response.body)
    return result


async def revoke(base_url: str, secret: bytes, session: str, *, timeout: float = 10.0) -> int:
    """End *session* at the proxy at *base_url*; returns the requests it cancelled.

    Call it when a terminal ends. Once this returns the session's token is refused
    (401, ``x-should-retry: false``) and its streams in flight are cut.
    """
    result = await _call(base_url, secret, "POST", "/admin/revoke", {"session": session}, timeout)
    return int(result.get("cancelled", 0))


async def revoke_user(base_url: str, secret: bytes, user: str, *, timeout: float = 10.0) -> int:
    """Revoke every token *user* holds now (tokens minted afterwards still work)."""
    result = await _call(base_url, secret, "POST", "/admin/revoke", {"user": user}, timeout)
    return int(result.get("cancelled", 0))


async def fetch_usage(
    base_url: str,
    secret: bytes,
    *,
    user: str | None = None,
    session: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Usage totals of a session and/or a user (``GET /admin/usage``)."""
    query = urllib.parse.urlencode(
        {k: v for k, v in (("user", user), ("session", session)) if v is not None}
    )
    return await _call(base_url, secret, "GET", f"/admin/usage?{query}", None, timeout)
