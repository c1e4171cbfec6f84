"""The terminal manager JupyterLab's stock Terminal talks to, backed by sandboxes.

Plugged in through ``TerminalsExtensionApp.terminal_manager_class``, so the stock
REST API, websocket, auth resource, culler and activity tracking stay in charge;
what changes is what a "terminal" is (:class:`SandboxTerminal`) and that creating
and deleting one never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import os
import re
import secrets
import typing as t

from jupyter_server._tz import isoformat
from jupyter_server_terminals.terminalmanager import RUNNING_TOTAL, TerminalManager
from tornado import web
from traitlets import Enum, Float, Integer, Unicode, default

from ..credentials import SessionCredentials
from ..events import SANDBOX_SCHEMA_ID
from ..sandbox.base import SandboxBackend
from ..sandbox.spec import SandboxSpec
from .buffers import InlineExecutor
from .courses import CourseSession, MarkerObserver, course_env, course_mount
from .terminal import SandboxTerminal

_NAME = re.compile(r"^\w+$")
BACKEND_ENV = "CLAUDE_PODS_BACKEND"


class SandboxTerminalManager(TerminalManager):
    """Each terminal is a sandbox session; see :mod:`jupyter_claude_pods.terminals.terminal`."""

    backend = Enum(
        ["auto", "kubernetes", "local"],
        "auto",
        config=True,
        help=f"""Where sandboxes run. ``kubernetes``: a pod per terminal. ``local``: a
        bubblewrap sandbox on this machine. ``auto``: kubernetes when a kubeconfig or an
        in-cluster configuration is found, else local. The environment variable
        ``{BACKEND_ENV}`` overrides this setting.""",
    )
    max_sandboxes = Integer(
        50, config=True, help="Most sandboxes this server runs at once (all users); 0 = no cap."
    )
    max_sandboxes_per_user = Integer(
        3, config=True, help="Most sandboxes one user may run at once; 0 = no cap."
    )
    replay_buffer_chars = Integer(
        1 << 20,
        config=True,
        help="Characters of recent output kept per terminal and replayed when a browser reconnects.",
    )
    coalesce_interval = Float(
        0.005,
        config=True,
        help="""Seconds over which bursts of output are merged into one websocket message.
        The first output after a quiet spell is always sent at once.""",
    )
    default_owner = Unicode(
        config=True,
        help="Owner of terminals created without an authenticated user (the server's user).",
    )

    @default("default_owner")
    def _default_owner(self) -> str:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    def __init__(self, **kwargs: t.Any) -> None:
        kwargs.setdefault("blocking_io_executor", InlineExecutor())
        super().__init__(**kwargs)
        self.terminals: dict[str, SandboxTerminal] = {}  # type: ignore[assignment]
        self.sandbox_backend = self._make_backend()
        self.credentials = SessionCredentials(
            parent=self, fallback_admin_url=getattr(self.sandbox_backend, "proxy_url", "")
        )
        self._reaping: set[asyncio.Task[None]] = set()
        self._started: asyncio.Task[None] | None = None
        #: Pending recordings of tutor markers (strong references; see MarkerObserver).
        self._marker_tasks: set[asyncio.Task[None]] = set()

    def _make_backend(self) -> SandboxBackend:
        from ..sandbox.kubernetes.client import cluster_configured

        choice = os.environ.get(BACKEND_ENV, "").strip().lower() or self.backend
        if choice not in ("auto", "kubernetes", "local"):
            self.log.warning(
                "claude-pods: ignoring %s=%r (not auto|kubernetes|local)", BACKEND_ENV, choice
            )
            choice = self.backend
        if choice == "auto":
            choice = "kubernetes" if cluster_configured() else "local"
        if choice == "kubernetes":
            from ..sandbox.kubernetes.backend import KubernetesBackend

            return KubernetesBackend(parent=self)
        from ..sandbox.local import LocalBackend
        from ..sandbox.unavailable import UnavailableBackend

        local = LocalBackend(parent=self)
        missing = local.unavailable_reason()
        if missing is None:
            # The local backend runs its own key proxy and hands us its token secret.
            local.on_proxy_ready = lambda secret, url, problem: self.credentials.use_secret(
                secret, url, problem
            )
            return local
        self.log.error("claude-pods: %s", missing)
        unavailable = UnavailableBackend(parent=self)
        unavailable.message = missing
        return unavailable

    async def ensure_started(self) -> None:
        """Start the backend and delete leftovers of a previous run, exactly once.

        Every sandbox start awaits this, so the orphan sweep can never delete a pod of
        a terminal of this run.
        """
        if self._started is None:
            self._started = asyncio.create_task(self._startup())
        await asyncio.shield(self._started)

    async def _startup(self) -> None:
        await self.sandbox_backend.startup()  # first: an embedded proxy sets the secret
        await self.credentials.load()
        try:
            swept = await self.sandbox_backend.sweep()
        except Exception:
            self.log.exception("claude-pods: sweeping leftover sandboxes failed")
        else:
            if swept:
                self.log.warning(
                    "claude-pods: removed %d sandbox(es) left by an earlier run", swept
                )

    # ------------------------------------------------------------------ the stock API

    def create(self, **kwargs: t.Any) -> dict[str, t.Any]:
        """Register a terminal and start its sandbox in the background.

        Synchronous like the stock manager (the REST handler does not await it), which
        also makes the cap check and the registration atomic: nothing else runs on the
        event loop in between.
        """
        owner = str(kwargs.pop("owner", None) or self.default_owner)
        course: CourseSession | None = kwargs.pop("course", None)
        name = kwargs.get("name") or self._next_name()
        if not isinstance(name, str) or not _NAME.match(name):
            raise web.HTTPError(400, "terminal name must be letters, digits or '_'")
        existing = self.terminals.get(name)
        if existing is not None:
            if existing.owner != owner:
                raise web.HTTPError(409, f"terminal name {name} is in use")
            return self.get_terminal_model(name)
        self._check_caps(owner)
        spec = SandboxSpec(session_id=secrets.token_hex(4), user=owner, terminal=name)
        if course is not None:
            spec = dataclasses.replace(
                spec,
                course=course_mount(course.course),
                env={**spec.env, **course_env(course.course, course.stage)},
            )
        term = SandboxTerminal(
            name,
            owner,
            spec,
            self.sandbox_backend,
            ready=self.ensure_started,
            prepare=self._prepare_spec,
            on_exit=self._on_session_end,
            on_state=self._announce_state,
            log=self.log,
            replay_chars=self.replay_buffer_chars,
            coalesce_interval=self.coalesce_interval,
        )
        if course is not None:
            term.course, term.stage = course.course.id, course.stage
            if course.course.trust_tutor_markers:
                term.observers.append(
                    MarkerObserver(course, owner, spec.session_id, self._marker_tasks, self.log)
                )
        self.terminals[name] = term
        term.start()
        RUNNING_TOTAL.inc()
        self._initialize_culler()
        if course is None:
            self.log.info("claude-pods: terminal %s created for user %s", name, owner)
        else:
            self.log.info(
                "claude-pods: terminal %s created for user %s: course %s, stage %d",
                name,
                owner,
                course.course.id,
                course.stage,
            )
        return self.get_terminal_model(name)

    def _next_name(self) -> str:
        i = 1
        while str(i) in self.terminals:
            i += 1
        return str(i)

    def _check_caps(self, owner: str) -> None:
        active = [term for term in self.terminals.values() if term.active]
        if self.max_sandboxes and len(active) >= self.max_sandboxes:
            raise web.HTTPError(
                429, f"this server already runs its maximum of {self.max_sandboxes} sandboxes"
            )
        mine = sum(1 for term in active if term.owner == owner)
        if self.max_sandboxes_per_user and mine >= self.max_sandboxes_per_user:
            raise web.HTTPError(
                429,
                f"you already have {mine} sandbox terminals open (the limit is "
                f"{self.max_sandboxes_per_user}); close one first",
            )

    def get_terminal(self, term_name: str) -> SandboxTerminal:  # type: ignore[override]
        """The existing terminal; unlike terminado, never create a local PTY for a new name."""
        self._check_terminal(term_name)
        return self.terminals[term_name]

    def get_terminal_model(self, name: str) -> dict[str, t.Any]:
        self._check_terminal(name)
        term = self.terminals[name]
        return {
            "name": name,
            "last_activity": isoformat(term.last_activity),
            "claude_pods": {
                "state": term.state,
                "reason": term.reason,
                "sandbox": term.sandbox.name if term.sandbox else None,
                "course": term.course,
                "stage": term.stage,
            },
        }

    def list_for(self, owner: str | None) -> list[dict[str, t.Any]]:
        """Models of the terminals of ``owner`` (all of them for ``None``)."""
        models = [
            self.get_terminal_model(name)
            for name, term in self.terminals.items()
            if owner is None or term.owner == owner
        ]
        RUNNING_TOTAL.set(len(self.terminals))
        return models

    def list(self) -> list[dict[str, t.Any]]:
        return self.list_for(None)

    async def terminate(self, name: str, force: bool = False) -> None:
        """Forget the terminal now; its sandbox is deleted in the background.

        terminado's own terminate sleeps on the event loop between signals (about 1 s
        of frozen terminals per 10 deletions); here nothing waits on the loop.
        """
        self._check_terminal(name)
        term = self.terminals.pop(name)
        RUNNING_TOTAL.dec()
        term.set_state("terminated")
        term.disconnect_clients()
        self._reap(term)
        self.log.info("claude-pods: terminal %s of user %s terminated", name, term.owner)

    async def terminate_all(self) -> None:
        """Terminate every terminal and wait until their sandboxes are deleted."""
        for name in list(self.terminals):
            await self.terminate(name, force=True)
        await self.wait_reaped()

    async def wait_reaped(self) -> None:
        """Wait for every pending sandbox deletion."""
        while self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)

    async def wait_markers_recorded(self) -> None:
        """Wait until every tutor marker seen so far is recorded (or failed to be)."""
        while self._marker_tasks:
            await asyncio.gather(*self._marker_tasks, return_exceptions=True)

    async def shutdown(self) -> None:
        """Delete every sandbox and close the backend (server stop)."""
        await self.terminate_all()
        await self.wait_markers_recorded()
        if self._culler_callback is not None:
            self._culler_callback.stop()
        await self.sandbox_backend.shutdown()

    def _prepare_spec(self, spec: SandboxSpec) -> tuple[SandboxSpec, str]:
        """Add the session's proxy token (a note for the terminal when there is none)."""
        env = self.credentials.session_env(spec)
        if not env:
            return spec, self.credentials.problem
        return dataclasses.replace(spec, env={**spec.env, **env}), ""

    async def _close(self, term: SandboxTerminal) -> None:
        await term.aclose()
        await self.credentials.revoke(term.spec)

    def _announce_state(self, term: SandboxTerminal) -> None:
        """Emit a ``sandbox`` event for the terminal's new state (the panel listens).

        Only what a listing of the terminal shows: never its spec's environment (which
        holds the session token). Without the server's event logger (a manager built
        outside a server), nothing is emitted. Errors propagate to the terminal, which
        logs them.
        """
        event_logger = getattr(self.parent, "event_logger", None)
        if event_logger is None:
            return
        event_logger.emit(
            schema_id=SANDBOX_SCHEMA_ID,
            data={
                "terminal": term.term_name,
                "user": term.owner,
                "state": term.state,
                "reason": term.reason or None,
                "course": term.course,
                "stage": term.stage,
            },
        )

    def _reap(self, term: SandboxTerminal) -> None:
        task = asyncio.create_task(self._close(term))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    def _on_session_end(self, term: SandboxTerminal) -> None:
        """The program exited (the terminal goes away, as a local shell's would) or failed.

        A failed terminal stays listed so the person can read why; its sandbox is
        deleted at once either way.
        """
        if term.state == "exited" and self.terminals.get(term.term_name) is term:
            del self.terminals[term.term_name]
            RUNNING_TOTAL.dec()
            term.disconnect_clients()
        self._reap(term)
