"""Proxy settings: one frozen dataclass, filled from command-line flags or environment.

Every setting has a flag and an environment variable (the flag wins), declared once in
:data:`OPTIONS` so ``--help``, the docs and parsing cannot disagree. Secrets (the real
key, the token secret) are excluded from ``repr`` and are read from files when possible:
a file can be a mounted Kubernetes Secret and rotated, an environment variable cannot.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from .bodypolicy import valid_tool_name
from .tokens import check_secret

__all__ = ["OPTIONS", "ConfigError", "ProxyConfig", "add_serve_arguments", "config_from_args"]

MIB = 1024 * 1024
DEFAULT_UPSTREAM = "https://api.anthropic.com"
DEFAULT_PORT = 8787


class ConfigError(ValueError):
    """A setting is missing or invalid; the message is meant for the operator."""


def default_db_path() -> str:
    """``$XDG_STATE_HOME/claude-pods-proxy/usage.sqlite3`` (``~/.local/state`` by default)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "claude-pods-proxy" / "usage.sqlite3")


@dataclass(frozen=True)
class ProxyConfig:
    """Everything the proxy needs to run. Budgets and limits set to 0 are off."""

    token_secret: bytes = field(repr=False)
    #: The real key when given inline (environment); ``None`` when read from ``key_file``.
    key_value: str | None = field(default=None, repr=False)
    key_file: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    upstream_url: str = DEFAULT_UPSTREAM
    db_path: str = field(default_factory=default_db_path)
    session_budget_usd: float = 5.0
    user_daily_budget_usd: float = 25.0
    rate_limit_rpm: int = 120
    max_concurrent_per_session: int = 4
    allowed_models: frozenset[str] | None = None
    max_tokens_cap: int | None = None
    #: Server-side tool types (by family, e.g. ``web_search``, or full type) requests may use.
    allowed_server_tools: frozenset[str] = frozenset()
    #: Forward content blocks with a ``{"type": "url"}`` source (Anthropic fetches the URL).
    allow_url_sources: bool = False
    max_body_bytes: int = 32 * MIB
    connect_timeout: float = 10.0
    stall_timeout: float = 600.0
    max_token_ttl: float = 30 * 86400.0
    max_upstream_connections: int = 1000
    shutdown_grace: float = 30.0
    #: Seconds between batched usage writes to SQLite (budgets use in-memory totals).
    flush_interval: float = 0.5
    allow_http_upstream: bool = False
    #: Also listen on this Unix socket (created mode 0600; an embedding application
    #: widens access itself). The TCP listener stays: admin calls use :attr:`url`.
    unix_socket: str | None = None

    def __post_init__(self) -> None:
        check_secret(self.token_secret)
        if (self.key_value is None) == (self.key_file is None):
            raise ConfigError("give the real key as ANTHROPIC_API_KEY or --key-file (not both)")
        object.__setattr__(
            self, "upstream_url", normalize_upstream(self.upstream_url, self.allow_http_upstream)
        )
        for name in ("connect_timeout", "stall_timeout", "max_token_ttl", "flush_interval"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        if self.max_body_bytes <= 0 or self.max_upstream_connections <= 0:
            raise ConfigError("max_body_bytes and max_upstream_connections must be positive")
        if isinstance(self.allowed_server_tools, str):
            raise ConfigError("allowed_server_tools must be a set of names, not a string")
        tools = frozenset(self.allowed_server_tools)
        object.__setattr__(self, "allowed_server_tools", tools)
        bad = sorted(t for t in tools if not valid_tool_name(t))
        if bad:
            raise ConfigError(
                f"server tool names are lowercase letters, digits and _ (web_search), got {bad}"
            )
        if self.unix_socket is not None and len(os.fsencode(self.unix_socket)) >= 108:
            raise ConfigError(
                f"unix socket path too long (sun_path is 108 bytes): {self.unix_socket}"
            )


def normalize_upstream(url: str, allow_http: bool = False) -> str:
    """The upstream base URL without a trailing slash, or :class:`ConfigError`.

    Only the scheme, host, port and an optional fixed path prefix are allowed: the
    forwarded URL is this string plus a route constant, never anything from a client.
    Plain ``http`` would send the real key in clear, so it is refused unless the host is
    a loopback address or ``allow_http`` is set.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"upstream URL must be http(s)://host[:port][/prefix], got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError("upstream URL must not contain credentials, a query or a fragment")
    if any(seg in ("..", ".") for seg in parts.path.split("/")) or "%" in parts.path:
        raise ConfigError("upstream URL path must be a plain prefix")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as e:
        raise ConfigError(f"bad upstream port: {e}") from e
    if parts.scheme == "http" and not allow_http and not _is_loopback(parts.hostname):
        raise ConfigError("plain http upstream sends the key unencrypted; use https")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Option:
    """One ``serve`` setting: its flag, environment variable and config field."""

    flag: str
    env: str
    dest: str
    type: Any
    help: str
    #: The flag may be given several times (values are merged; any flag wins over the env).
    repeatable: bool = False
    #: The flag takes no value (it turns the setting on); the variable is 1 or 0.
    switch: bool = False


def _models(text: str) -> frozenset[str] | None:
    models = frozenset(m.strip() for m in text.split(",") if m.strip())
    return models or None


def _server_tools(text: str) -> frozenset[str]:
    return frozenset(t.strip() for t in text.split(",") if t.strip())


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1 or 0, got {text[:20]!r}")


def _optional_int(text: str) -> int | None:
    value = int(text)
    return value if value > 0 else None


OPTIONS: tuple[Option, ...] = (
    Option("--host", "CLAUDE_PODS_PROXY_HOST", "host", str, "address to listen on"),
    Option("--port", "CLAUDE_PODS_PROXY_PORT", "port", int, "port to listen on (0: any free)"),
    Option(
        "--upstream-url", "CLAUDE_PODS_UPSTREAM_URL", "upstream_url", str, "Anthropic API base URL"
    ),
    Option("--key-file", "CLAUDE_PODS_KEY_FILE", "key_file", str, "file holding the real API key"),
    Option(
        "--token-secret-file",
        "CLAUDE_PODS_TOKEN_SECRET_FILE",
        "token_secret_file",
        str,
        "file holding the token-signing secret (>= 32 bytes)",
    ),
    Option("--db", "CLAUDE_PODS_PROXY_DB", "db_path", str, "SQLite file for usage and revocations"),
    Option(
        "--session-budget-usd",
        "CLAUDE_PODS_SESSION_BUDGET_USD",
        "session_budget_usd",
        float,
        "spend allowed per session (0: no limit)",
    ),
    Option(
        "--user-daily-budget-usd",
        "CLAUDE_PODS_USER_DAILY_BUDGET_USD",
        "user_daily_budget_usd",
        float,
        "spend allowed per user per UTC day (0: no limit)",
    ),
    Option(
        "--rate-limit-rpm",
        "CLAUDE_PODS_RATE_LIMIT_RPM",
        "rate_limit_rpm",
        int,
        "requests per session per minute (0: no limit)",
    ),
    Option(
        "--max-concurrent",
        "CLAUDE_PODS_MAX_CONCURRENT",
        "max_concurrent_per_session",
        int,
        "requests in flight per session (0: no limit)",
    ),
    Option(
        "--allowed-models",
        "CLAUDE_PODS_ALLOWED_MODELS",
        "allowed_models",
        _models,
        "comma-separated model ids allowed (default: any)",
    ),
    Option(
        "--max-tokens",
        "CLAUDE_PODS_MAX_TOKENS",
        "max_tokens_cap",
        _optional_int,
        "largest max_tokens a request may ask for (default: no cap)",
    ),
    Option(
        "--allow-server-tool",
        "CLAUDE_PODS_ALLOWED_SERVER_TOOLS",
        "allowed_server_tools",
        _server_tools,
        "server-side tool type requests may use, by name before the date suffix, e.g. "
        "web_search (repeat the flag; comma-separated in the variable; default: none; "
        "mcp_servers is always refused)",
        repeatable=True,
    ),
    Option(
        "--allow-url-sources",
        "CLAUDE_PODS_ALLOW_URL_SOURCES",
        "allow_url_sources",
        _switch,
        'forward image and document blocks whose source is a URL ({"type": "url"}), which '
        "Anthropic's servers fetch: a way out for data from the sandbox (variable: 1 or 0; "
        "default: refused)",
        switch=True,
    ),
    Option(
        "--max-body-bytes",
        "CLAUDE_PODS_MAX_BODY_BYTES",
        "max_body_bytes",
        int,
        "largest request body (default 32 MiB, the API's limit)",
    ),
    Option(
        "--connect-timeout",
        "CLAUDE_PODS_CONNECT_TIMEOUT",
        "connect_timeout",
        float,
        "seconds to connect to the upstream",
    ),
    Option(
        "--stall-timeout",
        "CLAUDE_PODS_STALL_TIMEOUT",
        "stall_timeout",
        float,
        "seconds without a byte from the upstream before a request is abandoned",
    ),
    Option(
        "--max-token-ttl",
        "CLAUDE_PODS_MAX_TOKEN_TTL",
        "max_token_ttl",
        float,
        "longest token lifetime accepted, in seconds (revocations are kept this long)",
    ),
    Option(
        "--max-upstream-connections",
        "CLAUDE_PODS_MAX_UPSTREAM_CONNECTIONS",
        "max_upstream_connections",
        int,
        "upstream connections open at once",
    ),
    Option(
        "--shutdown-grace",
        "CLAUDE_PODS_SHUTDOWN_GRACE",
        "shutdown_grace",
        float,
        "seconds in-flight requests get to finish on SIGTERM",
    ),
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every :data:`OPTIONS` flag (defaults come from the environment, then the dataclass)."""
    defaults = {f.name: f.default for f in fields(ProxyConfig)}
    defaults["db_path"] = default_db_path()
    for opt in OPTIONS:
        default = defaults.get(opt.dest)
        shown = f"; default {default}" if default not in (None, MISSING, frozenset()) else ""
        if opt.switch:
            parser.add_argument(
                opt.flag,
                dest=opt.dest,
                action="store_const",
                const=True,
                default=None,
                help=f"{opt.help} [${opt.env}]",
            )
            continue
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            type=opt.type,
            default=None,
            action="append" if opt.repeatable else "store",
            help=f"{opt.help} [${opt.env}{shown}]",
        )
    parser.add_argument(
        "--allow-http-upstream",
        action="store_true",
        help="allow a plain-http upstream that is not on loopback (the key travels in clear)",
    )


def read_token_secret(path: str | None, environ: Mapping[str, str]) -> bytes:
    """The signing secret from *path* or ``CLAUDE_PODS_TOKEN_SECRET``, checked for length."""
    if path:
        try:
            secret = Path(path).read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"cannot read the token secret file {path}: {e.strerror}") from e
    elif environ.get("CLAUDE_PODS_TOKEN_SECRET"):
        secret = environ["CLAUDE_PODS_TOKEN_SECRET"].strip().encode("utf-8")
    else:
        raise ConfigError("set CLAUDE_PODS_TOKEN_SECRET or --token-secret-file")
    try:
        return check_secret(secret)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> ProxyConfig:
    """Build the config from parsed ``serve`` flags, falling back to *environ*."""
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        value = getattr(args, opt.dest, None)
        if opt.repeatable and value is not None:
            value = frozenset().union(*value)
        if value is None and environ.get(opt.env):
            try:
                value = opt.type(environ[opt.env])
            except ValueError as e:
                raise ConfigError(f"{opt.env}: {e}") from e
        if value is not None:
            values[opt.dest] = value
    secret_file = values.pop("token_secret_file", None)
    values["token_secret"] = read_token_secret(secret_file, environ)
    if "key_file" not in values:
        if not environ.get("ANTHROPIC_API_KEY"):
            raise ConfigError("set ANTHROPIC_API_KEY or --key-file to the real API key")
        values["key_value"] = environ["ANTHROPIC_API_KEY"]
    values["allow_http_upstream"] = bool(getattr(args, "allow_http_upstream", False))
    try:
        return ProxyConfig(**values)
    except ValueError as e:
        raise ConfigError(str(e)) from e
