"""Usage totals, budgets' inputs and revocations: in memory for the hot path, SQLite for restarts.

Why this split: every forwarded request checks a revocation and two budgets, and a
disk read there would add milliseconds and block the event loop. So the authoritative
numbers live in dictionaries owned by the event-loop thread, and SQLite is a
write-behind copy: usage deltas are merged in memory and written in one short
transaction every ``flush_interval`` seconds, on the one worker thread that owns the
connection (``ThreadPoolExecutor(max_workers=1)``, so statements never interleave and
the loop never waits on the disk). Revocations are written before ``/admin/revoke``
answers, so an acknowledged revocation survives a crash; a crash can lose at most
``flush_interval`` seconds of usage.

At start-up the totals of sessions seen within the longest token lifetime (older
sessions cannot authenticate any more), today's per-user totals and the unexpired
revocations are loaded back.

One proxy process per database file: two processes would each enforce budgets from
their own memory.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from .tokens import TokenClaims
from .usage import Usage

__all__ = ["Totals", "UsageStore", "utc_day"]

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 1
_COUNTS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "web_search_requests",
)
_COLUMNS = (*_COUNTS, "cost_usd")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS session_usage (
    session TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _COUNTS)},
    cost_usd REAL NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS user_day_usage (
    user TEXT NOT NULL,
    day TEXT NOT NULL,
    {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _COUNTS)},
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (user, day)
);
CREATE TABLE IF NOT EXISTS revocations (
    kind TEXT NOT NULL CHECK (kind IN ('session', 'user')),
    name TEXT NOT NULL,
    revoked_at REAL NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE INDEX IF NOT EXISTS session_usage_user ON session_usage (user);
"""
# Statements are assembled once, from the constant column names above only (never from
# data: every value is a bound parameter), hence the S608 exemptions.
_COLS = ", ".join(_COLUMNS)
_MARKS = ", ".join("?" for _ in _COLUMNS)
_ADDS = ", ".join(f"{c} = {c} + excluded.{c}" for c in _COLUMNS)
_SUMS = ", ".join(f"coalesce(sum({c}), 0)" for c in _COLUMNS)
_UPSERT_SESSION = (
    f"INSERT INTO session_usage (session, user, {_COLS}, first_seen, last_seen) "  # noqa: S608
    f"VALUES (?, ?, {_MARKS}, ?, ?) ON CONFLICT (session) DO UPDATE SET {_ADDS}, "
    "last_seen = max(last_seen, excluded.last_seen)"
)
_UPSERT_DAY = (
    f"INSERT INTO user_day_usage (user, day, {_COLS}) VALUES (?, ?, {_MARKS}) "  # noqa: S608
    f"ON CONFLICT (user, day) DO UPDATE SET {_ADDS}"
)
_LOAD_SESSIONS = f"SELECT session, {_COLS}, last_seen FROM session_usage WHERE last_seen >= ?"  # noqa: S608
_LOAD_DAYS = f"SELECT user, day, {_COLS} FROM user_day_usage WHERE day = ?"  # noqa: S608
_USER_TOTAL = f"SELECT {_SUMS} FROM user_day_usage WHERE user = ?"  # noqa: S608
_USER_DAYS = f"SELECT day, {_COLS} FROM user_day_usage WHERE user = ? ORDER BY day DESC LIMIT 31"  # noqa: S608
_SESSION = f"SELECT user, {_COLS}, first_seen, last_seen FROM session_usage WHERE session = ?"  # noqa: S608


_day_cache: tuple[int, str] = (-1, "")


def utc_day(now: float) -> str:
    """The UTC calendar day of *now* (per-user budgets reset at UTC midnight)."""
    global _day_cache
    number = int(now // 86400)  # Unix time has no leap seconds: days are 86400 s
    if _day_cache[0] != number:
        _day_cache = (number, time.strftime("%Y-%m-%d", time.gmtime(now)))
    return _day_cache[1]


@dataclass
class Totals:
    """Accumulated usage of a session or of a user-day."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    web_search_requests: int = 0
    cost_usd: float = 0.0

    def add(self, usage: Usage | None, cost: float, requests: int = 1) -> None:
        self.requests += requests
        self.cost_usd += cost
        if usage is not None:
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            self.cache_creation_input_tokens += usage.cache_creation_input_tokens
            self.cache_read_input_tokens += usage.cache_read_input_tokens
            self.web_search_requests += usage.web_search_requests

    def merge(self, other: Totals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cost_usd"] = round(self.cost_usd, 6)
        return data

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple[Any, ...]) -> Totals:
        return cls(*row)


@dataclass
class _SessionDelta:
    user: str
    totals: Totals
    first_seen: float
    last_seen: float


class UsageStore:
    """See the module docstring. Call :meth:`open` before use and :meth:`close` after."""

    def __init__(self, path: str, *, flush_interval: float = 0.5, retention: float = 30 * 86400.0):
        self.path = path
        self.flush_interval = flush_interval
        self.retention = retention
        self.sessions: dict[str, Totals] = {}
        self._session_seen: dict[str, float] = {}
        self.user_days: dict[tuple[str, str], Totals] = {}
        #: session -> when the revocation may be forgotten
        self.revoked_sessions: dict[str, float] = {}
        #: user -> (revoked_at, forget_after): tokens issued up to revoked_at are dead
        self.revoked_users: dict[str, tuple[float, float]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="claude-pods-store")
        self._db: sqlite3.Connection | None = None
        self._pending_sessions: dict[str, _SessionDelta] = {}
        self._pending_days: dict[tuple[str, str], Totals] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_tasks: set[asyncio.Task[None]] = set()
        self._last_prune = 0.0

    # ------------------------------------------------------------------ worker thread

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def _connect(self) -> sqlite3.Connection:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise RuntimeError(f"{self.path} has schema {version}, newer than this proxy")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return db

    def _load(self, now: float) -> tuple[Any, ...]:
        self._db = db = self._connect()
        with db:
            db.execute("BEGIN")
            db.execute("DELETE FROM revocations WHERE expires <= ?", (now,))
        revocations = db.execute(
            "SELECT kind, name, revoked_at, expires FROM revocations"
        ).fetchall()
        sessions = db.execute(_LOAD_SESSIONS, (now - self.retention,)).fetchall()
        days = db.execute(_LOAD_DAYS, (utc_day(now),)).fetchall()
        return revocations, sessions, days

    def _write(
        self, sessions: dict[str, _SessionDelta], days: dict[tuple[str, str], Totals]
    ) -> None:
        db = self._db
        assert db is not None
        with db:
            db.execute("BEGIN")
            db.executemany(
                _UPSERT_SESSION,
                [
                    (s, d.user, *_values(d.totals), d.first_seen, d.last_seen)
                    for s, d in sessions.items()
                ],
            )
            db.executemany(_UPSERT_DAY, [(u, day, *_values(t)) for (u, day), t in days.items()])

    def _write_revocation(self, kind: str, name: str, revoked_at: float, expires: float) -> None:
        db = self._db
        assert db is not None
        with db:
            db.execute("BEGIN")
            db.execute(
                "INSERT INTO revocations (kind, name, revoked_at, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, name) DO UPDATE SET revoked_at = excluded.revoked_at, "
                "expires = max(expires, excluded.expires)",
                (kind, name, revoked_at, expires),
            )

    def _query_user(self, user: str) -> dict[str, Any]:
        db = self._db
        assert db is not None
        total = db.execute(_USER_TOTAL, (user,)).fetchone()
        days = db.execute(_USER_DAYS, (user,)).fetchall()
        sessions = db.execute(
            "SELECT count(*) FROM session_usage WHERE user = ?", (user,)
        ).fetchone()[0]
        return {
            "total": Totals.from_row(total).as_dict(),
            "days": {row[0]: Totals.from_row(row[1:]).as_dict() for row in days},
            "sessions": sessions,
        }

    def _query_session(self, session: str) -> dict[str, Any] | None:
        db = self._db
        assert db is not None
        row = db.execute(_SESSION, (session,)).fetchone()
        if row is None:
            return None
        data = Totals.from_row(row[1 : 1 + len(_COLUMNS)]).as_dict()
        data.update(user=row[0], first_seen=row[-2], last_seen=row[-1])
        return data

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ------------------------------------------------------------------ event-loop side

    async def open(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        revocations, sessions, days = await self._run(self._load, now)
        for kind, name, revoked_at, expires in revocations:
            if kind == "session":
                self.revoked_sessions[name] = expires
            else:
                self.revoked_users[name] = (revoked_at, expires)
        for row in sessions:
            self.sessions[row[0]] = Totals.from_row(row[1:-1])
            self._session_seen[row[0]] = row[-1]
        for row in days:
            self.user_days[(row[0], row[1])] = Totals.from_row(row[2:])
        log.info(
            "usage database %s: %d sessions, %d revocations loaded",
            self.path,
            len(self.sessions),
            len(revocations),
        )

    async def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._flush_tasks:
            await asyncio.gather(*self._flush_tasks, return_exceptions=True)
        try:
            await self.flush()
        finally:
            await self._run(self._close_db)
            self._executor.shutdown(wait=True)

    def is_revoked(self, claims: TokenClaims) -> bool:
        """Hot path: two dictionary lookups, no I/O."""
        if claims.session in self.revoked_sessions:
            return True
        user = self.revoked_users.get(claims.user)
        return user is not None and claims.issued_at <= user[0]

    def session_cost(self, session: str) -> float:
        totals = self.sessions.get(session)
        return totals.cost_usd if totals is not None else 0.0

    def user_day_cost(self, user: str, day: str) -> float:
        totals = self.user_days.get((user, day))
        return totals.cost_usd if totals is not None else 0.0

    def record(
        self,
        user: str,
        session: str,
        usage: Usage | None,
        cost: float,
        now: float,
        requests: int = 1,
    ) -> None:
        """Charge a finished request to its session and user-day (memory now, disk soon)."""
        day = utc_day(now)
        totals = self.sessions.get(session)
        if totals is None:
            totals = self.sessions[session] = Totals()
        totals.add(usage, cost, requests)
        totals = self.user_days.get((user, day))
        if totals is None:
            totals = self.user_days[(user, day)] = Totals()
        totals.add(usage, cost, requests)
        self._session_seen[session] = now
        delta = self._pending_sessions.get(session)
        if delta is None:
            delta = self._pending_sessions[session] = _SessionDelta(user, Totals(), now, now)
        delta.totals.add(usage, cost, requests)
        delta.last_seen = now
        day_delta = self._pending_days.get((user, day))
        if day_delta is None:
            day_delta = self._pending_days[(user, day)] = Totals()
        day_delta.add(usage, cost, requests)
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self.flush_interval, self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        task = asyncio.ensure_future(self.flush())
        self._flush_tasks.add(task)
        task.add_done_callback(self._flush_tasks.discard)

    async def flush(self) -> None:
        """Write the pending deltas now (tests and admin queries call this)."""
        sessions, days = self._pending_sessions, self._pending_days
        self._pending_sessions, self._pending_days = {}, {}
        self._prune(time.time())
        if not sessions and not days:
            return
        try:
            await self._run(self._write, sessions, days)
        except Exception:
            log.exception("writing usage to %s failed; will retry", self.path)
            for session, delta in sessions.items():
                mine = self._pending_sessions.setdefault(session, delta)
                if mine is not delta:
                    mine.totals.merge(delta.totals)
            for key, totals in days.items():
                self._pending_days.setdefault(key, Totals()).merge(totals)
            raise

    def _prune(self, now: float) -> None:
        if now - self._last_prune < 60.0:
            return
        self._last_prune = now
        today = utc_day(now)
        for key in [k for k in self.user_days if k[1] != today]:
            del self.user_days[key]
        stale = now - self.retention
        for name in [n for n, seen in self._session_seen.items() if seen < stale]:
            del self._session_seen[name]
            self.sessions.pop(name, None)
        for name in [n for n, exp in self.revoked_sessions.items() if exp <= now]:
            del self.revoked_sessions[name]
        for name in [n for n, (_, exp) in self.revoked_users.items() if exp <= now]:
            del self.revoked_users[name]

    async def revoke_session(self, session: str, expires: float, now: float) -> None:
        """Refuse *session* from now on; durable when this returns."""
        self.revoked_sessions[session] = max(expires, self.revoked_sessions.get(session, 0.0))
        await self._run(self._write_revocation, "session", session, now, expires)

    async def revoke_user(self, user: str, expires: float, now: float) -> None:
        """Refuse every token of *user* issued up to *now*; durable when this returns."""
        previous = self.revoked_users.get(user, (0.0, 0.0))
        self.revoked_users[user] = (now, max(expires, previous[1]))
        await self._run(self._write_revocation, "user", user, now, expires)

    async def query_user(self, user: str) -> dict[str, Any]:
        await self.flush()
        return await self._run(self._query_user, user)

    async def query_session(self, session: str) -> dict[str, Any] | None:
        await self.flush()
        return await self._run(self._query_session, session)


def _values(totals: Totals) -> tuple[Any, ...]:
    return tuple(getattr(totals, c) for c in _COLUMNS)
