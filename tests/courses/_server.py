"""A Jupyter server with courses, people taken from a header, and an HTTP helper.

Shared by the handler, OpenAPI and fuzz tests (imported by each; conftest.py belongs to
the course-core tests). The server has no terminals: these tests exercise the course API
only, and the terminal manager's backend is irrelevant to it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.auth.identity import IdentityProvider, User
from tornado.httpclient import HTTPResponse

from jupyter_claude_pods.events import PROGRESS_SCHEMA_ID

#: The fixtures, for ``from ._server import *`` in the test modules.
__all__ = [
    "api",
    "course_root",
    "instructors",
    "jp_server_config",
    "progress_db",
    "progress_events",
    "server_config_overrides",
    "service",
]

#: Request header naming the user (HeaderIdentityProvider).
USER_HEADER = "X-Test-User"

INTRO = {
    "title": "Intro to models",
    "description": "Three stages.",
    "stages": [
        {
            "number": 1,
            "title": "Sums",
            "goals": ["add"],
            "concepts": ["addition"],
            "quiz": {
                "question": "2 + 2?",
                "type": "multiple-choice",
                "options": ["3", "4", "5"],
                "answer": "4",
            },
        },
        {
            "number": 2,
            "title": "Names",
            "concepts": [{"title": "softmax", "content": "normalises scores"}],
            "quiz": {
                "question": "Which function turns scores into probabilities?",
                "type": "free-response",
                "answer": ["softmax", "soft max"],
            },
        },
        {"number": 3, "title": "Project"},
    ],
}
FREE = {
    "title": "Free order",
    "unlock": "free",
    "stages": [
        {
            "number": 1,
            "title": "A",
            "quiz": {"question": "a?", "type": "free-response", "answer": "a"},
        },
        {
            "number": 2,
            "title": "B",
            "quiz": {"question": "b?", "type": "free-response", "answer": "b"},
        },
    ],
}
SOLO = {
    "title": "One stage",
    "stages": [
        {
            "number": 1,
            "title": "Only",
            "quiz": {
                "question": "yes?",
                "type": "multiple-choice",
                "options": ["yes", "no"],
                "answer": "yes",
            },
        }
    ],
}
#: Answers, kept here only (the API must never return them).
SECRET_ANSWERS = ("4", "softmax", "soft max")


def write_course(root: Path, course_id: str, manifest: dict[str, Any]) -> None:
    directory = root / course_id
    (directory / "material").mkdir(parents=True)
    (directory / "material" / "README.md").write_text("# material\n")
    (directory / "course.yaml").write_text(yaml.safe_dump(manifest))


class HeaderIdentityProvider(IdentityProvider):
    """The user named by the ``X-Test-User`` header; no header, no user.

    A stand-in for an identity provider that knows people (as JupyterHub's does), so
    one test server can see several learners.
    """

    def get_user(self, handler: Any) -> User | None:  # type: ignore[override]
        name = handler.request.headers.get(USER_HEADER)
        if not name:
            return None
        handler._token_authenticated = True  # an API client: no XSRF cookie dance
        return User(username=name)


class CourseAuthorizer(Authorizer):
    """Allows everything, except: ``blocked`` gets nothing, and only users whose name
    starts with ``teacher`` get ``claude_pods_instructor``."""

    def is_authorized(self, handler: Any, user: User, action: str, resource: str) -> bool:
        if user.username == "blocked":
            return False
        if resource == "claude_pods_instructor":
            return user.username.startswith("teacher")
        return True


@pytest.fixture
def course_root(tmp_path: Path) -> Path:
    root = tmp_path / "courses"
    root.mkdir()
    write_course(root, "intro", INTRO)
    write_course(root, "free", FREE)
    write_course(root, "solo", SOLO)
    broken = root / "broken"
    broken.mkdir()
    (broken / "course.yaml").write_text(yaml.safe_dump({"stages": []}))
    return root


@pytest.fixture
def progress_db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "progress.sqlite3"


@pytest.fixture
def instructors() -> list[str]:
    """``CoursesConfig.instructors`` (tests override this)."""
    return []


@pytest.fixture
def server_config_overrides() -> dict[str, Any]:
    """Extra config, merged per section (tests override this)."""
    return {}


@pytest.fixture
def jp_server_config(
    course_root: Path,
    progress_db: Path,
    instructors: list[str],
    server_config_overrides: dict[str, Any],
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "ServerApp": {
            "jpserver_extensions": {
                "jupyter_claude_pods": True,
                "jupyter_server_terminals": False,
            },
            "identity_provider_class": HeaderIdentityProvider,
            "authorizer_class": CourseAuthorizer,
        },
        "CoursesConfig": {
            "courses_dir": str(course_root),
            "progress_db": str(progress_db),
            "instructors": instructors,
        },
    }
    for section, values in server_config_overrides.items():
        config.setdefault(section, {}).update(values)
    return config


class Reply:
    """Status, headers and parsed JSON body of one response."""

    def __init__(self, response: HTTPResponse) -> None:
        self.code = response.code
        self.headers = response.headers
        self.raw = response.body or b""
        self.body: Any = json.loads(self.raw) if self.raw else None

    def __repr__(self) -> str:
        return f"<Reply {self.code} {self.raw[:200]!r}>"


@pytest.fixture
def api(http_server_client: Any, jp_base_url: str, jp_serverapp: Any) -> Any:
    """``await api(method, path, user="alice", body=None, headers=None)`` → :class:`Reply`.

    ``path`` is appended to the base URL *as given* (already URL-encoded), so tests
    can send ``..``, ``%2F`` or ``%00`` exactly. ``body`` may be bytes or a JSON value.
    Never raises on HTTP errors.
    """

    async def call(
        method: str,
        path: str,
        *,
        user: str | None = "alice",
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        all_headers = dict(headers or {})
        if user is not None:
            all_headers.setdefault(USER_HEADER, user)
        data: bytes | None
        if body is None:
            data = b"" if method in ("POST", "PUT") else None
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        if data is not None and data:
            all_headers.setdefault("Content-Type", "application/json")
        url = jp_base_url.rstrip("/") + "/claude-pods/api/" + path.lstrip("/")
        response = await http_server_client.fetch(
            url,
            method=method,
            body=data,
            headers=all_headers,
            raise_error=False,
            request_timeout=30,
            allow_nonstandard_methods=True,
        )
        return Reply(response)

    return call


@pytest.fixture
def service(jp_serverapp: Any) -> Any:
    """The server's CourseService."""
    return jp_serverapp.web_app.settings["claude_pods_courses"]


class EventLog:
    """Progress events seen by a listener on the server's event logger."""

    def __init__(self, event_logger: Any) -> None:
        self.event_logger = event_logger
        self.events: list[dict[str, Any]] = []

    async def listener(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        self.events.append(dict(data))

    async def settle(self) -> list[dict[str, Any]]:
        """Every event emitted so far (the listener tasks have all run)."""
        await asyncio.wait_for(self.event_logger.gather_listeners(), 10)
        return self.events


@pytest.fixture
def progress_events(jp_serverapp: Any) -> Any:
    log = EventLog(jp_serverapp.event_logger)
    jp_serverapp.event_logger.add_listener(schema_id=PROGRESS_SCHEMA_ID, listener=log.listener)
    yield log
    jp_serverapp.event_logger.remove_listener(schema_id=PROGRESS_SCHEMA_ID, listener=log.listener)


def snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (read-only), to prove a request wrote nothing."""
    if not db.exists():
        return {}
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            table: sorted(connection.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
            for table in tables
        }
    finally:
        connection.close()
