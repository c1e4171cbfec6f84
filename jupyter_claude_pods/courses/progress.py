"""CourseService: the one place that changes learners' progress.

The REST handlers (quiz answers, instructor marks, resets) and the terminal's marker
observer (tutor markers) all come through here, so the rules live once: which stages are
unlocked, when a course counts as complete, which markers are believed, and that every
change is announced exactly once.

Why "exactly once" holds: the store's inserts are unique per (user, course, stage) across
threads and processes, and only the caller whose insert went in is told ``True``; only
that caller emits the event. The course is completed by whoever finds all stages done
after their own insert, again through a unique insert.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .catalog import CourseCatalog
from .markers import Marker
from .model import Course
from .store import Completion, ProgressStore, Source

__all__ = ["CourseService", "Emit"]

Emit = Callable[[dict[str, Any]], None]


class CourseService:
    """Progress rules on top of a :class:`CourseCatalog` and a :class:`ProgressStore`."""

    def __init__(
        self,
        catalog: CourseCatalog,
        store: ProgressStore,
        emit: Emit | None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.emit = emit
        self.log = log if log is not None else logging.getLogger(__name__)

    async def start(self) -> None:
        """Open the store (create or migrate it) and load the catalog."""
        await self.store.open()
        self.catalog.load()

    async def stop(self) -> None:
        await self.store.close()

    # ------------------------------------------------------------------ reading

    def _summarise(
        self, course: Course, completions: list[Completion], course_completed: bool
    ) -> dict[str, Any]:
        stage_count = len(course.stages)
        # A stage removed from the manifest since it was completed is not shown.
        done = {c.stage: c for c in completions if c.course == course.id and c.stage <= stage_count}
        next_stage = next((n for n in range(1, stage_count + 1) if n not in done), None)
        if course.unlock == "free":
            unlocked = list(range(1, stage_count + 1))
        else:
            unlocked = sorted(set(done) | ({next_stage} if next_stage is not None else set()))
        return {
            "course": course.id,
            "completed": [
                {"stage": c.stage, "completed_at": c.completed_at, "source": c.source}
                for _, c in sorted(done.items())
            ],
            "course_completed": course_completed,
            "next_stage": next_stage,
            "stage_count": stage_count,
            "unlocked": unlocked,
        }

    async def progress(self, user: str, course: Course) -> dict[str, Any]:
        """The learner's progress in *course* (see the contract's progress dict)."""
        completions = await self.store.completions(user, course.id)
        completed = await self.store.course_completed(user, course.id)
        return self._summarise(course, completions, completed)

    async def resume_stage(self, user: str, course: Course) -> int:
        """Where a new terminal should start: the first unfinished stage, else the last."""
        progress = await self.progress(user, course)
        next_stage: int | None = progress["next_stage"]
        return next_stage if next_stage is not None else len(course.stages)

    # ------------------------------------------------------------------ changing

    def _announce(
        self,
        action: str,
        user: str,
        course: str,
        stage: int | None,
        source: str | None,
        session: str | None,
    ) -> None:
        self.log.info(
            "claude-pods: progress %s user=%s course=%s stage=%s source=%s",
            action,
            user,
            course,
            stage,
            source,
        )
        if self.emit is None:
            return
        event = {
            "action": action,
            "user": user,
            "course": course,
            "stage": stage,
            "source": source,
            "session": session,
        }
        try:
            self.emit(event)
        except Exception:
            # The change is committed; a broken event sink must not turn it into an error.
            self.log.exception("claude-pods: could not emit progress event %s", action)

    async def _complete(
        self, user: str, course: Course, stage: int, source: Source, session: str | None
    ) -> bool:
        """Complete one stage, then the course if that was the last one missing."""
        newly = await self.store.complete_stage(user, course.id, stage, source, session)
        if newly:
            self._announce("stage_completed", user, course.id, stage, source, session)
        await self._maybe_complete_course(user, course, source, session)
        return newly

    async def _maybe_complete_course(
        self, user: str, course: Course, source: Source, session: str | None
    ) -> None:
        # Checked after every completion, not only a new one: a process that lost the race
        # for the last stage may still be the one that sees all stages done first.
        completions = await self.store.completions(user, course.id)
        done = {c.stage for c in completions}
        if all(s.number in done for s in course.stages) and await self.store.complete_course(
            user, course.id, source, session
        ):
            self._announce("course_completed", user, course.id, None, source, session)

    async def answer_quiz(
        self,
        user: str,
        course: Course,
        stage_number: int,
        answer: str,
        session: str | None = None,
    ) -> dict[str, Any]:
        """Check a quiz answer on the server and complete the stage when it is right.

        Raises LookupError for an unknown stage or one without a quiz, PermissionError for
        a stage that is still locked (sequential courses).
        """
        stage = course.stage(stage_number)
        if stage is None:
            raise LookupError(f"course {course.id!r} has no stage {stage_number!r}")
        if stage.quiz is None:
            raise LookupError(f"stage {stage_number} of course {course.id!r} has no quiz")
        before = await self.progress(user, course)
        if stage.number not in before["unlocked"]:
            raise PermissionError(
                f"stage {stage.number} of course {course.id!r} is locked; "
                f"finish stage {before['next_stage']} first"
            )
        correct = stage.quiz.check(answer)
        await self.store.record_attempt(user, course.id, stage.number, correct)
        newly = False
        if correct:
            newly = await self._complete(user, course, stage.number, "quiz", session)
        return {
            "correct": correct,
            "stage": stage.number,
            "newly_completed": newly,
            "progress": await self.progress(user, course),
        }

    async def record_marker(
        self, user: str, course: Course, marker: Marker, session: str | None
    ) -> bool:
        """Count a tutor marker seen in a terminal, if the course trusts them.

        ``[STAGE_COMPLETE:N]`` completes stage N (which must exist; locks do not apply, the
        tutor sets the pace). ``[COURSE_COMPLETE]`` / ``[DUNGEON_COMPLETE]`` completes every
        remaining stage and the course. True when anything changed.
        """
        if not course.trust_tutor_markers:
            self.log.debug("claude-pods: course %s ignores tutor markers", course.id)
            return False
        if marker.kind == "stage":
            if marker.stage is None or course.stage(marker.stage) is None:
                self.log.info(
                    "claude-pods: marker for unknown stage %s of course %s ignored",
                    marker.stage,
                    course.id,
                )
                return False
            return await self._complete(user, course, marker.stage, "tutor", session)
        changed = False
        for stage in course.stages:
            newly = await self.store.complete_stage(user, course.id, stage.number, "tutor", session)
            if newly:
                changed = True
                self._announce("stage_completed", user, course.id, stage.number, "tutor", session)
        if await self.store.complete_course(user, course.id, "tutor", session):
            changed = True
            self._announce("course_completed", user, course.id, None, "tutor", session)
        return changed

    async def mark(
        self, user: str, course: Course, stage: int, source: Source = "instructor"
    ) -> bool:
        """Complete a stage by hand (an instructor). LookupError for an unknown stage."""
        if course.stage(stage) is None:
            raise LookupError(f"course {course.id!r} has no stage {stage!r}")
        return await self._complete(user, course, stage, source, None)

    async def reset(self, user: str, course: Course) -> int:
        """Forget the learner's completions of *course*; rows deleted."""
        deleted = await self.store.reset(user, course.id)
        if deleted:
            self._announce("reset", user, course.id, None, None, None)
        return deleted

    async def instructor_view(self, course_id: str | None) -> dict[str, Any]:
        """Every learner with activity, and their progress per (still existing) course."""
        courses = {c.id: c for c in self.catalog.courses()}
        if course_id is not None:
            courses = {course_id: courses[course_id]} if course_id in courses else {}
        activity = await self.store.activity(course_id)
        completions = await self.store.all_progress(course_id)
        finished = {(u, c) for u, c, _ in await self.store.course_completions(course_id)}
        by_pair: dict[tuple[str, str], list[Completion]] = {}
        for completion in completions:
            by_pair.setdefault((completion.user, completion.course), []).append(completion)
        learners: dict[str, dict[str, Any]] = {}
        for user, cid in activity:
            course = courses.get(cid)
            if course is None:
                continue
            progress = self._summarise(
                course, by_pair.get((user, cid), []), (user, cid) in finished
            )
            learners.setdefault(user, {})[cid] = progress
        return {
            "learners": [{"user": user, "courses": learners[user]} for user in sorted(learners)]
        }
