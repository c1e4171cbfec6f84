"""Error replies the proxy writes itself, shaped exactly like the Messages API's.

The CLI and SDKs parse ``{"type": "error", "error": {"type", "message"}, "request_id"}``
and decide whether to retry from the status and the ``x-should-retry`` header. Without
``x-should-retry: false`` the Claude Code CLI retries a 401 for minutes, so every
refusal that retrying cannot fix carries it.
"""

from __future__ import annotations

import json
import secrets

__all__ = ["error_body", "new_request_id", "sse_error_event"]


def new_request_id() -> str:
    """A request id for replies the proxy writes itself (upstream ids start ``req_``)."""
    return "req_proxy_" + secrets.token_hex(12)


def error_body(error_type: str, message: str, request_id: str) -> bytes:
    return json.dumps(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        },
        separators=(",", ":"),
    ).encode("utf-8")


def sse_error_event(error_type: str, message: str) -> bytes:
    """An SSE ``error`` event, as the API sends mid-stream (e.g. ``overloaded_error``)."""
    data = json.dumps(
        {"type": "error", "error": {"type": error_type, "message": message}},
        separators=(",", ":"),
    )
    return f"event: error\ndata: {data}\n\n".encode()
