"""Usage accounting (JSON and SSE, cumulative message_delta, cache fields), totals per user and
session in SQLite across restarts, and the checks made before forwarding: budgets, rate
limit, concurrency cap, model allowlist and max_tokens cap."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

import pytest
from claude_pods_proxy import client
from claude_pods_proxy.app import ProxyServer
from claude_pods_proxy.pricing import cost_usd
from claude_pods_proxy.store import utc_day
from claude_pods_proxy.usage import Usage

from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply

from .conftest import MakeProxy
from .helpers import SECRET, RawConnection, body, raw_request, request_bytes, token

START = {
    "input_tokens": 100,
    "cache_creation_input_tokens": 50,
    "cache_read_input_tokens": 200,
    "output_tokens": 1,
}
EXPECTED = Usage(
    input_tokens=100, output_tokens=30, cache_creation_input_tokens=50, cache_read_input_tokens=200
)
EXPECTED_COST = cost_usd("claude-sonnet-4-5", EXPECTED)  # 0.00102


async def send(
    proxy: ProxyServer, *, session: str = "sess-1", user: str = "alice", **kw: Any
) -> Any:
    path = kw.pop("path", "/v1/messages")
    payload = kw.pop("payload", None) or body(**kw)
    return await raw_request(
        proxy.port, request_bytes(path, body=payload, auth=token(user, session))
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_is_read_and_the_last_message_delta_wins(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI, access_lines: list[str], stream: bool
) -> None:
    # Cumulative deltas: summing them would give 40 output tokens, the right answer is 30.
    fake_api.script(
        Reply(
            usage_start=START,
            usage_deltas=(
                {"output_tokens": 10},
                {**START, "output_tokens": 30},
            ),
        )
    )
    resp = await send(proxy, stream=stream)
    assert resp.status == 200
    totals = proxy.store.sessions["sess-1"]
    assert (
        totals.input_tokens,
        totals.output_tokens,
        totals.cache_creation_input_tokens,
        totals.cache_read_input_tokens,
        totals.requests,
    ) == (100, 30, 50, 200, 1)
    assert totals.cost_usd == pytest.approx(EXPECTED_COST)
    assert pytest.approx((100 * 3 + 50 * 3.75 + 200 * 0.3 + 30 * 15) / 1e6) == EXPECTED_COST
    log = json.loads(access_lines[-1])
    assert log["output_tokens"] == 30
    assert log["cache_read_input_tokens"] == 200
    assert log["model"] == "claude-sonnet-4-5"
    assert log["cost_usd"] == pytest.approx(EXPECTED_COST, abs=1e-6)


async def test_totals_per_session_and_per_user_are_persisted(
    make_proxy: MakeProxy, fake_api: FakeAnthropicAPI, db_path: str
) -> None:
    fake_api.default = Reply(usage_start=START, usage_deltas=({"output_tokens": 30},))
    proxy = await make_proxy()
    for user, session in [("alice", "a1"), ("alice", "a1"), ("alice", "a2"), ("bob", "b1")]:
        assert (await send(proxy, user=user, session=session)).status == 200
    assert (
        await send(proxy, user="alice", session="a2", path="/v1/messages/count_tokens")
    ).status == 200
    usage = await client.fetch_usage(proxy.url, SECRET, user="alice", session="a1")
    assert usage["session"]["requests"] == 2
    assert usage["session"]["output_tokens"] == 60
    assert usage["session"]["user"] == "alice"
    assert usage["user"]["total"]["requests"] == 4  # count_tokens counted, not charged
    assert usage["user"]["total"]["input_tokens"] == 300
    assert usage["user"]["total"]["cost_usd"] == pytest.approx(3 * EXPECTED_COST, abs=1e-6)
    assert list(usage["user"]["days"]) == [utc_day(time.time())]
    assert usage["user"]["sessions"] == 2
    await proxy.stop()

    with sqlite3.connect(db_path) as db:
        rows = dict(db.execute("SELECT session, output_tokens FROM session_usage").fetchall())
        days = db.execute(
            "SELECT user, requests, cost_usd FROM user_day_usage ORDER BY user"
        ).fetchall()
    assert rows == {"a1": 60, "a2": 30, "b1": 30}
    assert [(u, n) for u, n, _ in days] == [("alice", 4), ("bob", 1)]
    assert days[0][2] == pytest.approx(3 * EXPECTED_COST)

    # A new process on the same database starts from these totals.
    again = await make_proxy()
    assert again.store.sessions["a1"].output_tokens == 60
    assert again.store.user_day_cost("alice", utc_day(time.time())) == pytest.approx(
        3 * EXPECTED_COST
    )


@pytest.mark.parametrize("proxy_options", [{"session_budget_usd": EXPECTED_COST * 1.5}])
async def test_session_budget_is_checked_before_forwarding(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    fake_api.default = Reply(usage_start=START, usage_deltas=({"output_tokens": 30},))
    assert (await send(proxy)).status == 200
    assert (await send(proxy)).status == 200  # spent < budget before it: allowed
    refused = await send(proxy)
    assert refused.status == 429
    assert refused.json["error"]["type"] == "rate_limit_error"
    assert "budget" in refused.json["error"]["message"]
    assert refused.header("x-should-retry") == "false"
    assert 500 < int(refused.header("retry-after") or 0) <= 600  # until the token expires
    assert len(fake_api.requests) == 2
    # count_tokens is never blocked by budgets, another session is unaffected
    assert (await send(proxy, path="/v1/messages/count_tokens")).status == 200
    assert (await send(proxy, session="sess-2")).status == 200


@pytest.mark.parametrize(
    "proxy_options", [{"session_budget_usd": 0, "user_daily_budget_usd": EXPECTED_COST * 1.5}]
)
async def test_user_daily_budget_spans_sessions(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    fake_api.default = Reply(usage_start=START, usage_deltas=({"output_tokens": 30},))
    assert (await send(proxy, session="s1")).status == 200
    assert (await send(proxy, session="s2")).status == 200
    refused = await send(proxy, session="s3")
    assert refused.status == 429
    assert "UTC" in refused.json["error"]["message"]
    assert refused.header("x-should-retry") == "false"
    assert 0 < int(refused.header("retry-after") or 0) <= 86400
    assert (await send(proxy, session="s4", path="/v1/messages/count_tokens")).status == 200
    assert (await send(proxy, user="bob", session="b1")).status == 200


@pytest.mark.parametrize("proxy_options", [{"rate_limit_rpm": 3}])
async def test_rate_limit_per_session(proxy: ProxyServer, fake_api: FakeAnthropicAPI) -> None:
    for _ in range(3):
        assert (await send(proxy)).status == 200
    refused = await send(proxy)
    assert refused.status == 429
    assert refused.json["error"]["type"] == "rate_limit_error"
    assert refused.header("x-should-retry") == "false"
    assert 1 <= int(refused.header("retry-after") or 0) <= 60
    assert len(fake_api.requests) == 3
    assert (await send(proxy, session="other")).status == 200


@pytest.mark.parametrize(
    "proxy_options", [{"max_concurrent_per_session": 2, "session_budget_usd": EXPECTED_COST / 2}]
)
async def test_concurrency_cap_bounds_budget_overshoot(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    """Two requests run at once (cap 2) and both finish: the overshoot is one reply."""
    fake_api.default = Reply(
        usage_start=START, usage_deltas=({"output_tokens": 30},), stall_after=2
    )
    conns = []
    for _ in range(2):
        conn = await RawConnection.open(proxy.port)
        conn.send(request_bytes("/v1/messages", body=body(stream=True), auth=token()))
        conns.append((conn, await conn.read_head()))
    third = await send(proxy, stream=True)
    assert third.status == 429
    assert third.header("x-should-retry") == "true"  # waiting helps here
    assert third.header("retry-after") == "1"
    other = await RawConnection.open(proxy.port)  # the cap is per session
    other.send(request_bytes("/v1/messages", body=body(stream=True), auth=token(session="other")))
    conns.append((other, await other.read_head()))
    assert [head.status for _, head in conns] == [200, 200, 200]
    fake_api.release()
    for conn, head in conns:
        assert (await conn.read_body(head)).body.endswith(b'{"type":"message_stop"}\n\n')
        conn.close()
    await proxy.wait_idle(5)
    assert proxy.store.session_cost("sess-1") == pytest.approx(2 * EXPECTED_COST)
    assert (await send(proxy)).status == 429  # over budget now: refused


@pytest.mark.parametrize("proxy_options", [{"allowed_models": frozenset({"claude-sonnet-4-5"})}])
async def test_model_allowlist(proxy: ProxyServer, fake_api: FakeAnthropicAPI) -> None:
    denied = await send(proxy, model="claude-opus-4-1")
    assert denied.status == 400
    assert denied.json["error"]["type"] == "invalid_request_error"
    assert "claude-opus-4-1" in denied.json["error"]["message"]
    assert denied.header("x-should-retry") == "false"
    not_json = await send(proxy, payload=b"this is not json")
    assert not_json.status == 400
    assert (
        await send(proxy, path="/v1/messages/count_tokens", model="claude-opus-4-1")
    ).status == 400
    assert fake_api.requests == []
    assert (await send(proxy, model="claude-sonnet-4-5")).status == 200
    assert len(fake_api.requests) == 1


@pytest.mark.parametrize("proxy_options", [{"max_tokens_cap": 1000}])
async def test_max_tokens_cap(proxy: ProxyServer, fake_api: FakeAnthropicAPI) -> None:
    over = await send(proxy, max_tokens=1001)
    assert over.status == 400
    assert "1000" in over.json["error"]["message"]
    assert (await send(proxy, max_tokens="1000")).status == 400
    assert fake_api.requests == []
    assert (await send(proxy, max_tokens=1000)).status == 200
    count = json.dumps({"model": "claude-sonnet-4-5", "messages": []}).encode()
    assert (await send(proxy, path="/v1/messages/count_tokens", payload=count)).status == 200
    assert len(fake_api.requests) == 2


async def test_concurrent_sessions_accounted_separately(
    proxy: ProxyServer, fake_api: FakeAnthropicAPI
) -> None:
    fake_api.default = Reply(usage_start=START, usage_deltas=({"output_tokens": 30},))
    results = await asyncio.gather(
        *(send(proxy, session=f"c{i % 4}", stream=bool(i % 2)) for i in range(16))
    )
    assert {r.status for r in results} == {200}
    assert {s: t.requests for s, t in proxy.store.sessions.items()} == {
        f"c{i}": 4 for i in range(4)
    }
    assert sum(t.output_tokens for t in proxy.store.sessions.values()) == 16 * 30
