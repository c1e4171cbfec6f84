"""The bubblewrap command line of one local sandbox, as a pure function.

``bwrap_argv(spec, options)`` does no I/O: everything it needs from the host (which
system paths exist, what ``/etc`` holds, file descriptors already opened) arrives in
:class:`BwrapOptions`, so the whole isolation recipe can be unit-tested and read in one
place. What the sandbox gets:

* every namespace new (user, mount, PID, network, IPC, UTS, cgroup), nested user
  namespaces disabled, all capabilities dropped, a non-root uid, and SIGKILL when its
  parent (the Jupyter server) dies;
* the host's system directories read-only, and an ``/etc`` made of symlinks to a
  read-only view of the host's, so the policy can be bound at ``/etc/claude-code``
  although that directory does not exist on the host (a read-only bind of ``/etc``
  would leave no place to create the mount point), with our own ``passwd``, ``group``,
  ``hosts`` and ``hostname``;
* a private writable home and ``/tmp`` (directories of this session, on the host), the
  course material read-only (with an empty file over a manifest or seed ``CLAUDE.md``
  that lies in it: those hold quiz answers), everything else read-only (the root is
  remounted so);
* the key proxy's Unix socket and the relay (:mod:`.forwarder`) under
  ``/run/claude-pods``; the relay listens on the sandbox's own loopback, which is all
  of its network;
* an environment built from scratch (``--clearenv``): nothing of the server's leaks in,
  and no variable may be named ``ANTHROPIC_API_KEY`` or hold the real key; host files
  under ``/etc`` found to hold the key (``/etc/environment``…) are covered by an empty
  file.

Not used on purpose: ``--new-session``. It guards against TIOCSTI injection into a
terminal shared with something outside the sandbox, but our PTY is read by nothing but
the server, and the option takes job control (and Ctrl-C) away from the shell.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..spec import FORBIDDEN_ENV_NAMES, SandboxSpec

#: Where the server's pieces appear inside the sandbox.
RUN_DIR = "/run/claude-pods"
PROXY_SOCKET = f"{RUN_DIR}/proxy.sock"
FORWARDER = f"{RUN_DIR}/forwarder.py"
BIN_DIR = f"{RUN_DIR}/bin"
LAUNCHER = f"{BIN_DIR}/claude-pods-launch"
CLAUDE_DIR = f"{RUN_DIR}/claude"
HOST_ETC = "/run/host/etc"
POLICY_MOUNT = "/etc/claude-code"
#: ``/etc`` entries we write ourselves (or must not take from the host).
OWN_ETC = frozenset({"passwd", "group", "hosts", "hostname", "claude-code"})
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
#: The sandbox's own /tmp (a session directory or a tmpfs), never the host's.
SANDBOX_TMP = "/tmp"  # noqa: S108 - a path inside the sandbox
#: Secrets shorter than this are not searched for inside values (an empty or tiny
#: "secret" would match everything).
MIN_SECRET_CHARS = 8


@dataclass(frozen=True)
class HostEntry:
    """A host path to reproduce in the sandbox: a symlink (``target``) or a directory/file."""

    path: str
    symlink: str | None = None


@dataclass(frozen=True)
class BwrapOptions:
    """Everything ``bwrap_argv`` needs besides the session itself (plain data, no I/O)."""

    bwrap: str = "bwrap"
    #: The program when the spec names none (the backend's ``command``).
    command: tuple[str, ...] = ()
    #: Host session directories: the writable home, and ``/tmp`` (``None``: a tmpfs).
    home_source: str = "/nonexistent"
    tmp_source: str | None = None
    #: System directories (``/usr``, ``/lib`` …) as found on the host.
    system: tuple[HostEntry, ...] = ()
    #: Entries of the host's ``/etc`` (name, symlink target) to expose.
    etc: tuple[HostEntry, ...] = ()
    #: Host files under ``/etc`` found to hold the real key (a misconfiguration such as
    #: a key in ``/etc/environment``): an empty file (``empty_file``) is bound over each.
    hidden: tuple[str, ...] = ()
    empty_file: str | None = None
    #: ``dest -> fd`` of small files bwrap copies in (``/etc/passwd`` …), read-only.
    files: Mapping[str, int] = field(default_factory=dict)
    home_dir: str = "/home/claude"
    working_dir: str | None = None
    uid: int = 1000
    gid: int = 1000
    hostname: str = "sandbox"
    #: Host directory bound read-only at ``/etc/claude-code`` (``None``: no policy).
    policy_dir: str | None = None
    #: Host directory of course material, bound read-only at ``course_dir``.
    course_source: str | None = None
    course_dir: str = "/course"
    #: Names of files directly in ``course_source`` to cover with ``empty_file`` (a
    #: manifest or a seed ``CLAUDE.md`` holding quiz answers); each must exist there.
    course_hidden: tuple[str, ...] = ()
    #: The key proxy's Unix socket on the host (``None``: no proxy in this sandbox).
    proxy_socket: str | None = None
    proxy_port: int = 8787
    #: The relay script on the host, and the sandbox's python that runs it. Without
    #: them the program is exec'd directly (and readiness is not signalled).
    forwarder: str | None = None
    python: str = "/usr/bin/python3"
    #: File descriptor the relay writes one byte to just before the program starts.
    ready_fd: int | None = None
    info_fd: int | None = None
    #: Host path of the policy's launcher (bound at :data:`LAUNCHER`).
    launcher: str | None = None
    #: The Claude Code CLI: a host file or directory to bind at :data:`CLAUDE_DIR`,
    #: and the binary's path inside the sandbox (``CLAUDE_PODS_CLAUDE_BIN``).
    claude_source: str | None = None
    claude_path: str | None = None
    #: Environment layers, lowest precedence first (policy, then operator).
    policy_env: Mapping[str, str] = field(default_factory=dict)
    extra_env: Mapping[str, str] = field(default_factory=dict)
    term: str = "xterm-256color"
    lang: str = "C.UTF-8"
    #: Values that must never reach the sandbox (the real key).
    secrets: tuple[str, ...] = ()


def sandbox_env(spec: SandboxSpec, options: BwrapOptions) -> dict[str, str]:
    """The sandbox's whole environment, from nothing.

    Precedence, lowest first: the basics, the policy's variables, the operator's
    ``extra_env``, the session's own (the proxy token), then what the sandbox layout
    dictates (``HOME``, ``ANTHROPIC_BASE_URL``, ``CLAUDE_PODS_CLAUDE_BIN``). The result
    is filtered: no ``ANTHROPIC_API_KEY`` and no value containing a secret.
    """
    workdir = options.working_dir or options.home_dir
    env: dict[str, str] = {
        "PATH": f"{BIN_DIR}:{BASE_PATH}" if options.launcher else BASE_PATH,
        "TERM": options.term,
        "LANG": options.lang,
        "USER": "claude",
        "LOGNAME": "claude",
        "SHELL": "/bin/bash",
        "TMPDIR": SANDBOX_TMP,
        "CLAUDE_PODS_COURSE_DIR": workdir,
    }
    env.update(options.policy_env)
    env.update(options.extra_env)
    env.update(spec.env)
    env["HOME"] = options.home_dir
    if spec.course is not None and options.course_source is not None:
        env["CLAUDE_PODS_COURSE_DIR"] = options.course_dir
    if options.proxy_socket is not None:
        env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{options.proxy_port}"
    else:
        env.pop("ANTHROPIC_BASE_URL", None)
    if options.claude_path is not None:
        env["CLAUDE_PODS_CLAUDE_BIN"] = options.claude_path
    secrets = [s for s in options.secrets if len(s) >= MIN_SECRET_CHARS]
    return {
        name: value
        for name, value in env.items()
        if name not in FORBIDDEN_ENV_NAMES
        and "=" not in name
        and name
        and not any(s in value or s in name for s in secrets)
    }


def etc_files(options: BwrapOptions) -> dict[str, bytes]:
    """Contents of the ``/etc`` files the sandbox gets instead of the host's.

    Our own ``passwd``/``group`` name the sandbox user (``whoami``, prompts and ``ls -l``
    work) and show none of the host's accounts.
    """
    home, uid, gid = options.home_dir, options.uid, options.gid
    return {
        "/etc/passwd": (
            f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"claude:x:{uid}:{gid}:Claude sandbox:{home}:/bin/bash\n"
            f"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ).encode(),
        "/etc/group": f"root:x:0:\nclaude:x:{gid}:\nnogroup:x:65534:\n".encode(),
        "/etc/hosts": (
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{options.hostname}\n::1\tlocalhost\n"
        ).encode(),
        "/etc/hostname": f"{options.hostname}\n".encode(),
    }


def _program(command: tuple[str, ...], options: BwrapOptions) -> list[str]:
    """The argv run inside: the relay wrapper (when available), then the program.

    The program's argv is passed as separate arguments, never interpolated into a
    shell script.
    """
    if options.forwarder is None:
        return list(command)
    argv = [options.python, "-I", "-S", FORWARDER]
    if options.proxy_socket is not None:
        argv += ["--listen", str(options.proxy_port), "--unix", PROXY_SOCKET]
    if options.ready_fd is not None:
        argv += ["--ready-fd", str(options.ready_fd)]
    return [*argv, "--", *command]


def bwrap_parts(spec: SandboxSpec, options: BwrapOptions) -> tuple[list[str], list[str]]:
    """``(bubblewrap options, ["--", command…])`` for *spec* (see the module docstring).

    Kept apart because the backend hands the options to bwrap through ``--args FD``,
    so that the session token in ``--setenv`` does not show in the process list.
    """
    command = spec.command or options.command
    if not command:
        raise ValueError("the sandbox command is empty")
    home = options.home_dir
    workdir = options.working_dir or home
    args = [
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--uid",
        str(options.uid),
        "--gid",
        str(options.gid),
        "--cap-drop",
        "ALL",
        "--hostname",
        options.hostname,
        "--clearenv",
    ]
    for name, value in sandbox_env(spec, options).items():
        args += ["--setenv", name, value]
    for entry in options.system:
        if entry.symlink is not None:
            args += ["--symlink", entry.symlink, entry.path]
        else:
            args += ["--ro-bind", entry.path, entry.path]
    # /etc: symlinks into a read-only view of the host's, so mount points can be made.
    args += ["--ro-bind", "/etc", HOST_ETC]
    if options.empty_file is not None:
        for path in options.hidden:
            if path.startswith("/etc/"):
                args += ["--ro-bind", options.empty_file, HOST_ETC + path[len("/etc") :]]
    for entry in options.etc:
        name = posixpath.basename(entry.path)
        if name in OWN_ETC or not name or name in (".", ".."):
            continue
        target = entry.symlink if entry.symlink is not None else f"{HOST_ETC}/{name}"
        args += ["--symlink", target, f"/etc/{name}"]
    for dest, fd in sorted(options.files.items()):
        args += ["--perms", "0644", "--file", str(fd), dest]
    if options.policy_dir is not None:
        args += ["--ro-bind", options.policy_dir, POLICY_MOUNT]
    args += ["--proc", "/proc", "--dev", "/dev"]
    if options.tmp_source is not None:
        args += ["--bind", options.tmp_source, SANDBOX_TMP]
    else:
        args += ["--tmpfs", SANDBOX_TMP]
    args += ["--dir", "/var", "--symlink", "../tmp", f"/var{SANDBOX_TMP}"]
    args += ["--bind", options.home_source, home]
    if options.course_source is not None:
        args += ["--ro-bind", options.course_source, options.course_dir]
        if options.course_hidden and options.empty_file is None:
            raise ValueError("hiding course files needs an empty file to bind over them")
        for name in options.course_hidden:
            if not name or "/" in name or name in (".", ".."):
                raise ValueError(f"hidden course file {name!r} must be a plain file name")
            args += ["--ro-bind", str(options.empty_file), f"{options.course_dir}/{name}"]
    if options.proxy_socket is not None:
        args += ["--ro-bind", options.proxy_socket, PROXY_SOCKET]
    if options.forwarder is not None:
        args += ["--ro-bind", options.forwarder, FORWARDER]
    if options.launcher is not None:
        args += ["--ro-bind", options.launcher, LAUNCHER]
    if options.claude_source is not None:
        args += ["--ro-bind", options.claude_source, CLAUDE_DIR]
    args += ["--remount-ro", "/", "--chdir", workdir]
    if options.info_fd is not None:
        args += ["--info-fd", str(options.info_fd)]
    return args, ["--", *_program(command, options)]


def bwrap_argv(spec: SandboxSpec, options: BwrapOptions) -> list[str]:
    """The full ``bwrap`` command line of *spec* (options inline, for reading and tests)."""
    args, tail = bwrap_parts(spec, options)
    return [options.bwrap, *args, *tail]
