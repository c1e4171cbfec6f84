"""Course values: ids, answer checking, and public views that never carry answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_claude_pods.courses import (
    Concept,
    Course,
    CourseProblem,
    Quiz,
    Stage,
    valid_id,
)


@pytest.mark.parametrize(
    "value", ["intro", "a", "A1", "transformer-basics", "x_y", "9lives", "a" * 64]
)
def test_valid_ids(value: str) -> None:
    assert valid_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "..",
        ".",
        ".hidden",
        "a.b",
        "a/b",
        "/abs",
        "a\x00b",
        "a;b",
        "a$b",
        "a`b",
        "a b",
        "-lead",
        "_lead",
        "a" * 65,
        "intro\n",
        "ünï",
        7,
        None,
        b"intro",
    ],
)
def test_invalid_ids(value: object) -> None:
    assert not valid_id(value)


MC = Quiz("Largest planet?", "multiple-choice", ("Mercury", "Jupiter", "Mars"), ("Jupiter",))
FREE = Quiz("Gas?", "free-response", (), ("carbon dioxide", "CO2"))


@pytest.mark.parametrize("answer", ["Jupiter", " jupiter ", "JUPITER", "Jupiter."])
def test_multiple_choice_accepts_the_option_text(answer: str) -> None:
    assert MC.check(answer)


@pytest.mark.parametrize("answer", ["1", "2", "b", "Mars", "", "   ", "Jupiter Mars"])
def test_multiple_choice_rejects_indices_and_other_options(answer: str) -> None:
    assert not MC.check(answer)


@pytest.mark.parametrize(
    "answer", ["carbon dioxide", "  Carbon   Dioxide. ", "co2", "CO2.", "carbon\tdioxide"]
)
def test_free_response_normalises_case_space_and_full_stop(answer: str) -> None:
    assert FREE.check(answer)


@pytest.mark.parametrize("answer", ["carbon", "oxygen", "", ".", "carbondioxide"])
def test_free_response_rejects_other_answers(answer: str) -> None:
    assert not FREE.check(answer)


def test_check_refuses_non_strings() -> None:
    assert not MC.check(None)  # type: ignore[arg-type]
    assert not FREE.check(["CO2"])  # type: ignore[arg-type]


def _course() -> Course:
    stages = (
        Stage(1, "Planets", ("Name them",), (Concept("Giants", "Big"),), MC),
        Stage(2, "Plants", (), (), FREE),
        Stage(3, "End", (), (), None),
    )
    return Course(
        id="intro",
        title="Intro",
        description="d",
        stages=stages,
        material_dir=Path("/srv/courses/intro/material"),
        material_subpath="intro/material",
        tutor="Secret tutor text",
        trust_tutor_markers=True,
        unlock="sequential",
        source="manifest",
    )


def test_public_views_never_hold_answers() -> None:
    course = _course()
    text = json.dumps(course.public()) + json.dumps([s.public() for s in course.stages])
    assert "carbon dioxide" not in text
    assert "CO2" not in text
    # "Jupiter" is an option, so it is public; the answer key is not.
    assert '"answer' not in text
    assert MC.public() == {
        "question": "Largest planet?",
        "type": "multiple-choice",
        "options": ["Mercury", "Jupiter", "Mars"],
    }
    # Nor in repr (log lines), nor the tutor text.
    assert "carbon dioxide" not in repr(course)
    assert "Secret tutor" not in repr(course)


def test_course_views() -> None:
    course = _course()
    assert course.summary() == {
        "id": "intro",
        "title": "Intro",
        "description": "d",
        "stage_count": 3,
        "trust_tutor_markers": True,
        "unlock": "sequential",
    }
    public = course.public()
    assert [s["number"] for s in public["stages"]] == [1, 2, 3]
    assert public["stages"][0] == {
        "number": 1,
        "title": "Planets",
        "goals": ["Name them"],
        "concepts": [{"title": "Giants", "content": "Big"}],
        "quiz": MC.public(),
    }
    assert public["stages"][2]["quiz"] is None
    json.dumps(public)  # serialisable as is


def test_stage_lookup() -> None:
    course = _course()
    assert course.stage(1) is course.stages[0]
    assert course.stage(3) is course.stages[2]
    for missing in (0, 4, -1, True, "1", 1.0):
        assert course.stage(missing) is None  # type: ignore[arg-type]


def test_problem_view() -> None:
    problem = CourseProblem("intro", "intro/course.yaml", "stages[1].quiz.answer", "bad")
    assert problem.public() == {
        "course": "intro",
        "file": "intro/course.yaml",
        "field": "stages[1].quiz.answer",
        "message": "bad",
    }
    assert str(problem) == "intro/course.yaml: stages[1].quiz.answer: bad"
