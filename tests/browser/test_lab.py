"""The JupyterLab extension in a real browser, against a real ``jupyter lab``.

A ``jupyter lab`` subprocess on a free loopback port runs this package with the local
(bubblewrap) backend, whose sandboxes run a plain shell instead of Claude Code, a courses
directory holding the example course plus a broken one, and a throwaway progress
database. ``lab.spec.mjs`` then drives Debian's Chromium through playwright-core (never
Playwright's own browser downloads): launcher cards, the stock terminal on a course
session, the Courses panel's quiz and checklist, live updates from the event stream, the
quota message, and the instructor table. Screenshots land in ``tests/browser/output/``;
with ``CLAUDE_PODS_UPDATE_SCREENSHOTS=1`` they also replace those in ``docs/images/``.

Every test runs twice, once per install (the ``install`` fixture):

* ``checkout``: this checkout's build in ``jupyter_claude_pods/labextension`` (rebuilt
  here when ``labextension/`` sources are newer), put first on the lab's extension path so
  an older copy installed in the environment cannot be tested by mistake; the lab runs in
  the test's own venv.
* ``wheel``: what a user gets. A wheel built from this checkout (``pip wheel``, which ships
  the build above thanks to ``skip-if-exists``) goes with the same ``jupyterlab`` into a
  new, clean venv, pinned to the versions of the test's venv so only the packaging can
  differ; the lab runs there with nothing of the checkout on its paths: the server
  extension is enabled by the wheel's ``jupyter-config``, the labextension is the wheel's
  prebuilt one. ``CLAUDE_PODS_BROWSER_PYTHON`` (the Python of a venv holding a wheel and
  ``jupyterlab``, e.g. a release) replaces the built one.

Only the checkout run's screenshots can replace ``docs/images/``; the wheel run's land in
``tests/browser/output/wheel/``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Building and installing the wheel (cold: a new venv) comes on top of the lab's start and
# the browser flow; every step below has its own, smaller timeout.
pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
EXTENSION_SRC = ROOT / "labextension"
BUILT = ROOT / "jupyter_claude_pods" / "labextension"
EXAMPLE_COURSE = ROOT / "docs" / "example-courses" / "transformer-basics"
CHROMIUM = os.environ.get("CLAUDE_PODS_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-test-token"
SHELL = ["bash", "--norc", "--noprofile", "-i"]
#: What lab.spec.mjs saves (and CLAUDE_PODS_UPDATE_SCREENSHOTS=1 copies to docs/images).
SCREENSHOTS = {"launcher.png", "panel.png", "panel-dark.png", "instructor.png", "lab.png"}
#: Files whose change makes the built extension stale.
SOURCES = ("src", "style", "schema", "package.json")
#: A venv holding a wheel and jupyterlab, tested instead of a wheel built from the checkout.
INSTALLED_PYTHON = os.environ.get("CLAUDE_PODS_BROWSER_PYTHON")
#: Variables that would let the lab import something else than the install under test.
PYTHON_VARS = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _missing(message: str) -> None:
    """A missing tool fails in CI (scripts/test.sh installs it) and skips elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _newest(path: Path) -> float:
    if path.is_file():
        return path.stat().st_mtime
    times = [
        p.stat().st_mtime for p in path.rglob("*") if p.is_file() and "__tests__" not in p.parts
    ]
    return max(times, default=0.0)


def _built_is_stale() -> bool:
    marker = BUILT / "package.json"
    if not (marker.exists() and (BUILT / "static" / "style.js").exists()):
        return True
    built = marker.stat().st_mtime
    return any(_newest(EXTENSION_SRC / name) > built for name in SOURCES)


def _run(argv: list[str], what: str, timeout: float, **kwargs: Any) -> str:
    """Run a step to completion; its output (stdout + stderr) only shows when it fails."""
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{output}"
    return ANSI.sub("", output)


def _clean_env() -> dict[str, str]:
    """This environment without what points Python or Jupyter at other installs."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUPYTER", "CLAUDE_PODS")) and k not in PYTHON_VARS
    }


@dataclass(frozen=True)
class Install:
    """Where the lab under test comes from."""

    name: str
    #: The interpreter that runs ``jupyter lab`` (its venv's ``bin/`` holds ``jupyter``).
    python: Path
    #: That venv: the package and the labextension must come from below it.
    prefix: Path
    #: A labextension build put first on the extension path (the checkout's), or None.
    extension: Path | None


@pytest.fixture(scope="module")
def built_extension() -> Path:
    """The built labextension, rebuilt (development mode) when its sources changed."""
    if _built_is_stale():
        jlpm = shutil.which("jlpm", path=str(Path(sys.executable).parent))
        if jlpm is None or shutil.which("node") is None:
            _missing("the labextension is not built and jlpm/node are missing to build it")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        for step in (["install"], ["build"]):
            _run([str(jlpm), *step], f"jlpm {step[0]}", 600, cwd=EXTENSION_SRC, env=env)
    return BUILT


@pytest.fixture(scope="module")
def node_tools() -> Path:
    """node + playwright-core (tests/browser/node_modules) + Debian's chromium."""
    if shutil.which("node") is None:
        _missing("node is not installed")
    if not Path(CHROMIUM).exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        _missing("playwright-core is missing (cd tests/browser && npm ci)")
    if shutil.which("bwrap") is None:
        _missing("bubblewrap is not installed (apt-get install bubblewrap)")
    return HERE


@pytest.fixture(scope="module")
def wheel_venv(request: pytest.FixtureRequest) -> Iterator[Install]:
    """A new venv holding the wheel built from this checkout and the same jupyterlab.

    It lies in a world-searchable directory of its own, not below pytest's private tmp:
    as root the sandboxes run as nobody, and the local backend refuses a policy
    directory (inside the installed package) that nobody cannot reach.
    """
    if INSTALLED_PYTHON:
        python = Path(INSTALLED_PYTHON)
        prefix = _run(
            [str(python), "-c", "import sys; print(sys.prefix)"], "python", 60, env=_clean_env()
        )
        yield Install("wheel", python, Path(prefix.splitlines()[-1]), None)
        return
    request.getfixturevalue("built_extension")  # the wheel ships this build
    work = Path(tempfile.mkdtemp(prefix="cpods-browser-wheel-", dir="/tmp"))
    try:
        work.chmod(0o755)
        env = _clean_env()
        _run(
            [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w", str(work)],
            "building the wheel",
            300,
            cwd=work,
            env=env,
        )
        (wheel,) = work.glob("jupyter_claude_pods-*.whl")
        # Pinned to this venv's versions: a failure is the packaging's, not a new release's.
        freeze = _run(
            [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], "pip freeze", 120
        )
        pins = [line for line in freeze.splitlines() if re.fullmatch(r"[\w.-]+==\S+", line)]
        (work / "constraints.txt").write_text("\n".join(pins) + "\n")
        venv = work / "venv"
        _run([sys.executable, "-m", "venv", str(venv)], "creating a venv", 120, env=env)
        python = venv / "bin" / "python"
        _run(
            [
                str(python),
                *("-m", "pip", "install", "--quiet", "--no-input"),
                *("--constraint", str(work / "constraints.txt")),
                str(wheel),
                f"jupyterlab=={importlib.metadata.version('jupyterlab')}",
            ],
            "installing the wheel and jupyterlab",
            600,
            cwd=work,
            env=env,
        )
        yield Install("wheel", python, venv, None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module", params=["checkout", "wheel"])
def install(request: pytest.FixtureRequest, node_tools: Path) -> Install:
    """The install whose lab is tested (node_tools first: skip before building anything)."""
    if request.param == "wheel":
        wheel: Install = request.getfixturevalue("wheel_venv")
        return wheel
    built: Path = request.getfixturevalue("built_extension")
    return Install("checkout", Path(sys.executable), Path(sys.prefix), built)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_courses(root: Path) -> None:
    shutil.copytree(EXAMPLE_COURSE, root / "transformer-basics")
    broken = root / "broken-course"
    broken.mkdir()
    # A manifest that fails validation: the panel must list it as a problem.
    (broken / "course.yaml").write_text("title: 42\nstages: []\n")


class Lab:
    """A running ``jupyter lab`` subprocess and a tiny REST client for it."""

    def __init__(
        self,
        url: str,
        proc: subprocess.Popen[bytes],
        log: Path,
        install: Install,
        env: dict[str, str],
        cwd: Path,
    ) -> None:
        self.url = url
        self.proc = proc
        self.log = log
        self.install = install
        #: The lab's environment and working directory, to ask its install questions.
        self.env = env
        self.cwd = cwd

    def api(self, path: str, method: str = "GET", body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            text = response.read().decode()
        return json.loads(text) if text else None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def run(self, *argv: str) -> str:
        """A command of the lab's install (``bin/``), in the lab's environment and cwd."""
        return _run(
            [str(self.install.python.parent / argv[0]), *argv[1:]],
            " ".join(argv),
            120,
            cwd=self.cwd,
            env=self.env,
        )


@pytest.fixture(scope="module")
def lab(
    install: Install, node_tools: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    # A short, searchable base: sandbox sockets live below it (108-byte path limit), and
    # as root the sandboxes run as nobody.
    base = Path(tmp_path_factory.mktemp(f"lab-{install.name}"))
    state = Path(f"/tmp/cpods-browser-{os.getpid()}-{install.name}")
    state.mkdir(mode=0o711, exist_ok=True)
    state.chmod(0o711 if os.geteuid() == 0 else 0o700)
    # The sandbox user (nobody, as root) must reach the course material: keep it below
    # the searchable state directory, world-readable, not below pytest's private tmp.
    courses = state / "courses"
    courses.mkdir(mode=0o755)
    _write_courses(courses)
    for path in [courses, *courses.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    root_dir = base / "root"
    root_dir.mkdir()
    config_dir = base / "config"
    config_dir.mkdir()
    jupyter_path = base / "jupyter-path"
    (jupyter_path / "labextensions").mkdir(parents=True)
    if install.extension is not None:
        (jupyter_path / "labextensions" / "jupyter-claude-pods").symlink_to(install.extension)
    config: dict[str, Any] = {
        "SandboxTerminalManager": {"backend": "local", "max_sandboxes_per_user": 1},
        "LocalBackend": {
            "home_base": str(state / "state"),
            "command": SHELL,
            "extra_env": {"PS1": "$ "},
        },
        "CoursesConfig": {
            "courses_dir": str(courses),
            "progress_db": str(base / "progress.sqlite3"),
        },
    }
    if install.name == "checkout":
        # An installed wheel must enable its server extension by itself (jupyter-config).
        config["ServerApp"] = {"jpserver_extensions": {"jupyter_claude_pods": True}}
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(config))
    # No "get notified about Jupyter news?" toast over the screenshots.
    notification = base / "settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port = _free_port()
    env = {
        **_clean_env(),
        "PATH": f"{install.python.parent}:{os.environ['PATH']}",
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_DATA_DIR": str(base / "data"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "JUPYTER_PATH": str(jupyter_path),
        "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
        "CLAUDE_PODS_BACKEND": "local",
        # Placeholders: the sandboxes run a shell, nothing talks to a model.
        "ANTHROPIC_API_KEY": "test-upstream-key-not-real",
        "CLAUDE_PODS_UPSTREAM_URL": "http://127.0.0.1:9",
    }
    log = base / "lab.log"
    argv = [
        str(install.python),
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root_dir}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=root_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Lab(f"http://127.0.0.1:{port}", proc, log, install, env, root_dir)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited ({proc.returncode}):\n{server.log_text()}")
            try:
                server.api("claude-pods/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer in 60 s:\n{server.log_text()}")
                time.sleep(0.2)  # polling a condition (the port answering), not a timed wait
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(state, ignore_errors=True)


def _sections(listing: str, header: str = "") -> dict[str, list[str]]:
    """A ``jupyter ... extension list`` output as {directory: its stripped lines}."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in listing.splitlines():
        if line.startswith(header + "/"):
            current = sections.setdefault(line[len(header) :].strip(), [])
        elif line.strip():
            current.append(line.strip())
    return sections


def _below(path: str | Path, parent: Path) -> bool:
    return Path(path).resolve().is_relative_to(parent.resolve())


def test_lab_runs_the_install_under_test(lab: Lab) -> None:
    """The lab's Python, labextension and server extension all come from one install."""
    install = lab.install
    imported = lab.run(
        "python",
        "-c",
        "import json, jupyter_claude_pods as a, claude_pods_proxy as b; "
        "print(json.dumps([a.__file__, b.__file__]))",
    )
    files: list[str] = json.loads(imported.splitlines()[-1])
    # What the lab imports: never a checkout on the way (cwd, PYTHONPATH) for the wheel.
    assert not _below(lab.cwd, ROOT)
    assert not any(k in lab.env for k in PYTHON_VARS)
    if install.name == "wheel":
        assert all(_below(f, install.prefix) for f in files), files
        assert not any(_below(f, ROOT / "jupyter_claude_pods") for f in files), files
    else:
        assert all(_below(f, ROOT) for f in files), files

    labextensions = {
        directory: [line for line in lines if line.split()[0] == "jupyter-claude-pods"]
        for directory, lines in _sections(lab.run("jupyter", "labextension", "list")).items()
    }
    ours = {directory: lines for directory, lines in labextensions.items() if lines}
    assert ours, f"jupyter-claude-pods is not listed: {labextensions}"
    # The first directory listing it wins.
    first, (line, *_) = next(iter(ours.items()))
    assert " enabled " in line, line
    assert " OK" in line, line
    if install.name == "wheel":
        assert list(ours) == [str(install.prefix / "share" / "jupyter" / "labextensions")], ours
        assert line.endswith("(python, jupyter-claude-pods)"), f"not prebuilt: {line}"
    else:
        assert first == str(Path(lab.env["JUPYTER_PATH"]) / "labextensions"), ours

    servers = _sections(lab.run("jupyter", "server", "extension", "list"), "Config dir: ")
    version = importlib.metadata.version("jupyter-claude-pods")
    enabling = [d for d, lines in servers.items() if "jupyter_claude_pods enabled" in lines]
    assert enabling, f"jupyter_claude_pods is not enabled: {servers}"
    assert all(f"jupyter_claude_pods {version} OK" in servers[d] for d in enabling), servers
    if install.name == "wheel":
        # Enabled by the wheel's jupyter-config alone (the lab's config leaves it out).
        assert enabling == [str(install.prefix / "etc" / "jupyter")], servers


def test_lab_extension_is_served(lab: Lab) -> None:
    """The lab lists our prebuilt extension with its settings schema."""
    with urllib.request.urlopen(f"{lab.url}/lab/api/settings?token={TOKEN}", timeout=10) as r:
        settings = json.loads(r.read())["settings"]
    ours = [s for s in settings if s["id"] == "jupyter-claude-pods:plugin"]
    assert ours, "the extension's settings schema is not in the registry"
    props = ours[0]["schema"]["properties"]
    assert props["showLauncherSection"]["type"] == "boolean"
    assert props["panelPosition"]["enum"] == ["left", "right"]


def test_browser_flow(lab: Lab, node_tools: Path) -> None:
    """Cards, terminal, quiz, live updates, quota message and instructor table."""
    status = lab.api("claude-pods/api/status")
    assert status["instructor"] is True  # no instructors list: the authorizer decides
    out_dir = HERE / "output"
    if lab.install.name != "checkout":
        out_dir = out_dir / lab.install.name
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    env = {
        **os.environ,
        "LAB_URL": lab.url,
        "LAB_TOKEN": TOKEN,
        "LAB_USER": status["user"],
        "CHROMIUM": CHROMIUM,
        "SCREENSHOT_DIR": str(out_dir),
    }
    done = subprocess.run(
        ["node", str(node_tools / "lab.spec.mjs")],
        cwd=node_tools,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = textwrap.indent(done.stdout + done.stderr, "  ")
    assert done.returncode == 0, f"browser test failed:\n{report}\nserver log:\n{lab.log_text()}"

    # What the browser did, checked on the server.
    terminals = lab.api("api/terminals")
    course_terms = [t for t in terminals if t["claude_pods"].get("course") == "transformer-basics"]
    assert len(course_terms) == 1, terminals  # the quota kept the second card click out
    progress = lab.api("claude-pods/api/progress/transformer-basics")
    assert {c["stage"] for c in progress["completed"]} == {1, 2}
    sources = {c["stage"]: c["source"] for c in progress["completed"]}
    assert sources == {1: "quiz", 2: "instructor"}

    shots = {p.name for p in out_dir.glob("*.png")}
    assert shots >= SCREENSHOTS, shots
    if lab.install.name == "checkout" and os.environ.get("CLAUDE_PODS_UPDATE_SCREENSHOTS") == "1":
        images = ROOT / "docs" / "images"
        images.mkdir(parents=True, exist_ok=True)
        for name in sorted(SCREENSHOTS):
            shutil.copyfile(out_dir / name, images / name)
