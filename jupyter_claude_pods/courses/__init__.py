"""Courses: stages, server-checked quizzes and learners' progress (issue 5).

A course is a directory under the courses dir: a manifest that stays on the server (it
holds the quiz answers), an optional tutor ``CLAUDE.md`` and a material directory that is
mounted read-only into sandboxes. See docs/courses.md.

- :mod:`.model`    immutable course values and their public views (no answers)
- :mod:`.catalog`  loading, validation (JSON Schema), seed-format import, problems
- :mod:`.markers`  the tutor's ``[STAGE_COMPLETE:N]`` markers in terminal output
- :mod:`.store`    SQLite progress store (WAL, one worker thread, migrations)
- :mod:`.progress` ``CourseService``, the one place that changes progress
"""

from __future__ import annotations

from .catalog import MAX_TUTOR_BYTES, CourseCatalog, course_schema
from .markers import Marker, MarkerScanner
from .model import (
    COURSE_ID_RE,
    Concept,
    Course,
    CourseProblem,
    Quiz,
    QuizType,
    Stage,
    valid_id,
)
from .progress import CourseService, Emit
from .store import Completion, ProgressStore, Source

__all__ = [
    "COURSE_ID_RE",
    "MAX_TUTOR_BYTES",
    "Completion",
    "Concept",
    "Course",
    "CourseCatalog",
    "CourseProblem",
    "CourseService",
    "Emit",
    "Marker",
    "MarkerScanner",
    "ProgressStore",
    "Quiz",
    "QuizType",
    "Source",
    "Stage",
    "course_schema",
    "valid_id",
]
