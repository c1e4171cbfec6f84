"""Learners' progress on disk: SQLite in WAL mode, reached through one worker thread.

Why SQLite: completions are few, small and must survive restarts; several server
processes (or a replacement started before the old one has gone) may share the file.
Uniqueness constraints make every completion idempotent across all of them: the first
insert wins, and only that caller is told ``True`` (and so emits the one event).

Why one worker thread: ``sqlite3`` calls block. All queries of a store run on its own
``ThreadPoolExecutor(max_workers=1)``, which owns the connection, so the event loop never
waits on the disk and statements of one process never interleave. Other processes are
waited for with ``busy_timeout``.

Durability: every write is its own committed transaction before the call returns. The
journal is WAL with ``synchronous=NORMAL``: a commit is appended to the WAL file with
``write()`` (the kernel then owns the bytes) but not ``fsync``-ed. That survives the
*process* dying at any instant, ``SIGKILL`` included (tests check it); only an operating
system crash or a power loss can drop the last commits (the database stays consistent,
it just loses them). Pass ``synchronous="FULL"`` for power-loss durability at the cost of
an fsync per completion.

Schema changes are a list of steps (``MIGRATIONS``); ``PRAGMA user_version`` counts the
steps applied. Each step runs in one ``BEGIN IMMEDIATE`` transaction that re-reads the
version first, so two processes opening a new file at once do not both apply it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, TypeVar

__all__ = ["MIGRATIONS", "Completion", "ProgressStore", "Source", "utc_now"]

log = logging.getLogger(__name__)
T = TypeVar("T")

Source = Literal["quiz", "tutor", "instructor"]
SOURCES: tuple[Source, ...] = ("quiz", "tutor", "instructor")

#: ``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``. Append; never edit.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE stage_completions (
            id INTEGER PRIMARY KEY,
            user TEXT NOT NULL,
            course TEXT NOT NULL,
            stage INTEGER NOT NULL CHECK (stage >= 1),
            completed_at TEXT NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('quiz', 'tutor', 'instructor')),
            session TEXT,
            UNIQUE (user, course, stage)
        )""",
        """CREATE TABLE course_completions (
            id INTEGER PRIMARY KEY,
            user TEXT NOT NULL,
            course TEXT NOT NULL,
            completed_at TEXT NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('quiz', 'tutor', 'instructor')),
            session TEXT,
            UNIQUE (user, course)
        )""",
        """CREATE TABLE quiz_attempts (
            id INTEGER PRIMARY KEY,
            user TEXT NOT NULL,
            course TEXT NOT NULL,
            stage INTEGER NOT NULL,
            correct INTEGER NOT NULL CHECK (correct IN (0, 1)),
            attempted_at TEXT NOT NULL
        )""",
        "CREATE INDEX stage_completions_course ON stage_completions (course, user)",
        "CREATE INDEX course_completions_course ON course_completions (course, user)",
        "CREATE INDEX quiz_attempts_user ON quiz_attempts (user, course, stage)",
    ),
]


def utc_now() -> str:
    """ISO 8601 in UTC with milliseconds: sortable as text, unambiguous across servers."""
    now = datetime.now(timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Completion:
    """One stage completed by one learner."""

    user: str
    course: str
    stage: int
    completed_at: str
    source: Source
    session: str | None


class ProgressStore:
    """SQLite WAL, migrations by PRAGMA user_version, one worker thread (a 1-thread executor)
    for all queries so the event loop never blocks on the disk; busy_timeout for other
    processes. Call :meth:`open` before use and :meth:`close` after.
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = 10.0,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Create or upgrade the database file; idempotent."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="claude-pods-progress"
        )
        try:
            await self._run(self._connect)
        except BaseException:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False)
            raise

    async def close(self) -> None:
        """Close the connection (checkpointing the WAL) and stop the worker thread."""
        executor = self._executor
        if executor is None:
            return
        try:
            await self._run(self._disconnect)
        finally:
            self._executor = None
            executor.shutdown(wait=False)  # its only job has finished

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            raise RuntimeError("ProgressStore is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            self._use_wal(db)
            db.execute(f"PRAGMA synchronous = {self.synchronous}")
            db.execute("PRAGMA foreign_keys = ON")
            migrate(db, self.path)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Switch the file to WAL (a no-op once it is).

        The switch needs a moment of exclusive access, and SQLite reports "database is
        locked" for it at once, without its busy handler, when another process is opening
        the same new file. So it is retried here, up to ``busy_timeout``.
        """
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.005
        while True:
            try:
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)  # on the store's worker thread, never the event loop
            pause = min(pause * 2, 0.1)
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{self.path}: cannot use a WAL journal (got {mode!r})")

    def _disconnect(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("ProgressStore is not open")
        return self._db

    # ------------------------------------------------------------------ writes

    def _insert_stage(
        self, user: str, course: str, stage: int, source: str, session: str | None
    ) -> bool:
        cursor = self._conn().execute(
            "INSERT INTO stage_completions (user, course, stage, completed_at, source, session) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user, course, stage) DO NOTHING",
            (user, course, stage, utc_now(), source, session),
        )
        return cursor.rowcount == 1

    def _insert_course(self, user: str, course: str, source: str, session: str | None) -> bool:
        cursor = self._conn().execute(
            "INSERT INTO course_completions (user, course, completed_at, source, session) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user, course) DO NOTHING",
            (user, course, utc_now(), source, session),
        )
        return cursor.rowcount == 1

    def _delete(self, user: str, course: str) -> int:
        db = self._conn()
        with db:
            db.execute("BEGIN IMMEDIATE")
            stages = db.execute(
                "DELETE FROM stage_completions WHERE user = ? AND course = ?", (user, course)
            ).rowcount
            courses = db.execute(
                "DELETE FROM course_completions WHERE user = ? AND course = ?", (user, course)
            ).rowcount
        return stages + courses

    def _insert_attempt(self, user: str, course: str, stage: int, correct: bool) -> None:
        self._conn().execute(
            "INSERT INTO quiz_attempts (user, course, stage, correct, attempted_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (user, course, stage, int(correct), utc_now()),
        )

    async def complete_stage(
        self, user: str, course: str, stage: int, source: Source, session: str | None = None
    ) -> bool:
        """Record stage completion; True only for the one caller that inserted it."""
        _check_source(source)
        return await self._run(self._insert_stage, user, course, stage, source, session)

    async def complete_course(
        self, user: str, course: str, source: Source, session: str | None = None
    ) -> bool:
        """Record course completion; True only for the one caller that inserted it."""
        _check_source(source)
        return await self._run(self._insert_course, user, course, source, session)

    async def reset(self, user: str, course: str) -> int:
        """Forget a learner's completions of one course; the number of rows deleted.

        Quiz attempts are a log and are kept.
        """
        return await self._run(self._delete, user, course)

    async def record_attempt(self, user: str, course: str, stage: int, correct: bool) -> None:
        await self._run(self._insert_attempt, user, course, stage, correct)

    # ------------------------------------------------------------------ reads

    def _select_completions(self, where: str, args: tuple[object, ...]) -> list[Completion]:
        rows = (
            self._conn()
            .execute(
                "SELECT user, course, stage, completed_at, source, session FROM stage_completions "  # noqa: S608
                f"{where} ORDER BY user, course, stage",
                args,
            )
            .fetchall()
        )
        return [Completion(*row) for row in rows]

    async def completions(self, user: str, course: str | None = None) -> list[Completion]:
        """A learner's completed stages (of one course, or of all), by course and stage."""
        if course is None:
            return await self._run(self._select_completions, "WHERE user = ?", (user,))
        return await self._run(
            self._select_completions, "WHERE user = ? AND course = ?", (user, course)
        )

    async def all_progress(self, course: str | None = None) -> list[Completion]:
        """Every learner's completed stages (instructor view)."""
        if course is None:
            return await self._run(self._select_completions, "", ())
        return await self._run(self._select_completions, "WHERE course = ?", (course,))

    def _select_course_completed(self, user: str, course: str) -> bool:
        row = (
            self._conn()
            .execute(
                "SELECT 1 FROM course_completions WHERE user = ? AND course = ?", (user, course)
            )
            .fetchone()
        )
        return row is not None

    async def course_completed(self, user: str, course: str) -> bool:
        return await self._run(self._select_course_completed, user, course)

    def _select_course_completions(self, course: str | None) -> list[tuple[str, str, str]]:
        sql = "SELECT user, course, completed_at FROM course_completions"
        args: tuple[object, ...] = ()
        if course is not None:
            sql += " WHERE course = ?"
            args = (course,)
        rows = self._conn().execute(sql + " ORDER BY user, course", args).fetchall()
        return [(str(u), str(c), str(t)) for u, c, t in rows]

    async def course_completions(self, course: str | None = None) -> list[tuple[str, str, str]]:
        """``(user, course, completed_at)`` of every completed course (instructor view)."""
        return await self._run(self._select_course_completions, course)

    def _select_activity(self, course: str | None) -> list[tuple[str, str]]:
        union = (
            "SELECT user, course FROM stage_completions UNION "
            "SELECT user, course FROM course_completions UNION "
            "SELECT user, course FROM quiz_attempts"
        )
        sql = f"SELECT DISTINCT user, course FROM ({union})"  # noqa: S608 (constant)
        args: tuple[object, ...] = ()
        if course is not None:
            sql += " WHERE course = ?"
            args = (course,)
        rows = self._conn().execute(sql + " ORDER BY user, course", args).fetchall()
        return [(str(u), str(c)) for u, c in rows]

    async def activity(self, course: str | None = None) -> list[tuple[str, str]]:
        """``(user, course)`` pairs with any completion or quiz attempt, sorted."""
        return await self._run(self._select_activity, course)

    async def learners(self, course: str | None = None) -> list[str]:
        """Everyone with any completion or quiz attempt (in one course, or in any), sorted."""
        pairs = await self.activity(course)
        return sorted({user for user, _ in pairs})


def migrate(db: sqlite3.Connection, where: object = "database") -> int:
    """Apply the missing ``MIGRATIONS`` steps; the resulting schema version.

    *db* must be in autocommit mode (``isolation_level=None``).
    """
    while True:
        db.execute("BEGIN IMMEDIATE")  # the write lock first: the version read is then final
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise RuntimeError(
                    f"{where}: progress schema {version} is newer than this server "
                    f"({len(MIGRATIONS)}); upgrade jupyter-claude-pods"
                )
            if version == len(MIGRATIONS):
                db.execute("COMMIT")
                return version
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
            log.info("claude-pods: progress store %s migrated to schema %d", where, version + 1)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown progress source {source!r}")
