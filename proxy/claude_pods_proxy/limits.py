"""Admission checks run before a request is forwarded: budgets, rate limit.

All of it is in memory and O(1) per request, so refusing a request costs less than
forwarding it. Budgets are checked against what has been *charged* so far; the reply
that crosses a budget is let through, so the overshoot is at most one reply per
request in flight, i.e. bounded by the per-session concurrency cap times the cost of
the largest reply (capped by ``--max-tokens``). Reserving an estimated cost up front
would bound it tighter, at the price of guessing output length; see docs.
"""

from __future__ import annotations

import calendar
import math
import time
from collections import deque
from dataclasses import dataclass

from .store import UsageStore, utc_day
from .tokens import TokenClaims

__all__ = ["Refusal", "SlidingWindowLimiter", "check_budgets"]


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused, and when the client may try again (seconds)."""

    reason: str
    message: str
    retry_after: int


class SlidingWindowLimiter:
    """At most *limit* admissions per key in any *window* seconds (exact sliding log).

    A log of timestamps per session (at most *limit* long) gives an exact answer and a
    precise ``retry-after``; with limits of a few hundred per minute it is small.
    """

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._log: dict[str, deque[float]] = {}

    def acquire(self, key: str, now: float) -> float:
        """Admit one request for *key* (returns 0.0) or return the seconds to wait."""
        if self.limit <= 0:
            return 0.0
        log = self._log.get(key)
        if log is None:
            log = self._log[key] = deque(maxlen=self.limit)
        if len(log) >= self.limit:
            wait = log[0] + self.window - now
            if wait > 0:
                return wait
        log.append(now)
        return 0.0

    def prune(self, now: float) -> None:
        """Forget keys idle for a whole window."""
        for key in [k for k, log in self._log.items() if not log or log[-1] <= now - self.window]:
            del self._log[key]


def _seconds_to_utc_midnight(now: float) -> int:
    day = time.gmtime(now)
    midnight = calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0)) + 86400
    return max(1, math.ceil(midnight - now))


def check_budgets(
    store: UsageStore,
    claims: TokenClaims,
    now: float,
    session_budget: float,
    user_daily_budget: float,
) -> Refusal | None:
    """A refusal if the session or the user's day has spent its budget (0 = no budget)."""
    if session_budget > 0:
        spent = store.session_cost(claims.session)
        if spent >= session_budget:
            return Refusal(
                "session_budget",
                f"This session has used its budget (${spent:.2f} of ${session_budget:.2f}).",
                # A session budget never refills: retrying is pointless until it ends.
                max(1, math.ceil(claims.expires - now)),
            )
    if user_daily_budget > 0:
        spent = store.user_day_cost(claims.user, utc_day(now))
        if spent >= user_daily_budget:
            return Refusal(
                "user_daily_budget",
                f"You have used today's budget (${spent:.2f} of ${user_daily_budget:.2f}); "
                "it resets at 00:00 UTC.",
                _seconds_to_utc_midnight(now),
            )
    return None
