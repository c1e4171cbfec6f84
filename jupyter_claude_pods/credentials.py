"""Per-session credentials for the key proxy: minted at sandbox start, revoked at its end.

A sandbox never holds the real Anthropic key. It gets ``ANTHROPIC_BASE_URL`` (the key
proxy) from its backend and, from here, ``ANTHROPIC_AUTH_TOKEN``: a token bound to its
user and session, signed with a secret the server shares with the proxy, and revoked
through the proxy's admin API when the terminal ends.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from claude_pods_proxy.client import ProxyAdminError, revoke
from claude_pods_proxy.tokens import check_secret, mint_token
from traitlets import Float, Unicode, default
from traitlets.config import LoggingConfigurable

from .sandbox.spec import SandboxSpec

TOKEN_ENV = "ANTHROPIC_AUTH_TOKEN"  # noqa: S105 - a variable name, not a secret
SECRET_ENV = "CLAUDE_PODS_TOKEN_SECRET"  # noqa: S105 - a variable name
SECRET_FILE_ENV = "CLAUDE_PODS_TOKEN_SECRET_FILE"  # noqa: S105 - a variable name
ADMIN_URL_ENV = "CLAUDE_PODS_PROXY_ADMIN_URL"


class SessionCredentials(LoggingConfigurable):
    """Mints and revokes the sandbox's proxy token."""

    token_secret_file = Unicode(
        config=True,
        help=f"""File holding the token-signing secret shared with the key proxy (at least
        32 bytes; not the Anthropic key). Default: ${SECRET_FILE_ENV}. When empty, the
        secret is read from ${SECRET_ENV}; with neither, sandboxes get no token.""",
    )
    token_ttl = Float(
        12 * 3600.0,
        config=True,
        help="Lifetime of a session token in seconds (revoked earlier when the terminal ends).",
    )
    proxy_admin_url = Unicode(
        config=True,
        help=f"""Base URL at which this server reaches the key proxy's admin API to revoke
        tokens. Default: ${ADMIN_URL_ENV}, else the URL sandboxes use for the proxy.""",
    )
    revoke_timeout = Float(10.0, config=True, help="Timeout of one revocation call.")

    @default("token_secret_file")
    def _default_secret_file(self) -> str:
        return os.environ.get(SECRET_FILE_ENV, "")

    @default("proxy_admin_url")
    def _default_admin_url(self) -> str:
        return os.environ.get(ADMIN_URL_ENV, "")

    def __init__(self, *, fallback_admin_url: str = "", **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._secret: bytes | None = None
        self._fallback_admin_url = fallback_admin_url
        #: Set by :meth:`use_secret`: an embedded proxy's admin URL, used instead of ours.
        self._embedded_admin_url: str | None = None
        self.problem = ""

    @property
    def enabled(self) -> bool:
        """Whether sandboxes get a token."""
        return self._secret is not None

    def use_secret(self, secret: bytes | None, admin_url: str, problem: str = "") -> None:
        """Use the secret and admin URL of a proxy the server runs itself (embedded mode).

        The local backend starts its own key proxy with a random per-server secret; that
        wins over the configured one, which :meth:`load` then leaves alone. ``None``
        means that proxy could not run (e.g. no API key): sandboxes get no token and
        ``problem`` is shown in their terminals instead.
        """
        self._secret = None if secret is None else check_secret(secret)
        self._embedded_admin_url = admin_url
        self.problem = problem

    async def load(self) -> None:
        """Read the secret once (file reads off the event loop); never raises."""
        if self._embedded_admin_url is not None:
            return  # use_secret() decided
        try:
            if self.token_secret_file:
                raw = await asyncio.to_thread(Path(self.token_secret_file).read_bytes)
                secret = raw.strip()
            else:
                secret = os.environ.get(SECRET_ENV, "").encode()
            if not secret:
                self.problem = (
                    f"no token secret is configured (${SECRET_ENV} or ${SECRET_FILE_ENV}), so "
                    "Claude Code in the sandbox cannot use the key proxy"
                )
                self.log.warning("claude-pods: %s", self.problem)
                return
            self._secret = check_secret(secret)
        except (OSError, ValueError) as e:
            self.problem = f"the token secret could not be used: {e}"
            self.log.error("claude-pods: %s", self.problem)

    def session_env(self, spec: SandboxSpec) -> dict[str, str]:
        """``{"ANTHROPIC_AUTH_TOKEN": token}`` for this session, or ``{}`` without a secret."""
        if self._secret is None:
            return {}
        token = mint_token(self._secret, spec.user, spec.session_id, self.token_ttl)
        return {TOKEN_ENV: token}

    async def revoke(self, spec: SandboxSpec) -> None:
        """Tell the proxy the session ended; logs (never raises) on failure.

        A failed revocation leaves the token valid until it expires, so it is logged
        as an error for the operator.
        """
        url = self._embedded_admin_url
        if url is None:
            url = self.proxy_admin_url or self._fallback_admin_url
        if self._secret is None or not url or TOKEN_ENV not in spec.env:
            return
        try:
            await revoke(url, self._secret, spec.session_id, timeout=self.revoke_timeout)
        except ProxyAdminError as e:
            self.log.error(
                "claude-pods: revoking the token of session %s failed (HTTP %s); it stays "
                "valid until it expires",
                spec.session_id,
                e.code,
            )
        else:
            self.log.info("claude-pods: revoked the proxy token of session %s", spec.session_id)
