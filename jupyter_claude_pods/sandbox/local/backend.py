"""The local backend: a bubblewrap sandbox per terminal, on this machine.

``jupyter lab`` on a laptop, no cluster. Each terminal's program runs in a bubblewrap
process tree on its own PTY (see :mod:`.bwrap` for what the sandbox sees), and the
server runs the key proxy itself (:mod:`jupyter_claude_pods.embedded`): sandboxes get
a session token and reach the proxy only through its Unix socket.

State lives under ``home_base``, one directory per server run::

    <home_base>/<pid>-<random>/      this run (flock'ed while the server lives)
        lock
        sessions/<session>/home      the sandbox's home, bound read-write
        sessions/<session>/tmp       its /tmp
        proxy/                       the embedded proxy's usage database (private)
        sock/proxy.sock              the proxy's socket, bound into each sandbox

A run's directory is removed when the server stops; after a crash the next start
removes every directory whose lock nobody holds (its sandboxes died with the server,
``--die-with-parent``). Several servers can share a ``home_base``.

When the server runs as root, bubblewrap is started as an unprivileged host user
(``host_uid``, ``nobody`` by default): otherwise the sandbox's "uid 1000" would be host
root for file permissions and could read every root-only file of the bound system
directories (``/etc/shadow``, SSH host keys). The state directories are then made
traversable (mode 0711) so that this user's bubblewrap can reach them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import getpass
import json
import os
import secrets
import shutil
import signal
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Bool, Float, Integer, List, Unicode, default

from ...embedded import EmbeddedProxy
from ..base import ProgressCallback, Sandbox, SandboxBackend, SandboxError, SandboxStream
from ..spec import SandboxSpec, scrub_env
from .bwrap import CLAUDE_DIR, LAUNCHER, BwrapOptions, HostEntry, bwrap_parts, etc_files
from .stream import PtyProcess, PtyStream

#: The host user an unprivileged sandbox runs as when the server is root.
NOBODY = 65534
#: Shorter "keys" are not searched for (they would match by accident).
MIN_KEY_BYTES = 8
INSTALL_HINT = (
    "Install it with `apt-get install bubblewrap` (Debian/Ubuntu; `dnf install bubblewrap` "
    "on Fedora) and restart the Jupyter server"
)
#: Called with (token secret or None, admin URL, problem) once the embedded proxy ran.
ProxyReady = Callable[[bytes | None, str, str], None]


@dataclasses.dataclass(frozen=True)
class _SessionCourse:
    """The course material one session binds, as checked on the host at its start."""

    #: Host directory bound at ``course_dir`` (``None``: no course material).
    source: str | None
    #: Names in it to cover with an empty file (they exist there as regular files).
    hidden: tuple[str, ...]
    #: The program's working directory (also the directory the seeded home trusts).
    working_dir: str


class _ConfigProblem(Exception):
    """The backend cannot run here; the message is shown in every terminal."""


@dataclasses.dataclass(frozen=True)
class _Layout:
    """What :meth:`LocalBackend._prepare` found and created (fixed for the server's run)."""

    bwrap: str
    run_dir: Path
    sessions: Path
    proxy_state: Path
    sock_dir: Path
    #: (uid, gid) bubblewrap drops to, or ``None`` to run as the server's user.
    host_ids: tuple[int, int] | None
    dir_mode: int
    system: tuple[HostEntry, ...]
    etc: tuple[HostEntry, ...]
    policy_dir: str | None
    launcher: str | None
    policy_env: dict[str, str]
    seed_home: Callable[[Path, str], None] | None
    forwarder: str | None
    python: str
    claude_source: str | None
    claude_path: str | None
    course_source: str | None
    working_dir: str
    #: Host files under /etc holding the real key, hidden from sandboxes.
    hidden: tuple[str, ...]
    empty_file: str


def _traversal_problem(path: Path, uid: int, gid: int, need: int = stat.S_IXOTH) -> str | None:
    """The first directory on *path*'s way that *uid*/*gid* cannot search, if any.

    *need* is the "other" bit required of *path* itself (search, or read for a file).
    """
    path = path.absolute()
    parents = list(reversed(path.parents))
    for current, bits in [*((p, stat.S_IXOTH) for p in parents), (path, need)]:
        st = current.stat()
        if st.st_uid == uid:
            mask = bits << 6
        elif st.st_gid == gid:
            mask = bits << 3
        else:
            mask = bits
        if not st.st_mode & mask:
            return str(current)
    return None


def _remove_tree(path: Path) -> None:
    """``rm -rf`` that copes with directories a sandbox made unwritable (``chmod 0``)."""

    def retry(function: Callable[..., Any], failed: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)  # noqa: PTH101, PTH120 - str paths
        if os.path.isdir(failed) and not os.path.islink(failed):  # noqa: PTH112, PTH114
            with contextlib.suppress(OSError):
                os.chmod(failed, 0o700)  # noqa: PTH101
            shutil.rmtree(failed, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                function(failed)

    if path.is_symlink() or not path.exists():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    shutil.rmtree(path, onerror=retry)


def key_holders(
    keys: Iterable[bytes], readable: Callable[[str, os.stat_result], bool], root: str = "/etc"
) -> list[str]:
    """Files under *root* that a sandbox could read and that hold one of *keys*.

    Why: ``/etc`` is shown to sandboxes (read-only), and a key exported system-wide
    (``/etc/environment``, ``/etc/profile.d/…``) would be readable there. Files over
    1 MiB are skipped (keys live in small text files).
    """
    wanted = [k for k in keys if len(k) >= MIN_KEY_BYTES]
    found: list[str] = []
    if not wanted:
        return found
    for parent, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(parent, name)  # noqa: PTH118 - os.walk yields str
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_size > 1 << 20:
                    continue
                if not readable(path, st):
                    continue
                data = Path(path).read_bytes()
            except OSError:
                continue
            if any(k in data for k in wanted):
                found.append(path)
    return found


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(Path(root) / name, uid, gid)


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding *data*, positioned at its start."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _read_available(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _shown(output: bytes, limit: int = 600) -> str:
    """Terminal output as one displayable line (control characters dropped)."""
    text = output.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text.replace("\r", "").strip())
    text = " ".join(text.split())
    return text[-limit:] if text else "no message"


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
        self._layout: _Layout | None = None
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
        except (_ConfigProblem, OSError) as e:
            self._config_error = (
                str(e)
                if isinstance(e, _ConfigProblem)
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
            await asyncio.to_thread(_remove_tree, layout.run_dir)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _prepare(self) -> _Layout:
        """Check the machine, create this run's state directory (blocking: in a thread).

        Everything that can be refused is checked before anything is created.
        """
        bwrap = self.resolved_bwrap()
        if bwrap is None:
            raise _ConfigProblem(self.unavailable_reason() or "bubblewrap is missing")
        host_ids = self._host_ids()
        dir_mode = 0o700 if host_ids is None else 0o711
        base = Path(self.home_base).absolute()
        self._check_base(base, dir_mode)

        system = []
        for name in self.system_paths:
            path = Path(name)
            if path.is_symlink():
                system.append(HostEntry(name, str(path.readlink())))
            elif path.is_dir():
                system.append(HostEntry(name))
        etc = []
        for entry in sorted(os.scandir("/etc"), key=lambda e: e.name):
            if entry.is_symlink():
                etc.append(HostEntry(entry.path, str(Path(entry.path).readlink())))
            elif entry.stat(follow_symlinks=False).st_mode & stat.S_IROTH:
                etc.append(HostEntry(entry.path))  # root-only files (shadow…) stay out

        policy = self._policy()
        python = self.python_path
        in_system = any(
            python.startswith(e.path.rstrip("/") + "/") for e in system if e.symlink is None
        )
        forwarder: str | None = str(Path(__file__).with_name("forwarder.py"))
        if not (in_system and os.access(python, os.X_OK)):
            if self.forward_proxy:
                raise _ConfigProblem(
                    f"{python} is needed inside the sandbox to relay the key proxy, but it "
                    "is not installed or not under LocalBackend.system_paths: install "
                    "python3 or set LocalBackend.python_path"
                )
            forwarder = None
        claude_source, claude_path = self._claude(policy.get("find_claude"), system)
        course_source = None
        if self.course_root:
            course = Path(self.course_root).absolute()
            if not course.is_dir():
                raise _ConfigProblem(f"the course directory {course} does not exist")
            course_source = str(course)
        if host_ids is not None:
            wanted: list[tuple[str, str | None, int]] = [
                ("the state directory (LocalBackend.home_base)", str(base), stat.S_IXOTH),
                ("the relay script", forwarder, stat.S_IROTH),
                ("the policy directory", policy.get("policy_dir"), stat.S_IXOTH),
                ("the launcher", policy.get("launcher"), stat.S_IROTH),
                ("the course directory", course_source, stat.S_IXOTH),
                ("the Claude Code CLI", claude_source, stat.S_IROTH),
            ]
            self._check_reachable(wanted, *host_ids)

        hidden = key_holders(self._real_keys(), self._sandbox_can_read(host_ids))
        for holder in hidden:
            self.log.warning(
                "claude-pods: %s holds the real Anthropic key and sandboxes could read it; "
                "it is hidden from them, but keep the key where only the server can read it",
                holder,
            )

        run_dir = self._make_run_dir(base, dir_mode)
        sessions = run_dir / "sessions"
        proxy_state = run_dir / "proxy"
        sock_dir = run_dir / "sock"
        empty = run_dir / "empty"
        try:
            for d, mode in ((sessions, dir_mode), (proxy_state, 0o700), (sock_dir, dir_mode)):
                d.mkdir(mode=mode)
                d.chmod(mode)
            empty.touch(mode=0o444)
            empty.chmod(0o444)
        except BaseException:
            _remove_tree(run_dir)
            raise
        return _Layout(
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
            python=python,
            claude_source=claude_source,
            claude_path=claude_path,
            course_source=course_source,
            working_dir=self.working_dir or (self.course_dir if course_source else self.home_dir),
            hidden=tuple(hidden),
            empty_file=str(empty),
        )

    @staticmethod
    def _real_keys() -> list[bytes]:
        """The real key as the embedded proxy will load it (environment or key file)."""
        keys = [os.environ.get("ANTHROPIC_API_KEY", "").strip().encode()]
        key_file = os.environ.get("CLAUDE_PODS_KEY_FILE")
        if key_file:
            with contextlib.suppress(OSError):
                keys.append(Path(key_file).read_bytes().strip())
        return [k for k in keys if k]

    @staticmethod
    def _sandbox_can_read(
        host_ids: tuple[int, int] | None,
    ) -> Callable[[str, os.stat_result], bool]:
        if host_ids is None:  # sandboxes run as the server's user
            return lambda path, _st: os.access(path, os.R_OK)
        uid, gid = host_ids

        def readable(_path: str, st: os.stat_result) -> bool:
            if st.st_uid == uid:
                return bool(st.st_mode & stat.S_IRUSR)
            if st.st_gid == gid:
                return bool(st.st_mode & stat.S_IRGRP)
            return bool(st.st_mode & stat.S_IROTH)

        return readable

    def _host_ids(self) -> tuple[int, int] | None:
        euid = os.geteuid()
        if euid != 0:
            if self.host_uid not in (None, euid):
                raise _ConfigProblem(
                    "LocalBackend.host_uid can only be set when the server runs as root"
                )
            return None
        uid = NOBODY if self.host_uid is None else self.host_uid
        gid = NOBODY if self.host_gid is None else self.host_gid
        if uid == 0 or gid == 0:
            raise _ConfigProblem(
                "LocalBackend.host_uid/host_gid 0 would let sandboxes read every root-only "
                "file; pick an unprivileged user"
            )
        return uid, gid

    def _check_base(self, base: Path, mode: int) -> None:
        try:
            base.mkdir(parents=True, mode=mode)
        except FileExistsError:
            pass
        else:
            base.chmod(mode)
            return
        st = base.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise _ConfigProblem(
                f"the state directory {base} (LocalBackend.home_base) must be a directory of "
                f"user {getpass.getuser()} that no one else can write to"
            )

    def _make_run_dir(self, base: Path, mode: int) -> Path:
        """This run's directory, created with its lock already held (so a concurrent
        sweep by another server never mistakes it for a leftover)."""
        name = f"{os.getpid()}-{secrets.token_hex(3)}"
        staging = base / f".new-{name}"
        staging.mkdir(mode=mode)
        staging.chmod(mode)
        fd = os.open(staging / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        final = base / name
        staging.rename(final)
        self._lock_fd = fd
        return final

    @staticmethod
    def _check_reachable(wanted: Iterable[tuple[str, str | None, int]], uid: int, gid: int) -> None:
        """As root, bubblewrap runs as *uid*: everything it binds must be reachable."""
        for what, path, need in wanted:
            if path is None:
                continue
            blocked = _traversal_problem(Path(path), uid, gid, need)
            if blocked is not None:
                raise _ConfigProblem(
                    f"{what} {path} is not reachable by the sandbox user (uid {uid}): "
                    f"{blocked} is not accessible to it; use paths every user can read"
                )

    def _policy(self) -> dict[str, Any]:
        """The policy module's pieces; tolerated missing (then: no policy bound)."""
        try:
            from ... import policy
        except ImportError:
            self.log.warning("claude-pods: jupyter_claude_pods.policy is missing: no policy")
            return {}
        return {
            "policy_dir": str(policy.POLICY_DIR),
            "launcher": str(policy.LAUNCHER),
            "env": dict(policy.sandbox_env()),
            "seed_home": policy.seed_home,
            "find_claude": policy.find_claude,
        }

    def _claude(
        self, find: Callable[[], str | None] | None, system: Iterable[HostEntry]
    ) -> tuple[str | None, str | None]:
        """(what to bind at CLAUDE_DIR, CLAUDE_PODS_CLAUDE_BIN inside) for the CLI.

        A CLI under a bound system directory is used where it is; a native binary
        elsewhere is bound alone, anything else (a script) with its directory.
        """
        found = find() if find is not None else None
        if not found:
            self.log.warning(
                "claude-pods: the Claude Code CLI was not found (CLAUDE_PODS_CLAUDE_BIN, PATH)"
            )
            return None, None
        real = os.path.realpath(found)
        for entry in system:
            root = entry.path.rstrip("/") + "/"
            if entry.symlink is None and real.startswith(root):
                return None, real
        try:
            with Path(real).open("rb") as f:
                native = f.read(4) == b"\x7fELF"
        except OSError as e:
            self.log.warning("claude-pods: cannot read the Claude Code CLI %s: %s", real, e)
            return None, None
        if native:
            return real, CLAUDE_DIR
        return str(Path(real).parent), f"{CLAUDE_DIR}/{Path(real).name}"

    def _ready(self) -> _Layout:
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
            course = await asyncio.to_thread(self._session_course, layout, spec)
            await asyncio.to_thread(self._make_session_dir, layout, session_dir, course)
            progress("starting…")
            await self._spawn(sandbox, layout, course)
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

    def _session_course(self, layout: _Layout, spec: SandboxSpec) -> _SessionCourse:
        """What this session binds at ``course_dir``: its own course, else ``course_root``.

        Checked at each start (blocking: in a thread) because courses change while the
        server runs. Only the material directory is bound, never the course directory
        with its manifest; a hidden name is covered only if it is a regular file (a
        directory or symlink there could not be covered safely, so it is refused).
        """
        course = spec.course
        if course is None:
            return _SessionCourse(layout.course_source, (), layout.working_dir)
        material = Path(course.host_path)
        if not material.is_dir():
            raise SandboxError(
                f"the material of course {course.id} is missing on the server", reason="NoCourse"
            )
        hidden = []
        for name in course.hidden:
            try:
                st = (material / name).lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                raise SandboxError(
                    f"course {course.id}: {name} in its material is not a regular file, so it "
                    "cannot be hidden from the sandbox",
                    reason="BadCourse",
                )
            hidden.append(name)
        if layout.host_ids is not None:
            try:
                self._check_reachable(
                    [("the course material", str(material), stat.S_IXOTH)], *layout.host_ids
                )
            except _ConfigProblem as e:
                raise SandboxError(str(e), reason="BadCourse") from None
        return _SessionCourse(str(material), tuple(hidden), self.working_dir or self.course_dir)

    def _make_session_dir(self, layout: _Layout, path: Path, course: _SessionCourse) -> None:
        path.mkdir(mode=layout.dir_mode)
        path.chmod(layout.dir_mode)
        home, tmp = path / "home", path / "tmp"
        home.mkdir(mode=0o700)
        tmp.mkdir(mode=0o700)
        if layout.seed_home is not None:
            layout.seed_home(home, course.working_dir)
        if layout.claude_path is not None:
            # Where a native install keeps its command; without it the CLI warns at every
            # start that "claude command at ~/.local/bin/claude [is] missing or broken".
            local_bin = home / ".local" / "bin"
            local_bin.mkdir(parents=True, mode=0o755)
            (local_bin / "claude").symlink_to(layout.claude_path)
        if layout.host_ids is not None:
            _chown_tree(home, *layout.host_ids)
            os.chown(tmp, *layout.host_ids)

    def _options(self, layout: _Layout, session_dir: Path, course: _SessionCourse) -> BwrapOptions:
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

    async def _spawn(self, sandbox: Sandbox, layout: _Layout, course: _SessionCourse) -> None:
        """Start bwrap on a PTY and wait until the program is about to run."""
        spec = sandbox.spec
        options = self._options(layout, sandbox.extra["dir"], course)
        passed: list[int] = []  # the child's copies; ours are closed once it runs
        kept: list[int] = []  # our read ends, closed when started
        try:
            files = {dest: _memfd(dest, data) for dest, data in etc_files(options).items()}
            passed += files.values()
            info_r, info_w = os.pipe()
            kept.append(info_r)
            passed.append(info_w)
            ready_r, ready_w = info_r, None
            if options.forwarder is not None:
                ready_r, ready_w = os.pipe()
                kept.append(ready_r)
                passed.append(ready_w)
            options = dataclasses.replace(options, files=files, info_fd=info_w, ready_fd=ready_w)
            args, tail = bwrap_parts(spec, options)
            # The options (with the session token) go through a memfd, not the process list.
            args_fd = _memfd("bwrap-args", "".join(f"{a}\0" for a in args).encode())
            passed.append(args_fd)
            ids = layout.host_ids
            try:
                process = PtyProcess.spawn(
                    [layout.bwrap, "--args", str(args_fd), *tail],
                    rows=spec.rows,
                    cols=spec.cols,
                    pass_fds=passed,
                    user=ids[0] if ids else None,
                    group=ids[1] if ids else None,
                )
            except OSError as e:
                raise SandboxError(
                    f"bubblewrap ({layout.bwrap}) could not be started: {e.strerror or e}",
                    reason="StartFailed",
                ) from None
            finally:
                for fd in passed:
                    os.close(fd)
                passed.clear()
            sandbox.extra["process"] = process
            sandbox.extra["pid"] = process.pid
            first = await self._until_started(process, ready_r)
            os.set_blocking(info_r, False)
            head = first if ready_r == info_r else b""
            info = await self._read_info(info_r, head)
        finally:
            for fd in passed + kept:
                os.close(fd)
        child = info.get("child-pid")
        if isinstance(child, int):
            sandbox.extra["child_pid"] = child
            sandbox.extra["pidns"] = info.get("pid-namespace")
            with contextlib.suppress(ProcessLookupError):
                sandbox.extra["init_pidfd"] = os.pidfd_open(child)
        process.exited.add_done_callback(lambda _: self._on_exit(sandbox))

    async def _read_info(self, fd: int, head: bytes) -> dict[str, Any]:
        """bubblewrap's ``--info-fd`` JSON, read until it parses or the fd closes.

        bwrap writes the object in several writes (one per field), so what is readable
        right after its first byte may be a prefix; reading waits on the event loop.
        """
        loop = asyncio.get_running_loop()
        data = head + _read_available(fd)
        deadline = loop.time() + self.start_timeout
        while True:
            try:
                info = json.loads(data or b"{}")
                return info if isinstance(info, dict) else {}
            except ValueError:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise SandboxError(
                    "bubblewrap's start-up report was incomplete", reason="StartFailed"
                )
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _set_once, readable)
            try:
                await asyncio.wait_for(readable, remaining)
            except asyncio.TimeoutError:
                continue
            finally:
                loop.remove_reader(fd)
            more = _read_available(fd)
            if not more:  # EOF: all there is
                try:
                    info = json.loads(data or b"{}")
                except ValueError:
                    raise SandboxError(
                        "bubblewrap's start-up report was malformed", reason="StartFailed"
                    ) from None
                return info if isinstance(info, dict) else {}
            data += more

    async def _until_started(self, process: PtyProcess, fd: int) -> bytes:
        """Wait for the first byte on *fd* (the relay's "ready", or bwrap's info); return it.

        EOF on it, or the process ending first, means bubblewrap or the relay failed:
        their message is in the PTY and becomes the error shown in red.
        """
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        def readable() -> None:
            try:
                data = os.read(fd, 1)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not got.done():
                got.set_result(data)

        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
        try:
            waiters: set[asyncio.Future[Any]] = {got, process.exited}
            done, _ = await asyncio.wait(
                waiters,
                timeout=self.start_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            loop.remove_reader(fd)
        if got in done and got.result():
            return got.result()
        if not done:
            raise SandboxError(
                f"the sandbox did not start within {self.start_timeout:g}s", reason="StartTimeout"
            )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.exited), 2.0)
        raise SandboxError(
            f"the sandbox could not be started: {_shown(process.drain())}", reason="StartFailed"
        )

    def _on_exit(self, sandbox: Sandbox) -> None:
        """bubblewrap ended: if a signal we did not send killed it, say so."""
        process: PtyProcess = sandbox.extra["process"]
        if sandbox.ended.done() or sandbox.extra.get("stopping"):
            return
        if process.killed_by is not None:
            try:
                sig = signal.Signals(process.killed_by).name
            except ValueError:
                sig = str(process.killed_by)
            sandbox.ended.set_result(f"the sandbox was killed ({sig})")

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
        """Hang up, then kill; wait until every process of the sandbox is gone; clean up.

        Never blocks the loop; never raises for "already gone". The sandbox's init is
        killed before bwrap, so that bwrap reaps it (killing bwrap first would orphan it
        to the machine's init).
        """
        try:
            stream: PtyStream | None = sandbox.extra.pop("stream", None)
            if stream is not None:
                await stream.close()
            process: PtyProcess | None = sandbox.extra.get("process")
            init_pidfd: int | None = sandbox.extra.pop("init_pidfd", None)
            if process is not None:
                self._hang_up(sandbox, process)
                if not await process.wait(self.stop_grace):
                    if init_pidfd is not None:
                        with contextlib.suppress(ProcessLookupError):
                            signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
                    if not await process.wait(self.stop_grace):
                        process.signal_group(signal.SIGKILL)
                        await asyncio.shield(process.exited)
            if init_pidfd is not None:
                await self._wait_gone(init_pidfd)
            if process is not None:
                process.close()
            session_dir: Path = sandbox.extra["dir"]
            await asyncio.to_thread(_remove_tree, session_dir)
        except Exception:
            self.log.exception("claude-pods: stopping %s failed", sandbox.name)
        finally:
            self._sandboxes.pop(sandbox.name, None)
        self.log.info("claude-pods: stopped %s", sandbox.name)

    @staticmethod
    def _hang_up(sandbox: Sandbox, process: PtyProcess) -> None:
        """``SIGHUP`` as a closed terminal delivers it, so the program can end cleanly.

        A real hang-up reaches the session leader and the foreground job. Here bwrap
        leads the session (signalling it would kill everything at once), so the
        program, a child of the sandbox's init, is signalled directly, through a pidfd
        taken before checking it is still that child (no pid-reuse race).
        """
        process.hang_up()  # the foreground job, when a shell made one
        init = sandbox.extra.get("child_pid")
        if init is None or process.exit_status is not None:
            return
        try:
            children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
        except OSError:
            return
        for pid in children:
            try:
                pidfd = os.pidfd_open(int(pid))
            except (OSError, ValueError):
                continue
            try:
                stat_line = Path(f"/proc/{pid}/stat").read_text()
                if int(stat_line.rsplit(")", 1)[1].split()[1]) == init:
                    signal.pidfd_send_signal(pidfd, signal.SIGHUP)
                    signal.pidfd_send_signal(pidfd, signal.SIGCONT)
            except (OSError, ValueError, IndexError):
                pass
            finally:
                os.close(pidfd)

    async def _wait_gone(self, pidfd: int) -> None:
        """Until the sandbox's init, and so its whole PID namespace, has exited.

        It is killed first in case it still runs: the kernel kills every process of a
        PID namespace when its init dies, and only reports the init's exit after that.
        """
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()

        def exited() -> None:
            if not gone.done():
                gone.set_result(None)

        try:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            loop.add_reader(pidfd, exited)
            try:
                await asyncio.wait_for(gone, 10.0)
            except asyncio.TimeoutError:
                self.log.error("claude-pods: a sandbox's processes did not exit within 10 s")
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)

    # ------------------------------------------------------------------ leftovers

    async def sweep(self) -> int:
        """Remove state directories of earlier runs whose server is gone; count their sandboxes.

        Their processes already died with that server (``--die-with-parent``); what is
        left is files: homes, /tmp contents, a proxy socket and database.
        """
        await self.startup()
        if self._layout is None:
            return 0
        return await asyncio.to_thread(self._sweep, self._layout.run_dir)

    def _sweep(self, ours: Path) -> int:
        removed = 0
        for entry in ours.parent.iterdir():
            if entry == ours or entry.is_symlink() or not entry.is_dir():
                continue
            try:
                fd = os.open(entry / "lock", os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                if entry.name.startswith("."):
                    continue  # another server is creating it right now
                fd = -1
            except OSError as e:
                self.log.warning("claude-pods: cannot check %s: %s", entry, e)
                continue
            try:
                if fd >= 0:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError as e:
                        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                            continue  # a live server's
                        raise
                sessions = entry / "sessions"
                count = sum(1 for _ in sessions.iterdir()) if sessions.is_dir() else 0
                _remove_tree(entry)
                removed += count
                self.log.warning(
                    "claude-pods: removed %s, left by an earlier run (%d sandbox(es))",
                    entry,
                    count,
                )
            finally:
                if fd >= 0:
                    os.close(fd)
        return removed
