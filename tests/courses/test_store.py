"""The progress store: schema migrations, idempotent completions, and durability under SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_claude_pods.courses import store as store_module
from jupyter_claude_pods.courses.store import MIGRATIONS, ProgressStore

REPO = Path(__file__).resolve().parents[2]


def _version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


async def test_migrates_a_new_file_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "progress.sqlite3"  # the directory is created too
    store = ProgressStore(path)
    await store.open()
    assert await store.complete_stage("ada", "intro", 1, "quiz")
    await store.close()
    assert _version(path) == len(MIGRATIONS)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"stage_completions", "course_completions", "quiz_attempts"} <= tables

    again = ProgressStore(path)
    await again.open()
    assert [c.stage for c in await again.completions("ada")] == [1]
    assert not await again.complete_stage("ada", "intro", 1, "quiz")
    await again.close()
    assert _version(path) == len(MIGRATIONS)


async def test_empty_existing_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "progress.sqlite3"
    path.touch()
    store = ProgressStore(path)
    await store.open()
    await store.close()
    assert _version(path) == len(MIGRATIONS)


async def test_a_new_migration_step_upgrades_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "progress.sqlite3"
    store = ProgressStore(path)
    await store.open()
    await store.complete_stage("ada", "intro", 1, "tutor", "s1")
    await store.close()
    step = ("ALTER TABLE stage_completions ADD COLUMN note TEXT DEFAULT 'kept'",)
    monkeypatch.setattr(store_module, "MIGRATIONS", [*MIGRATIONS, step])
    store = ProgressStore(path)
    await store.open()
    await store.close()
    assert _version(path) == len(MIGRATIONS) + 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT user, stage, note FROM stage_completions").fetchall() == [
            ("ada", 1, "kept")
        ]


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "progress.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    store = ProgressStore(path)
    with pytest.raises(RuntimeError, match="newer"):
        await store.open()
    with pytest.raises(RuntimeError, match="not open"):
        await store.completions("ada")


async def test_use_before_open_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await ProgressStore(tmp_path / "p.sqlite3").complete_stage("a", "c", 1, "quiz")


async def test_completions_are_idempotent_and_listed(tmp_path: Path) -> None:
    store = ProgressStore(tmp_path / "p.sqlite3")
    await store.open()
    try:
        assert await store.complete_stage("bob", "intro", 2, "instructor")
        assert await store.complete_stage("ada", "intro", 1, "quiz", "term-1")
        assert not await store.complete_stage("ada", "intro", 1, "tutor")  # first one wins
        assert await store.complete_stage("ada", "other", 1, "tutor")
        assert await store.complete_course("ada", "intro", "quiz")
        assert not await store.complete_course("ada", "intro", "tutor")
        await store.record_attempt("cyd", "intro", 1, False)

        ada = await store.completions("ada")
        assert [(c.course, c.stage, c.source, c.session) for c in ada] == [
            ("intro", 1, "quiz", "term-1"),
            ("other", 1, "tutor", None),
        ]
        assert ada[0].completed_at.endswith("Z")
        assert [c.stage for c in await store.completions("ada", "intro")] == [1]
        assert await store.course_completed("ada", "intro")
        assert not await store.course_completed("ada", "other")
        assert [(c.user, c.stage) for c in await store.all_progress("intro")] == [
            ("ada", 1),
            ("bob", 2),
        ]
        assert len(await store.all_progress()) == 3
        assert [(u, c) for u, c, _ in await store.course_completions()] == [("ada", "intro")]
        assert await store.course_completions("other") == []
        assert await store.learners() == ["ada", "bob", "cyd"]
        assert await store.learners("other") == ["ada"]

        assert await store.reset("ada", "intro") == 2  # one stage + the course
        assert await store.reset("ada", "intro") == 0
        assert await store.completions("ada", "intro") == []
        assert [c.course for c in await store.completions("ada")] == ["other"]
        with pytest.raises(ValueError, match="source"):
            await store.complete_stage("ada", "intro", 1, "hacker")  # type: ignore[arg-type]
    finally:
        await store.close()


async def test_concurrent_stores_on_one_file_insert_once(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite3"
    stores = [ProgressStore(path) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        results = await asyncio.gather(
            *(s.complete_stage("ada", "intro", 1, "quiz") for s in stores for _ in range(10))
        )
        assert sum(results) == 1
    finally:
        await asyncio.gather(*(s.close() for s in stores))


WRITER = """
import asyncio, sys
from pathlib import Path
from jupyter_claude_pods.courses.store import ProgressStore

async def writer(path, user):
    store = ProgressStore(Path(path))  # its own connection and worker thread
    await store.open()
    stage = 0
    while True:
        stage += 1
        if await store.complete_stage(user, "durable", stage, "quiz", "s"):
            sys.stdout.write(f"{user} {stage}\\n")
            sys.stdout.flush()

async def main(path, prefix):
    await asyncio.gather(*(writer(path, f"{prefix}-{i}") for i in range(3)))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_committed_rows_survive_sigkill(tmp_path: Path) -> None:
    """Two processes x three threads write; each committed row is printed; then SIGKILL.

    Every row reported as committed must be in the file, and the file must be intact.
    """
    path = tmp_path / "durable.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for name in ("p", "q")
    ]
    reported: set[tuple[str, int]] = set()
    try:
        for proc in procs:
            assert proc.stdout is not None
            lines = 0
            while lines < 150:  # well into its run; the other process keeps writing too
                line = proc.stdout.readline()
                assert line, "writer died early (run WRITER by hand to see why)"
                user, stage = line.split()
                reported.add((user, int(stage)))
                lines += 1
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
    for proc in procs:
        assert proc.stdout is not None
        # Through the same buffered reader as readline() above (communicate() would read the
        # raw pipe and skip what that reader has buffered already).
        out = proc.stdout.read()
        assert proc.wait() == -signal.SIGKILL
        for line in out.splitlines():  # each line went out in one write() after its commit
            user, stage = line.split()
            reported.add((user, int(stage)))
    # Both processes were writing (threads within one may take turns: lock waits back off).
    assert {user[0] for user, _ in reported} == {"p", "q"}

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = set(db.execute("SELECT user, stage FROM stage_completions").fetchall())
    missing = reported - rows
    assert not missing, f"{len(missing)} reported rows lost, e.g. {sorted(missing)[:5]}"
