"""What makes a terminal a course terminal: its mount, its environment, its markers.

A course terminal is an ordinary sandbox plus :attr:`SandboxSpec.course` and a few
environment variables (read by ``claude-pods-launch``); the manager resolves the course
before it creates the terminal (:class:`CourseSession`) and, for courses that trust
their tutor, watches the output for completion markers (:class:`MarkerObserver`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import typing as t
from pathlib import Path, PurePosixPath

from tornado import web

from ..courses.catalog import MANIFEST_NAMES, TUTOR_NAME
from ..courses.markers import Marker, MarkerScanner
from ..courses.model import Course, valid_id
from ..sandbox.spec import COURSE_DIR, CourseMount

if t.TYPE_CHECKING:
    import logging

    from ..courses.config import CoursesConfig
    from ..courses.progress import CourseService

#: Files that must stay hidden when a course's material is its whole directory: the
#: manifest holds the quiz answers, and a seed ``CLAUDE.md`` holds them in its JSON
#: block (the sandbox gets the tutor text without it, as ``~/.claude/CLAUDE.md``).
COURSE_PRIVATE_FILES = (*MANIFEST_NAMES, TUTOR_NAME)


@dataclasses.dataclass(frozen=True)
class CourseSession:
    """The course a new terminal is for, resolved before the terminal is created."""

    course: Course
    stage: int
    service: CourseService


def _env_text(text: str) -> str:
    """*text* as an environment value: NUL cannot travel in ``execve``'s environment."""
    return text.replace("\0", "")


def course_mount(course: Course) -> CourseMount:
    """What a sandbox of *course* mounts: its material only, private files hidden.

    The material is usually a sub-directory (``<id>/material``) that holds no manifest;
    when it is the course directory itself (a seed course), the manifest and
    ``CLAUDE.md`` found there are listed as hidden. Only existing ones: a Kubernetes
    pod cannot create a mount point inside the read-only course mount.
    """
    hidden: tuple[str, ...] = ()
    if PurePosixPath(course.material_subpath) == PurePosixPath(course.id):
        material = Path(course.material_dir)
        hidden = tuple(name for name in COURSE_PRIVATE_FILES if os.path.lexists(material / name))
    return CourseMount(
        id=course.id,
        subpath=course.material_subpath,
        host_path=str(course.material_dir),
        hidden=hidden,
    )


def course_env(course: Course, stage: int) -> dict[str, str]:
    """The session environment of a course terminal (read by ``claude-pods-launch``)."""
    env = {
        "CLAUDE_PODS_COURSE_DIR": COURSE_DIR,
        "CLAUDE_PODS_STAGE": str(stage),
        "CLAUDE_PODS_COURSE_TITLE": _env_text(course.title),
    }
    tutor = _env_text(course.tutor)
    if tutor:
        env["CLAUDE_PODS_TUTOR"] = tutor
    return env


class MarkerObserver:
    """Records the tutor's completion markers seen in one terminal's output.

    Attached through :attr:`SandboxTerminal.observers` only for courses that trust
    their tutor. Recording is asynchronous (the store runs off the event loop), so each
    new marker becomes a task; the tasks of one terminal run one after the other, in
    the order the markers appeared (a stage before the course it completes). A failure
    is logged and never reaches the terminal.
    """

    def __init__(
        self,
        session: CourseSession,
        user: str,
        session_id: str,
        tasks: set[asyncio.Task[None]],
        log: logging.Logger | logging.LoggerAdapter[t.Any],
    ) -> None:
        self._session = session
        self._user = user
        self._session_id = session_id
        self._tasks = tasks
        self._log = log
        self._scanner = MarkerScanner()
        self._last: asyncio.Task[None] | None = None

    def __call__(self, text: str) -> None:
        for marker in self._scanner.feed(text):
            task = asyncio.create_task(self._record(marker, self._last))
            self._last = task
            self._tasks.add(task)  # a strong reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _record(self, marker: Marker, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        course = self._session.course
        try:
            recorded = await self._session.service.record_marker(
                self._user, course, marker, self._session_id
            )
        except Exception:  # noqa: BLE001 - logged; must never reach the terminal
            self._log.exception(
                "claude-pods: recording %s of course %s for user %s failed",
                marker,
                course.id,
                self._user,
            )
            return
        self._log.info(
            "claude-pods: tutor marker %s in course %s for user %s (session %s): %s",
            marker,
            course.id,
            self._user,
            self._session_id,
            "recorded" if recorded else "nothing new",
        )


async def resolve_course(
    service: CourseService | None,
    config: CoursesConfig | None,
    user: str,
    course_id: object,
    stage: object = None,
) -> CourseSession:
    """The course and stage a new terminal of *user* starts at, or an HTTP error.

    400 for a malformed id or stage, 404 when no courses are configured or the
    course or stage does not exist, 409 for a stage the learner has not unlocked
    (sequential courses), so a terminal cannot skip ahead of the quizzes. Without a
    stage: the learner's next unfinished one. Runs before the manager's ``create``,
    which stays synchronous (its caps check must not be split by an ``await``).
    """
    if not valid_id(course_id):
        raise web.HTTPError(
            400, "course must be a course id (letters, digits, '-' and '_', at most 64)"
        )
    assert isinstance(course_id, str)
    if stage is not None and (isinstance(stage, bool) or not isinstance(stage, int) or stage < 1):
        raise web.HTTPError(400, "stage must be a whole number of at least 1")
    if service is None or (config is not None and config.courses_root() is None):
        raise web.HTTPError(
            404,
            "no courses are configured on this server (the administrator sets "
            "CoursesConfig.courses_dir)",
        )
    course = service.catalog.get(course_id)
    if course is None:
        raise web.HTTPError(404, f"no such course: {course_id}")
    if stage is None:
        number = await service.resume_stage(user, course)
    else:
        assert isinstance(stage, int)
        if course.stage(stage) is None:
            raise web.HTTPError(404, f"course {course_id} has no stage {stage}")
        progress = await service.progress(user, course)
        if stage not in progress.get("unlocked", ()):
            raise web.HTTPError(409, f"stage {stage} of course {course_id} is not unlocked yet")
        number = stage
    return CourseSession(course=course, stage=number, service=service)
