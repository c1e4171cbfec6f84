"""The host side of local sandboxes: this run's state, and what each sandbox binds.

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

Everything here blocks (file system checks and changes): the backend calls it in a
thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import getpass
import os
import secrets
import shutil
import stat
import typing as t
from collections.abc import Callable, Iterable
from pathlib import Path

from ..base import SandboxError
from ..spec import SandboxSpec
from .bwrap import CLAUDE_DIR, HostEntry

if t.TYPE_CHECKING:
    import logging

    Log = logging.Logger | logging.LoggerAdapter[t.Any]

#: The host user an unprivileged sandbox runs as when the server is root.
NOBODY = 65534
#: Shorter "keys" are not searched for (they would match by accident).
MIN_KEY_BYTES = 8


class ConfigProblem(Exception):
    """The backend cannot run here; the message is shown in every terminal."""


@dataclasses.dataclass(frozen=True)
class SessionCourse:
    """The course material one session binds, as checked on the host at its start."""

    #: Host directory bound at ``course_dir`` (``None``: no course material).
    source: str | None
    #: Names in it to cover with an empty file (they exist there as regular files).
    hidden: tuple[str, ...]
    #: The program's working directory (also the directory the seeded home trusts).
    working_dir: str


@dataclasses.dataclass(frozen=True)
class Layout:
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


# ---------------------------------------------------------------------- file helpers


def traversal_problem(path: Path, uid: int, gid: int, need: int = stat.S_IXOTH) -> str | None:
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


def remove_tree(path: Path) -> None:
    """``rm -rf`` that copes with directories a sandbox made unwritable (``chmod 0``)."""

    def retry(function: Callable[..., t.Any], failed: str, _exc: t.Any) -> None:
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


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(Path(root) / name, uid, gid)


# ---------------------------------------------------------------------- the real key in /etc


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


def real_keys() -> list[bytes]:
    """The real key as the embedded proxy will load it (environment or key file)."""
    keys = [os.environ.get("ANTHROPIC_API_KEY", "").strip().encode()]
    key_file = os.environ.get("CLAUDE_PODS_KEY_FILE")
    if key_file:
        with contextlib.suppress(OSError):
            keys.append(Path(key_file).read_bytes().strip())
    return [k for k in keys if k]


def sandbox_can_read(
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


# ---------------------------------------------------------------------- checks at start-up


def sandbox_host_ids(host_uid: int | None, host_gid: int | None) -> tuple[int, int] | None:
    """(uid, gid) bubblewrap drops to (see the module docstring), ``None``: no drop."""
    euid = os.geteuid()
    if euid != 0:
        if host_uid not in (None, euid):
            raise ConfigProblem(
                "LocalBackend.host_uid can only be set when the server runs as root"
            )
        return None
    uid = NOBODY if host_uid is None else host_uid
    gid = NOBODY if host_gid is None else host_gid
    if uid == 0 or gid == 0:
        raise ConfigProblem(
            "LocalBackend.host_uid/host_gid 0 would let sandboxes read every root-only "
            "file; pick an unprivileged user"
        )
    return uid, gid


def check_base(base: Path, mode: int) -> None:
    try:
        base.mkdir(parents=True, mode=mode)
    except FileExistsError:
        pass
    else:
        base.chmod(mode)
        return
    st = base.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ConfigProblem(
            f"the state directory {base} (LocalBackend.home_base) must be a directory of "
            f"user {getpass.getuser()} that no one else can write to"
        )


def check_reachable(wanted: Iterable[tuple[str, str | None, int]], uid: int, gid: int) -> None:
    """As root, bubblewrap runs as *uid*: everything it binds must be reachable."""
    for what, path, need in wanted:
        if path is None:
            continue
        blocked = traversal_problem(Path(path), uid, gid, need)
        if blocked is not None:
            raise ConfigProblem(
                f"{what} {path} is not reachable by the sandbox user (uid {uid}): "
                f"{blocked} is not accessible to it; use paths every user can read"
            )


def system_entries(paths: Iterable[str]) -> list[HostEntry]:
    """The system directories to bind; symlinks (``/bin -> usr/bin``) stay symlinks."""
    system = []
    for name in paths:
        path = Path(name)
        if path.is_symlink():
            system.append(HostEntry(name, str(path.readlink())))
        elif path.is_dir():
            system.append(HostEntry(name))
    return system


def etc_entries() -> list[HostEntry]:
    """The host's ``/etc`` entries the sandbox's ``/etc`` links to (see :mod:`.bwrap`)."""
    etc = []
    for entry in sorted(os.scandir("/etc"), key=lambda e: e.name):
        if entry.is_symlink():
            etc.append(HostEntry(entry.path, str(Path(entry.path).readlink())))
        elif entry.stat(follow_symlinks=False).st_mode & stat.S_IROTH:
            etc.append(HostEntry(entry.path))  # root-only files (shadow…) stay out
    return etc


def relay_script(python: str, system: Iterable[HostEntry], required: bool) -> str | None:
    """The relay (:mod:`.forwarder`) to bind, if *python* can run it inside the sandbox."""
    in_system = any(
        python.startswith(e.path.rstrip("/") + "/") for e in system if e.symlink is None
    )
    if in_system and os.access(python, os.X_OK):
        return str(Path(__file__).with_name("forwarder.py"))
    if required:
        raise ConfigProblem(
            f"{python} is needed inside the sandbox to relay the key proxy, but it "
            "is not installed or not under LocalBackend.system_paths: install "
            "python3 or set LocalBackend.python_path"
        )
    return None


def course_root_source(course_root: str) -> str | None:
    """``LocalBackend.course_root`` as the directory to bind (``None``: not set)."""
    if not course_root:
        return None
    course = Path(course_root).absolute()
    if not course.is_dir():
        raise ConfigProblem(f"the course directory {course} does not exist")
    return str(course)


def policy_pieces(log: Log) -> dict[str, t.Any]:
    """The policy module's pieces; tolerated missing (then: no policy bound)."""
    try:
        from ... import policy
    except ImportError:
        log.warning("claude-pods: jupyter_claude_pods.policy is missing: no policy")
        return {}
    return {
        "policy_dir": str(policy.POLICY_DIR),
        "launcher": str(policy.LAUNCHER),
        "env": dict(policy.sandbox_env()),
        "seed_home": policy.seed_home,
        "find_claude": policy.find_claude,
    }


def claude_binding(
    find: Callable[[], str | None] | None, system: Iterable[HostEntry], log: Log
) -> tuple[str | None, str | None]:
    """(what to bind at CLAUDE_DIR, CLAUDE_PODS_CLAUDE_BIN inside) for the CLI.

    A CLI under a bound system directory is used where it is; a native binary
    elsewhere is bound alone, anything else (a script) with its directory.
    """
    found = find() if find is not None else None
    if not found:
        log.warning("claude-pods: the Claude Code CLI was not found (CLAUDE_PODS_CLAUDE_BIN, PATH)")
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
        log.warning("claude-pods: cannot read the Claude Code CLI %s: %s", real, e)
        return None, None
    if native:
        return real, CLAUDE_DIR
    return str(Path(real).parent), f"{CLAUDE_DIR}/{Path(real).name}"


# ---------------------------------------------------------------------- this run's directory


def make_run_dir(base: Path, mode: int) -> tuple[Path, int]:
    """This run's directory and its lock's fd, created with the lock already held (so a
    concurrent sweep by another server never mistakes it for a leftover)."""
    name = f"{os.getpid()}-{secrets.token_hex(3)}"
    staging = base / f".new-{name}"
    staging.mkdir(mode=mode)
    staging.chmod(mode)
    fd = os.open(staging / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    final = base / name
    staging.rename(final)
    return final, fd


def make_state_dirs(run_dir: Path, dir_mode: int) -> tuple[Path, Path, Path, Path]:
    """(sessions, proxy state, socket directory, empty file) in *run_dir*.

    On failure *run_dir* is removed.
    """
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
        remove_tree(run_dir)
        raise
    return sessions, proxy_state, sock_dir, empty


def sweep_leftovers(ours: Path, log: Log) -> int:
    """Remove the run directories next to *ours* whose lock nobody holds; count their
    sandboxes."""
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
            log.warning("claude-pods: cannot check %s: %s", entry, e)
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
            remove_tree(entry)
            removed += count
            log.warning(
                "claude-pods: removed %s, left by an earlier run (%d sandbox(es))",
                entry,
                count,
            )
        finally:
            if fd >= 0:
                os.close(fd)
    return removed


# ---------------------------------------------------------------------- one session


def session_course(layout: Layout, spec: SandboxSpec, working_dir: str) -> SessionCourse:
    """What this session binds at ``course_dir``: its own course, else ``course_root``.

    Checked at each start (blocking: in a thread) because courses change while the
    server runs. Only the material directory is bound, never the course directory
    with its manifest; a hidden name is covered only if it is a regular file (a
    directory or symlink there could not be covered safely, so it is refused).
    *working_dir* is the program's working directory in a course terminal.
    """
    course = spec.course
    if course is None:
        return SessionCourse(layout.course_source, (), layout.working_dir)
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
            check_reachable(
                [("the course material", str(material), stat.S_IXOTH)], *layout.host_ids
            )
        except ConfigProblem as e:
            raise SandboxError(str(e), reason="BadCourse") from None
    return SessionCourse(str(material), tuple(hidden), working_dir)


def make_session_dir(layout: Layout, path: Path, course: SessionCourse) -> None:
    """The session's home (seeded by the policy) and /tmp, owned by the sandbox user."""
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
        chown_tree(home, *layout.host_ids)
        os.chown(tmp, *layout.host_ids)
