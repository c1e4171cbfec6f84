"""Loading courses: good, seed format, and every way a course can be broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_claude_pods.courses import MAX_TUTOR_BYTES, CourseCatalog, CourseProblem
from jupyter_claude_pods.courses.catalog import course_schema

from .conftest import (
    BROKEN,
    EXAMPLE_COURSE,
    FREE_ANSWERS,
    FREE_COURSE,
    GOOD_COURSES,
    INTRO_FREE_ANSWERS,
    INTRO_MC_ANSWER,
    SEED_ANSWERS,
    SEED_COURSE,
    SEED_TUTOR_LINE,
)

SEED_BAD_CHOICE = (
    '```json\n{"stages": [{"stageNumber": 1, "title": "x", "quiz": '
    '{"question": "q", "type": "multiple-choice", "options": ["a", "b"], '
    '"correctAnswer": "c"}}]}\n```\n'
)
REPO = Path(__file__).resolve().parents[2]


def _problems_by_course(catalog: CourseCatalog) -> dict[str, list[CourseProblem]]:
    out: dict[str, list[CourseProblem]] = {}
    for problem in catalog.problems():
        out.setdefault(problem.course, []).append(problem)
    return out


def _only_problem(root: Path, name: str) -> CourseProblem:
    catalog = CourseCatalog(root)
    catalog.load()
    assert catalog.get(name) is None
    problems = _problems_by_course(catalog)[name]
    assert len(problems) == 1, problems
    return problems[0]


def _course(root: Path, name: str, manifest: str, material: bool = True) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "course.yaml").write_text(manifest)
    if material:
        (directory / "material").mkdir()
    return directory


MINIMAL = "title: T\nstages:\n  - number: 1\n    title: One\n"
ONE_STAGE = "title: T\nstages:\n  - number: 1\n    title: A\n"


def test_good_courses_load_and_broken_ones_do_not_hide_them(courses_dir: Path) -> None:
    catalog = CourseCatalog(courses_dir)
    catalog.load()
    assert [c.id for c in catalog.courses()] == sorted(GOOD_COURSES)
    by_course = _problems_by_course(catalog)
    assert set(by_course) == set(BROKEN)
    for name, (file, field) in BROKEN.items():
        assert [(p.file, p.field) for p in by_course[name]] == [(file, field)], name


def test_good_manifest_course(courses_dir: Path) -> None:
    catalog = CourseCatalog(courses_dir)
    course = catalog.get(EXAMPLE_COURSE)
    assert course is not None
    assert course.title == "Introduction to the solar system"
    assert course.source == "manifest"
    assert course.trust_tutor_markers is True
    assert course.unlock == "sequential"
    assert course.material_dir == (courses_dir / EXAMPLE_COURSE / "material").resolve()
    assert course.material_dir.is_absolute()
    assert course.material_subpath == f"{EXAMPLE_COURSE}/material"
    assert "[STAGE_COMPLETE:N]" in course.tutor
    s1, s2, s3 = course.stages
    assert (s1.number, s2.number, s3.number) == (1, 2, 3)
    assert [c.title for c in s1.concepts] == ["Gas giants", "Rocky planets"]
    assert s1.concepts[1].content == ""
    assert s1.quiz is not None
    assert s1.quiz.check(INTRO_MC_ANSWER)
    assert s2.quiz is not None
    assert s2.quiz.answers == INTRO_FREE_ANSWERS
    assert s3.quiz is None


def test_json_manifest_with_custom_material_and_free_unlock(courses_dir: Path) -> None:
    course = CourseCatalog(courses_dir).get(FREE_COURSE)
    assert course is not None
    assert course.unlock == "free"
    assert course.trust_tutor_markers is False
    assert course.material_subpath == f"{FREE_COURSE}/docs"
    assert course.tutor == ""
    assert course.stages[1].quiz is not None
    assert course.stages[1].quiz.check(FREE_ANSWERS[1].upper())


def test_bad_yaml_names_the_line(courses_dir: Path) -> None:
    problem = _only_problem(courses_dir, "bad-yaml")
    assert problem.message.startswith("invalid YAML")
    assert "line " in problem.message


def test_schema_error_names_the_field(courses_dir: Path) -> None:
    problem = _only_problem(courses_dir, "bad-schema")
    assert problem.field == "stages[1].quiz.answer"
    assert "42" in problem.message


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ("stages:\n  - number: 1\n    title: One\n", "title"),
        ("title: T\n", "stages"),
        ("title: T\nstages: []\n", "stages"),
        (MINIMAL + "colour: blue\n", "colour"),
        (MINIMAL + "unlock: random\n", "unlock"),
        (MINIMAL + "trust_tutor_markers: maybe\n", "trust_tutor_markers"),
        ("title: T\nstages:\n  - number: 0\n    title: One\n", "stages[0].number"),
        ("title: T\nstages:\n  - number: 1\n", "stages[0].title"),
        ("title: T\nstages:\n  - number: 1\n    title: A\n    extra: 1\n", "stages[0].extra"),
        (
            "title: T\nstages:\n  - number: 1\n    title: A\n    concepts: [{content: x}]\n",
            "stages[0].concepts[0].title",
        ),
        (
            ONE_STAGE + "    quiz: {question: Q, type: essay, answer: a}\n",
            "stages[0].quiz.type",
        ),
        (
            ONE_STAGE + "    quiz: {question: Q, type: free-response}\n",
            "stages[0].quiz.answer",
        ),
        (
            ONE_STAGE + "    quiz: {question: Q, type: multiple-choice, answer: a}\n",
            "stages[0].quiz.options",
        ),
        (
            ONE_STAGE + "    quiz: {question: Q, type: multiple-choice, options: [a], answer: a}\n",
            "stages[0].quiz.options",
        ),
        (
            ONE_STAGE + "    quiz: {question: Q, type: free-response, answer: []}\n",
            "stages[0].quiz.answer",
        ),
    ],
)
def test_schema_errors_point_at_the_field(tmp_path: Path, manifest: str, field: str) -> None:
    _course(tmp_path, "c", manifest)
    problem = _only_problem(tmp_path, "c")
    assert (problem.file, problem.field) == ("c/course.yaml", field), problem


@pytest.mark.parametrize(
    ("manifest", "field", "words"),
    [
        (
            "title: T\nstages:\n  - {number: 1, title: A}\n  - {number: 3, title: B}\n",
            "stages[1].number",
            "expected",
        ),
        (
            ONE_STAGE
            + "    quiz: {question: Q, type: multiple-choice, options: [a, b], answer: c}\n",
            "stages[0].quiz.answer",
            "not one of the options",
        ),
        (
            ONE_STAGE + "    quiz: {question: Q, type: free-response, answer: ' . '}\n",
            "stages[0].quiz.answer",
            "blank",
        ),
        ("id: other\n" + MINIMAL, "id", "differs"),
    ],
)
def test_semantic_errors(tmp_path: Path, manifest: str, field: str, words: str) -> None:
    _course(tmp_path, "c", manifest)
    problem = _only_problem(tmp_path, "c")
    assert problem.field == field
    assert words in problem.message


def test_id_mismatch(courses_dir: Path) -> None:
    problem = _only_problem(courses_dir, "bad-id")
    assert "another-course" in problem.message


def test_manifest_must_be_a_mapping(tmp_path: Path) -> None:
    _course(tmp_path, "c", "- just\n- a list\n")
    assert "mapping" in _only_problem(tmp_path, "c").message


def test_bad_json_manifest(tmp_path: Path) -> None:
    (tmp_path / "c" / "material").mkdir(parents=True)
    (tmp_path / "c" / "course.json").write_text('{"title": "T",\n "stages": [}')
    problem = _only_problem(tmp_path, "c")
    assert problem.file == "c/course.json"
    assert "invalid JSON" in problem.message
    assert "line 2" in problem.message


def test_two_manifests_are_refused(tmp_path: Path) -> None:
    _course(tmp_path, "c", MINIMAL)
    (tmp_path / "c" / "course.json").write_text("{}")
    assert "more than one manifest" in _only_problem(tmp_path, "c").message


def test_material_missing(courses_dir: Path) -> None:
    assert "does not exist" in _only_problem(courses_dir, "no-material").message


def test_traversal_is_refused(courses_dir: Path) -> None:
    problem = _only_problem(courses_dir, "traversal")
    assert "'..'" in problem.message


@pytest.mark.parametrize(
    ("material", "words"),
    [
        ("/etc", "relative"),
        ("material/../..", "'..'"),
        (".", "course directory itself"),
        ("material/.", None),  # the same directory as "material": fine
    ],
)
def test_material_paths(tmp_path: Path, material: str, words: str | None) -> None:
    _course(tmp_path, "c", MINIMAL + f"material: {json.dumps(material)}\n")
    catalog = CourseCatalog(tmp_path)
    if words is None:
        course = catalog.get("c")
        assert course is not None
        assert course.material_subpath == "c/material"
        return
    problem = _only_problem(tmp_path, "c")
    assert problem.field == "material"
    assert words in problem.message


def test_escaping_symlink_is_refused(courses_dir: Path) -> None:
    problem = _only_problem(courses_dir, "escape-link")
    assert "outside the course directory" in problem.message


def test_symlink_inside_the_course_is_followed(tmp_path: Path) -> None:
    directory = _course(tmp_path, "c", MINIMAL + "material: link\n", material=False)
    (directory / "real" / "deeper").mkdir(parents=True)
    (directory / "link").symlink_to(directory / "real" / "deeper")
    course = CourseCatalog(tmp_path).get("c")
    assert course is not None
    assert course.material_dir == (directory / "real" / "deeper").resolve()
    assert course.material_subpath == "c/real/deeper"


def test_symlink_to_the_course_dir_itself_is_refused(tmp_path: Path) -> None:
    directory = _course(tmp_path, "c", MINIMAL + "material: up\n", material=False)
    (directory / "up").symlink_to(directory)
    assert "course directory itself" in _only_problem(tmp_path, "c").message


def test_course_dir_symlinked_from_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "courses"
    root.mkdir()
    elsewhere = _course(tmp_path, "elsewhere", MINIMAL)
    (root / "linked").symlink_to(elsewhere)
    assert "outside the courses dir" in _only_problem(root, "linked").message


def test_tutor_too_big(courses_dir: Path) -> None:
    problem = _only_problem(courses_dir, "big-tutor")
    assert str(MAX_TUTOR_BYTES) in problem.message


def test_tutor_at_the_limit_is_fine(tmp_path: Path) -> None:
    directory = _course(tmp_path, "c", MINIMAL)
    (directory / "CLAUDE.md").write_text("é" * (MAX_TUTOR_BYTES // 2))
    course = CourseCatalog(tmp_path).get("c")
    assert course is not None
    assert len(course.tutor.encode()) == MAX_TUTOR_BYTES


def test_tutor_must_be_utf8(tmp_path: Path) -> None:
    directory = _course(tmp_path, "c", MINIMAL)
    (directory / "CLAUDE.md").write_bytes(b"caf\xe9\n")
    problem = _only_problem(tmp_path, "c")
    assert (problem.file, problem.message.split(" (")[0]) == ("c/CLAUDE.md", "not UTF-8 text")


def test_seed_format_import(courses_dir: Path) -> None:
    course = CourseCatalog(courses_dir).get(SEED_COURSE)
    assert course is not None
    assert course.source == "seed"
    assert course.title == "Attention Is What You Need"
    assert course.trust_tutor_markers is True
    # No material/ subdirectory: the seed mounted the whole course directory.
    assert course.material_dir == (courses_dir / SEED_COURSE).resolve()
    assert course.material_subpath == SEED_COURSE
    # The JSON block (with the answers) is cut out of the tutor text; the guide stays.
    assert "```json" not in course.tutor
    assert "correctAnswer" not in course.tutor
    assert SEED_TUTOR_LINE in course.tutor
    assert course.tutor.startswith("# Attention Is What You Need\n\n## Guide")
    for answer in SEED_ANSWERS:
        assert answer not in course.tutor
    public = json.dumps(course.public())
    assert SEED_ANSWERS[1] not in public
    assert "correctAnswer" not in public
    s1, s2, s3 = course.stages
    assert s1.quiz is not None
    assert s1.quiz.check(SEED_ANSWERS[0].lower())
    assert s1.concepts[0].title == "Queries"
    assert s2.quiz is not None
    assert s2.quiz.check(SEED_ANSWERS[1])
    assert s3.quiz is None  # code-challenge without an answer: completed by tutor/instructor


def test_seed_format_prefers_a_material_subdirectory(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    (directory / "material").mkdir(parents=True)
    block = {
        "stages": [
            {
                "stageNumber": 1,
                "title": "One",
                "concepts": [],
                "quiz": {
                    "question": "Q",
                    "type": "multiple-choice",
                    "options": ["x", "y"],
                    "correctAnswer": 1,
                },
            }
        ]
    }
    (directory / "CLAUDE.md").write_text(f"Intro\n\n```json\n{json.dumps(block)}\n```\nBye\n")
    course = CourseCatalog(tmp_path).get("s")
    assert course is not None
    assert course.material_subpath == "s/material"
    assert course.title == "s"  # no heading: the directory name
    assert course.tutor == "Intro\n\nBye\n"
    assert course.stages[0].quiz is not None
    assert course.stages[0].quiz.answers == ("y",)  # an option index becomes its text


@pytest.mark.parametrize(
    ("claude_md", "field", "words"),
    [
        ("# Just a tutor\nNo stages here.\n", "", "no course.yaml"),
        ('```json\n{"stages": [}\n```\n', "", "line 2"),
        ('```json\n{"stages": [{"title": "x"}]}\n```\n', "stages[0].stageNumber", ""),
        (
            '```json\n{"stages": [{"stageNumber": 2, "title": "x"}]}\n```\n',
            "stages[0].stageNumber",
            "expected",
        ),
        (
            SEED_BAD_CHOICE,
            "stages[0].quiz.correctAnswer",
            "not one of the options",
        ),
    ],
)
def test_broken_seed_courses(tmp_path: Path, claude_md: str, field: str, words: str) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "CLAUDE.md").write_text(claude_md)
    problem = _only_problem(tmp_path, "s")
    assert problem.field == field
    assert words in problem.message


def test_invalid_directory_names_are_problems_hidden_ones_are_ignored(tmp_path: Path) -> None:
    _course(tmp_path, "my.course", MINIMAL)
    _course(tmp_path, ".hidden", MINIMAL)
    (tmp_path / "empty").mkdir()
    catalog = CourseCatalog(tmp_path)
    assert catalog.courses() == []
    by_course = _problems_by_course(catalog)
    assert set(by_course) == {"my.course", "empty"}
    assert "not a valid course id" in by_course["my.course"][0].message


@pytest.mark.parametrize("root", [None, "missing"])
def test_no_courses_dir_means_no_courses(tmp_path: Path, root: str | None) -> None:
    catalog = CourseCatalog(None if root is None else tmp_path / root)
    catalog.load()
    assert catalog.courses() == []
    assert catalog.problems() == []
    assert catalog.get("intro") is None


@pytest.mark.parametrize("bad", ["..", "../intro", "intro/..", "", "intro\x00", "a;b"])
def test_get_refuses_bad_ids(courses_dir: Path, bad: str) -> None:
    assert CourseCatalog(courses_dir).get(bad) is None


def test_changes_are_picked_up(courses_dir: Path) -> None:
    catalog = CourseCatalog(courses_dir)
    assert catalog.get(EXAMPLE_COURSE) is not None
    manifest = courses_dir / EXAMPLE_COURSE / "course.yaml"
    manifest.write_text(manifest.read_text().replace("solar system", "planets and plants"))
    course = catalog.get(EXAMPLE_COURSE)
    assert course is not None
    assert course.title == "Introduction to the planets and plants"

    _course(courses_dir, "added", MINIMAL)
    assert "added" in [c.id for c in catalog.courses()]

    (courses_dir / "no-material" / "material").mkdir()  # fixing a course
    assert catalog.get("no-material") is not None
    assert "no-material" not in _problems_by_course(catalog)

    (courses_dir / EXAMPLE_COURSE / "CLAUDE.md").write_text("New tutor text, longer than before\n")
    course = catalog.get(EXAMPLE_COURSE)
    assert course is not None
    assert course.tutor.startswith("New tutor text")


def test_unchanged_catalog_is_not_rescanned(courses_dir: Path) -> None:
    catalog = CourseCatalog(courses_dir)
    first = catalog.get(EXAMPLE_COURSE)
    assert catalog.get(EXAMPLE_COURSE) is first  # same object: no reload happened


def test_schema_is_shipped_and_valid() -> None:
    from jsonschema import Draft202012Validator

    schema = course_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False


def test_example_course_in_the_docs_loads() -> None:
    catalog = CourseCatalog(REPO / "docs" / "example-courses")
    assert catalog.problems() == []
    course = catalog.get("transformer-basics")
    assert course is not None
    assert len(course.stages) == 3
    assert course.trust_tutor_markers is True
    assert {s.quiz.type for s in course.stages if s.quiz} == {"multiple-choice", "free-response"}
    assert all(s.goals and s.concepts for s in course.stages)
    assert (course.material_dir / "paper.md").is_file()
    assert (course.material_dir / "attention.py").is_file()
    assert "[STAGE_COMPLETE:" in course.tutor
    assert "[COURSE_COMPLETE]" in course.tutor
    for stage in course.stages:
        assert stage.quiz is not None
        for answer in stage.quiz.answers:
            assert answer not in json.dumps(stage.quiz.public()) or stage.quiz.type == (
                "multiple-choice"
            )
