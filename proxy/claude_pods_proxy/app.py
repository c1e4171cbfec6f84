"""The proxy server: exact routing, authentication, admission, local endpoints, lifecycle.

Routing is an exact table, checked before anything else:

* ``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` go to
  :class:`~.upstream.ForwardRequest` (the only requests that reach the upstream);
* ``HEAD /`` and ``HEAD /api/hello`` (the CLI's connection warm-up) are answered here;
* ``GET /healthz``, ``GET /metrics``, ``POST /admin/revoke`` and ``GET /admin/usage``
  (admin token) are local;
* everything else, any other method included, is a 404 JSON error.

Matching compares the path of the raw request line for equality (Tornado hands the
target to us unchanged): an absolute-form target (``http://evil/v1/messages``),
``//evil/...``, ``/v1/messages/../x`` or ``/v1/%2e%2e/x`` simply is not equal to a
route, so it is a 404. Nothing of the target is ever used to build the upstream URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import math
import time
from collections.abc import Awaitable
from typing import Any, ClassVar

import tornado.netutil
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado import httputil, web
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback

from .accesslog import AccessLog, LoggingAccessLog
from .bodypolicy import BodyPolicy
from .config import ProxyConfig
from .errors import error_body, new_request_id
from .keys import KeySource
from .limits import Refusal, SlidingWindowLimiter, check_budgets
from .metrics import ProxyMetrics
from .pool import UpstreamPool
from .store import UsageStore
from .tokens import ADMIN, MAX_NAME_CHARS, InvalidToken, TokenClaims, verify_token
from .upstream import (
    CLIENT_GONE,
    REVOKED,
    ROUTES,
    SHUTDOWN,
    ForwardRequest,
    Reply,
    refused,
    unauthorized,
)

__all__ = ["ProxyServer"]

log = logging.getLogger("claude_pods_proxy")
#: Verified tokens remembered (one per live sandbox; cleared wholesale when full).
TOKEN_CACHE_SIZE = 10_000


def bearer_token(headers: httputil.HTTPHeaders) -> str | None:
    """The token from ``Authorization: Bearer`` (what ``ANTHROPIC_AUTH_TOKEN`` produces),
    else from ``x-api-key`` (for SDK clients configured with the token as their key)."""
    auth = headers.get("Authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    key = headers.get("X-Api-Key")
    return key.strip() or None if key is not None else None


class ProxyServer:
    """One proxy instance: ``await start()``, serve, ``await stop()``."""

    def __init__(self, config: ProxyConfig, access_log: AccessLog | None = None) -> None:
        self.config = config
        self.log = log
        self.access_log = access_log or LoggingAccessLog()
        self.metrics = ProxyMetrics()
        self.keys = KeySource(
            value=config.key_value, path=config.key_file, on_reload=self.metrics.key_reloads.inc
        )
        self.store = UsageStore(
            config.db_path, flush_interval=config.flush_interval, retention=config.max_token_ttl
        )
        self.limiter = SlidingWindowLimiter(config.rate_limit_rpm)
        self.body_policy = BodyPolicy(
            allowed_models=config.allowed_models,
            max_tokens_cap=config.max_tokens_cap,
            allowed_server_tools=config.allowed_server_tools,
            allow_url_sources=config.allow_url_sources,
        )
        #: session -> its forwarded requests in flight (concurrency cap, revocation)
        self.active: dict[str, set[ForwardRequest]] = {}
        self.in_flight = 0
        #: token -> claims, for tokens whose signature was already checked (bounded)
        self._verified: dict[str, TokenClaims] = {}
        self.upstream = UpstreamPool(
            config.upstream_url,
            connect_timeout=config.connect_timeout,
            max_connections=config.max_upstream_connections,
        )
        self.web_app = web.Application(
            [
                (r"/", HelloHandler),
                (r"/api/hello", HelloHandler),
                (r"/healthz", HealthHandler),
                (r"/metrics", MetricsHandler),
                (r"/admin/revoke", RevokeHandler),
                (r"/admin/usage", UsageHandler),
            ],
            default_handler_class=NotFoundHandler,
            log_function=self._log_local,
            proxy=self,
        )
        self._server: HTTPServer | None = None
        self._housekeeping: PeriodicCallback | None = None
        self._idle: asyncio.Event | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        cfg = self.config
        self._idle = asyncio.Event()
        self._idle.set()
        await self.store.open()
        self._server = HTTPServer(
            _Dispatcher(self),
            xheaders=False,
            max_body_size=2 * cfg.max_body_bytes,
            max_buffer_size=max(2 * cfg.max_body_bytes, 100 << 20),
            idle_connection_timeout=900.0,
        )
        sockets = tornado.netutil.bind_sockets(cfg.port, cfg.host, backlog=1024)
        self.port = sockets[0].getsockname()[1]
        if cfg.unix_socket is not None:
            sockets.append(tornado.netutil.bind_unix_socket(cfg.unix_socket, backlog=1024))
        self._server.add_sockets(sockets)
        self._housekeeping = PeriodicCallback(self._prune, 60_000)
        self._housekeeping.start()
        log.info(
            "claude-pods-proxy listening on %s%s, upstream %s, key from %s",
            self.url,
            f" and {cfg.unix_socket}" if cfg.unix_socket is not None else "",
            cfg.upstream_url,
            self.keys.description,
        )

    async def stop(self, grace: float = 0.0) -> None:
        """Stop listening, give requests in flight *grace* seconds, cancel the rest."""
        if self._server is None:
            return
        self._server.stop()
        if self._housekeeping is not None:
            self._housekeeping.stop()
        if grace > 0 and self.in_flight and self._idle is not None:
            log.info("waiting up to %.0f s for %d requests in flight", grace, self.in_flight)
            with contextlib.suppress(asyncio.TimeoutError):
                await self.wait_idle(grace)
        tasks = [r.task for reqs in self.active.values() for r in reqs if r.task is not None]
        for reqs in list(self.active.values()):
            for req in list(reqs):
                req.cancel(SHUTDOWN)
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        await self._server.close_all_connections()
        self._server = None
        self.upstream.close()
        await self.store.close()
        self.access_log.close()

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Return once no forwarded request is in flight (``TimeoutError`` after *timeout*)."""
        assert self._idle is not None, "start() first"
        await asyncio.wait_for(self._idle.wait(), timeout)

    def _prune(self) -> None:
        self.limiter.prune(time.time())

    # ------------------------------------------------------------------ the hot path

    def authenticate(
        self, headers: httputil.HTTPHeaders
    ) -> tuple[TokenClaims | None, Reply | None]:
        token = bearer_token(headers)
        if token is None:
            return None, unauthorized("Missing session token.", "auth_missing")
        now = time.time()
        claims = self._verified.get(token)
        if claims is None or claims.expires <= now:
            # A sandbox sends the same token on every request: the HMAC check and JSON
            # decoding run once per token; expiry and revocation are checked every time.
            try:
                claims = verify_token(self.config.token_secret, token, now)
            except InvalidToken as e:
                self._verified.pop(token, None)
                reason = e.reason.replace(" ", "_")
                return None, unauthorized(f"Invalid session token ({e.reason}).", f"auth_{reason}")
            if len(self._verified) >= TOKEN_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = claims
        if claims.expires - now > self.config.max_token_ttl + 60:
            return None, unauthorized("Session token lifetime is too long.", "auth_lifetime")
        if self.store.is_revoked(claims):
            return claims, unauthorized("This session has ended (token revoked).", REVOKED)
        return claims, None

    def check_body(self, req: ForwardRequest, body: bytes) -> Reply | None:
        """Every rule about the body, in one parse: server-side tools, the MCP connector,
        containers and URL sources in content blocks (refused unless allowed: they would make
        the proxy an egress channel), the model allowlist and the ``max_tokens`` cap. See
        :mod:`.bodypolicy`."""
        checked = self.body_policy.check(body, req.route)
        if isinstance(checked.model, str):
            req.model = checked.model[:MAX_NAME_CHARS]
        refusal = checked.refusal
        if refusal is None:
            return None
        reply = Reply(400, "invalid_request_error", refusal.message, code=refusal.code, retry=False)
        if refusal.detail:
            claims = req.claims
            log.warning(
                "refused %s for user %s session %s (request %s); nothing forwarded",
                refusal.detail,
                claims.user if claims else None,
                claims.session if claims else None,
                reply.headers["request-id"],
            )
        return reply

    def admit(self, req: ForwardRequest) -> Reply | None:
        """Budgets, concurrency and rate limit, in that order; registers the request."""
        claims = req.claims
        assert claims is not None
        cfg = self.config
        now = time.time()
        if req.route == "messages":  # count_tokens is free and never blocked by budgets
            refusal = check_budgets(
                self.store, claims, now, cfg.session_budget_usd, cfg.user_daily_budget_usd
            )
            if refusal is not None:
                return refused(refusal)
        active = self.active.get(claims.session)
        cap = cfg.max_concurrent_per_session
        if cap > 0 and active is not None and len(active) >= cap:
            message = f"At most {cap} requests of a session may run at once."
            return refused(Refusal("concurrency", message, 1), retry=True)
        wait = self.limiter.acquire(claims.session, now)
        if wait > 0:
            message = f"At most {cfg.rate_limit_rpm} requests per minute per session."
            return refused(Refusal("rate_limit", message, math.ceil(wait)))
        if active is None:
            active = self.active[claims.session] = set()
        active.add(req)
        self.in_flight += 1
        self.metrics.in_flight.inc()
        if self._idle is not None:
            self._idle.clear()
        return None

    def release(self, req: ForwardRequest) -> None:
        claims = req.claims
        assert claims is not None
        active = self.active.get(claims.session)
        if active is not None:
            active.discard(req)
            if not active:
                del self.active[claims.session]
        self.in_flight -= 1
        self.metrics.in_flight.dec()
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    def request_done(self, req: ForwardRequest) -> None:
        """Charge, count and log one forwarded-route request (called exactly once)."""
        claims = req.claims
        cost = 0.0
        if req.forwarded and claims is not None:
            req.usage, cost = req.charge()
            self.store.record(claims.user, claims.session, req.usage, cost, time.time())
        status = req.status or (499 if req.outcome == CLIENT_GONE else 0)
        metrics = self.metrics
        metrics.count_request(req.route, status)
        if req.refusal_reason is not None:
            metrics.rejections.labels(req.refusal_reason).inc()
        if req.forwarded:
            metrics.observe_duration(req.route, time.perf_counter() - req.started)
            if req.usage is not None:
                u = req.usage
                metrics.add_tokens(
                    u.input_tokens,
                    u.output_tokens,
                    u.cache_creation_input_tokens,
                    u.cache_read_input_tokens,
                )
            if cost:
                metrics.cost.inc(cost)
        if self.access_log.enabled:
            fields = req.log_fields()
            fields["status"] = status
            fields["cost_usd"] = round(cost, 6)
            self.access_log.write(fields)

    async def revoke(
        self, *, session: str | None = None, user: str | None = None, expires: float | None = None
    ) -> int:
        """Revoke a session or every current token of a user; cancels their requests in flight."""
        now = time.time()
        until = now + self.config.max_token_ttl + 60 if expires is None else expires
        if session is not None:
            await self.store.revoke_session(session, until, now)
            victims = list(self.active.get(session, ()))
            self.metrics.revocations.labels("session").inc()
        elif user is not None:
            await self.store.revoke_user(user, until, now)
            victims = [
                r
                for reqs in self.active.values()
                for r in reqs
                if r.claims is not None and r.claims.user == user and r.claims.issued_at <= now
            ]
            self.metrics.revocations.labels("user").inc()
        else:
            raise ValueError("give a session or a user")
        for req in victims:
            req.cancel(REVOKED)
        log.info(
            "revoked %s %s; %d requests in flight cancelled",
            "session" if session is not None else "user",
            session if session is not None else user,
            len(victims),
        )
        return len(victims)

    def _log_local(self, handler: web.RequestHandler) -> None:
        """Access log and metrics for the locally answered endpoints."""
        status = handler.get_status()
        self.metrics.count_request("local", status)
        if status == 404:
            self.metrics.rejections.labels("not_found").inc()
        if self.access_log.enabled:
            request = handler.request
            self.access_log.write(
                {
                    "request_id": getattr(handler, "request_id", None),
                    "method": request.method,
                    "route": "local",
                    "path": request.path[:200],
                    "user": getattr(handler, "admin_user", None),
                    "status": status,
                    "latency_ms": round(request.request_time() * 1000, 3),
                }
            )


class _Dispatcher(httputil.HTTPServerConnectionDelegate):
    """The HTTP server's delegate: one :class:`_Dispatch` per request."""

    def __init__(self, proxy: ProxyServer) -> None:
        self.proxy = proxy

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return _Dispatch(self.proxy, server_conn, request_conn)


class _Dispatch(httputil.HTTPMessageDelegate):
    """Routes one request on its request line: the two forwarded routes go straight to
    :class:`ForwardRequest` (no ``HTTPServerRequest`` is built for them, which is most
    of the routing cost), everything else to the Tornado web application."""

    __slots__ = ("delegate", "proxy", "request_conn", "server_conn")

    def __init__(
        self, proxy: ProxyServer, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> None:
        self.proxy = proxy
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.delegate: httputil.HTTPMessageDelegate | None = None

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        path, _, query = start_line.path.partition("?")
        route = ROUTES.get(path) if start_line.method == "POST" else None
        if route is not None:
            self.delegate = ForwardRequest(self.proxy, self.request_conn, route, query)
        else:
            self.delegate = self.proxy.web_app.start_request(self.server_conn, self.request_conn)
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        assert self.delegate is not None
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        assert self.delegate is not None
        self.delegate.finish()

    def on_connection_close(self) -> None:
        if self.delegate is not None:
            self.delegate.on_connection_close()


# ---------------------------------------------------------------------- local endpoints


class BaseHandler(web.RequestHandler):
    """JSON errors in the API's shape; methods not listed in :attr:`allowed` are 404."""

    allowed: ClassVar[frozenset[str]] = frozenset()
    proxy: ProxyServer

    def initialize(self) -> None:
        self.proxy = self.settings["proxy"]
        self.request_id: str | None = None
        self.admin_user: str | None = None

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header("Content-Type", "application/json")

    def prepare(self) -> None:
        if self.request.method not in self.allowed:
            self.fail(404, "not_found_error", "Not found.")

    def fail(self, status: int, error_type: str, message: str) -> None:
        self.request_id = new_request_id()
        self.clear()
        self.set_status(status)
        self.set_header("request-id", self.request_id)
        self.set_header("x-should-retry", "false")
        self.finish(error_body(error_type, message, self.request_id))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        # Tornado answers unknown methods with 405; the contract here is 404 for all.
        super().send_error(404 if status_code == 405 else status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        kinds = {400: "invalid_request_error", 404: "not_found_error", 413: "request_too_large"}
        self.request_id = new_request_id()
        self.set_header("request-id", self.request_id)
        if status_code < 500:
            self.set_header("x-should-retry", "false")
        message = http.client.responses.get(status_code, "Error")
        self.finish(error_body(kinds.get(status_code, "api_error"), message, self.request_id))

    def require_admin(self) -> bool:
        token = bearer_token(self.request.headers)
        if token is None:
            self.fail(401, "authentication_error", "Missing admin token.")
            return False
        try:
            claims = verify_token(self.proxy.config.token_secret, token, purpose=ADMIN)
        except InvalidToken as e:
            self.fail(401, "authentication_error", f"Invalid admin token ({e.reason}).")
            return False
        if self.proxy.store.is_revoked(claims):
            self.fail(401, "authentication_error", "This admin token was revoked.")
            return False
        self.admin_user = claims.user
        return True


class NotFoundHandler(BaseHandler):
    pass


class HelloHandler(BaseHandler):
    """The CLI's connection warm-up (``HEAD /``, ``HEAD /api/hello``): answered here."""

    allowed = frozenset({"HEAD"})

    def head(self) -> None:
        self.clear_header("Content-Type")
        self.finish()


class HealthHandler(BaseHandler):
    allowed = frozenset({"GET"})

    def get(self) -> None:
        self.finish({"status": "ok", "in_flight": self.proxy.in_flight})


class MetricsHandler(BaseHandler):
    allowed = frozenset({"GET"})

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.proxy.metrics.registry))


def _name(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise ValueError(f"{key} must be a non-empty string")
    return value


class RevokeHandler(BaseHandler):
    """``POST /admin/revoke`` ``{"session": s}`` or ``{"user": u}``, optional ``"expires"``."""

    allowed = frozenset({"POST"})

    async def post(self) -> None:
        if not self.require_admin():
            return
        try:
            body = json.loads(self.request.body)
            if not isinstance(body, dict):
                raise TypeError("body must be a JSON object")
            session, user = _name(body, "session"), _name(body, "user")
            if (session is None) == (user is None):
                raise ValueError('give exactly one of "session" or "user"')
            expires = body.get("expires")
            if expires is not None and (
                isinstance(expires, bool) or not isinstance(expires, (int, float))
            ):
                raise TypeError("expires must be a unix time")
        except (TypeError, ValueError) as e:
            self.fail(400, "invalid_request_error", str(e))
            return
        cancelled = await self.proxy.revoke(session=session, user=user, expires=expires)
        target = {"session": session} if session is not None else {"user": user}
        self.finish({"revoked": target, "cancelled": cancelled})


class UsageHandler(BaseHandler):
    """``GET /admin/usage?session=...`` and/or ``?user=...``: totals as JSON."""

    allowed = frozenset({"GET"})

    async def get(self) -> None:
        if not self.require_admin():
            return
        session = self.get_query_argument("session", None)
        user = self.get_query_argument("user", None)
        if not session and not user:
            self.fail(400, "invalid_request_error", "give ?session= and/or ?user=")
            return
        result: dict[str, Any] = {}
        if session:
            result["session"] = await self.proxy.store.query_session(session)
        if user:
            result["user"] = await self.proxy.store.query_user(user)
        self.finish(result)
