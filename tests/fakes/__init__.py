"""Test doubles that speak real protocols (HTTP, WebSocket) to the real client libraries."""
