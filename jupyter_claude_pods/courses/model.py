"""What a course is once loaded: immutable values, with the public views the API may show.

Why frozen dataclasses: a loaded course is shared by the REST handlers, the terminal
manager and the progress service at the same time; nothing may change it under them. A
reload builds new objects.

The quiz answers live only here (``Quiz.answers``) and are left out of every ``public()``
view and of ``repr()``, so they neither reach the browser nor a log line, and they never
travel into a sandbox (the tutor text is separate, see ``catalog``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "COURSE_ID_RE",
    "Concept",
    "Course",
    "CourseProblem",
    "Quiz",
    "QuizType",
    "Stage",
    "normalise_answer",
    "valid_id",
]

QuizType = Literal["multiple-choice", "free-response"]

#: A course id is a directory name that is also safe in a URL, a pod label, a shell word
#: and a file path: no dots (so no ``..``), no ``/``, no NUL, no shell metacharacters.
#: ``\Z`` (not ``$``) so that a trailing newline does not slip through.
COURSE_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")

_SPACES = re.compile(r"\s+")


def valid_id(value: object) -> bool:
    """True when *value* is a string usable as a course id (see ``COURSE_ID_RE``)."""
    return isinstance(value, str) and COURSE_ID_RE.match(value) is not None


def normalise_answer(text: str) -> str:
    """Fold an answer so that case, spacing and a final full stop do not matter.

    Why this much and no more: learners type answers by hand, and "Softmax." or
    " softmax " is the same answer as "softmax"; anything looser (fuzzy matching,
    synonyms) would make the server accept answers the instructor did not list.
    """
    folded = _SPACES.sub(" ", text.casefold()).strip()
    while folded.endswith("."):
        folded = folded[:-1].rstrip()
    return folded


@dataclass(frozen=True)
class Concept:
    """One idea a stage teaches: a short title and a paragraph."""

    title: str
    content: str

    def public(self) -> dict[str, str]:
        return {"title": self.title, "content": self.content}


@dataclass(frozen=True)
class Quiz:
    """A question checked on the server; ``answers`` never leaves it."""

    question: str
    type: QuizType
    options: tuple[str, ...]
    answers: tuple[str, ...] = field(repr=False)

    def check(self, answer: str) -> bool:
        """Whether *answer* is one of the accepted answers.

        Multiple choice: the option's text (not its index, so reordering options in the
        manifest cannot change what is correct), compared after trimming and case folding.
        Free response: the same folding plus collapsed whitespace and no trailing ``.``.
        Both use :func:`normalise_answer`; for an option text that is the same thing.
        """
        if not isinstance(answer, str):
            return False
        given = normalise_answer(answer)
        if not given:
            return False
        return any(given == normalise_answer(accepted) for accepted in self.answers)

    def public(self) -> dict[str, Any]:
        return {"question": self.question, "type": self.type, "options": list(self.options)}


@dataclass(frozen=True)
class Stage:
    """One step of a course, numbered from 1."""

    number: int
    title: str
    goals: tuple[str, ...]
    concepts: tuple[Concept, ...]
    quiz: Quiz | None

    def public(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "title": self.title,
            "goals": list(self.goals),
            "concepts": [c.public() for c in self.concepts],
            "quiz": None if self.quiz is None else self.quiz.public(),
        }


@dataclass(frozen=True)
class Course:
    """A loaded, valid course.

    ``material_dir`` is the absolute, symlink-resolved host path that is mounted read-only
    at ``/course`` in a sandbox; ``material_subpath`` is the same directory relative to the
    courses dir (what a Kubernetes ``subPath`` needs). ``tutor`` is the text that becomes
    Claude's ``CLAUDE.md`` in the sandbox: it never holds quiz answers.
    """

    id: str
    title: str
    description: str
    stages: tuple[Stage, ...]
    material_dir: Path
    material_subpath: str
    tutor: str = field(repr=False)
    trust_tutor_markers: bool
    unlock: str
    source: Literal["manifest", "seed"]

    def stage(self, number: int) -> Stage | None:
        """The stage numbered *number*, or None (stages are 1..N in order)."""
        if isinstance(number, bool) or not isinstance(number, int):
            return None
        if 1 <= number <= len(self.stages):
            return self.stages[number - 1]
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "stage_count": len(self.stages),
            "trust_tutor_markers": self.trust_tutor_markers,
            "unlock": self.unlock,
        }

    def public(self) -> dict[str, Any]:
        data = self.summary()
        data["stages"] = [s.public() for s in self.stages]
        return data


@dataclass(frozen=True)
class CourseProblem:
    """Why a course (or part of one) could not be loaded, in terms an instructor can act on.

    ``file`` is relative to the courses dir (``intro/course.yaml``); ``field`` is a JSON
    path into that file (``stages[1].quiz.answer``, indices from 0) or ``""`` for the file
    as a whole.
    """

    course: str
    file: str
    field: str
    message: str

    def public(self) -> dict[str, str]:
        return {
            "course": self.course,
            "file": self.file,
            "field": self.field,
            "message": self.message,
        }

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.message}"
