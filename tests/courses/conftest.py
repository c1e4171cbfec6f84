"""Course fixtures shared by every test that needs courses.

``courses_dir`` is a fresh courses dir holding good courses, a seed-format course and
broken ones (each broken in exactly one way); ``example_course_id`` names the main good
course. Other test packages can use them with
``from tests.courses.conftest import courses_dir, example_course_id  # noqa: F401`` or
call :func:`write_courses` themselves.

The answers are constants here so that tests can answer quizzes, and check that the
answers never show up where they must not (public views, tutor text, sandboxes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_claude_pods.courses import CourseCatalog, CourseService, ProgressStore

#: The main good course: trusts tutor markers, sequential, 3 stages (quiz, quiz, none).
EXAMPLE_COURSE = "intro"
INTRO_MC_ANSWER = "Jupiter"  # stage 1, multiple choice
INTRO_FREE_ANSWERS = ("carbon dioxide", "CO2")  # stage 2, free response
#: A JSON-manifest course: free unlock, markers NOT trusted, 2 stages with quizzes.
FREE_COURSE = "free-json"
FREE_ANSWERS = ("Paris", "seven")
#: A course in the seed system's CLAUDE.md format.
SEED_COURSE = "seed-paper"
SEED_ANSWERS = ("Self-attention", "positional encoding")
SEED_TUTOR_LINE = "Guide the learner through the paper."
GOOD_COURSES = (FREE_COURSE, EXAMPLE_COURSE, SEED_COURSE)

#: Broken course -> (file relative to the courses dir, field) of the expected problem.
BROKEN: dict[str, tuple[str, str]] = {
    "bad-yaml": ("bad-yaml/course.yaml", ""),
    "bad-schema": ("bad-schema/course.yaml", "stages[1].quiz.answer"),
    "bad-id": ("bad-id/course.yaml", "id"),
    "no-material": ("no-material/course.yaml", "material"),
    "traversal": ("traversal/course.yaml", "material"),
    "escape-link": ("escape-link/course.yaml", "material"),
    "big-tutor": ("big-tutor/CLAUDE.md", ""),
}

INTRO_YAML = f"""\
title: Introduction to the solar system
description: A tiny course for the tests.
trust_tutor_markers: true
stages:
  - number: 1
    title: Planets
    goals: [Name the planets]
    concepts:
      - title: Gas giants
        content: Jupiter and Saturn are mostly hydrogen.
      - Rocky planets
    quiz:
      question: Which planet is the largest?
      type: multiple-choice
      options: [Mercury, {INTRO_MC_ANSWER}, Mars]
      answer: {INTRO_MC_ANSWER}
  - number: 2
    title: Plants
    goals: [Explain photosynthesis]
    quiz:
      question: Which gas do plants take in?
      type: free-response
      answer: {json.dumps(list(INTRO_FREE_ANSWERS))}
  - number: 3
    title: Wrap-up
"""

INTRO_TUTOR = """\
# Tutor
Teach one stage at a time and print [STAGE_COMPLETE:N] when the learner understands it.
"""


def _seed_claude_md() -> str:
    stages = [
        {
            "id": "stage-1",
            "stageNumber": 1,
            "title": "Attention",
            "concepts": [
                {
                    "id": "c1-1",
                    "title": "Queries",
                    "content": "What a position asks for.",
                    "position": {"x": 3, "y": 4},
                },
            ],
            "quiz": {
                "id": "q1",
                "question": "What mechanism relates all positions?",
                "type": "multiple-choice",
                "options": ["Recurrence", SEED_ANSWERS[0], "Convolution"],
                "correctAnswer": SEED_ANSWERS[0],
            },
            "roomWidth": 20,
            "roomHeight": 15,
        },
        {
            "id": "stage-2",
            "stageNumber": 2,
            "title": "Order",
            "concepts": [{"id": "c2-1", "title": "Positions", "content": "Order is added."}],
            "quiz": {
                "id": "q2",
                "question": "What adds word order?",
                "type": "free-response",
                "correctAnswer": SEED_ANSWERS[1],
            },
        },
        {
            "id": "stage-3",
            "stageNumber": 3,
            "title": "Code",
            "concepts": [],
            "quiz": {"id": "q3", "question": "Write attention.", "type": "code-challenge"},
        },
    ]
    block = json.dumps({"stages": stages}, indent=2)
    return (
        "# Attention Is What You Need\n\n"
        f"```json\n{block}\n```\n\n"
        f"## Guide\n{SEED_TUTOR_LINE}\n"
        "After a correct answer print [STAGE_COMPLETE:N]; at the end [DUNGEON_COMPLETE].\n"
    )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _manifest(title: str, **extra: Any) -> str:
    lines = [f"title: {title}"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    lines += ["stages:", "  - number: 1", "    title: Only"]
    return "\n".join(lines) + "\n"


def write_courses(root: Path, outside: Path) -> Path:
    """Fill *root* with the test courses; *outside* is a directory beside it (symlink target)."""
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.txt").write_text("not course material\n")

    # -- good
    _write(root / EXAMPLE_COURSE / "course.yaml", INTRO_YAML)
    _write(root / EXAMPLE_COURSE / "CLAUDE.md", INTRO_TUTOR)
    _write(root / EXAMPLE_COURSE / "material" / "notes.md", "# Notes\nThe sun is a star.\n")
    free = {
        "id": FREE_COURSE,
        "title": "Free order",
        "unlock": "free",
        "material": "docs",
        "stages": [
            {
                "number": 1,
                "title": "Capitals",
                "quiz": {
                    "question": "Capital of France?",
                    "type": "free-response",
                    "answer": FREE_ANSWERS[0],
                },
            },
            {
                "number": 2,
                "title": "Numbers",
                "quiz": {
                    "question": "3 + 4 in words?",
                    "type": "free-response",
                    "answer": FREE_ANSWERS[1],
                },
            },
        ],
    }
    _write(root / FREE_COURSE / "course.json", json.dumps(free, indent=2))
    (root / FREE_COURSE / "docs").mkdir()
    _write(root / SEED_COURSE / "CLAUDE.md", _seed_claude_md())
    _write(root / SEED_COURSE / "src" / "model.py", "print('a model')\n")

    # -- broken, one way each
    _write(root / "bad-yaml" / "course.yaml", "title: [unclosed\nstages: []\n")
    (root / "bad-yaml" / "material").mkdir()
    bad_schema = INTRO_YAML.replace(f"answer: {json.dumps(list(INTRO_FREE_ANSWERS))}", "answer: 42")
    assert bad_schema != INTRO_YAML
    _write(root / "bad-schema" / "course.yaml", bad_schema)
    (root / "bad-schema" / "material").mkdir()
    _write(root / "bad-id" / "course.yaml", _manifest("Wrong id", id="another-course"))
    (root / "bad-id" / "material").mkdir()
    _write(root / "no-material" / "course.yaml", _manifest("No material"))
    _write(root / "traversal" / "course.yaml", _manifest("Traversal", material="../intro"))
    (root / "traversal" / "material").mkdir()
    _write(root / "escape-link" / "course.yaml", _manifest("Escaping symlink"))
    (root / "escape-link" / "material").symlink_to(outside, target_is_directory=True)
    _write(root / "big-tutor" / "course.yaml", _manifest("Big tutor"))
    (root / "big-tutor" / "material").mkdir()
    _write(root / "big-tutor" / "CLAUDE.md", "x" * (64 * 1024 + 1))

    # -- ignored: hidden entries and plain files
    _write(root / ".git" / "config", "[core]\n")
    _write(root / "README.md", "Courses for the tests.\n")
    return root


@pytest.fixture
def courses_dir(tmp_path: Path) -> Path:
    """A courses dir with good, seed-format and broken courses (see this module)."""
    return write_courses(tmp_path / "courses", tmp_path / "outside")


@pytest.fixture
def example_course_id() -> str:
    """The id of the main good course in ``courses_dir`` (3 stages, trusts markers)."""
    return EXAMPLE_COURSE


@pytest.fixture
def catalog(courses_dir: Path) -> CourseCatalog:
    catalog = CourseCatalog(courses_dir)
    catalog.load()
    return catalog


@pytest.fixture
def events() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def service(
    catalog: CourseCatalog, tmp_path: Path, events: list[dict[str, Any]], jp_asyncio_loop: Any
) -> Iterator[CourseService]:
    """A started CourseService on a fresh progress DB, collecting emitted events."""
    svc = CourseService(catalog, ProgressStore(tmp_path / "progress.sqlite3"), events.append)
    jp_asyncio_loop.run_until_complete(svc.start())
    yield svc
    jp_asyncio_loop.run_until_complete(svc.stop())
