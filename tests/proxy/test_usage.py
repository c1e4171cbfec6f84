"""SSE usage parsing and pricing (pure functions)."""

from __future__ import annotations

import json

import pytest
from claude_pods_proxy.pricing import UNKNOWN_MODEL_PRICE, cost_usd, price_for
from claude_pods_proxy.usage import SseUsageParser, Usage, usage_from_message


def sse(event: str, data: dict[str, object], eol: str = "\n") -> bytes:
    return f"event: {event}{eol}data: {json.dumps(data)}{eol}{eol}".encode()


START = {
    "type": "message_start",
    "message": {
        "model": "claude-opus-4-8",
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 2000,
            "cache_read_input_tokens": 30000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 500},
            "output_tokens": 1,
        },
    },
}
DELTA = {
    "type": "content_block_delta",
    "index": 0,
    "delta": {"type": "text_delta", "text": "Hello"},
}


def stream(eol: str = "\n") -> bytes:
    return b"".join(
        [
            sse("message_start", START, eol),
            sse("content_block_start", {"type": "content_block_start", "index": 0}, eol),
            sse("ping", {"type": "ping"}, eol),
            sse("content_block_delta", DELTA, eol),
            sse(
                "some_future_event",
                {"type": "some_future_event", "usage": {"output_tokens": 999}},
                eol,
            ),
            sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 50}}, eol),
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "usage": {
                        "output_tokens": 70,
                        "cache_read_input_tokens": 30001,
                        "server_tool_use": {"web_search_requests": 2},
                    },
                },
                eol,
            ),
            sse("message_stop", {"type": "message_stop"}, eol),
        ]
    )


EXPECTED = Usage(
    input_tokens=10,
    output_tokens=70,
    cache_creation_input_tokens=2000,
    cache_read_input_tokens=30001,
    cache_creation_1h_input_tokens=500,
    web_search_requests=2,
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_any_chunking_gives_the_same_usage(size: int, eol: str) -> None:
    data = stream(eol)
    parser = SseUsageParser()
    for i in range(0, len(data), size):
        parser.feed(data[i : i + size])
    assert parser.result() == EXPECTED
    assert parser.model == "claude-opus-4-8"
    assert parser.stopped
    assert parser.at_event_boundary


def test_boundary_tracking() -> None:
    parser = SseUsageParser()
    parser.feed(b"event: ping\n")
    assert not parser.at_event_boundary
    parser.feed(b"data: {}\n")
    assert not parser.at_event_boundary
    parser.feed(b"\n")
    assert parser.at_event_boundary
    parser.feed(b'event: content_block_delta\ndata: {"type": "content_bl')
    assert not parser.at_event_boundary


def test_stream_cut_before_message_delta_is_estimated() -> None:
    parser = SseUsageParser()
    parser.feed(sse("message_start", START))
    for _ in range(100):
        parser.feed(sse("content_block_delta", DELTA))
    usage = parser.result()
    assert usage is not None
    assert usage.estimated
    assert usage.input_tokens == 10
    delta_bytes = len(json.dumps(DELTA))
    assert usage.output_tokens == -(-100 * delta_bytes // 4)
    assert not parser.stopped


def test_nothing_before_message_start() -> None:
    parser = SseUsageParser()
    parser.feed(sse("ping", {"type": "ping"}))
    assert parser.result() is None


def test_error_event_and_streams_without_event_lines() -> None:
    parser = SseUsageParser()
    parser.feed(b"data: " + json.dumps(START).encode() + b"\n\n")
    parser.feed(b"data: " + json.dumps(DELTA).encode() + b"\n\n")
    parser.feed(b'data: {"type": "message_delta", "usage": {"output_tokens": 5}}\n\n')
    parser.feed(
        sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "x"}})
    )
    assert parser.error_type == "overloaded_error"
    usage = parser.result()
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (10, 5)


def test_garbage_is_ignored() -> None:
    parser = SseUsageParser()
    parser.feed(b": comment\nid: 3\nretry: 10\nevent: message_start\ndata: {not json\n\n")
    parser.feed(b"event: message_delta\ndata: [1]\n\n")
    assert parser.result() is None


def test_non_streaming_message() -> None:
    body = json.dumps({"model": "claude-haiku-4-5", "usage": START["message"]["usage"]}).encode()  # type: ignore[index]
    model, usage = usage_from_message(body)
    assert model == "claude-haiku-4-5"
    assert usage == Usage(10, 1, 2000, 30000, 500)
    assert usage_from_message(b"<html>") == (None, None)
    assert usage_from_message(b'{"type": "error"}') == (None, None)


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("claude-opus-4-1-20250805", (15, 75)),
        ("claude-opus-4-20250514", (15, 75)),
        ("claude-opus-4-5-20251101", (5, 25)),
        ("claude-opus-4-8", (5, 25)),
        ("claude-sonnet-4-5-20250929", (3, 15)),
        ("claude-3-7-sonnet-latest", (3, 15)),
        ("claude-haiku-4-5", (1, 5)),
        ("claude-3-5-haiku-20241022", (0.8, 4)),
        ("claude-3-haiku-20240307", (0.25, 1.25)),
        ("gpt-5", (15, 75)),
        (None, (15, 75)),
    ],
)
def test_price_table(model: str | None, price: tuple[float, float]) -> None:
    p = price_for(model)
    assert (p.input, p.output) == price


def test_cost_prices_cache_traffic_separately() -> None:
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_creation_input_tokens=1_000_000,
        cache_read_input_tokens=1_000_000,
        cache_creation_1h_input_tokens=400_000,
        web_search_requests=3,
    )
    # sonnet: 3 in, 15 out; 600k 5m writes at 1.25x, 400k 1h writes at 2x, reads 0.1x;
    # 4M input-side tokens > 200k: long-context factors 2x input, 1.5x output
    expected = (3 * (1 + 0.6 * 1.25 + 0.4 * 2 + 0.1) * 2) + 15 * 1.5 + 0.03
    assert cost_usd("claude-sonnet-4-5", usage) == pytest.approx(expected)
    small = Usage(input_tokens=1000, output_tokens=100, cache_read_input_tokens=10_000)
    assert cost_usd("claude-sonnet-4-5", small) == pytest.approx(
        (1000 * 3 + 100 * 15 + 10_000 * 0.3) / 1e6
    )
    assert cost_usd("mystery", small) == pytest.approx(
        (1000 + 1000) * UNKNOWN_MODEL_PRICE.input / 1e6 + 100 * UNKNOWN_MODEL_PRICE.output / 1e6
    )
