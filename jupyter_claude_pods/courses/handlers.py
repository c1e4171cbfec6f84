"""REST API for courses, quizzes and progress under ``/claude-pods/api/``.

Shaped like jupyter_server's own API handlers: an auth resource per audience
(``claude_pods_courses`` for learners, ``claude_pods_instructor`` for teachers), every
verb ``@web.authenticated`` then ``@authorized``, and JSON errors from ``APIHandler``.

Everything a learner sends is checked here before the course service sees it: ids
against the course id pattern (route regexes accept any segment so a bad id gets a
clear 400, not a bare 404), bodies against a size cap before they are parsed, and
JSON against the exact shape expected. Quiz answers are checked by the service, on
the server; the API never returns them. A request that fails writes nothing.
"""

from __future__ import annotations

import json
import re
import typing as t

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web

from .. import __version__
from ..identity import username
from .config import CoursesConfig
from .model import Course, valid_id
from .progress import CourseService

AUTH_RESOURCE = "claude_pods_courses"
INSTRUCTOR_RESOURCE = "claude_pods_instructor"

#: Settings keys (set by :class:`~jupyter_claude_pods.app.ClaudePodsApp`).
SERVICE_SETTING = "claude_pods_courses"
CONFIG_SETTING = "claude_pods_courses_config"
#: An async callable that starts the course service once (awaited before each request).
START_SETTING = "claude_pods_courses_start"

#: Largest request body accepted, in bytes. Answers are short; anything bigger is
#: refused before it is parsed.
MAX_BODY_BYTES = 64 * 1024

#: Stage numbers in URLs: a positive decimal without a sign or leading zeros.
_STAGE_RE = re.compile(r"^[1-9][0-9]{0,5}$")
#: Usernames in instructor URLs. Wider than course ids (hub usernames are often
#: e-mail addresses) but still free of path separators, NUL and shell metacharacters.
_USER_RE = re.compile(r"^[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]{0,127}$")


async def ensure_service_started(handler: JupyterHandler) -> None:
    """Open the course service (once) before a request uses it; 503 if it cannot.

    The server's start hook opens it too, but a request can come first (and tests'
    servers never run that hook); a failed start is retried by the next request.
    """
    start = handler.settings.get(START_SETTING)
    if start is None:
        return
    try:
        await start()
    except Exception:
        handler.log.exception("claude-pods: the course service could not start")
        raise web.HTTPError(503, "course progress is unavailable") from None


def valid_username(value: str) -> bool:
    """Whether ``value`` may name a learner in a URL (no ``..``, ``/``, NUL, spaces…)."""
    return bool(_USER_RE.fullmatch(value)) and ".." not in value


class CoursesAPIHandler(APIHandler):
    """Base: the course service, the caller's name and strict input parsing."""

    auth_resource = AUTH_RESOURCE

    async def prepare(self) -> None:  # type: ignore[override]
        """Make sure the progress store is open before any verb runs."""
        await super().prepare()
        await ensure_service_started(self)

    @property
    def service(self) -> CourseService:
        """The course service created by the extension app."""
        service = self.settings.get(SERVICE_SETTING)
        if service is None:
            raise web.HTTPError(503, "courses are not available on this server")
        return t.cast(CourseService, service)

    @property
    def courses_config(self) -> CoursesConfig | None:
        """The ``CoursesConfig`` in effect (None when the extension did not set one)."""
        return t.cast("CoursesConfig | None", self.settings.get(CONFIG_SETTING))

    @property
    def user_name(self) -> str:
        """Whose progress this request reads or changes."""
        return username(self)

    def course_or_404(self, course_id: str) -> Course:
        """The course named in the URL: 400 for a malformed id, 404 for an unknown one."""
        if not valid_id(course_id):
            raise web.HTTPError(400, "invalid course id")
        course = self.service.catalog.get(course_id)
        if course is None:
            raise web.HTTPError(404, f"no such course: {course_id}")
        return course

    def stage_number(self, course: Course, text: str) -> int:
        """The stage named in the URL: 400 unless a positive integer, 404 if not in the course."""
        if not _STAGE_RE.fullmatch(text):
            raise web.HTTPError(400, "the stage must be a positive integer")
        number = int(text)
        if course.stage(number) is None:
            raise web.HTTPError(404, f"course {course.id} has no stage {number}")
        return number

    def json_object(self, *, allowed: frozenset[str], optional: bool = False) -> dict[str, t.Any]:
        """The body as a JSON object with no fields outside ``allowed``.

        ``optional``: an empty body reads as ``{}``. Only for :class:`BodyHandler`s.
        """
        raw = self.body()
        if not raw.strip():
            if optional:
                return {}
            raise web.HTTPError(400, "a JSON object body is required")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise web.HTTPError(400, "the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        if set(data) - allowed:
            # Field names are not echoed: they are the caller's text, and Tornado uses
            # the message as a %-format when logging it.
            expected = ", ".join(sorted(allowed)) or "none"
            raise web.HTTPError(400, f"unexpected field(s) in the body (allowed: {expected})")
        return data

    def body(self) -> bytes:
        """The request body (overridden where bodies are accepted)."""
        return b""

    async def is_instructor(self) -> bool:
        """Whether the caller may use the instructor routes.

        The authorizer must allow ``claude_pods_instructor`` and, when
        ``CoursesConfig.instructors`` lists anyone, the caller must be listed.
        """
        user = self.current_user
        if not user:
            return False
        allowed = self.authorizer.is_authorized(self, user, "read", INSTRUCTOR_RESOURCE)
        if not isinstance(allowed, bool):
            allowed = await allowed
        return bool(allowed) and self.listed_instructor()

    def listed_instructor(self) -> bool:
        """The ``instructors`` list check (an empty list leaves it to the authorizer)."""
        config = self.courses_config
        listed = list(config.instructors) if config is not None else []
        return not listed or self.user_name in listed

    async def progress_of(self, user: str, course: Course) -> dict[str, t.Any]:
        """One learner's progress in one course."""
        return await self.service.progress(user, course)

    def send(self, model: dict[str, t.Any]) -> None:
        """Finish with ``model`` as JSON."""
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(model))


class BodyHandler(CoursesAPIHandler):
    """A handler whose verbs take a JSON body, capped at :data:`MAX_BODY_BYTES`.

    The body is streamed (``stream_request_body``) so the cap holds before anything is
    buffered: a declared ``Content-Length`` over it is refused right after the headers,
    and a chunked body over it is counted but not kept. Subclasses must be decorated
    with ``@web.stream_request_body`` themselves (Tornado reads the flag per class).
    """

    _chunks: list[bytes]
    _received = 0

    async def prepare(self) -> None:  # type: ignore[override]
        """Refuse an announced oversized body before reading it."""
        self._chunks = []
        await super().prepare()
        declared = self.request.headers.get("Content-Length")
        if declared is not None:
            if not declared.isdigit():
                raise web.HTTPError(400, "invalid Content-Length")
            if int(declared) > MAX_BODY_BYTES:
                raise web.HTTPError(413, f"the request body exceeds {MAX_BODY_BYTES} bytes")

    def data_received(self, chunk: bytes) -> None:
        """Keep the body while it is within the cap; past it, only count."""
        self._received += len(chunk)
        if self._received > MAX_BODY_BYTES:
            self._chunks.clear()
        else:
            self._chunks.append(chunk)

    def check_body_size(self) -> None:
        """413 when the body that arrived was over the cap."""
        if self._received > MAX_BODY_BYTES:
            raise web.HTTPError(413, f"the request body exceeds {MAX_BODY_BYTES} bytes")

    def body(self) -> bytes:
        """The whole body (within the cap)."""
        self.check_body_size()
        return b"".join(self._chunks)


class StatusHandler(CoursesAPIHandler):
    """``GET /claude-pods/api/status``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Who the caller is and what this server offers."""
        manager = self.settings.get("terminal_manager")
        backend = getattr(getattr(manager, "sandbox_backend", None), "kind", None)
        config = self.courses_config
        self.send(
            {
                "user": self.user_name,
                "instructor": await self.is_instructor(),
                "backend": str(backend or "none"),
                "courses_dir_configured": bool(config is not None and config.courses_dir),
                "version": __version__,
            }
        )


class CoursesHandler(CoursesAPIHandler):
    """``GET /claude-pods/api/courses``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Every course with the caller's progress, and the courses that failed to load."""
        catalog = self.service.catalog
        user = self.user_name
        courses = []
        for course in catalog.courses():
            summary = course.summary()
            summary["progress"] = await self.progress_of(user, course)
            courses.append(summary)
        problems = [problem.public() for problem in catalog.problems()]
        self.send({"courses": courses, "problems": problems})


class CourseHandler(CoursesAPIHandler):
    """``GET /claude-pods/api/courses/<id>``."""

    @web.authenticated
    @authorized
    async def get(self, course_id: str) -> None:
        """One course's stages (quizzes without answers) and the caller's progress."""
        course = self.course_or_404(course_id)
        model = course.public()
        model["progress"] = await self.progress_of(self.user_name, course)
        self.send(model)


@web.stream_request_body
class AnswerHandler(BodyHandler):
    """``POST /claude-pods/api/courses/<id>/stages/<n>/answer``."""

    @web.authenticated
    @authorized
    async def post(self, course_id: str, stage_text: str) -> None:
        """Check the caller's answer to a stage's quiz; a correct one completes the stage."""
        self.check_body_size()
        course = self.course_or_404(course_id)
        number = self.stage_number(course, stage_text)
        answer = self.json_object(allowed=frozenset({"answer"})).get("answer")
        if not isinstance(answer, str):
            raise web.HTTPError(400, "answer must be a string")
        try:
            result = await self.service.answer_quiz(self.user_name, course, number, answer)
        except LookupError:
            raise web.HTTPError(404, f"stage {number} of {course.id} has no quiz") from None
        except PermissionError:
            raise web.HTTPError(
                409, f"stage {number} of {course.id} is locked until earlier stages are done"
            ) from None
        self.send(result)


class ProgressHandler(CoursesAPIHandler):
    """``GET /claude-pods/api/progress``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """The caller's progress in every course."""
        catalog = self.service.catalog
        user = self.user_name
        courses = {c.id: await self.progress_of(user, c) for c in catalog.courses()}
        self.send({"user": user, "courses": courses})


class CourseProgressHandler(CoursesAPIHandler):
    """``GET``/``DELETE /claude-pods/api/progress/<id>``."""

    @web.authenticated
    @authorized
    async def get(self, course_id: str) -> None:
        """The caller's progress in one course."""
        course = self.course_or_404(course_id)
        self.send(await self.progress_of(self.user_name, course))

    @web.authenticated
    @authorized
    async def delete(self, course_id: str) -> None:
        """Forget the caller's progress in one course (to start over)."""
        course = self.course_or_404(course_id)
        self.send({"deleted": await self.service.reset(self.user_name, course)})


def require_listed(handler: CoursesAPIHandler) -> None:
    """403 unless the caller is in ``CoursesConfig.instructors`` (when it is set)."""
    if not handler.listed_instructor():
        raise web.HTTPError(403, "only the configured instructors may do this")


class InstructorProgressHandler(CoursesAPIHandler):
    """``GET /claude-pods/api/instructor/progress[?course=<id>]``."""

    auth_resource = INSTRUCTOR_RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Every learner's progress, optionally for one course."""
        require_listed(self)
        course_id = self.get_query_argument("course", None)
        if course_id is not None:
            course_id = self.course_or_404(course_id).id
        self.send(await self.service.instructor_view(course_id))


@web.stream_request_body
class InstructorMarkHandler(BodyHandler):
    """``PUT /claude-pods/api/instructor/progress/<user>/<id>/<n>``."""

    auth_resource = INSTRUCTOR_RESOURCE

    @web.authenticated
    @authorized
    async def put(self, learner: str, course_id: str, stage_text: str) -> None:
        """Mark a learner's stage complete (for work judged outside the quiz)."""
        require_listed(self)
        self.check_body_size()
        if not valid_username(learner):
            raise web.HTTPError(400, "invalid username")
        course = self.course_or_404(course_id)
        number = self.stage_number(course, stage_text)
        self.json_object(allowed=frozenset(), optional=True)
        newly = await self.service.mark(learner, course, number, source="instructor")
        self.send(
            {
                "user": learner,
                "course": course.id,
                "stage": number,
                "newly_completed": newly,
                "progress": await self.progress_of(learner, course),
            }
        )


_SEGMENT = r"([^/]+)"

#: URL patterns (under the server's base URL) and their handlers.
default_handlers: list[tuple[str, type[web.RequestHandler]]] = [
    (r"/claude-pods/api/status", StatusHandler),
    (r"/claude-pods/api/courses", CoursesHandler),
    (rf"/claude-pods/api/courses/{_SEGMENT}", CourseHandler),
    (rf"/claude-pods/api/courses/{_SEGMENT}/stages/{_SEGMENT}/answer", AnswerHandler),
    (r"/claude-pods/api/progress", ProgressHandler),
    (rf"/claude-pods/api/progress/{_SEGMENT}", CourseProgressHandler),
    (r"/claude-pods/api/instructor/progress", InstructorProgressHandler),
    (
        rf"/claude-pods/api/instructor/progress/{_SEGMENT}/{_SEGMENT}/{_SEGMENT}",
        InstructorMarkHandler,
    ),
]
