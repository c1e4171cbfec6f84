"""The JupyterLab extension in a real browser, against a real ``jupyter lab``.

A ``jupyter lab`` subprocess on a free loopback port runs this package with the local
(bubblewrap) backend, whose sandboxes run a plain shell instead of Claude Code, a courses
directory holding the example course plus a broken one, and a throwaway progress
database. ``lab.spec.mjs`` then drives Debian's Chromium through playwright-core (never
Playwright's own browser downloads): launcher cards, the stock terminal on a course
session, the Courses panel's quiz and checklist, live updates from the event stream, the
quota message, and the instructor table. Screenshots land in ``tests/browser/output/``;
with ``CLAUDE_PODS_UPDATE_SCREENSHOTS=1`` they also replace those in ``docs/images/``.

The extension under test is the build in ``jupyter_claude_pods/labextension`` (rebuilt
here when ``labextension/`` sources are newer), put first on the lab's extension path,
so an older copy installed in the environment cannot be tested by mistake. To test an
installed wheel instead, set ``CLAUDE_PODS_BROWSER_PYTHON`` to the Python of a venv
holding it and ``jupyterlab``: the lab then runs there, with what that venv installed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


#: A venv with the wheel installed, to test it instead of this checkout's build.
INSTALLED_PYTHON = os.environ.get("CLAUDE_PODS_BROWSER_PYTHON")


@pytest.fixture(scope="module")
def built_extension() -> Path | None:
    """The built labextension, rebuilt (development mode) when its sources changed."""
    if INSTALLED_PYTHON:
        return None
    if _built_is_stale():
        jlpm = shutil.which("jlpm", path=str(Path(sys.executable).parent))
        if jlpm is None or shutil.which("node") is None:
            _missing("the labextension is not built and jlpm/node are missing to build it")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        for step in (["install"], ["build"]):
            done = subprocess.run(
                [str(jlpm), *step],
                cwd=EXTENSION_SRC,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert done.returncode == 0, f"jlpm {step[0]} failed:\n{done.stdout}\n{done.stderr}"
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

    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log

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


@pytest.fixture(scope="module")
def lab(
    built_extension: Path | None, node_tools: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    # A short, searchable base: sandbox sockets live below it (108-byte path limit), and
    # as root the sandboxes run as nobody.
    base = Path(tmp_path_factory.mktemp("lab"))
    state = Path(f"/tmp/cpods-browser-{os.getpid()}")
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
    if built_extension is not None:
        (jupyter_path / "labextensions" / "jupyter-claude-pods").symlink_to(built_extension)
    config = {
        "ServerApp": {"jpserver_extensions": {"jupyter_claude_pods": True}},
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
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(config))
    # No "get notified about Jupyter news?" toast over the screenshots.
    notification = base / "settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "CLAUDE_PODS"))},
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
        INSTALLED_PYTHON or sys.executable,
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
    server = Lab(f"http://127.0.0.1:{port}", proc, log)
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
    out_dir.mkdir(exist_ok=True)
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
    if os.environ.get("CLAUDE_PODS_UPDATE_SCREENSHOTS") == "1":
        images = ROOT / "docs" / "images"
        images.mkdir(parents=True, exist_ok=True)
        for name in sorted(SCREENSHOTS):
            shutil.copyfile(out_dir / name, images / name)
