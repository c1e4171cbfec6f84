"""``claude-pods-proxy``: run the proxy (``serve``) or mint a token (``token``).

``serve`` reads its settings from flags or environment variables (see
:mod:`.config`; ``claude-pods-proxy serve --help`` lists them with their variables),
logs to stderr and writes the JSON access log, one object per line, to stdout.
``token`` prints a token signed with the same secret, for operators and scripts; the
Jupyter server mints its own through :func:`claude_pods_proxy.tokens.mint_token`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .config import ConfigError, add_serve_arguments, config_from_args, read_token_secret
from .tokens import ADMIN, SESSION, mint_token

if TYPE_CHECKING:
    from .app import ProxyServer

__all__ = ["main"]

log = logging.getLogger("claude_pods_proxy")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claude-pods-proxy",
        description="API-key proxy between Claude Code sandboxes and the Anthropic API.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy. The real key comes from --key-file or ANTHROPIC_API_KEY, "
        "the token secret from --token-secret-file or CLAUDE_PODS_TOKEN_SECRET.",
    )
    add_serve_arguments(serve)
    serve.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    token = sub.add_parser(
        "token",
        help="print a token signed with the proxy's secret",
        description="Print a session token (or, with --admin, an admin token for /admin/*).",
    )
    token.add_argument("--user", required=True)
    token.add_argument("--session", required=True)
    token.add_argument("--ttl", required=True, type=float, help="lifetime in seconds")
    token.add_argument("--admin", action="store_true", help="an admin token (purpose admin)")
    token.add_argument(
        "--token-secret-file",
        default=os.environ.get("CLAUDE_PODS_TOKEN_SECRET_FILE"),
        help="file holding the secret [$CLAUDE_PODS_TOKEN_SECRET_FILE]; "
        "default $CLAUDE_PODS_TOKEN_SECRET",
    )
    return parser


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Tornado logs every request itself at INFO; ours is the access log.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)


def _raise_fd_limit() -> None:
    """Every stream holds two sockets; the default soft limit (often 1024) is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve(proxy: ProxyServer) -> None:
    await proxy.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down")
    await proxy.stop(grace=proxy.config.shutdown_grace)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "token":
        try:
            secret = read_token_secret(args.token_secret_file, os.environ)
            purpose = ADMIN if args.admin else SESSION
            print(mint_token(secret, args.user, args.session, args.ttl, purpose=purpose))
        except ValueError as e:
            print(f"claude-pods-proxy token: {e}", file=sys.stderr)
            return 2
        return 0
    _setup_logging(args.log_level)
    try:
        config = config_from_args(args, os.environ)
    except ConfigError as e:
        print(f"claude-pods-proxy serve: {e}", file=sys.stderr)
        return 2
    from .accesslog import StreamAccessLog
    from .app import ProxyServer  # Tornado and SQLite are only needed to serve
    from .keys import KeyUnavailable

    try:
        proxy = ProxyServer(config, access_log=StreamAccessLog(sys.stdout))
    except KeyUnavailable as e:
        print(f"claude-pods-proxy serve: {e}", file=sys.stderr)
        return 2
    _raise_fd_limit()
    asyncio.run(_serve(proxy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
