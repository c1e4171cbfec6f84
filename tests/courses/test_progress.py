"""CourseService: the progress rules, events exactly once, and races between callers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jupyter_claude_pods.courses import (
    CourseCatalog,
    CourseService,
    Marker,
    ProgressStore,
)
from jupyter_claude_pods.courses.model import Course

from .conftest import (
    EXAMPLE_COURSE,
    FREE_ANSWERS,
    FREE_COURSE,
    INTRO_FREE_ANSWERS,
    INTRO_MC_ANSWER,
    SEED_ANSWERS,
    SEED_COURSE,
)

REPO = Path(__file__).resolve().parents[2]
Events = list[dict[str, Any]]


def _course(service: CourseService, course_id: str = EXAMPLE_COURSE) -> Course:
    course = service.catalog.get(course_id)
    assert course is not None
    return course


def _event(
    action: str,
    stage: int | None,
    source: str | None,
    session: str | None = None,
    user: str = "ada",
    course: str = EXAMPLE_COURSE,
) -> dict[str, Any]:
    return {
        "action": action,
        "user": user,
        "course": course,
        "stage": stage,
        "source": source,
        "session": session,
    }


async def test_fresh_progress(service: CourseService) -> None:
    course = _course(service)
    assert await service.progress("ada", course) == {
        "course": EXAMPLE_COURSE,
        "completed": [],
        "course_completed": False,
        "next_stage": 1,
        "stage_count": 3,
        "unlocked": [1],
    }
    assert await service.resume_stage("ada", course) == 1
    free = await service.progress("ada", _course(service, FREE_COURSE))
    assert free["unlocked"] == [1, 2]


async def test_wrong_then_right_answer(service: CourseService, events: Events) -> None:
    course = _course(service)
    wrong = await service.answer_quiz("ada", course, 1, "Mars")
    assert wrong["correct"] is False
    assert wrong["newly_completed"] is False
    assert wrong["progress"]["completed"] == []
    assert events == []
    assert await service.store.learners() == ["ada"]  # the attempt is recorded

    right = await service.answer_quiz("ada", course, 1, f"  {INTRO_MC_ANSWER.lower()} ", "t-1")
    assert right["correct"] is True
    assert right["stage"] == 1
    assert right["newly_completed"] is True
    progress = right["progress"]
    assert [(c["stage"], c["source"]) for c in progress["completed"]] == [(1, "quiz")]
    assert progress["next_stage"] == 2
    assert progress["unlocked"] == [1, 2]
    assert events == [_event("stage_completed", 1, "quiz", "t-1")]

    again = await service.answer_quiz("ada", course, 1, INTRO_MC_ANSWER)
    assert again["correct"] is True
    assert again["newly_completed"] is False
    assert len(events) == 1  # idempotent: no second event
    assert await service.resume_stage("ada", course) == 2


async def test_locked_unknown_and_quizless_stages(service: CourseService) -> None:
    course = _course(service)
    with pytest.raises(PermissionError, match="locked"):
        await service.answer_quiz("ada", course, 2, INTRO_FREE_ANSWERS[0])
    for stage in (0, 4, 99):
        with pytest.raises(LookupError):
            await service.answer_quiz("ada", course, stage, "x")
    await service.mark("ada", course, 1)
    await service.mark("ada", course, 2)
    with pytest.raises(LookupError, match="no quiz"):
        await service.answer_quiz("ada", course, 3, "x")
    assert [c.source for c in await service.store.completions("ada")] == ["instructor"] * 2
    # Nothing was written for the refused answers.
    with sqlite3.connect(service.store.path) as db:
        assert db.execute("SELECT count(*) FROM quiz_attempts").fetchone()[0] == 0


async def test_free_unlock_and_course_completion(service: CourseService, events: Events) -> None:
    course = _course(service, FREE_COURSE)
    result = await service.answer_quiz("ada", course, 2, FREE_ANSWERS[1])
    assert result["newly_completed"] is True
    assert result["progress"]["next_stage"] == 1
    result = await service.answer_quiz("ada", course, 1, FREE_ANSWERS[0])
    assert result["progress"]["course_completed"] is True
    assert result["progress"]["next_stage"] is None
    assert await service.resume_stage("ada", course) == 2  # all done: the last stage
    assert [e["action"] for e in events] == [
        "stage_completed",
        "stage_completed",
        "course_completed",
    ]
    assert events[-1] == _event("course_completed", None, "quiz", course=FREE_COURSE)


async def test_markers_count_only_when_trusted(service: CourseService, events: Events) -> None:
    trusted = _course(service)
    untrusted = _course(service, FREE_COURSE)
    assert not await service.record_marker("ada", untrusted, Marker("stage", 1), "t")
    assert not await service.record_marker("ada", untrusted, Marker("course", None), "t")
    assert not await service.record_marker("ada", trusted, Marker("stage", 4), "t")  # no stage 4
    assert events == []

    # The tutor sets the pace: stage 2 may be claimed before stage 1.
    assert await service.record_marker("ada", trusted, Marker("stage", 2), "t")
    assert not await service.record_marker("ada", trusted, Marker("stage", 2), "t")
    assert events == [_event("stage_completed", 2, "tutor", "t")]

    assert await service.record_marker("ada", trusted, Marker("course", None), "t")
    assert not await service.record_marker("ada", trusted, Marker("course", None), "t")
    assert [(e["action"], e["stage"]) for e in events] == [
        ("stage_completed", 2),
        ("stage_completed", 1),
        ("stage_completed", 3),
        ("course_completed", None),
    ]
    progress = await service.progress("ada", trusted)
    assert progress["course_completed"] is True
    assert {c["source"] for c in progress["completed"]} == {"tutor"}


async def test_seed_course_end_to_end(service: CourseService) -> None:
    course = _course(service, SEED_COURSE)
    assert (await service.answer_quiz("ada", course, 1, SEED_ANSWERS[0]))["correct"]
    assert (await service.answer_quiz("ada", course, 2, SEED_ANSWERS[1]))["correct"]
    assert await service.record_marker("ada", course, Marker("stage", 3), "t")
    assert (await service.progress("ada", course))["course_completed"] is True


async def test_instructor_mark_reset_and_view(service: CourseService, events: Events) -> None:
    course = _course(service)
    assert await service.mark("bob", course, 1)
    assert not await service.mark("bob", course, 1)
    with pytest.raises(LookupError):
        await service.mark("bob", course, 9)
    await service.answer_quiz("cyd", _course(service, FREE_COURSE), 1, "Rome")  # wrong

    view = await service.instructor_view(None)
    assert [entry["user"] for entry in view["learners"]] == ["bob", "cyd"]
    bob = view["learners"][0]["courses"]
    assert list(bob) == [EXAMPLE_COURSE]
    assert bob[EXAMPLE_COURSE] == await service.progress("bob", course)
    assert view["learners"][1]["courses"][FREE_COURSE]["completed"] == []
    only = await service.instructor_view(FREE_COURSE)
    assert [entry["user"] for entry in only["learners"]] == ["cyd"]
    assert await service.instructor_view("no-such-course") == {"learners": []}

    assert await service.reset("bob", course) == 1
    assert await service.reset("bob", course) == 0
    assert events == [
        _event("stage_completed", 1, "instructor", user="bob"),
        _event("reset", None, None, user="bob"),
    ]
    assert (await service.progress("bob", course))["completed"] == []


async def test_a_failing_event_sink_does_not_undo_progress(
    catalog: CourseCatalog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: dict[str, Any]) -> None:
        raise OSError("event sink is down")

    service = CourseService(catalog, ProgressStore(tmp_path / "p.sqlite3"), broken)
    await service.start()
    try:
        course = _course(service)
        with caplog.at_level(logging.ERROR):
            result = await service.answer_quiz("ada", course, 1, INTRO_MC_ANSWER)
        assert result["newly_completed"] is True
        assert "could not emit" in caplog.text
        assert (await service.progress("ada", course))["next_stage"] == 2
    finally:
        await service.stop()


async def test_fifty_concurrent_answers_complete_once(
    service: CourseService, events: Events
) -> None:
    course = _course(service)
    results = await asyncio.gather(
        *(service.answer_quiz("ada", course, 1, INTRO_MC_ANSWER) for _ in range(50))
    )
    assert all(r["correct"] for r in results)
    assert sum(r["newly_completed"] for r in results) == 1
    assert events == [_event("stage_completed", 1, "quiz")]
    assert len(await service.store.completions("ada", EXAMPLE_COURSE)) == 1


async def test_concurrent_last_stages_complete_the_course_once(
    service: CourseService, events: Events
) -> None:
    course = _course(service, FREE_COURSE)
    await asyncio.gather(
        *(
            service.answer_quiz("ada", course, stage, FREE_ANSWERS[stage - 1])
            for stage in (1, 2)
            for _ in range(10)
        )
    )
    assert sorted((e["action"], e["stage"] or 0) for e in events) == [
        ("course_completed", 0),
        ("stage_completed", 1),
        ("stage_completed", 2),
    ]


ANSWERER = """
import asyncio, json, sys
from pathlib import Path
from jupyter_claude_pods.courses import CourseCatalog, CourseService, ProgressStore

async def main(courses, db, course_id, answer):
    events = []
    service = CourseService(CourseCatalog(Path(courses)), ProgressStore(Path(db)), events.append)
    await service.start()
    course = service.catalog.get(course_id)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    results = await asyncio.gather(
        *(service.answer_quiz("ada", course, 1, answer) for _ in range(25))
    )
    await service.stop()
    print(json.dumps({"correct": sum(r["correct"] for r in results),
                      "newly": sum(r["newly_completed"] for r in results),
                      "events": events}), flush=True)

asyncio.run(main(*sys.argv[1:5]))
"""


def test_two_processes_answering_at_once_complete_once(courses_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [str(courses_dir), str(db), EXAMPLE_COURSE, INTRO_MC_ANSWER]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ANSWERER, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:  # both have opened the store: then start them together
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert [r["correct"] for r in results] == [25, 25]
    assert sum(r["newly"] for r in results) == 1
    events = [e for r in results for e in r["events"]]
    assert events == [_event("stage_completed", 1, "quiz")]
