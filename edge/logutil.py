"""Logging helpers: a repeated radio or payload error logs once at WARNING, then at DEBUG."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Keys are often built from what the network sent (a topic): only this much of one is kept.
MAX_KEY_CHARS = 200
#: Longest message argument logged as given (a topic, a reason quoting a payload): the rest is cut.
MAX_ARG_CHARS = 1000


def _clip(arg: object) -> object:
    """A string argument of at most MAX_ARG_CHARS characters (a log line is not a payload dump)."""
    if isinstance(arg, str) and len(arg) > MAX_ARG_CHARS:
        return f"{arg[:MAX_ARG_CHARS]}… ({len(arg)} characters)"
    return arg


class OnceLogger:
    """Logs the first occurrence of each key at WARNING and the rest at DEBUG, counting them all.

    Bounded against keys chosen by whoever sends the messages (a client cycling through topics):
    at most `max_keys` keys, each cut to MAX_KEY_CHARS. Once that many are held, new keys are
    logged at DEBUG (one WARNING says so) until `window_s` has passed since the table filled; then
    it starts afresh. So at most max_keys + 1 WARNING lines per window, whatever arrives.
    """

    def __init__(
        self,
        logger: logging.Logger,
        max_keys: int = 256,
        window_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._seen: dict[str, int] = {}
        self._max_keys = max_keys
        self._window_s = window_s
        self._clock = clock
        self._full_since: float | None = None  # when the table filled (monotonic s)
        #: Occurrences logged at DEBUG only because the table was full.
        self.overflowed = 0

    def warning(self, key: str, msg: str, *args: object) -> None:
        key = key[:MAX_KEY_CHARS]
        args = tuple(_clip(a) for a in args)
        count = self._seen.get(key)
        if count is None and len(self._seen) >= self._max_keys:
            now = self._clock()
            if self._full_since is None:
                self._full_since = now
                self._logger.warning(
                    "more than %d distinct problems of this kind: new ones are logged at DEBUG "
                    "for %.0f s",
                    self._max_keys,
                    self._window_s,
                )
            if now - self._full_since < self._window_s:
                self.overflowed += 1
                self._logger.debug(msg, *args)
                return
            self._seen.clear()
            self._full_since = None
        self._seen[key] = (count or 0) + 1
        if count is None:
            self._logger.warning(msg + " (further occurrences are logged at DEBUG)", *args)
        else:
            self._logger.debug(msg, *args)

    def count(self, key: str) -> int:
        return self._seen.get(key[:MAX_KEY_CHARS], 0)
