"""Course terminals in local bubblewrap sandboxes, end to end.

The sandbox program is the real ``claude-pods-launch`` with a stub ``claude`` (a shell
script that reports its arguments and then runs an interactive shell), so what is checked
is what Claude Code would find: the material read-only at /course, the tutor text as its
user memory (``~/.claude/CLAUDE.md``), the stage, and no quiz answer anywhere.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from jupyter_claude_pods.sandbox.local.bwrap import (
    LAUNCHER,
    BwrapOptions,
    bwrap_argv,
    sandbox_env,
)
from jupyter_claude_pods.sandbox.spec import CourseMount, SandboxSpec
from tests.terminals.client import TermClient, plain
from tests.terminals.test_courses import (
    ANSWERS,
    INTRO_TUTOR,
    SPLIT_MARKER,
    course_config,
    write_courses,
)

from .conftest import attach, run

STUB = """#!/bin/sh
printf 'STUB-CLAUDE args:[%s] pwd:[%s]\\n' "$*" "$(pwd)"
exec /bin/bash --norc --noprofile -i
"""
#: Host system directories the sandbox sees (read-only); the test's courses are elsewhere.
SYSTEM = ("proc", "sys", "dev", "usr", "lib", "lib32", "lib64", "libx32", "bin", "sbin", "opt")
#: Lists every file under the sandbox's own directories that holds a quiz answer, then
#: counts process environments and command lines that do. The pattern is a bracket
#: expression so that grep's own command line does not match it.
FIND_ANSWERS = (
    "grep -rslI -D skip -e 'SECRET-ANSWE[R]' "
    f"$(ls -d /* | grep -Ev '^/({'|'.join(SYSTEM)})$'); "
    "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | grep -ac 'SECRET-ANSWE[R]'"
)


# --- the bubblewrap command line (pure) ---------------------------------------------

SPEC = SandboxSpec(
    session_id="0badcafe",
    user="alice",
    terminal="1",
    env={"CLAUDE_PODS_COURSE_DIR": "/course"},
    course=CourseMount(
        id="seed", subpath="seed", host_path="/srv/c/seed", hidden=("course.yaml", "CLAUDE.md")
    ),
)


def pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def test_hidden_course_files_are_covered_after_the_course_bind() -> None:
    options = BwrapOptions(
        command=("prog",),
        course_source="/srv/c/seed",
        course_dir="/learn",
        course_hidden=("course.yaml", "CLAUDE.md"),
        empty_file="/state/empty",
    )
    binds = pairs(bwrap_argv(SPEC, options), "--ro-bind")
    at = binds.index(("/srv/c/seed", "/learn"))
    assert binds[at + 1 : at + 3] == [
        ("/state/empty", "/learn/course.yaml"),
        ("/state/empty", "/learn/CLAUDE.md"),
    ]
    # The layout decides where the course is, whatever the session's environment says.
    assert sandbox_env(SPEC, options)["CLAUDE_PODS_COURSE_DIR"] == "/learn"


@pytest.mark.parametrize(
    ("hidden", "empty"),
    [(("CLAUDE.md",), None), (("../x",), "/e"), (("a/b",), "/e"), (("",), "/e")],
)
def test_hiding_refuses_what_it_cannot_do_safely(
    hidden: tuple[str, ...], empty: str | None
) -> None:
    options = BwrapOptions(
        command=("prog",), course_source="/srv/c", course_hidden=hidden, empty_file=empty
    )
    with pytest.raises(ValueError):
        bwrap_argv(SPEC, options)


# --- course terminals ---------------------------------------------------------------


@pytest.fixture
def courses(state_dir: Path) -> Path:
    root = write_courses(state_dir / "courses")
    assert not str(root).startswith(tuple(f"/{d}/" for d in SYSTEM))
    return root


@pytest.fixture
def extra_config(courses: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    bin_dir = state_dir / "bin"
    bin_dir.mkdir(mode=0o755)
    stub = bin_dir / "claude"
    stub.write_text(STUB)
    stub.chmod(0o755)
    monkeypatch.setenv("CLAUDE_PODS_CLAUDE_BIN", str(stub))
    monkeypatch.delenv("CLAUDE_PODS_COURSES_DIR", raising=False)
    config = course_config(courses, state_dir / "progress.sqlite3")
    return {**config, "LocalBackend": {"command": [LAUNCHER]}}


async def open_course(
    jp_fetch: Any, jp_ws_fetch: Any, **body: Any
) -> tuple[dict[str, Any], TermClient]:
    resp = await jp_fetch("api", "terminals", method="POST", body=json.dumps(body))
    model = json.loads(resp.body)
    term = await attach(jp_ws_fetch, model["name"])
    await term.expect(lambda out: "STUB-CLAUDE" in out and out.rstrip().endswith("$"))
    return model, term


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def no_answers(out: str) -> None:
    """``FIND_ANSWERS`` found nothing: no file names, and a count of 0."""
    lines = [line.strip() for line in out.strip().splitlines() if line.strip()]
    assert lines == ["0"], out


async def test_course_sandbox_sees_its_material_read_only_and_no_answers(
    jp_fetch: Any, jp_ws_fetch: Any
) -> None:
    model, term = await open_course(jp_fetch, jp_ws_fetch, course="intro")
    assert (model["claude_pods"]["course"], model["claude_pods"]["stage"]) == ("intro", 1)
    # The launcher started "claude" in the course, at the stage.
    assert "args:[--tools Read,Glob,Grep -- Resume the course at stage 1.]" in term.output
    assert "pwd:[/course]" in term.output

    out = await run(term, "ls -A /course; cat /course/notes.md; touch /course/x 2>&1")
    assert out.split()[:2] == ["notes.md", "NOTES-OF-intro"]  # only the material
    assert "Read-only file system" in out
    out = await run(term, "rm -f /course/notes.md 2>&1; cat /course/notes.md")
    assert "NOTES-OF-intro" in out

    out = await run(term, "sha256sum < ~/.claude/CLAUDE.md")
    assert sha256(INTRO_TUTOR) in out  # byte for byte
    out = await run(
        term,
        'echo "[$CLAUDE_PODS_STAGE|$CLAUDE_PODS_COURSE_DIR|$CLAUDE_PODS_COURSE_TITLE|'
        '${CLAUDE_PODS_TUTOR-unset}]"',
    )
    assert "[1|/course|Intro|unset]" in out  # the launcher keeps the tutor out of claude's env
    no_answers(await run(term, FIND_ANSWERS))


async def test_seed_course_hides_its_claude_md_and_manifestless_answers(
    jp_fetch: Any, jp_ws_fetch: Any, jp_serverapp: Any
) -> None:
    _model, term = await open_course(jp_fetch, jp_ws_fetch, course="seed")
    out = await run(term, "ls -A /course; wc -c < /course/CLAUDE.md; echo x > /course/CLAUDE.md")
    assert out.split()[:3] == ["CLAUDE.md", "notes.md", "0"]  # there, but empty
    tutor = jp_serverapp.web_app.settings["claude_pods_courses"].catalog.get("seed").tutor
    assert "Seed Course" in tutor
    assert "stageNumber" not in tutor
    assert sha256(tutor) in await run(term, "sha256sum < ~/.claude/CLAUDE.md")
    no_answers(await run(term, FIND_ANSWERS))


async def test_stage_defaults_to_the_next_unfinished_one(jp_fetch: Any, jp_ws_fetch: Any) -> None:
    body = json.dumps({"answer": ANSWERS["intro"]})
    resp = await jp_fetch(
        "claude-pods", "api", "courses", "intro", "stages", "1", "answer", method="POST", body=body
    )
    assert json.loads(resp.body)["correct"] is True
    model, term = await open_course(jp_fetch, jp_ws_fetch, course="intro")
    assert model["claude_pods"]["stage"] == 2
    assert "Resume the course at stage 2." in term.output
    assert "[2]" in await run(term, 'echo "[$CLAUDE_PODS_STAGE]"')


@pytest.mark.parametrize(("course", "recorded"), [("intro", [1]), ("plain", [])])
async def test_tutor_markers_count_only_where_trusted(
    jp_fetch: Any, jp_ws_fetch: Any, manager: Any, course: str, recorded: list[int]
) -> None:
    model, term = await open_course(jp_fetch, jp_ws_fetch, course=course)
    await run(term, SPLIT_MARKER)
    assert plain(term.output).count("[STAGE_COMPLETE:1]") == 2
    await manager.wait_markers_recorded()
    resp = await jp_fetch("claude-pods", "api", "progress", course)
    state = json.loads(resp.body)
    assert [(c["stage"], c["source"]) for c in state["completed"]] == [
        (n, "tutor") for n in recorded
    ]
    assert manager.terminals[model["name"]].state == "running"


async def test_plain_terminal_gets_no_course(jp_fetch: Any, jp_ws_fetch: Any) -> None:
    resp = await jp_fetch("api", "terminals", method="POST", body="{}")
    model = json.loads(resp.body)
    assert (model["claude_pods"]["course"], model["claude_pods"]["stage"]) == (None, None)
    term = await attach(jp_ws_fetch, model["name"])
    await term.expect(lambda out: "STUB-CLAUDE" in out and out.rstrip().endswith("$"))
    assert "args:[--tools Read,Glob,Grep]" in term.output
    out = await run(term, "ls -d /course 2>&1; test -e ~/.claude/CLAUDE.md || echo no-memory")
    assert "No such file" in out
    assert "no-memory" in out
