"""The local backend: a bubblewrap sandbox per terminal, on this machine.

``jupyter lab`` on a laptop, no cluster. Each terminal's program runs in a bubblewrap
process tree on its own PTY (see :mod:`.bwrap` for what the sandbox sees), and the
server runs the key proxy itself (:mod:`jupyter_claude_pods.embedded`): sandboxes get
a session token and reach the proxy only through its Unix socket.

:class:`LocalBackend` holds the settings and the order of things. The host side (this
run's state directory, what each sandbox binds, leftovers of a crashed run) is in
:mod:`.layout`; starting and stopping the bubblewrap process tree is in :mod:`.process`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Bool, Float, Integer, List, Unicode, default

from ...embedded import EmbeddedProxy
from ..base import ProgressCallback, Sandbox, SandboxBackend, SandboxError, SandboxStream
from ..spec import SandboxSpec, scrub_env
from .bwrap import LAUNCHER, BwrapOptions
from .layout import (
    ConfigProblem,
    Layout,
    SessionCourse,
    check_base,
    check_reachable,
    claude_binding,
    course_root_source,
    etc_entries,
    key_holders,
    make_run_dir,
    make_session_dir,
    make_state_dirs,
    policy_pieces,
    real_keys,
    relay_script,
    remove_tree,
    sandbox_can_read,
    sandbox_host_ids,
    session_course,
    sweep_leftovers,
    system_entries,
)
from .process import spawn, terminate
from .stream import PtyProcess, PtyStream

INSTALL_HINT = (
    "Install it with `apt-get install bubblewrap` (Debian/Ubuntu; `dnf install bubblewrap` "
    "on Fedora) and restart the Jupyter server"
)
#: Called with (token secret or None, admin URL, problem) once the embedded proxy ran.
ProxyReady = Callable[[bytes | None, str, str], None]


class LocalBackend(SandboxBackend):
    """Each sandbox is a bubblewrap process tree under a PTY on this machine."""

    kind = "local"

    bwrap_path = Unicode(
        "bwrap",
        config=True,
        help="""The bubblewrap executable (a name looked up on PATH, or a path). Without
        it the local backend is unavailable and terminals say how to install it.""",
    )
    home_base = Unicode(
        config=True,
        help="""Private state directory: sandbox homes and /tmp, the embedded proxy's socket
        and database. Default: /run/jupyter-claude-pods when the server runs as root, else
        $XDG_RUNTIME_DIR/jupyter-claude-pods, else <jupyter runtime dir>/claude-pods. An
        existing directory must belong to the server's user and not be group- or
        world-writable; as root it must be reachable (searchable) by ``host_uid``.""",
    )
    home_dir = Unicode(
        "/home/claude", config=True, help="The sandbox's home directory (inside the sandbox)."
    )
    working_dir = Unicode(
        "",
        config=True,
        help="Working directory of the sandbox program; empty = the course directory when "
        "the session has a course (or ``course_root`` is set), else the home directory.",
    )
    course_root = Unicode(
        "",
        config=True,
        help="""Host directory of course material, bound read-only at ``course_dir`` in every
        sandbox that is not a course terminal; empty = none. A course terminal (``POST
        /api/terminals`` with a ``course``) gets its own course's material there instead.""",
    )
    course_dir = Unicode(
        "/course", config=True, help="Where course material appears inside the sandbox."
    )
    sandbox_uid = Integer(1000, config=True, help="The uid of the sandbox user, inside it.")
    sandbox_gid = Integer(1000, config=True, help="The gid of the sandbox user, inside it.")
    host_uid = Integer(
        None,
        allow_none=True,
        config=True,
        help="""Host uid bubblewrap (and so every sandbox process) runs as when the server is
        root. Default 65534 (nobody); 0 is refused. Ignored (must be unset) when the
        server is not root: sandboxes then run as the server's user, seeing none of its
        files but the bound ones.""",
    )
    host_gid = Integer(
        None, allow_none=True, config=True, help="Host gid to go with ``host_uid`` (default 65534)."
    )
    forward_proxy = Bool(
        True,
        config=True,
        help="""Run the embedded key proxy and relay 127.0.0.1:``proxy_port_in_sandbox`` in
        each sandbox to it (ANTHROPIC_BASE_URL). Off: sandboxes get no proxy and no token.""",
    )
    proxy_port_in_sandbox = Integer(
        8787,
        config=True,
        help="Port the relay listens on in the sandbox's own loopback (ANTHROPIC_BASE_URL).",
    )
    python_path = Unicode(
        "/usr/bin/python3",
        config=True,
        help="""The system python3 that runs the relay inside the sandbox (it must lie in one
        of ``system_paths``; the server's virtualenv is not visible in the sandbox).""",
    )
    system_paths = List(
        Unicode(),
        default_value=["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt"],
        config=True,
        help="""Host system directories bound read-only (symlinks such as /bin -> usr/bin are
        reproduced as symlinks; missing ones are skipped). /etc is always provided.""",
    )
    start_timeout = Float(
        30.0, config=True, help="Seconds a sandbox may take to start before failing."
    )
    stop_grace = Float(
        2.0,
        config=True,
        help="Seconds between SIGHUP and SIGKILL when a sandbox is stopped.",
    )

    @default("command")
    def _default_command(self) -> list[str]:
        return [LAUNCHER]

    @default("home_base")
    def _default_home_base(self) -> str:
        if os.geteuid() == 0:
            return "/run/jupyter-claude-pods"
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime and Path(runtime).is_dir():
            return str(Path(runtime) / "jupyter-claude-pods")
        return str(Path(jupyter_runtime_dir()) / "claude-pods")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Set by the terminal manager: receives the embedded proxy's token secret.
        self.on_proxy_ready: ProxyReady | None = None
        self.proxy: EmbeddedProxy | None = None
        self._layout: Layout | None = None
        self._config_error: str | None = None
        self._lock_fd: int | None = None
        self._sandboxes: dict[str, Sandbox] = {}

    # ------------------------------------------------------------------ availability

    def resolved_bwrap(self) -> str | None:
        """Absolute path of the bubblewrap executable, or ``None`` if there is none."""
        path = self.bwrap_path
        if os.sep in path:
            return path if Path(path).is_file() and os.access(path, os.X_OK) else None
        return shutil.which(path)

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot work on this machine (``None``: it can)."""
        if self.resolved_bwrap() is None:
            return (
                f"bubblewrap is not installed (no `{self.bwrap_path}` executable found), and "
                f"local sandboxes need it. {INSTALL_HINT}, or set LocalBackend.bwrap_path."
            )
        return None

    # ------------------------------------------------------------------ lifecycle

    async def _startup(self) -> None:
        self._config_error = None
        try:
            layout = await asyncio.to_thread(self._prepare)
        except (ConfigProblem, OSError) as e:
            self._config_error = (
                str(e)
                if isinstance(e, ConfigProblem)
                else f"the local sandbox state directory could not be prepared: {e}"
            )
            self.log.error("claude-pods: %s", self._config_error)
            self._notify_proxy(None, "", "")
            return
        self._layout = layout
        proxy = EmbeddedProxy(
            layout.proxy_state,
            layout.sock_dir,
            socket_mode=0o600 if layout.host_ids is None else 0o666,
            log=self.log,
        )
        if self.forward_proxy:
            await proxy.start()
        self.proxy = proxy
        self._notify_proxy(proxy.secret, proxy.admin_url, proxy.problem)
        self.log.info(
            "claude-pods: local bubblewrap sandboxes (%s), state in %s, sandbox user %s",
            layout.bwrap,
            layout.run_dir,
            "the server's user" if layout.host_ids is None else f"uid {layout.host_ids[0]}",
        )

    def _notify_proxy(self, secret: bytes | None, admin_url: str, problem: str) -> None:
        if self.on_proxy_ready is not None:
            self.on_proxy_ready(secret, admin_url, problem)

    async def _shutdown(self) -> None:
        """Stop what is left, the proxy, and remove this run's state directory."""
        if self._sandboxes:
            await asyncio.gather(
                *(self.stop(s) for s in list(self._sandboxes.values())), return_exceptions=True
            )
        if self.proxy is not None:
            await self.proxy.stop()
            self.proxy = None
        layout, self._layout = self._layout, None
        if layout is not None:
            await asyncio.to_thread(remove_tree, layout.run_dir)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _prepare(self) -> Layout:
        """Check the machine, create this run's state directory (blocking: in a thread).

        Everything that can be refused is checked before anything is created.
        """
        bwrap = self.resolved_bwrap()
        if bwrap is None:
            raise ConfigProblem(self.unavailable_reason() or "bubblewrap is missing")
        host_ids = sandbox_host_ids(self.host_uid, self.host_gid)
        dir_mode = 0o700 if host_ids is None else 0o711
        base = Path(self.home_base).absolute()
        check_base(base, dir_mode)

        system = system_entries(self.system_paths)
        etc = etc_entries()
        policy = policy_pieces(self.log)
        forwarder = relay_script(self.python_path, system, self.forward_proxy)
        claude_source, claude_path = claude_binding(policy.get("find_claude"), system, self.log)
        course_source = course_root_source(self.course_root)
        if host_ids is not None:
            wanted: list[tuple[str, str | None, int]] = [
                ("the state directory (LocalBackend.home_base)", str(base), stat.S_IXOTH),
                ("the relay script", forwarder, stat.S_IROTH),
                ("the policy directory", policy.get("policy_dir"), stat.S_IXOTH),
                ("the launcher", policy.get("launcher"), stat.S_IROTH),
                ("the course directory", course_source, stat.S_IXOTH),
                ("the Claude Code CLI", claude_source, stat.S_IROTH),
            ]
            check_reachable(wanted, *host_ids)

        hidden = key_holders(real_keys(), sandbox_can_read(host_ids))
        for holder in hidden:
            self.log.warning(
                "claude-pods: %s holds the real Anthropic key and sandboxes could read it; "
                "it is hidden from them, but keep the key where only the server can read it",
                holder,
            )

        run_dir, self._lock_fd = make_run_dir(base, dir_mode)
        sessions, proxy_state, sock_dir, empty = make_state_dirs(run_dir, dir_mode)
        return Layout(
            bwrap=bwrap,
            run_dir=run_dir,
            sessions=sessions,
            proxy_state=proxy_state,
            sock_dir=sock_dir,
            host_ids=host_ids,
            dir_mode=dir_mode,
            system=tuple(system),
            etc=tuple(etc),
            policy_dir=policy.get("policy_dir"),
            launcher=policy.get("launcher"),
            policy_env=policy.get("env") or {},
            seed_home=policy.get("seed_home"),
            forwarder=forwarder,
            python=self.python_path,
            claude_source=claude_source,
            claude_path=claude_path,
            course_source=course_source,
            working_dir=self.working_dir or (self.course_dir if course_source else self.home_dir),
            hidden=tuple(hidden),
            empty_file=str(empty),
        )

    def _ready(self) -> Layout:
        if self._config_error:
            raise SandboxError(self._config_error, reason="NoBackend")
        assert self._layout is not None
        return self._layout

    # ------------------------------------------------------------------ sandboxes

    async def start(self, spec: SandboxSpec, progress: ProgressCallback) -> Sandbox:
        await self.startup()
        layout = self._ready()
        began = time.perf_counter()
        name = f"sandbox-{spec.session_id}"
        progress(f"creating sandbox {name}…")
        session_dir = layout.sessions / spec.session_id
        sandbox = Sandbox(spec=spec, name=name, extra={"dir": session_dir})
        self._sandboxes[name] = sandbox
        try:
            course = await asyncio.to_thread(
                session_course, layout, spec, self.working_dir or self.course_dir
            )
            await asyncio.to_thread(make_session_dir, layout, session_dir, course)
            progress("starting…")
            options = self._options(layout, session_dir, course)
            await spawn(sandbox, options, layout.host_ids, self.start_timeout)
        except BaseException:
            await self.stop(sandbox)
            raise
        self.log.info(
            "claude-pods: started %s for user %s (pid %s) in %.0f ms",
            name,
            spec.user,
            sandbox.extra["pid"],
            (time.perf_counter() - began) * 1000,
        )
        return sandbox

    def _options(self, layout: Layout, session_dir: Path, course: SessionCourse) -> BwrapOptions:
        secrets_ = self.proxy.key_values() if self.proxy is not None else ()
        env_key = os.environ.get("ANTHROPIC_API_KEY", "").strip()
        secret_values = tuple({*secrets_, *([env_key] if env_key else [])})
        proxy_on = self.proxy is not None and self.proxy.running
        return BwrapOptions(
            bwrap=layout.bwrap,
            command=tuple(self.command),
            home_source=str(session_dir / "home"),
            tmp_source=str(session_dir / "tmp"),
            system=layout.system,
            etc=layout.etc,
            home_dir=self.home_dir,
            working_dir=course.working_dir,
            uid=self.sandbox_uid,
            gid=self.sandbox_gid,
            policy_dir=layout.policy_dir,
            course_source=course.source,
            course_dir=self.course_dir,
            course_hidden=course.hidden,
            proxy_socket=str(self.proxy.socket_path) if proxy_on and self.proxy else None,
            proxy_port=self.proxy_port_in_sandbox,
            forwarder=layout.forwarder,
            python=layout.python,
            launcher=layout.launcher,
            claude_source=layout.claude_source,
            claude_path=layout.claude_path,
            policy_env=layout.policy_env,
            hidden=layout.hidden,
            empty_file=layout.empty_file,
            extra_env=scrub_env(self.extra_env, secret_values),
            secrets=secret_values,
        )

    async def connect(self, sandbox: Sandbox) -> SandboxStream:
        process: PtyProcess | None = sandbox.extra.get("process")
        if process is None or process.master is None or sandbox.extra.get("stopping"):
            raise SandboxError("the sandbox is gone", reason="Gone")
        previous: PtyStream | None = sandbox.extra.get("stream")
        if previous is not None:  # one reader of the PTY at a time
            await previous.close()
        stream = PtyStream(process)
        sandbox.extra["stream"] = stream
        return stream

    async def stop(self, sandbox: Sandbox) -> None:
        task: asyncio.Future[None] | None = sandbox.extra.get("stop")
        if task is None:
            sandbox.extra["stopping"] = True
            task = sandbox.extra["stop"] = asyncio.ensure_future(self._stop(sandbox))
        await asyncio.shield(task)

    async def _stop(self, sandbox: Sandbox) -> None:
        """End the sandbox's processes (:func:`.process.terminate`), remove its session
        directory, forget it. Never raises: a failure is logged."""
        try:
            await terminate(sandbox, self.stop_grace, self.log)
            session_dir: Path = sandbox.extra["dir"]
            await asyncio.to_thread(remove_tree, session_dir)
        except Exception:
            self.log.exception("claude-pods: stopping %s failed", sandbox.name)
        finally:
            self._sandboxes.pop(sandbox.name, None)
        self.log.info("claude-pods: stopped %s", sandbox.name)

    # ------------------------------------------------------------------ leftovers

    async def sweep(self) -> int:
        """Remove state directories of earlier runs whose server is gone; count their sandboxes.

        Their processes already died with that server (``--die-with-parent``); what is
        left is files: homes, /tmp contents, a proxy socket and database.
        """
        await self.startup()
        if self._layout is None:
            return 0
        return await asyncio.to_thread(sweep_leftovers, self._layout.run_dir, self.log)
