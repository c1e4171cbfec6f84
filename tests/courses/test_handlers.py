"""The course REST API through a real Jupyter server (pytest-jupyter), as a browser uses it."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.auth.authorizer import AllowAllAuthorizer
from jupyter_server.auth.identity import IdentityProvider

from jupyter_claude_pods import __version__
from jupyter_claude_pods.events import PROGRESS_SCHEMA_ID

from ._server import *  # the server fixtures
from ._server import SECRET_ANSWERS, snapshot

#: Every route of the API with a request that would succeed for the right person.
LEARNER_ROUTES = [
    ("GET", "status", None),
    ("GET", "courses", None),
    ("GET", "courses/intro", None),
    ("POST", "courses/intro/stages/1/answer", {"answer": "4"}),
    ("GET", "progress", None),
    ("GET", "progress/intro", None),
    ("DELETE", "progress/intro", None),
]
INSTRUCTOR_ROUTES = [
    ("GET", "instructor/progress", None),
    ("GET", "instructor/progress?course=intro", None),
    ("PUT", "instructor/progress/alice/intro/1", None),
]


def completions(db: Path) -> list[tuple[Any, ...]]:
    """Rows of the table holding stage completions (whatever the store calls it)."""
    tables = snapshot(db)
    return [row for name, rows in tables.items() if "complet" in name for row in rows]


# ---------------------------------------------------------------- what learners see


async def test_status(api: Any) -> None:
    reply = await api("GET", "status")
    assert reply.code == 200, reply
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.body == {
        "user": "alice",
        "instructor": False,
        "backend": "none",  # the terminals extension is off in these tests
        "courses_dir_configured": True,
        "version": __version__,
    }
    teacher = await api("GET", "status", user="teacher1")
    assert teacher.body["instructor"] is True
    assert teacher.body["user"] == "teacher1"


async def test_course_list_has_progress_and_problems(api: Any) -> None:
    reply = await api("GET", "courses")
    assert reply.code == 200, reply
    assert [c["id"] for c in reply.body["courses"]] == ["free", "intro", "solo"]
    intro = reply.body["courses"][1]
    assert intro["title"] == "Intro to models"
    assert intro["stage_count"] == 3
    assert intro["unlock"] == "sequential"
    assert intro["progress"]["completed"] == []
    assert intro["progress"]["next_stage"] == 1
    assert intro["progress"]["unlocked"] == [1]
    problems = reply.body["problems"]
    assert problems, "the broken course is reported"
    assert {p["course"] for p in problems} == {"broken"}
    assert all(set(p) == {"course", "file", "field", "message"} for p in problems)


async def test_course_detail_never_contains_answers(api: Any) -> None:
    reply = await api("GET", "courses/intro")
    assert reply.code == 200, reply
    stages = reply.body["stages"]
    assert [s["number"] for s in stages] == [1, 2, 3]
    assert stages[0]["quiz"] == {
        "question": "2 + 2?",
        "type": "multiple-choice",
        "options": ["3", "4", "5"],
    }
    assert stages[1]["quiz"]["options"] == []
    assert stages[2]["quiz"] is None
    assert stages[1]["concepts"] == [{"title": "softmax", "content": "normalises scores"}]
    assert "answer" not in reply.raw.decode()
    free_text = reply.raw.decode().lower()
    assert "softmax" in free_text  # the concept is shown...
    assert '"soft max"' not in free_text  # ...but not the accepted answers
    assert reply.body["progress"]["course"] == "intro"


# ---------------------------------------------------------------- quizzes and progress


async def test_quiz_flow_completes_stages_course_and_emits_events(
    api: Any, progress_events: Any, progress_db: Path
) -> None:
    wrong = await api("POST", "courses/intro/stages/1/answer", body={"answer": "5"})
    assert wrong.code == 200, wrong
    assert wrong.body["correct"] is False
    assert wrong.body["newly_completed"] is False
    assert wrong.body["progress"]["completed"] == []
    assert "4" not in str(wrong.body["progress"])  # no hint of the answer
    assert await progress_events.settle() == []

    right = await api("POST", "courses/intro/stages/1/answer", body={"answer": " 4 "})
    assert right.code == 200, right
    assert right.body["correct"] is True
    assert right.body["newly_completed"] is True
    assert right.body["stage"] == 1
    progress = right.body["progress"]
    assert [c["stage"] for c in progress["completed"]] == [1]
    assert progress["completed"][0]["source"] == "quiz"
    assert progress["next_stage"] == 2
    assert progress["unlocked"] == [1, 2]
    events = await progress_events.settle()
    assert events == [
        {
            "action": "stage_completed",
            "user": "alice",
            "course": "intro",
            "stage": 1,
            "source": "quiz",
            "session": None,
        }
    ]

    again = await api("POST", "courses/intro/stages/1/answer", body={"answer": "4"})
    assert again.body["correct"] is True
    assert again.body["newly_completed"] is False
    assert len(await progress_events.settle()) == 1, "no event without a change"

    free = await api("POST", "courses/intro/stages/2/answer", body={"answer": "Soft  Max."})
    assert free.body["correct"] is True, free
    assert free.body["progress"]["next_stage"] == 3

    no_quiz = await api("POST", "courses/intro/stages/3/answer", body={"answer": "x"})
    assert no_quiz.code == 404, no_quiz

    marked = await api("PUT", "instructor/progress/alice/intro/3", user="teacher1")
    assert marked.code == 200, marked
    assert marked.body["newly_completed"] is True
    assert marked.body["progress"]["course_completed"] is True
    assert marked.body["progress"]["next_stage"] is None
    events = await progress_events.settle()
    assert [(e["action"], e["stage"], e["source"]) for e in events] == [
        ("stage_completed", 1, "quiz"),
        ("stage_completed", 2, "quiz"),
        ("stage_completed", 3, "instructor"),
        ("course_completed", None, "instructor"),
    ]
    assert len(completions(progress_db)) >= 3


async def test_locked_stage_is_409_and_writes_nothing(
    api: Any, progress_events: Any, progress_db: Path
) -> None:
    await api("GET", "progress")  # the store exists
    before = snapshot(progress_db)
    reply = await api("POST", "courses/intro/stages/2/answer", body={"answer": "softmax"})
    assert reply.code == 409, reply
    assert reply.body["message"]
    assert snapshot(progress_db) == before
    assert await progress_events.settle() == []
    # "free" courses have no order
    free = await api("POST", "courses/free/stages/2/answer", body={"answer": "b"})
    assert free.code == 200, free
    assert free.body["correct"] is True
    assert free.body["progress"]["unlocked"] == [1, 2]
    assert free.body["progress"]["next_stage"] == 1


async def test_progress_routes_and_reset(api: Any, progress_events: Any) -> None:
    await api("POST", "courses/intro/stages/1/answer", body={"answer": "4"})
    mine = await api("GET", "progress")
    assert mine.code == 200, mine
    assert mine.body["user"] == "alice"
    assert set(mine.body["courses"]) == {"free", "intro", "solo"}
    assert [c["stage"] for c in mine.body["courses"]["intro"]["completed"]] == [1]
    one = await api("GET", "progress/intro")
    assert one.body == mine.body["courses"]["intro"]

    reset = await api("DELETE", "progress/intro")
    assert reset.code == 200, reset
    assert reset.body == {"deleted": 1}
    assert (await api("GET", "progress/intro")).body["completed"] == []
    assert (await api("DELETE", "progress/intro")).body == {"deleted": 0}
    events = await progress_events.settle()
    assert events[-1]["action"] == "reset"
    assert events[-1]["user"] == "alice"
    assert events[-1]["course"] == "intro"
    assert sum(e["action"] == "reset" for e in events) >= 1


async def test_learners_see_only_their_own_progress(api: Any) -> None:
    done = await api("POST", "courses/intro/stages/1/answer", user="alice", body={"answer": "4"})
    assert done.body["newly_completed"] is True

    bob = await api("GET", "progress/intro", user="bob")
    assert bob.body["completed"] == []
    bob_all = await api("GET", "progress", user="bob")
    assert bob_all.body["user"] == "bob"
    assert all(p["completed"] == [] for p in bob_all.body["courses"].values())
    listing = await api("GET", "courses", user="bob")
    assert all(c["progress"]["completed"] == [] for c in listing.body["courses"])
    detail = await api("GET", "courses/intro", user="bob")
    assert detail.body["progress"]["completed"] == []
    assert "alice" not in str(bob_all.body) + str(listing.body) + str(detail.body)

    # bob resetting removes nothing of alice's, and bob cannot use instructor routes
    assert (await api("DELETE", "progress/intro", user="bob")).body == {"deleted": 0}
    assert (await api("GET", "instructor/progress", user="bob")).code == 403
    alice = await api("GET", "progress/intro", user="alice")
    assert [c["stage"] for c in alice.body["completed"]] == [1]


async def test_instructor_view(api: Any) -> None:
    await api("POST", "courses/intro/stages/1/answer", user="alice", body={"answer": "4"})
    await api("POST", "courses/solo/stages/1/answer", user="bob", body={"answer": "yes"})
    view = await api("GET", "instructor/progress", user="teacher1")
    assert view.code == 200, view
    by_user = {row["user"]: row["courses"] for row in view.body["learners"]}
    assert set(by_user) >= {"alice", "bob"}
    assert [c["stage"] for c in by_user["alice"]["intro"]["completed"]] == [1]
    assert by_user["bob"]["solo"]["course_completed"] is True

    only = await api("GET", "instructor/progress?course=solo", user="teacher1")
    assert only.code == 200, only
    assert {row["user"] for row in only.body["learners"]} >= {"bob"}
    assert all(set(row["courses"]) <= {"solo"} for row in only.body["learners"])

    bad = await api("GET", "instructor/progress?course=..%2Fetc", user="teacher1")
    assert bad.code == 400, bad
    unknown = await api("GET", "instructor/progress?course=nope", user="teacher1")
    assert unknown.code == 404, unknown


# ---------------------------------------------------------------- concurrency


async def test_fifty_concurrent_correct_answers_complete_once(
    api: Any, progress_events: Any, progress_db: Path
) -> None:
    replies = await asyncio.gather(
        *(api("POST", "courses/solo/stages/1/answer", body={"answer": "yes"}) for _ in range(50))
    )
    assert {r.code for r in replies} == {200}, [r for r in replies if r.code != 200][:3]
    assert all(r.body["correct"] for r in replies)
    assert sum(r.body["newly_completed"] for r in replies) == 1
    assert all(r.body["progress"]["course_completed"] for r in replies)
    events = await progress_events.settle()
    assert sorted(e["action"] for e in events) == ["course_completed", "stage_completed"]
    progress = await api("GET", "progress/solo")
    assert len(progress.body["completed"]) == 1


# ---------------------------------------------------------------- authorization

ALL_ROUTES = LEARNER_ROUTES + INSTRUCTOR_ROUTES


@pytest.mark.parametrize(("method", "path", "body"), ALL_ROUTES)
async def test_unauthenticated_is_403_and_writes_nothing(
    api: Any, progress_db: Path, method: str, path: str, body: Any
) -> None:
    await api("GET", "progress")  # the store exists
    before = snapshot(progress_db)
    reply = await api(method, path, user=None, body=body)
    assert reply.code == 403, reply
    assert reply.body["message"]
    assert snapshot(progress_db) == before


@pytest.mark.parametrize(("method", "path", "body"), ALL_ROUTES)
async def test_authorizer_denial_is_403(
    api: Any, progress_db: Path, method: str, path: str, body: Any
) -> None:
    await api("GET", "progress")
    before = snapshot(progress_db)
    reply = await api(method, path, user="blocked", body=body)
    assert reply.code == 403, reply
    assert "claude_pods_" in reply.body["message"]
    assert snapshot(progress_db) == before


@pytest.mark.parametrize(("method", "path", "body"), INSTRUCTOR_ROUTES)
async def test_learner_on_instructor_routes_is_403(
    api: Any, progress_db: Path, method: str, path: str, body: Any
) -> None:
    await api("GET", "progress")
    before = snapshot(progress_db)
    reply = await api(method, path, user="alice", body=body)
    assert reply.code == 403, reply
    assert "claude_pods_instructor" in reply.body["message"]
    assert snapshot(progress_db) == before
    # the same request by a teacher works
    assert (await api(method, path, user="teacher1", body=body)).code == 200


class TestInstructorsList:
    """``CoursesConfig.instructors`` set: authorized *and* listed."""

    @pytest.fixture
    def instructors(self) -> list[str]:
        return ["teacher1"]

    @pytest.mark.parametrize(("method", "path", "body"), INSTRUCTOR_ROUTES)
    async def test_unlisted_teacher_is_403(
        self, api: Any, progress_db: Path, method: str, path: str, body: Any
    ) -> None:
        await api("GET", "progress")
        before = snapshot(progress_db)
        reply = await api(method, path, user="teacher2", body=body)
        assert reply.code == 403, reply
        assert snapshot(progress_db) == before
        assert (await api(method, path, user="teacher1", body=body)).code == 200

    async def test_status_reports_the_list(self, api: Any) -> None:
        assert (await api("GET", "status", user="teacher1")).body["instructor"] is True
        assert (await api("GET", "status", user="teacher2")).body["instructor"] is False


class TestStockTokenLogin:
    """Jupyter's own token login: one secret, and its holder is the server's owner."""

    @pytest.fixture
    def server_config_overrides(self) -> dict[str, Any]:
        return {
            "ServerApp": {
                "identity_provider_class": IdentityProvider,
                "authorizer_class": AllowAllAuthorizer,
            }
        }

    async def test_token_holder_is_the_owner(self, api: Any, jp_auth_header: Any) -> None:
        reply = await api("GET", "status", user=None, headers=dict(jp_auth_header))
        assert reply.code == 200, reply
        assert reply.body["user"] == (os.environ.get("JUPYTERHUB_USER") or getpass.getuser())
        assert reply.body["instructor"] is True  # allowed by the authorizer, no list set

    @pytest.mark.parametrize(("method", "path", "body"), ALL_ROUTES)
    async def test_no_token_is_403(self, api: Any, method: str, path: str, body: Any) -> None:
        reply = await api(method, path, user=None, body=body)
        assert reply.code == 403, reply


class TestNoCourses:
    @pytest.fixture
    def server_config_overrides(self) -> dict[str, Any]:
        return {"CoursesConfig": {"courses_dir": ""}}

    async def test_empty_catalog(self, api: Any) -> None:
        status = await api("GET", "status")
        assert status.body["courses_dir_configured"] is False
        assert (await api("GET", "courses")).body == {"courses": [], "problems": []}
        assert (await api("GET", "progress")).body == {"user": "alice", "courses": {}}
        assert (await api("GET", "courses/intro")).code == 404


# ---------------------------------------------------------------- bad input

BAD_IDS = [
    "..",
    "%2E%2E",
    "a%2Fb",
    "%2F",
    "a%00b",
    "a;ls",
    "a$b",
    "a%60id%60",
    "a%20b",
    "a.b",
    "a|b",
    "a%26b",
    "%C3%A9t%C3%A9",
    "x" * 65,
    "-lead",
]
BAD_STAGES = ["0", "-1", "01", "1.5", "x", "1e3", "1000000", "%201", "1%00"]


def _bad_requests() -> list[tuple[str, str, Any, int]]:
    cases: list[tuple[str, str, Any, int]] = []
    for bad in BAD_IDS:
        cases += [
            ("GET", f"courses/{bad}", None, 400),
            ("POST", f"courses/{bad}/stages/1/answer", {"answer": "4"}, 400),
            ("GET", f"progress/{bad}", None, 400),
            ("DELETE", f"progress/{bad}", None, 400),
            ("PUT", f"instructor/progress/alice/{bad}/1", None, 400),
        ]
    for bad in BAD_STAGES:
        cases += [
            ("POST", f"courses/intro/stages/{bad}/answer", {"answer": "4"}, 400),
            ("PUT", f"instructor/progress/alice/intro/{bad}", None, 400),
        ]
    for bad_user in ["..", "a%2Fb", "a%00b", "a;b", "a%20b", "a$b", "%60x%60", "a..b"]:
        cases.append(("PUT", f"instructor/progress/{bad_user}/intro/1", None, 400))
    cases += [
        ("GET", "courses/nope", None, 404),
        ("POST", "courses/nope/stages/1/answer", {"answer": "4"}, 404),
        ("GET", "progress/nope", None, 404),
        ("DELETE", "progress/nope", None, 404),
        ("PUT", "instructor/progress/alice/nope/1", None, 404),
        ("POST", "courses/intro/stages/4/answer", {"answer": "4"}, 404),
        ("PUT", "instructor/progress/alice/intro/4", None, 404),
        ("POST", "courses/intro/stages/1/answer", b"{not json", 400),
        ("POST", "courses/intro/stages/1/answer", b"\xff\xfe", 400),
        ("POST", "courses/intro/stages/1/answer", b"", 400),
        ("POST", "courses/intro/stages/1/answer", ["4"], 400),
        ("POST", "courses/intro/stages/1/answer", "4", 400),
        ("POST", "courses/intro/stages/1/answer", {}, 400),
        ("POST", "courses/intro/stages/1/answer", {"answer": 4}, 400),
        ("POST", "courses/intro/stages/1/answer", {"answer": None}, 400),
        ("POST", "courses/intro/stages/1/answer", {"answer": "4", "user": "bob"}, 400),
        ("POST", "courses/intro/stages/1/answer", {"answer": "4", "%s%s%n": 1}, 400),
        ("POST", "courses/intro/stages/1/answer", {"answer": "4" + " " * 70_000}, 413),
        ("POST", "courses/intro/stages/1/answer", b"{" * 70_000, 413),
        ("PUT", "instructor/progress/alice/intro/1", b"[", 400),
        ("PUT", "instructor/progress/alice/intro/1", {"source": "quiz"}, 400),
        ("PUT", "instructor/progress/alice/intro/1", b" " * 70_000, 413),
    ]
    return cases


@pytest.mark.parametrize(("method", "path", "body", "code"), _bad_requests())
async def test_bad_input_is_a_json_error_and_writes_nothing(
    api: Any,
    progress_db: Path,
    progress_events: Any,
    method: str,
    path: str,
    body: Any,
    code: int,
) -> None:
    # some progress first, so "unchanged" is not merely "empty"
    first = await api("POST", "courses/free/stages/1/answer", user="teacher1", body={"answer": "a"})
    assert first.body["newly_completed"] is True
    events_before = list(await progress_events.settle())
    before = snapshot(progress_db)
    assert before

    reply = await api(method, path, user="teacher1", body=body)
    assert reply.code == code, reply
    assert reply.headers["Content-Type"].startswith("application/json")
    assert isinstance(reply.body["message"], str)
    assert reply.body["message"]
    for secret in SECRET_ANSWERS:
        assert f'"{secret}"' not in reply.raw.decode("utf-8", "replace")
    assert snapshot(progress_db) == before
    assert await progress_events.settle() == events_before


async def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a hand-written HTTP/1.1 request; the status and body of the response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + body)
        await writer.drain()
        status = int((await asyncio.wait_for(reader.readline(), 10)).split()[1])
        length = 0
        while (line := await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()


async def test_announced_oversized_body_is_refused_before_it_is_sent(
    api: Any, progress_db: Path, jp_http_port: int, jp_base_url: str
) -> None:
    """413 on the headers alone: the 10 MB body is never sent, and the reply comes."""
    await api("GET", "progress")
    before = snapshot(progress_db)
    path = jp_base_url + "claude-pods/api/courses/intro/stages/1/answer"
    status, body = await raw_request(
        jp_http_port,
        f"POST {path} HTTP/1.1\nHost: 127.0.0.1:{jp_http_port}\nX-Test-User: alice\n"
        "Content-Type: application/json\nContent-Length: 10000000\n\n",
    )
    assert status == 413
    assert "exceeds" in json.loads(body)["message"]
    assert snapshot(progress_db) == before


async def test_chunked_oversized_body_is_413(
    api: Any, progress_db: Path, jp_http_port: int, jp_base_url: str
) -> None:
    """Without a Content-Length the cap is applied to what arrives."""
    await api("GET", "progress")
    before = snapshot(progress_db)
    path = jp_base_url + "claude-pods/api/instructor/progress/alice/intro/1"
    chunk = b" " * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n"
    status, body = await raw_request(
        jp_http_port,
        f"PUT {path} HTTP/1.1\nHost: 127.0.0.1:{jp_http_port}\nX-Test-User: teacher1\n"
        "Content-Type: application/json\nTransfer-Encoding: chunked\n\n",
        chunks,
    )
    assert status == 413
    assert json.loads(body)["message"]
    assert snapshot(progress_db) == before
    # the same, small, works
    small = b"2\r\n{}\r\n0\r\n\r\n"
    status, body = await raw_request(
        jp_http_port,
        f"PUT {path} HTTP/1.1\nHost: 127.0.0.1:{jp_http_port}\nX-Test-User: teacher1\n"
        "Content-Type: application/json\nTransfer-Encoding: chunked\nConnection: close\n\n",
        small,
    )
    assert status == 200, body
    assert json.loads(body)["newly_completed"] is True


async def test_event_schema_is_registered(jp_serverapp: Any) -> None:
    assert PROGRESS_SCHEMA_ID in jp_serverapp.event_logger.schemas
    schema = jp_serverapp.event_logger.schemas.get(PROGRESS_SCHEMA_ID)
    assert str(schema.version) == "1"


async def test_service_is_in_the_settings(service: Any) -> None:
    from jupyter_claude_pods.courses.progress import CourseService

    assert isinstance(service, CourseService)


class TestUnavailableStore:
    """A progress database that cannot be opened: 503 with a JSON error, not a 500."""

    @pytest.fixture
    def server_config_overrides(self, tmp_path: Path) -> dict[str, Any]:
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        return {"CoursesConfig": {"progress_db": str(blocker / "progress.sqlite3")}}

    @pytest.mark.parametrize(("method", "path", "body"), ALL_ROUTES)
    async def test_503(self, api: Any, method: str, path: str, body: Any) -> None:
        reply = await api(method, path, user="teacher1", body=body)
        assert reply.code == 503, reply
        assert reply.body["message"] == "course progress is unavailable"

    async def test_recovers_once_fixed(self, api: Any, tmp_path: Path) -> None:
        assert (await api("GET", "progress")).code == 503
        blocker = tmp_path / "not-a-directory"
        blocker.unlink()
        blocker.mkdir()
        reply = await api("GET", "progress")
        assert reply.code == 200, reply


def test_courses_config_defaults_and_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from jupyter_core.paths import jupyter_data_dir

    from jupyter_claude_pods.courses.config import CoursesConfig

    monkeypatch.delenv("CLAUDE_PODS_COURSES_DIR", raising=False)
    monkeypatch.delenv("CLAUDE_PODS_PROGRESS_DB", raising=False)
    config = CoursesConfig()
    assert config.courses_root() is None
    assert config.progress_path() == Path(jupyter_data_dir()) / "claude_pods" / "progress.sqlite3"
    assert config.instructors == []

    monkeypatch.setenv("CLAUDE_PODS_COURSES_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("CLAUDE_PODS_PROGRESS_DB", str(tmp_path / "p.sqlite3"))
    config = CoursesConfig()
    assert config.courses_root() == tmp_path / "c"
    assert config.progress_path() == tmp_path / "p.sqlite3"
    # configuration wins over the environment
    from traitlets.config import Config

    configured = CoursesConfig(config=Config({"CoursesConfig": {"courses_dir": ""}}))
    assert configured.courses_root() is None
