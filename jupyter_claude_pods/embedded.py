"""The key proxy embedded in the Jupyter server, for local (bubblewrap) sandboxes.

On a laptop there is no separate proxy deployment: the server runs
``claude_pods_proxy`` itself, in-process on its event loop, configured exactly as the
standalone proxy (``ANTHROPIC_API_KEY`` or ``CLAUDE_PODS_KEY_FILE`` for the real key,
``CLAUDE_PODS_UPSTREAM_URL``, budgets and limits from the same variables), except:

* the token-signing secret is random and new for every server run (the server is the
  only minting party, so nothing needs to share it; tokens die with the server);
* it listens on a Unix socket in the backend's private state directory, which is bound
  into each sandbox (sandboxes reach no TCP port of the host), and on an ephemeral
  127.0.0.1 TCP port used only by the server itself for admin calls (revocations);
* its usage database lives in that state directory and goes away with it.

Once the proxy holds the key, the server removes ``ANTHROPIC_API_KEY`` from its own
environment: kernels, language servers and every other process it starts later would
otherwise inherit it, and a notebook is arbitrary code.

Without a key the proxy is not started at all: :attr:`EmbeddedProxy.problem` then says
how to provide one, and the server shows it in every new terminal (sandboxes get no
token, so Claude Code reports "Not logged in" instead of failing in obscure ways).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import secrets
from pathlib import Path

from claude_pods_proxy.app import ProxyServer
from claude_pods_proxy.config import ConfigError, config_from_args
from claude_pods_proxy.keys import KeyUnavailable

#: Shown in each terminal when the server has no key to give the proxy.
NO_KEY = (
    "no Anthropic API key is configured for this Jupyter server, so Claude Code cannot "
    "work in this terminal. Stop the server, set the key (export ANTHROPIC_API_KEY=sk-ant-…, "
    "or CLAUDE_PODS_KEY_FILE=/path/to/a/file/holding/it), start it again and open a new "
    "terminal."
)
#: Variables of the standalone proxy that must not steer the embedded one.
_OVERRIDDEN = ("CLAUDE_PODS_TOKEN_SECRET_FILE", "CLAUDE_PODS_PROXY_HOST", "CLAUDE_PODS_PROXY_PORT")


class EmbeddedProxy:
    """``await start()``; then :attr:`socket_path`, :attr:`admin_url` and :attr:`secret`.

    Never raises from :meth:`start`: a proxy that cannot run leaves :attr:`problem` set
    (a message safe to show in a terminal) and :attr:`secret` at ``None``.
    """

    def __init__(
        self,
        state_dir: Path,
        socket_dir: Path,
        *,
        socket_mode: int = 0o600,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.socket_path = socket_dir / "proxy.sock"
        self.socket_mode = socket_mode
        self.log = log or logging.getLogger(__name__)
        self.secret: bytes | None = None
        self.admin_url = ""
        self.problem = ""
        self._server: ProxyServer | None = None
        #: The key taken out of the environment (kept for a restart of the proxy).
        self._env_key = ""

    @property
    def running(self) -> bool:
        return self._server is not None

    def key_values(self) -> tuple[str, ...]:
        """The real key(s) in service now: values no sandbox may ever see."""
        found = [os.environ.get("ANTHROPIC_API_KEY", "").strip(), self._env_key]
        if self._server is not None:
            with contextlib.suppress(KeyUnavailable):
                found.append(self._server.keys.get())
        return tuple(k for k in found if k)

    async def start(self) -> None:
        if self._server is not None:
            return
        env_key = os.environ.get("ANTHROPIC_API_KEY", "").strip() or self._env_key
        if not env_key and not os.environ.get("CLAUDE_PODS_KEY_FILE"):
            self.problem = NO_KEY
            self.log.warning("claude-pods: %s", NO_KEY)
            return
        secret = secrets.token_urlsafe(48)
        environ = {k: v for k, v in os.environ.items() if k not in _OVERRIDDEN}
        if env_key:
            environ["ANTHROPIC_API_KEY"] = env_key
        environ.update(
            CLAUDE_PODS_TOKEN_SECRET=secret,
            CLAUDE_PODS_PROXY_HOST="127.0.0.1",
            CLAUDE_PODS_PROXY_PORT="0",
            CLAUDE_PODS_PROXY_DB=str(self.state_dir / "usage.sqlite3"),
        )
        try:
            config = config_from_args(argparse.Namespace(), environ)
            config = dataclasses.replace(config, unix_socket=str(self.socket_path))
            server = ProxyServer(config)
            await server.start()
        except (ConfigError, KeyUnavailable, OSError, ValueError) as e:
            # Messages of these errors never hold key material (see claude_pods_proxy.keys).
            self.problem = f"the key proxy of this Jupyter server could not start: {e}"
            self.log.error("claude-pods: %s", self.problem)
            return
        self.socket_path.chmod(self.socket_mode)
        self._server = server
        if os.environ.pop("ANTHROPIC_API_KEY", None) is not None:
            self._env_key = env_key
            self.log.info(
                "claude-pods: ANTHROPIC_API_KEY removed from the server's environment "
                "(kernels and other processes it starts do not inherit it)"
            )
        self.secret = secret.encode()
        self.admin_url = server.url
        self.log.info(
            "claude-pods: embedded key proxy on %s (admin %s), upstream %s",
            self.socket_path,
            self.admin_url,
            config.upstream_url,
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
