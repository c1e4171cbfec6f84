"""The real Anthropic API key: loaded from a file (re-read when it changes) or the environment.

A Kubernetes Secret mounted as a volume is updated in place by the kubelet (a new
directory behind the ``..data`` symlink), so checking the file's identity on every
request makes rotation work without a restart. One ``stat`` per request costs a few
microseconds; a timer would make rotation slower and tests racy. A file that is briefly
missing, empty or malformed during a rotation keeps the previous key in service.

The key is never logged, never put in an exception message and not shown by ``repr``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

__all__ = ["KeySource", "KeyUnavailable"]

log = logging.getLogger(__name__)

# Visible ASCII only: the value goes into an HTTP header, so CR/LF or spaces would be
# header injection or a silently broken key.
_VALID_KEY = re.compile(r"[\x21-\x7e]{1,1024}")


class KeyUnavailable(RuntimeError):
    """No usable key could be loaded (the message never contains key material)."""


class KeySource:
    """Where the real key comes from; :meth:`get` returns the current one."""

    def __init__(
        self,
        *,
        value: str | None = None,
        path: str | None = None,
        on_reload: Callable[[], None] | None = None,
    ) -> None:
        if (value is None) == (path is None):
            raise ValueError("give exactly one of value or path")
        self.path = path
        self._on_reload = on_reload
        self._identity: tuple[int, int, int, int] | None = None
        self._key: str | None = None
        self._warned: tuple[int, int, int, int] | None = None
        if value is not None:
            key = value.strip()
            if not _VALID_KEY.fullmatch(key):
                raise KeyUnavailable("ANTHROPIC_API_KEY is empty or has invalid characters")
            self._key = key
        else:
            self._check_file()
            if self._key is None:
                raise KeyUnavailable(f"no usable API key in {path}")

    def __repr__(self) -> str:
        source = f"file {self.path!r}" if self.path else "environment"
        return f"<KeySource from {source}>"

    @property
    def description(self) -> str:
        return f"file {self.path}" if self.path else "environment variable ANTHROPIC_API_KEY"

    def get(self) -> str:
        """The key to send upstream now."""
        if self.path is not None:
            self._check_file()
        assert self._key is not None
        return self._key

    def _check_file(self) -> None:
        assert self.path is not None
        path = Path(self.path)
        try:
            st = path.stat()
        except OSError as e:
            if self._key is None:
                raise KeyUnavailable(f"cannot read the API key file {path}: {e.strerror}") from None
            return  # mid-rotation: keep serving the previous key
        identity = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if identity == self._identity or identity == self._warned:
            return  # unchanged (or known bad: don't re-read it on every request)
        try:
            with path.open(encoding="ascii", errors="replace") as f:
                key = f.read(4096).strip()
        except OSError as e:
            if self._key is None:
                raise KeyUnavailable(f"cannot read the API key file {path}: {e.strerror}") from None
            return
        if not _VALID_KEY.fullmatch(key):
            log.warning("API key file %s is empty or malformed; keeping the old key", self.path)
            self._warned = identity
            return
        self._identity = identity
        if key != self._key:
            first = self._key is None
            self._key = key
            if not first:
                log.info("API key reloaded from %s", self.path)
                if self._on_reload is not None:
                    self._on_reload()
