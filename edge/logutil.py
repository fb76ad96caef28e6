"""Logging helpers: a repeated radio or payload error logs once at WARNING, then at DEBUG."""

from __future__ import annotations

import logging


class OnceLogger:
    """Logs the first occurrence of each key at WARNING and the rest at DEBUG, counting them all."""

    def __init__(self, logger: logging.Logger, max_keys: int = 1024) -> None:
        self._logger = logger
        self._seen: dict[str, int] = {}
        self._max_keys = max_keys

    def warning(self, key: str, msg: str, *args: object) -> None:
        count = self._seen.get(key, 0)
        if count == 0 and len(self._seen) >= self._max_keys:
            self._seen.clear()  # bounded: forget old keys rather than grow without limit
        self._seen[key] = count + 1
        level = logging.WARNING if count == 0 else logging.DEBUG
        if count == 0:
            msg += " (further occurrences are logged at DEBUG)"
        self._logger.log(level, msg, *args)

    def count(self, key: str) -> int:
        return self._seen.get(key, 0)
