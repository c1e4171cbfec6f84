"""Find and load the courses under the courses dir, and say precisely what is wrong with the rest.

Layout (see docs/courses.md)::

    <courses_dir>/<course-id>/course.yaml | course.yml | course.json   manifest, server only
    <courses_dir>/<course-id>/CLAUDE.md                                 tutor text (optional)
    <courses_dir>/<course-id>/material/                                 mounted at /course

A directory without a manifest but with a ``CLAUDE.md`` whose first fenced ``json`` block
is ``{"stages": [...]}`` is imported in the seed system's format; the block (which holds
the quiz answers) is cut out of the tutor text.

Why problems instead of exceptions: a courses dir is edited by hand while the server runs.
One broken course must not hide the others, and the instructor needs the file and the
field (``stages[1].quiz.answer``) to fix it, not a stack trace.

Why the material checks are strict: the material directory is bind-mounted (or mounted as
a ``subPath``) into sandboxes. A ``..`` or a symlink leaving the course directory would
mount some other part of the host; the course directory itself would expose the manifest
and its answers.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError

from .model import Concept, Course, CourseProblem, Quiz, QuizType, Stage, normalise_answer, valid_id

__all__ = [
    "MANIFEST_NAMES",
    "MAX_TUTOR_BYTES",
    "TUTOR_NAME",
    "CourseCatalog",
    "course_schema",
]

log = logging.getLogger(__name__)

MANIFEST_NAMES = ("course.yaml", "course.yml", "course.json")
TUTOR_NAME = "CLAUDE.md"
DEFAULT_MATERIAL = "material"
#: The tutor text travels in the sandbox's environment (one variable); Linux caps a single
#: environment string at 128 KiB, and the prompt should stay far below that anyway.
MAX_TUTOR_BYTES = 64 * 1024
#: Manifests and CLAUDE.md files are read whole; anything this large is a mistake.
MAX_FILE_BYTES = 1024 * 1024
#: Enough to fix a manifest; a wholly wrong file would otherwise list hundreds of errors.
MAX_PROBLEMS_PER_COURSE = 20
_MAX_MESSAGE = 300

#: The first fenced block whose info string is ``json`` (seed format).
_JSON_FENCE = re.compile(
    r"^(?P<fence>`{3,}|~{3,})[ \t]*json[ \t]*\r?\n(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL | re.IGNORECASE,
)
_HEADING = re.compile(r"^#[ \t]+(?P<title>.+?)[ \t#]*$", re.MULTILINE)
_IDENTIFIER = re.compile(r"\A[A-Za-z_][A-Za-z0-9_-]*\Z")

#: The seed's StageConfig, only as far as we use it (extra keys such as ``id``,
#: ``position`` or ``roomWidth`` are allowed and ignored).
_SEED_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["stages"],
    "properties": {
        "stages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["stageNumber", "title"],
                "properties": {
                    "stageNumber": {"type": "integer", "minimum": 1},
                    "title": {"type": "string", "minLength": 1},
                    "concepts": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["title"],
                            "properties": {
                                "title": {"type": "string", "minLength": 1},
                                "content": {"type": "string"},
                            },
                        },
                    },
                    "quiz": {
                        "type": ["object", "null"],
                        "required": ["question", "type"],
                        "properties": {
                            "question": {"type": "string", "minLength": 1},
                            "type": {"type": "string"},
                            "options": {"type": "array", "items": {"type": "string"}},
                            "correctAnswer": {
                                "type": ["string", "array", "integer", "null"],
                                "items": {"type": "string"},
                            },
                        },
                    },
                },
            },
        }
    },
}


@functools.cache
def course_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (draft 2020-12), shipped next to this module."""
    text = resources.files(__package__).joinpath("course.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _manifest_validator() -> Draft202012Validator:
    schema = course_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@functools.cache
def _seed_validator() -> Draft202012Validator:
    return Draft202012Validator(_SEED_SCHEMA)


class _Invalid(Exception):
    """The course cannot be loaded; carries every problem found."""

    def __init__(self, problems: list[CourseProblem]) -> None:
        super().__init__(problems)
        self.problems = problems


@dataclass
class _Context:
    """Where we are while loading one course, to label problems."""

    root: Path  # the courses dir, resolved
    name: str  # directory name = course id
    directory: Path  # the course dir, resolved

    def problem(self, filename: str, field: str, message: str) -> CourseProblem:
        file = f"{self.name}/{filename}" if filename else self.name
        return CourseProblem(self.name, file, field, message)


def json_path(parts: Iterable[str | int]) -> str:
    """``("stages", 1, "quiz", "answer")`` → ``stages[1].quiz.answer``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _schema_problems(
    ctx: _Context, filename: str, validator: Draft202012Validator, data: Any
) -> list[CourseProblem]:
    """Every schema error, labelled with the field it is about (not only its parent)."""
    problems = []
    errors = sorted(
        validator.iter_errors(data),
        key=lambda e: [(0, p, "") if isinstance(p, int) else (1, 0, p) for p in e.absolute_path],
    )
    for error in errors[:MAX_PROBLEMS_PER_COURSE]:
        path: list[str | int] = list(error.absolute_path)
        extra = _offending_key(error)
        if extra is not None:
            path.append(extra)
        message = error.message
        if len(message) > _MAX_MESSAGE:
            message = message[: _MAX_MESSAGE - 1] + "…"
        problems.append(ctx.problem(filename, json_path(path), message))
    return problems


def _offending_key(error: ValidationError) -> str | None:
    """For a missing or an unexpected property, the property's name."""
    instance = error.instance
    if not isinstance(instance, dict):
        return None
    if error.validator == "required" and isinstance(error.validator_value, list):
        missing = [k for k in error.validator_value if k not in instance]
        return str(missing[0]) if missing else None
    if error.validator == "additionalProperties" and isinstance(error.schema, dict):
        known = error.schema.get("properties", {})
        unexpected = sorted(str(k) for k in instance if k not in known)
        return unexpected[0] if unexpected else None
    return None


def _read_text(ctx: _Context, filename: str) -> str:
    path = ctx.directory / filename
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _Invalid([ctx.problem(filename, "", f"file too large ({size} bytes)")])
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Invalid([ctx.problem(filename, "", f"not UTF-8 text ({e.reason})")]) from None
    except OSError as e:
        raise _Invalid([ctx.problem(filename, "", f"cannot read: {e.strerror}")]) from None


def _parse_manifest(ctx: _Context, filename: str) -> Any:
    text = _read_text(ctx, filename)
    if filename.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            message = f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})"
            raise _Invalid([ctx.problem(filename, "", message)]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise _Invalid([ctx.problem(filename, "", f"invalid YAML: {what}{where}")]) from None


def _resolve_material(ctx: _Context, filename: str, relative: str) -> Path:
    """The material directory, resolved, proven to lie strictly inside the course dir."""

    def bad(message: str) -> _Invalid:
        return _Invalid([ctx.problem(filename, "material", message)])

    if "\x00" in relative:
        raise bad("must not contain NUL")
    pure = PurePosixPath(relative)
    if pure.is_absolute():
        raise bad(f"{relative!r} must be a path relative to the course directory")
    if ".." in pure.parts:
        raise bad(f"{relative!r} must not contain '..'")
    target = (ctx.directory / pure).resolve()
    if not target.is_relative_to(ctx.directory):
        raise bad(f"{relative!r} leads outside the course directory (a symlink?)")
    if target == ctx.directory:
        raise bad(
            f"{relative!r} is the course directory itself, which holds the manifest and its "
            "quiz answers; put the material in a subdirectory"
        )
    if not target.is_dir():
        raise bad(f"material directory {relative!r} does not exist")
    return target


def _check_tutor(ctx: _Context, text: str) -> str:
    size = len(text.encode("utf-8"))
    if size > MAX_TUTOR_BYTES:
        message = f"tutor text is {size} bytes; at most {MAX_TUTOR_BYTES} bytes fit a sandbox"
        raise _Invalid([ctx.problem(TUTOR_NAME, "", message)])
    if "\x00" in text:
        raise _Invalid([ctx.problem(TUTOR_NAME, "", "tutor text must not contain NUL")])
    return text


def _check_numbers(
    ctx: _Context, filename: str, numbers: list[int], key: str
) -> Iterator[CourseProblem]:
    for index, number in enumerate(numbers):
        if number != index + 1:
            yield ctx.problem(
                filename,
                f"stages[{index}].{key}",
                f"stage {number} found where stage {index + 1} was expected "
                "(stages are numbered 1..N in order)",
            )


def _check_choices(
    ctx: _Context, filename: str, field: str, options: tuple[str, ...], answers: tuple[str, ...]
) -> Iterator[CourseProblem]:
    choices = {normalise_answer(o) for o in options}
    for answer in answers:
        if normalise_answer(answer) not in choices:
            yield ctx.problem(filename, field, f"{answer!r} is not one of the options")


# ---------------------------------------------------------------------------------- manifest


def _load_manifest(ctx: _Context, filename: str) -> Course:
    data = _parse_manifest(ctx, filename)
    if not isinstance(data, dict):
        raise _Invalid([ctx.problem(filename, "", "the manifest must be a mapping (key: value)")])
    problems = _schema_problems(ctx, filename, _manifest_validator(), data)
    if problems:
        raise _Invalid(problems)
    if "id" in data and data["id"] != ctx.name:
        problems.append(
            ctx.problem(
                filename, "id", f"id {data['id']!r} differs from the directory name {ctx.name!r}"
            )
        )
    raw_stages: list[dict[str, Any]] = data["stages"]
    problems.extend(_check_numbers(ctx, filename, [s["number"] for s in raw_stages], "number"))
    stages = []
    for index, raw in enumerate(raw_stages):
        quiz = None
        if "quiz" in raw:
            q = raw["quiz"]
            answer = q["answer"]
            answers = (answer,) if isinstance(answer, str) else tuple(answer)
            options = tuple(q.get("options", ()))
            quiz_type: QuizType = q["type"]
            if quiz_type == "multiple-choice":
                field = f"stages[{index}].quiz.answer"
                problems.extend(_check_choices(ctx, filename, field, options, answers))
            if not any(normalise_answer(a) for a in answers):
                problems.append(
                    ctx.problem(filename, f"stages[{index}].quiz.answer", "answer is blank")
                )
            quiz = Quiz(q["question"], quiz_type, options, answers)
        concepts = tuple(
            Concept(c, "") if isinstance(c, str) else Concept(c["title"], c.get("content", ""))
            for c in raw.get("concepts", ())
        )
        stages.append(
            Stage(raw["number"], raw["title"], tuple(raw.get("goals", ())), concepts, quiz)
        )
    material: Path | None = None
    try:
        material = _resolve_material(ctx, filename, data.get("material", DEFAULT_MATERIAL))
    except _Invalid as e:
        problems.extend(e.problems)
    tutor = ""
    if (ctx.directory / TUTOR_NAME).is_file():
        try:
            tutor = _check_tutor(ctx, _read_text(ctx, TUTOR_NAME))
        except _Invalid as e:
            problems.extend(e.problems)
    if problems:
        raise _Invalid(problems)
    assert material is not None
    return Course(
        id=ctx.name,
        title=data["title"],
        description=data.get("description", ""),
        stages=tuple(stages),
        material_dir=material,
        material_subpath=material.relative_to(ctx.root).as_posix(),
        tutor=tutor,
        trust_tutor_markers=data.get("trust_tutor_markers", False),
        unlock=data.get("unlock", "sequential"),
        source="manifest",
    )


# -------------------------------------------------------------------------------------- seed


def split_seed(text: str) -> tuple[str, str, int] | None:
    """``(json_text, text_without_the_block, line_offset)`` for a seed CLAUDE.md, else None.

    ``line_offset`` is the number of lines before the JSON body, to report parse errors
    at the line an instructor sees in the file.
    """
    match = _JSON_FENCE.search(text)
    if match is None:
        return None
    before = text[: match.start()].rstrip("\r\n")
    after = text[match.end() :].lstrip("\r\n")
    rest = f"{before}\n\n{after}" if before and after else before + after
    return match.group("body"), rest, text[: match.start("body")].count("\n")


def _seed_quiz(
    ctx: _Context, index: int, raw: dict[str, Any] | None, problems: list[CourseProblem]
) -> Quiz | None:
    """The quiz of a seed stage; None when the server cannot check it."""
    if raw is None:
        return None
    kind = raw["type"]
    answer = raw.get("correctAnswer")
    if answer is None or answer == "" or answer == []:
        # Without an answer the server cannot check it; the tutor (or an instructor) completes
        # the stage instead, as in the seed.
        return None
    if kind not in ("multiple-choice", "free-response"):
        log.debug("course %s stage %d: quiz type %r not checkable; no quiz", ctx.name, index, kind)
        return None
    options = tuple(raw.get("options") or ())
    field = f"stages[{index}].quiz.correctAnswer"
    if isinstance(answer, int):
        if kind == "multiple-choice" and 0 <= answer < len(options):
            answer = options[answer]  # an option's index names that option
        elif kind == "free-response":
            answer = str(answer)
        else:
            problems.append(ctx.problem(TUTOR_NAME, field, f"no option number {answer}"))
            return None
    answers = (answer,) if isinstance(answer, str) else tuple(answer)
    if not any(normalise_answer(a) for a in answers):
        return None  # blank: nothing could ever match it
    if kind == "multiple-choice":
        if len(options) < 2:
            problems.append(
                ctx.problem(
                    TUTOR_NAME, f"stages[{index}].quiz.options", "needs at least two options"
                )
            )
        problems.extend(_check_choices(ctx, TUTOR_NAME, field, options, answers))
    return Quiz(raw["question"], kind, options, answers)


def _load_seed(ctx: _Context) -> Course:
    text = _read_text(ctx, TUTOR_NAME)
    split = split_seed(text)
    if split is None:
        raise _Invalid(
            [
                ctx.problem(
                    "",
                    "",
                    f"no {' / '.join(MANIFEST_NAMES)}, and {TUTOR_NAME} has no ```json block "
                    'with {"stages": [...]}',
                )
            ]
        )
    body, tutor, offset = split
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        message = f"invalid JSON in the ```json block: {e.msg} (line {e.lineno + offset})"
        raise _Invalid([ctx.problem(TUTOR_NAME, "", message)]) from None
    problems = _schema_problems(ctx, TUTOR_NAME, _seed_validator(), data)
    if problems:
        raise _Invalid(problems)
    raw_stages: list[dict[str, Any]] = data["stages"]
    problems.extend(
        _check_numbers(ctx, TUTOR_NAME, [s["stageNumber"] for s in raw_stages], "stageNumber")
    )
    stages = []
    for index, raw in enumerate(raw_stages):
        quiz = _seed_quiz(ctx, index, raw.get("quiz"), problems)
        concepts = tuple(Concept(c["title"], c.get("content", "")) for c in raw.get("concepts", ()))
        stages.append(Stage(raw["stageNumber"], raw["title"], (), concepts, quiz))
    try:
        tutor = _check_tutor(ctx, tutor)
    except _Invalid as e:
        problems.extend(e.problems)
    if problems:
        raise _Invalid(problems)
    material = ctx.directory
    candidate = (ctx.directory / DEFAULT_MATERIAL).resolve()
    if candidate.is_dir() and candidate.is_relative_to(ctx.directory) and candidate != material:
        material = candidate
    else:
        # As in the seed, the whole directory is the material. Sandboxes then mask the
        # manifest names and this CLAUDE.md (its JSON block holds the answers); see
        # terminals.courses.course_mount.
        log.debug("course %s (seed format): the course directory is its material", ctx.name)
    heading = _HEADING.search(tutor)
    return Course(
        id=ctx.name,
        title=heading.group("title") if heading else ctx.name,
        description="",
        stages=tuple(stages),
        material_dir=material,
        material_subpath=material.relative_to(ctx.root).as_posix(),
        tutor=tutor,
        trust_tutor_markers=True,
        unlock="sequential",
        source="seed",
    )


# ----------------------------------------------------------------------------------- catalog

_Signature = tuple[Any, ...]


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class CourseCatalog:
    """The courses of one courses dir, reloaded when its files change.

    Loading is synchronous: it reads a few small files per course. ``refresh_if_changed``
    only stats them, so callers can invoke it on every request.
    """

    def __init__(self, root: Path | None, *, log: logging.Logger | None = None) -> None:
        self.root = None if root is None else Path(root)
        self.log = log or logging.getLogger(__name__)
        self._courses: dict[str, Course] = {}
        self._problems: list[CourseProblem] = []
        self._signature: _Signature | None = None

    # -- public API

    def load(self) -> None:
        """(Re)scan the courses dir. A missing or unset dir simply means no courses."""
        signature = self._signature_now()  # taken first: a change during the scan reloads
        courses: dict[str, Course] = {}
        problems: list[CourseProblem] = []
        for name, directory in self._candidates():
            try:
                courses[name] = self._load_one(name, directory)
            except _Invalid as e:
                problems.extend(e.problems)
        for problem in problems:
            self.log.warning("claude-pods: course problem: %s", problem)
        self._courses = dict(sorted(courses.items()))
        self._problems = problems
        self._signature = signature
        self.log.debug("claude-pods: %d course(s) loaded from %s", len(courses), self.root)

    def refresh_if_changed(self) -> None:
        """Reload when a manifest, a CLAUDE.md or the directory listing changed (stat only)."""
        if self._signature is None or self._signature_now() != self._signature:
            self.load()

    def courses(self) -> list[Course]:
        """Every valid course, sorted by id."""
        self.refresh_if_changed()
        return list(self._courses.values())

    def get(self, course_id: str) -> Course | None:
        """The course *course_id*, or None (also for anything that is not a valid id)."""
        if not valid_id(course_id):
            return None
        self.refresh_if_changed()
        return self._courses.get(course_id)

    def problems(self) -> list[CourseProblem]:
        """What is wrong with the courses that did not load."""
        self.refresh_if_changed()
        return list(self._problems)

    # -- internals

    def _entries(self) -> list[os.DirEntry[str]]:
        if self.root is None:
            return []
        try:
            with os.scandir(self.root) as it:
                return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:
            return []

    def _candidates(self) -> Iterator[tuple[str, Path]]:
        for entry in self._entries():
            try:
                if not entry.is_dir():  # follows symlinks; checked again in _load_one
                    continue
            except OSError:
                continue
            yield entry.name, Path(entry.path)

    def _signature_now(self) -> _Signature:
        if self.root is None:
            return ("unset",)
        parts: list[Any] = [_stat_key(self.root)]
        for name, directory in self._candidates():
            parts.append((name, _stat_key(directory)))
            for filename in (*MANIFEST_NAMES, TUTOR_NAME):
                parts.append(_stat_key(directory / filename))
            parts.append(_stat_key(directory / DEFAULT_MATERIAL))
        return tuple(parts)

    def _load_one(self, name: str, directory: Path) -> Course:
        assert self.root is not None
        root = self.root.resolve()
        if not valid_id(name):
            raise _Invalid(
                [
                    CourseProblem(
                        name,
                        name,
                        "",
                        "directory name is not a valid course id (letters, digits, '-', '_'; "
                        "at most 64; no dots)",
                    )
                ]
            )
        real = directory.resolve()
        ctx = _Context(root, name, real)
        if not real.is_relative_to(root) or real == root:
            raise _Invalid([ctx.problem("", "", "a symlink leading outside the courses dir")])
        manifests = [m for m in MANIFEST_NAMES if (real / m).is_file()]
        if len(manifests) > 1:
            raise _Invalid(
                [ctx.problem(manifests[1], "", f"more than one manifest: {', '.join(manifests)}")]
            )
        if manifests:
            return _load_manifest(ctx, manifests[0])
        if (real / TUTOR_NAME).is_file():
            return _load_seed(ctx)
        raise _Invalid(
            [ctx.problem("", "", f"no {' / '.join(MANIFEST_NAMES)} and no {TUTOR_NAME}")]
        )
